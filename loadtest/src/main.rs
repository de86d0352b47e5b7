//! `switchyard-loadtest` — benchmarks; see `--help`. Results go to `loadtest/results/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_loadtest::{cards, cli, ledger, mcp, python_worker, suite, worker_loop};

#[derive(Debug, Parser)]
#[command(about = "Switchyard benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// No-op jobs through one worker replica against the raw JetStream publish rate, with the
    /// server's default fsync and with `sync_interval: always`.
    WorkerLoop {
        /// Jobs per run.
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        /// The worker binary to measure (build it in release mode for real numbers).
        #[arg(long, default_value = "target/release/switchyard-test-worker")]
        worker: PathBuf,
        /// Where to write the JSON results.
        #[arg(long, default_value = "loadtest/results/worker-loop.json")]
        out: PathBuf,
    },
    /// No-op jobs through one replica of a worker on the Python SDK and through one Rust
    /// `test` replica, on the same server in the same run, and each one's idle memory.
    PythonWorker {
        /// Jobs per replica.
        #[arg(long, default_value_t = 5000)]
        jobs: usize,
        /// Jobs the Python replica runs at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "target/release/switchyard-test-worker")]
        worker: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-orchestrator")]
        orchestrator: PathBuf,
        /// The interpreter with the SDK installed; `SWITCHYARD_PYTHON` or the project's venv
        /// when absent.
        #[arg(long)]
        python: Option<PathBuf>,
        #[arg(long, default_value = "loadtest/results/python-worker.json")]
        out: PathBuf,
    },
    /// A 1-step workflow run as an MCP tool (`tools/call` at the gateway's `/mcp`) against
    /// the same through `POST /api/v1/workflows/execute`, alternating on one connection:
    /// latency percentiles of each and the difference.
    McpOverhead {
        /// Measured calls of each kind.
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        #[arg(long, default_value = "target/release/switchyard-gateway")]
        gateway: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-orchestrator")]
        orchestrator: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-test-worker")]
        worker: PathBuf,
        #[arg(long, default_value = "loadtest/results/mcp-overhead.json")]
        out: PathBuf,
    },
    /// The bus's own limit: pipelined JetStream publishes and pull-consume-acks per second,
    /// the floor every other figure is divided by.
    Raw(cli::RawArgs),
    /// The gateway's front door: accepted `POST /workflows/trigger` per second at a
    /// concurrency, latency percentiles and non-202 counts, beside the JetStream publish rate
    /// of the same server; then every accepted trigger must complete.
    #[command(alias = "gateway")]
    HttpTrigger(cli::HttpTriggerArgs),
    /// 1-step workflows whose starts are published straight to `wf.start.*` as fast as the
    /// server acks them: completed workflows/s beside the raw publish rate.
    NatsDirect(cli::NatsDirectArgs),
    /// N workflows of 1- and/or 3-step `test.echo` chains at a fixed start rate (or full
    /// speed): start-to-completed latency from `WF_EVENTS` and sustained throughput.
    E2e(cli::E2eArgs),
    /// 1-step workflows without a concurrency key, with a key per start and with one key for
    /// all (limit 100), at full speed on one engine: what a key costs a start.
    Keyed(cli::KeyedArgs),
    /// Workflows of one fixed-latency job (`test.sleep`) through 1, 2 and 4 worker replica
    /// processes with a fixed per-replica concurrency: horizontal scaling.
    Scale(cli::ScaleArgs),
    /// The standard suite (every scenario above at its standard size, with the Celery
    /// reference if given) and one summary table with ratios and targets. Exits non-zero if
    /// any scenario lost work or could not run.
    Suite(suite::SuiteArgs),
    /// The ledger under the `nats-direct` load: 1-step workflows as fast as the server acks
    /// them, each with usage events; usage events stored in Postgres per second and the
    /// ledger's lag behind the streams (max, at the end of the load, drain time). Needs
    /// Postgres (`DATABASE_URL`).
    Ledger(ledger::LedgerArgs),
    /// Onboarding → `linkedin_post` end to end through the gateway: `flows` flows (four cards
    /// written, then a post generated from them with `wait`) at `concurrency` clients, with
    /// p50/p95/p99 latency and the success rate. Needs Postgres (`DATABASE_URL`).
    Cards {
        #[arg(long, default_value_t = 100)]
        flows: usize,
        #[arg(long, default_value_t = 10)]
        concurrency: usize,
        #[arg(long, default_value = "target/release/switchyard-gateway")]
        gateway: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-orchestrator")]
        orchestrator: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-cards")]
        cards: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-ai")]
        ai: PathBuf,
        #[arg(long, default_value = "loadtest/results/cards.json")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::WorkerLoop { jobs, worker, out } => {
            let mut rows = Vec::new();
            for sync_always in [false, true] {
                rows.push(worker_loop::run(&worker, jobs, sync_always).await?);
            }
            println!(
                "{:<22} {:>14} {:>14} {:>7} {:>14}",
                "fsync", "raw publish/s", "worker jobs/s", "ratio", "idle RSS (MiB)"
            );
            for r in &rows {
                let fsync = if r.sync_always {
                    "sync_interval: always"
                } else {
                    "server default"
                };
                println!(
                    "{fsync:<22} {:>14.0} {:>14.0} {:>7.3} {:>14.1}",
                    r.raw_publish_per_s,
                    r.worker_jobs_per_s,
                    r.ratio,
                    r.idle_worker_rss_kib as f64 / 1024.0
                );
            }
            write(&out, &rows)?;
        }
        Scenario::PythonWorker {
            jobs,
            concurrency,
            worker,
            orchestrator,
            python,
            out,
        } => {
            let python = python.unwrap_or_else(python_worker::default_python);
            let m = python_worker::run(&worker, &orchestrator, &python, jobs, concurrency).await?;
            println!("{}", python_worker::describe(&m));
            write(&out, &m)?;
        }
        Scenario::McpOverhead {
            calls,
            gateway,
            orchestrator,
            worker,
            out,
        } => {
            let binaries = mcp::Binaries {
                gateway: &gateway,
                orchestrator: &orchestrator,
                worker: &worker,
            };
            let m = mcp::run(binaries, calls).await?;
            println!("{}", mcp::describe(&m));
            write(&out, &m)?;
        }
        Scenario::Raw(args) => {
            cli::raw(args).await?;
        }
        Scenario::HttpTrigger(args) => {
            cli::http_trigger(args).await?;
        }
        Scenario::NatsDirect(args) => {
            cli::nats_direct(args).await?;
        }
        Scenario::E2e(args) => {
            cli::e2e(args).await?;
        }
        Scenario::Keyed(args) => {
            cli::keyed(args).await?;
        }
        Scenario::Scale(args) => {
            cli::scale(args).await?;
        }
        Scenario::Ledger(args) => {
            ledger::cli(args).await?;
        }
        Scenario::Suite(args) => {
            let summary = suite::run(args).await?;
            if !summary.failures.is_empty() {
                anyhow::bail!(
                    "{} scenario(s) failed; no figure of theirs is reported",
                    summary.failures.len()
                );
            }
        }
        Scenario::Cards {
            flows,
            concurrency,
            gateway,
            orchestrator,
            cards: cards_binary,
            ai,
            out,
        } => {
            let binaries = cards::Binaries {
                gateway: &gateway,
                orchestrator: &orchestrator,
                cards: &cards_binary,
                ai: &ai,
            };
            let r = cards::run(binaries, flows, concurrency).await?;
            println!(
                "{:>6} {:>5} {:>9} {:>8} {:>10} {:>10} {:>10} {:>14} {:>13}",
                "flows",
                "conc",
                "success",
                "flows/s",
                "p50",
                "p95",
                "p99",
                "onboard p50",
                "execute p50"
            );
            println!(
                "{:>6} {:>5} {:>8.1}% {:>8.1} {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>11.1} ms {:>10.1} ms",
                r.flows,
                r.concurrency,
                r.success_rate * 100.0,
                r.flows_per_s,
                r.flow_p50_ms,
                r.flow_p95_ms,
                r.flow_p99_ms,
                r.onboarding_p50_ms,
                r.execute_p50_ms
            );
            for f in &r.failures {
                println!("failed: {f}");
            }
            write(&out, &[r])?;
        }
    }
    Ok(())
}

fn write(out: &std::path::Path, rows: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(rows)?)?;
    println!("written to {}", out.display());
    Ok(())
}
