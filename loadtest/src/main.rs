//! `switchyard-loadtest` — benchmarks; see `--help`. Results go to `loadtest/results/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchyard_loadtest::worker_loop;

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
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&out, serde_json::to_vec_pretty(&rows)?)?;
            println!("written to {}", out.display());
        }
    }
    Ok(())
}
