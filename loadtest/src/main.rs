//! `switchyard-loadtest` — benchmarks; see `--help`. Results go to `loadtest/results/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_loadtest::{cards, gateway, worker_loop, workflows};

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
    /// The engine end to end: 1-step workflows/s at full speed and 3-step p50/p99 latency at
    /// 100 workflows/s, one orchestrator and one test worker process, with the server's default
    /// fsync and with `sync_interval: always`.
    Workflows {
        /// 1-step workflows for the throughput run.
        #[arg(long, default_value_t = 20_000)]
        workflows: usize,
        #[arg(long, default_value = "target/release/switchyard-orchestrator")]
        orchestrator: PathBuf,
        #[arg(long, default_value = "target/release/switchyard-test-worker")]
        worker: PathBuf,
        #[arg(long, default_value = "loadtest/results/workflows.json")]
        out: PathBuf,
    },
    /// The gateway's front door: accepted `POST /workflows/trigger` per second and their
    /// p50/p99 latency over keep-alive connections against one gateway process, beside the
    /// JetStream publish rate (pipelined, and at the same concurrency) of the same server.
    Gateway {
        /// Concurrent connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds of measured load, after a 2 s warm-up.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "target/release/switchyard-gateway")]
        gateway: PathBuf,
        #[arg(long, default_value = "loadtest/results/gateway.json")]
        out: PathBuf,
    },
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
        Scenario::Workflows {
            workflows: n,
            orchestrator,
            worker,
            out,
        } => {
            let mut rows = Vec::new();
            for sync_always in [false, true] {
                rows.push(workflows::run(&orchestrator, &worker, n, sync_always).await?);
            }
            println!(
                "{:<22} {:>14} {:>16} {:>10} {:>12} {:>12}",
                "fsync", "raw publish/s", "1-step wf/s", "3-step/s", "3-step p50", "3-step p99"
            );
            for r in &rows {
                let fsync = if r.sync_always {
                    "sync_interval: always"
                } else {
                    "server default"
                };
                println!(
                    "{fsync:<22} {:>14.0} {:>16.0} {:>10.0} {:>9.2} ms {:>9.2} ms",
                    r.raw_publish_per_s,
                    r.one_step_workflows_per_s,
                    r.three_step_rate_per_s,
                    r.three_step_p50_ms,
                    r.three_step_p99_ms
                );
            }
            write(&out, &rows)?;
        }
        Scenario::Gateway {
            connections,
            seconds,
            gateway: binary,
            out,
        } => {
            let r = gateway::run(
                &binary,
                connections,
                std::time::Duration::from_secs(seconds),
            )
            .await?;
            println!(
                "{:>11} {:>14} {:>16} {:>11} {:>9} {:>9} {:>12} {:>13} {:>15}",
                "connections",
                "raw pipelined",
                "raw at same conc",
                "triggers/s",
                "p50",
                "p99",
                "CPU/trigger",
                "idle RSS MiB",
                "peak RSS MiB"
            );
            println!(
                "{:>11} {:>14.0} {:>16.0} {:>11.0} {:>6.2} ms {:>6.2} ms {:>9.1} µs {:>13.1} {:>15.1}",
                r.connections,
                r.raw_pipelined_publish_per_s,
                r.raw_concurrent_publish_per_s,
                r.triggers_per_s,
                r.p50_ms,
                r.p99_ms,
                r.gateway_cpu_us_per_trigger,
                r.gateway_idle_rss_kib as f64 / 1024.0,
                r.gateway_peak_rss_kib as f64 / 1024.0
            );
            write(&out, &[r])?;
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
