//! `python-worker`: no-op jobs through one replica of a worker written on the Python SDK
//! (`loadtest/python/noop_worker.py`, kind `pybench`, JSON jobs) and through one Rust `test`
//! replica (protobuf jobs), on the same server in the same run, and each one's resident
//! memory when idle.
//!
//! Each replica drains jobs published before it started, so the figure is its own rate with
//! its results published, not the publisher's. The Python kind declares itself to a real
//! orchestrator first, which creates its stream; that replica is stopped before the jobs are
//! published and a fresh one drains them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use serde::Serialize;
use switchyard_proto::{Job, encode_json, encode_proto, stream, subject};
use switchyard_test_support::{NatsServer, Role};

use crate::{
    worker_loop::{drain, job, pipelined, provisioned_server},
    workflows::spawn,
};

/// The Python worker kind.
const KIND: &str = "pybench";

/// One run's figures.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub jobs: usize,
    pub rust_jobs_per_s: f64,
    pub python_jobs_per_s: f64,
    /// Python's rate over Rust's.
    pub ratio: f64,
    pub rust_idle_rss_kib: u64,
    pub python_idle_rss_kib: u64,
    pub python_concurrency: usize,
}

/// The interpreter with the SDK installed: `SWITCHYARD_PYTHON`, else the project's venv.
pub fn default_python() -> PathBuf {
    std::env::var_os("SWITCHYARD_PYTHON").map_or_else(
        || PathBuf::from(".switchyard/venv/bin/python3"),
        PathBuf::from,
    )
}

/// Runs the scenario on a fresh server with the default fsync.
pub async fn run(
    worker_binary: &Path,
    orchestrator_binary: &Path,
    python: &Path,
    jobs: usize,
    python_concurrency: usize,
) -> anyhow::Result<Measurement> {
    let (server, client, js) = provisioned_server(false).await?;

    // The Rust `test` replica.
    pipelined(&js, jobs, |i| {
        (
            subject::job("test.echo"),
            format!("rust-{i}"),
            encode_proto(&job(i)),
        )
    })
    .await?;
    let results = client.subscribe(subject::result("bench")).await?;
    let child = spawn(
        worker_binary,
        &server,
        &[("SWITCHYARD_WORKER__CONCURRENCY", "256")],
    )?;
    let (rust, rust_rss) = drain(results, child, jobs, "python-worker").await?;

    // The Python kind declares itself (which creates its stream), then stops.
    let mut orchestrator = spawn(orchestrator_binary, &server, &[])?;
    let first = python_worker(python, &server, python_concurrency)?;
    let declared = async {
        for _ in 0..600 {
            if js.get_stream(stream::jobs(KIND)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the Python worker did not declare its kind within 60 s")
    }
    .await;
    stop(first);
    declared?;

    pipelined(&js, jobs, |i| {
        let job = Job {
            operation: format!("{KIND}.noop"),
            ..job(i)
        };
        (
            subject::job(&job.operation),
            format!("python-{i}"),
            encode_json(&job).unwrap_or_default(),
        )
    })
    .await?;
    let results = client.subscribe(subject::result("bench")).await?;
    let child = python_worker(python, &server, python_concurrency)?;
    let outcome = drain(results, child, jobs, "python-worker").await;
    let _ = orchestrator.kill();
    let _ = orchestrator.wait();
    let (python_rate, python_rss) = outcome?;
    Ok(Measurement {
        jobs,
        rust_jobs_per_s: rust,
        python_jobs_per_s: python_rate,
        ratio: python_rate / rust,
        rust_idle_rss_kib: rust_rss,
        python_idle_rss_kib: python_rss,
        python_concurrency,
    })
}

/// The figures as two lines of text.
pub fn describe(m: &Measurement) -> String {
    format!(
        "{} no-op jobs: Python SDK replica {:.0}/s ({} at once), Rust test replica {:.0}/s, ratio {:.3}\n\
         idle RSS: Python {:.1} MiB, Rust {:.1} MiB",
        m.jobs,
        m.python_jobs_per_s,
        m.python_concurrency,
        m.rust_jobs_per_s,
        m.ratio,
        m.python_idle_rss_kib as f64 / 1024.0,
        m.rust_idle_rss_kib as f64 / 1024.0
    )
}

fn python_worker(
    python: &Path,
    server: &NatsServer,
    concurrency: usize,
) -> anyhow::Result<std::process::Child> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/noop_worker.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--nats", &server.url()])
        .args(["--concurrency", &concurrency.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(creds) = server.credentials(&Role::Worker(KIND.into())) {
        cmd.arg("--creds").arg(creds);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} {} (the SDK must be installed: pip install ./sdk/python)",
            python.display(),
            script.display()
        )
    })
}

/// SIGTERM, then wait for the exit.
fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
