//! One replica of the `research` worker kind. Configuration: `SWITCHYARD_*` environment
//! and an optional TOML file given as the first argument.

use std::process::ExitCode;

use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let mut config = match Config::load_sections(&sources, &switchyard_research::CONFIG_SECTIONS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-research: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("worker-research");
    telemetry::init(&config);
    let shutdown = shutdown::on_signals();
    match Box::pin(switchyard_research::run(config, shutdown)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("switchyard-research: {e}");
            ExitCode::from(switchyard_research::exit_code(&e) as u8)
        }
    }
}
