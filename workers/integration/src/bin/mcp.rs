//! One replica of the `mcp` worker kind. Configuration: `SWITCHYARD_*` environment (and
//! `DATABASE_URL`) and an optional TOML file given as the first argument; its `[mcp]` section
//! names the servers.

use std::process::ExitCode;

use switchyard_integration::mcp;
use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let mut config = match Config::load_sections(&sources, &mcp::CONFIG_SECTIONS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-mcp: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("worker-mcp");
    telemetry::init(&config);
    let shutdown = shutdown::on_signals();
    match Box::pin(mcp::run(config, shutdown)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("switchyard-mcp: {e}");
            ExitCode::from(switchyard_integration::exit_code(&e) as u8)
        }
    }
}
