//! `workflows`: the engine end to end — starts published onto the bus, one orchestrator process
//! and one `test` worker process, completion seen on `WF_EVENTS` — beside the raw JetStream
//! publish rate of the same server in the same run.
//!
//! - throughput: as many 1-step workflows as the engine completes per second when starts are
//!   published as fast as the server takes them (the highest sustained rate);
//! - latency: 3-step sequential workflows started at a fixed 100/s, start publish to
//!   `completed` event, p50 and p99.

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use futures::StreamExt as _;
use serde::Serialize;
use switchyard_proto::{StartWorkflow, encode_proto, header, subject};

use crate::worker_loop::{percentile, pipelined, provisioned_server, raw_publish_rate, rss_kib};

const TENANT: &str = "bench";

const ONE_STEP: &str =
    "name: one_step\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: { n: 1 } }\n";
const THREE_STEPS: &str = r#"name: three_steps
version: 1
steps:
  - { id: a, operation: test.echo, input: { n: 1 } }
  - { id: b, operation: test.echo, needs: [a], input: { n: "{{ steps.a.output.n + 1 }}" } }
  - { id: c, operation: test.echo, needs: [b], input: { n: "{{ steps.b.output.n + 1 }}" } }
output: "{{ steps.c.output.n }}"
"#;

/// One run's figures.
#[derive(Debug, Serialize)]
pub struct Measurement {
    pub sync_always: bool,
    pub raw_publish_per_s: f64,
    pub workflows: usize,
    pub one_step_workflows_per_s: f64,
    pub three_step_rate_per_s: f64,
    pub three_step_count: usize,
    pub three_step_p50_ms: f64,
    pub three_step_p99_ms: f64,
    pub three_step_max_ms: f64,
    pub orchestrator_rss_kib: u64,
}

/// Child processes, stopped with SIGTERM (and waited for) when dropped.
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

/// Starts a Switchyard binary with a clean environment: `url` as its NATS, warnings only,
/// and `extra` settings.
pub(crate) fn spawn(binary: &Path, url: &str, extra: &[(&str, &str)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("SWITCHYARD_NATS_URL", url)
        .env("SWITCHYARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

fn start(workflow: &str, i: usize) -> (String, String, Vec<u8>) {
    let instance = format!("{workflow}-{i}");
    let msg = StartWorkflow {
        tenant: TENANT.into(),
        workflow: workflow.into(),
        instance_id: instance.clone(),
        input: b"{}".to_vec(),
        ..StartWorkflow::default()
    };
    (
        subject::start(TENANT, workflow),
        instance,
        encode_proto(&msg),
    )
}

async fn register(client: &async_nats::Client, source: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "tenant": TENANT, "source": source });
    let subject_name = switchyard_orchestrator::service::request_subject(
        switchyard_orchestrator::service::endpoint::DEFINITIONS_PUT,
    );
    for _ in 0..200 {
        match client
            .request(subject_name.clone(), serde_json::to_vec(&body)?.into())
            .await
        {
            Ok(reply) => {
                let v: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                if let Some(e) = v.get("error") {
                    bail!("registration refused: {e}");
                }
                return Ok(());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("the orchestrator never answered")
}

/// Runs the scenario on a fresh server with the given fsync setting.
pub async fn run(
    orchestrator: &Path,
    worker: &Path,
    workflows: usize,
    sync_always: bool,
) -> anyhow::Result<Measurement> {
    let (server, client, js) = provisioned_server(sync_always).await?;

    let raw = raw_publish_rate(&js, workflows, start("one_step", 0).2).await?;

    let url = server.url();
    let orchestrator_child = spawn(
        orchestrator,
        &url,
        &[("SWITCHYARD_ORCHESTRATOR__CONCURRENCY", "256")],
    )?;
    let orchestrator_pid = orchestrator_child.id();
    let worker_child = spawn(worker, &url, &[("SWITCHYARD_WORKER__CONCURRENCY", "256")])?;
    let _processes = Processes(vec![orchestrator_child, worker_child]);
    register(&client, ONE_STEP).await?;
    register(&client, THREE_STEPS).await?;

    // Throughput: publish every start as fast as the server acks them and time completions.
    let mut completed = client
        .subscribe(format!("wf.events.{TENANT}.*.completed"))
        .await?;
    client.flush().await?;
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { pipelined(&js, workflows, |i| start("one_step", i)).await })
    };
    let mut seen = 0;
    while seen < workflows {
        match tokio::time::timeout(Duration::from_secs(60), completed.next()).await {
            Ok(Some(_)) => seen += 1,
            _ => bail!("lost work: {seen} of {workflows} one-step workflows completed"),
        }
    }
    let throughput = workflows as f64 / started.elapsed().as_secs_f64();
    publisher.await??;

    // Latency at a fixed rate: 3-step workflows, one every 10 ms.
    let count = (workflows / 10).clamp(200, 2000);
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(count);
    let mut latencies = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    let rate_started = Instant::now();
    while latencies.len() < count {
        tokio::select! {
            _ = tick.tick(), if next < count => {
                let (subject_name, id, payload) = start("three_steps", next);
                let mut headers = HeaderMap::new();
                headers.insert(header::MSG_ID, id.as_str());
                sent.insert(id, Instant::now());
                // Fire and forget the PubAck: the measured time starts at the publish.
                let _ack = js.publish_with_headers(subject_name, headers, payload.into()).await?;
                next += 1;
            }
            msg = tokio::time::timeout(Duration::from_secs(30), completed.next()) => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    _ => bail!("lost work: {} of {count} three-step workflows completed", latencies.len()),
                };
                let instance = subject::parse_event(&msg.subject).map(|(_, i, _)| i.to_owned()).unwrap_or_default();
                if let Some(at) = sent.remove(&instance) {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let rate = count as f64 / rate_started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&latencies, p);
    Ok(Measurement {
        sync_always,
        raw_publish_per_s: raw,
        workflows,
        one_step_workflows_per_s: throughput,
        three_step_rate_per_s: rate,
        three_step_count: count,
        three_step_p50_ms: pct(0.50),
        three_step_p99_ms: pct(0.99),
        three_step_max_ms: latencies.last().copied().unwrap_or(0.0),
        orchestrator_rss_kib: rss_kib(orchestrator_pid),
    })
}
