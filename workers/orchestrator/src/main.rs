//! One orchestrator replica. Configuration: `SWITCHYARD_*` environment and an optional TOML
//! file given as the first argument.

use std::process::ExitCode;

use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let mut config =
        match Config::load_sections(&sources, &switchyard_orchestrator::CONFIG_SECTIONS) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchyard-orchestrator: {e}");
                return ExitCode::from(process::exit_code(&e) as u8);
            }
        };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("orchestrator");
    telemetry::init(&config);
    let env = switchyard_orchestrator::template_env(&config, |name| std::env::var(name).ok());
    let shutdown = shutdown::on_signals();
    match switchyard_orchestrator::run(config, env, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "orchestrator failed");
            eprintln!("switchyard-orchestrator: {e}");
            ExitCode::from(switchyard_orchestrator::exit_code(&e) as u8)
        }
    }
}
