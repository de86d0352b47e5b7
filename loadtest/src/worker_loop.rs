//! `worker-loop`: no-op jobs through one worker replica, divided by the raw pipelined
//! JetStream publish rate measured on the same server in the same run.

use std::{
    collections::VecDeque,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::{HeaderMap, jetstream};
use futures::StreamExt as _;
use serde::Serialize;
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_proto::{Job, encode_proto, header, subject};
use switchyard_test_support::{NatsOptions, NatsServer};

/// Publishes kept in flight while pipelining.
const WINDOW: usize = 512;

/// One run's figures.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub sync_always: bool,
    pub raw_publish_per_s: f64,
    pub jobs: usize,
    pub worker_jobs_per_s: f64,
    pub ratio: f64,
    pub idle_worker_rss_kib: u64,
}

/// Publishes `payloads` to `subject_of(i)` keeping [`WINDOW`] PubAcks outstanding; returns
/// the rate in messages per second.
pub(crate) async fn pipelined(
    js: &jetstream::Context,
    count: usize,
    mut message: impl FnMut(usize) -> (String, String, Vec<u8>),
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    for i in 0..count {
        let (subject_name, msg_id, payload) = message(i);
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id.as_str());
        pending.push_back(
            js.publish_with_headers(subject_name, headers, payload.into())
                .await?,
        );
        if pending.len() >= WINDOW
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
        }
    }
    for ack in pending {
        ack.await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

pub(crate) use crate::report::percentile;

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// A fresh nats-server with the given fsync setting and every Switchyard object applied.
pub(crate) async fn provisioned_server(
    sync_always: bool,
) -> anyhow::Result<(NatsServer, async_nats::Client, jetstream::Context)> {
    let server = NatsServer::start_with(NatsOptions {
        sync_always,
        ..NatsOptions::default()
    })
    .await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    apply(&js, &BusConfig::default(), ApplyOptions::default()).await?;
    Ok((server, client, js))
}

/// The floor: pipelined publishes of `sample` to a plain stream on the same server.
pub(crate) async fn raw_publish_rate(
    js: &jetstream::Context,
    count: usize,
    sample: Vec<u8>,
) -> anyhow::Result<f64> {
    js.create_stream(jetstream::stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw.>".into()],
        ..Default::default()
    })
    .await?;
    let raw = pipelined(js, count, |i| {
        (
            format!("bench.raw.{}", i % 16),
            format!("raw-{i}"),
            sample.clone(),
        )
    })
    .await?;
    js.delete_stream("BENCH_RAW").await?;
    Ok(raw)
}

/// Runs the scenario on a fresh server with the given fsync setting.
pub async fn run(
    worker_binary: &Path,
    jobs: usize,
    sync_always: bool,
) -> anyhow::Result<Measurement> {
    let (server, client, js) = provisioned_server(sync_always).await?;
    let raw = raw_publish_rate(&js, jobs, encode_proto(&job(0))).await?;

    // Jobs first, then the worker: the rate is its drain rate, with results published.
    pipelined(&js, jobs, |i| {
        (
            subject::job("test.echo"),
            format!("bench-{i}"),
            encode_proto(&job(i)),
        )
    })
    .await?;
    let results = client.subscribe(subject::result("bench")).await?;
    let child = Command::new(worker_binary)
        .env_clear()
        .envs(server.process_env())
        .env("SWITCHYARD_WORKER__CONCURRENCY", "256")
        .env("SWITCHYARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", worker_binary.display()))?;
    let (rate, rss) = drain(results, child, jobs, "worker-loop").await?;
    Ok(Measurement {
        sync_always,
        raw_publish_per_s: raw,
        jobs,
        worker_jobs_per_s: rate,
        ratio: rate / raw,
        idle_worker_rss_kib: rss,
    })
}

/// Counts the results of `jobs` jobs already waiting for `child`, a worker replica just
/// started: its drain rate from the first result to the last, then its resident memory
/// after two idle seconds. Stops it with SIGTERM.
pub(crate) async fn drain(
    mut results: async_nats::Subscriber,
    mut child: std::process::Child,
    jobs: usize,
    scenario: &'static str,
) -> anyhow::Result<(f64, u64)> {
    let outcome = async {
        let first = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .context("no result within 30s")?;
        anyhow::ensure!(first.is_some(), "result subscription closed");
        let started = Instant::now();
        let mut seen = 1;
        while seen < jobs {
            match tokio::time::timeout(Duration::from_secs(30), results.next()).await {
                Ok(Some(_)) => seen += 1,
                _ => {
                    return Err(crate::report::Error::LostWork {
                        scenario,
                        what: "jobs",
                        accepted: jobs,
                        completed: seen,
                        detail: "no result for 30 s".into(),
                    }
                    .into());
                }
            }
        }
        let rate = (jobs - 1) as f64 / started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok((rate, rss_kib(child.id())))
    }
    .await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    outcome
}

pub(crate) fn job(i: usize) -> Job {
    Job {
        job_id: format!("bench-{i}"),
        tenant: "bench".into(),
        instance_id: "bench".into(),
        step_id: format!("s{i}"),
        operation: "test.echo".into(),
        input: br#"{"n":1}"#.to_vec(),
        ..Job::default()
    }
}
