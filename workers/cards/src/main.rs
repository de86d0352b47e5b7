//! One replica of the `cards` worker kind. Configuration: `SWITCHYARD_*` environment (and
//! `DATABASE_URL`) and an optional TOML file given as the first argument.

use std::process::ExitCode;

use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let sources = Sources::from_process(std::env::args_os().nth(1).map(Into::into));
    let config = match Config::load_sections(&sources, &switchyard_cards::CONFIG_SECTIONS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-cards: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    telemetry::init(&config);
    let shutdown = shutdown::on_signals();
    match switchyard_cards::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("switchyard-cards: {e}");
            ExitCode::from(switchyard_cards::exit_code(&e) as u8)
        }
    }
}
