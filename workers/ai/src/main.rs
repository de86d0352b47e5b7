//! One replica of the `ai` worker kind. Configuration: `SWITCHYARD_*` environment and an
//! optional TOML file given as the first argument (see the `[ai]` section).

use std::process::ExitCode;

use switchyard_ai::RunError;
use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let mut config = match Config::load_sections(&sources, &switchyard_ai::CONFIG_SECTIONS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-ai: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("worker-ai");
    telemetry::init(&config);
    let shutdown = shutdown::on_signals();
    match Box::pin(switchyard_ai::run(config, shutdown)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("switchyard-ai: {e}");
            let code = match &e {
                RunError::Runtime(e) => process::exit_code(e),
                RunError::Ai(_) => process::EXIT_FAILURE,
            };
            ExitCode::from(code as u8)
        }
    }
}
