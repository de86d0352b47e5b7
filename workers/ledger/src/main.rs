//! One replica of the ledger, or with `rebuild` as the first argument, a rebuild of the
//! ledger from the streams. Configuration: `SWITCHYARD_*` environment (and `DATABASE_URL`) and
//! an optional TOML file given as the last argument.

use std::process::ExitCode;

use switchyard_runtime::{Config, config::Sources, process, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let rebuild = args.first().is_some_and(|a| a == "rebuild");
    if rebuild {
        args.remove(0);
    }
    let sources = Sources::from_process(args.into_iter().next().map(Into::into));
    let mut config = match Config::load_sections(&sources, &switchyard_ledger::CONFIG_SECTIONS) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard-ledger: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    // Its own user from `nats.credentials_dir`, unless `nats.credentials` names one.
    config.nats.use_role("ledger");
    telemetry::init(&config);
    let result = if rebuild {
        switchyard_ledger::rebuild(&config).await.map(|report| {
            print!("{report}");
        })
    } else {
        switchyard_ledger::run(config, shutdown::on_signals()).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ledger failed");
            eprintln!("switchyard-ledger: {e}");
            ExitCode::from(switchyard_ledger::exit_code(&e) as u8)
        }
    }
}
