//! `switchyard` — see `switchyard --help`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use switchyard_bus_config::{ApplyOptions, BusConfig};
use switchyard_runtime::{Config, config::Sources, nats, process, shutdown, telemetry};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "AI workflows on NATS JetStream")]
struct Cli {
    /// TOML configuration file (settings are also read from SWITCHYARD_* variables).
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL; overrides SWITCHYARD_NATS_URL.
    #[arg(long, global = true)]
    nats_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Streams, consumers and KV buckets.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Run one replica of a worker kind until SIGTERM.
    Worker {
        #[arg(value_enum)]
        kind: WorkerKind,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Publish a mix of test jobs, follow them to their results and dead letters, and print
    /// what happened. Needs a running `test` worker.
    Demo {
        /// How many echo jobs to send besides the fixed cases.
        #[arg(long, default_value_t = 20)]
        jobs: usize,
        /// Seconds to wait for every outcome.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Create or update every declared object; a second run reports no changes.
    Apply {
        /// Definitions file; the built-in bus-config/bus.toml when absent.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Replicas for every stream and bucket (3 on a 3-node cluster).
        #[arg(long)]
        replicas: Option<usize>,
    },
    /// Messages, pending, ack-pending and redeliveries per stream and consumer, and DLQ depth.
    Status {
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The worker kinds this build can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkerKind {
    /// echo, sleep and fail: for tests, benchmarks and the demo.
    Test,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut sources = Sources::from_process(cli.config.clone());
    if let Some(url) = &cli.nats_url {
        sources = sources.with_override("nats_url", url.clone());
    }
    let config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bus { command } => {
            let client = nats::connect(&config, "switchyard-cli").await?;
            let js = async_nats::jetstream::new(client);
            match command {
                BusCommand::Apply { file, replicas } => {
                    let definitions = load_definitions(file)?;
                    let report =
                        switchyard_bus_config::apply(&js, &definitions, ApplyOptions { replicas })
                            .await?;
                    print!("{report}");
                    println!(
                        "{}",
                        if report.changed() {
                            "changes applied"
                        } else {
                            "no changes"
                        }
                    );
                    Ok(if report.needs_action() {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                BusCommand::Status { file, json } => {
                    let definitions = load_definitions(file)?;
                    let report = switchyard_bus_config::status(&js, &definitions).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{report}");
                    }
                    Ok(if report.any_missing() {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
        Command::Worker { kind } => {
            telemetry::init(&config);
            let stop = shutdown::on_signals();
            match kind {
                WorkerKind::Test => {
                    process::run_worker(config, switchyard_test_worker::TestWorker, stop).await?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { jobs, timeout } => {
            let client = nats::connect(&config, "switchyard-demo").await?;
            let report =
                switchyard_cli::demo::run(&client, jobs, std::time::Duration::from_secs(timeout))
                    .await?;
            print!("{report}");
            Ok(if report.all_as_expected() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn load_definitions(file: Option<PathBuf>) -> anyhow::Result<BusConfig> {
    Ok(match file {
        Some(path) => BusConfig::load(path)?,
        None => BusConfig::default(),
    })
}
