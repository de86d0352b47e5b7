//! One replica of the `test` worker kind. Configuration: `SWITCHYARD_*` environment and an
//! optional TOML file given as the first argument.

use std::process::ExitCode;

use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let mut config = match Config::load_sections(&sources, &switchyard_test_worker::CONFIG_SECTIONS)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-test-worker: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("worker-test");
    telemetry::init(&config);
    let shutdown = shutdown::on_signals();
    let build =
        |_| async { Ok::<_, switchyard_runtime::Error>(switchyard_test_worker::TestWorker) };
    match process::run_worker(&config, "switchyard-test", build, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("switchyard-test-worker: {e}");
            ExitCode::from(process::exit_code(&e) as u8)
        }
    }
}
