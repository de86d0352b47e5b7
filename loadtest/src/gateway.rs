//! `http-trigger`: accepted triggers per second, their latency and the answers that were not
//! 202, through one gateway process, with `C` HTTP/1.1 connections each sending
//! `POST /api/v1/workflows/trigger` back to back, beside two JetStream publish rates of the same
//! server in the same run:
//!
//! - pipelined: one client keeping 512 publishes in flight (the bus's own ceiling);
//! - concurrent: `C` tasks each publishing and awaiting the PubAck before the next (what a
//!   gateway that answers only after the ack can reach at that concurrency).
//!
//! The gateway checks each trigger's token, rate limit and input against the definition (from
//! its mirror of `WF_DEFINITIONS`), publishes the start and waits for the PubAck. No
//! orchestrator runs while the front door is measured: the starts stay on `WF_INBOX`, and their
//! count there is checked against the 202s received. Then an orchestrator and a `test` worker
//! start and drain them, and every instance id a 202 returned must reach `completed` on
//! `WF_EVENTS`, so nothing accepted went missing.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull::OrderedConfig},
};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use switchyard_gateway::Role;
use switchyard_proto::{StartWorkflow, encode_proto, event, header, stream, subject};
use switchyard_runtime::config::{AuthSettings, Secret};
use switchyard_workflow::{Scope, Store, ValidateOptions};
use tokio::net::TcpStream;

use crate::{
    report::{self, percentile},
    worker_loop::{provisioned_server, raw_publish_rate, rss_kib},
    workflows::{Processes, spawn},
};

const TENANT: &str = "bench";
const SECRET: &str = "loadtest-secret-loadtest-secret-0123456789";
const WORKFLOW: &str = r#"name: bench_trigger
version: 1
input:
  topic: { type: string, required: true }
  depth: { type: integer, default: 1 }
steps:
  - { id: a, operation: test.echo, input: { topic: "{{ input.topic }}" } }
"#;

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub connections: usize,
    pub duration_s: f64,
    pub raw_pipelined_publish_per_s: f64,
    pub raw_concurrent_publish_per_s: f64,
    /// 202 answers in the measured window.
    pub accepted: u64,
    /// Answers other than 202 in the measured window, by status code.
    pub errors: BTreeMap<u16, u64>,
    pub triggers_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub ratio_to_concurrent_publish: f64,
    pub ratio_to_pipelined_publish: f64,
    /// Gateway CPU time (user + system) per accepted trigger during the measured run: a cost
    /// that does not depend on what else the machine is doing.
    pub gateway_cpu_us_per_trigger: f64,
    pub gateway_idle_rss_kib: u64,
    pub gateway_peak_rss_kib: u64,
    pub stored_starts: u64,
    /// Instances (warm-up included) that reached `completed` once an orchestrator and a worker
    /// drained the inbox: every one the gateway accepted.
    pub completed: usize,
    /// How long draining them took.
    pub drain_s: f64,
    /// Sorted latency samples (ms), for the chart; not written to JSON.
    #[serde(skip)]
    pub samples: Vec<f64>,
}

/// The engine processes that drain the accepted triggers to check each one completes.
#[derive(Debug, Clone, Copy)]
pub struct Binaries<'a> {
    pub gateway: &'a Path,
    pub orchestrator: &'a Path,
    pub worker: &'a Path,
}

/// Runs the scenario against the gateway binary for `duration` after a short warm-up.
pub async fn run(
    binaries: Binaries<'_>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let (server, _client, js) = provisioned_server(false).await?;
    let sample = start_message(0);
    let raw_pipelined = raw_publish_rate(&js, 50_000, sample.clone()).await?;
    let raw_concurrent = concurrent_publish_rate(&js, connections, 50_000, sample).await?;

    register(&js, TENANT, WORKFLOW).await?;
    let addr = free_address()?;
    let child = spawn(
        binaries.gateway,
        &server,
        &[
            ("SWITCHYARD_HTTP_ADDR", &addr.to_string()),
            ("SWITCHYARD_GATEWAY__AUTH__SECRET", SECRET),
            // Counted as in production, at a rate this benchmark cannot reach.
            ("SWITCHYARD_GATEWAY__RATE_LIMITS__START", "10000000/s"),
        ],
    )?;
    let pid = child.id();
    let gateway_process = Processes(vec![child]);
    wait_ready(addr).await?;
    let idle_rss = rss_kib(pid);

    let settings = AuthSettings {
        secret: Some(Secret::new(SECRET)),
        ..AuthSettings::default()
    };
    let token = switchyard_gateway::auth::issue_token(
        &settings,
        TENANT,
        &[Role::Operator],
        "loadtest",
        Duration::from_secs(3600),
    )?;
    let request = Arc::new(TriggerRequest {
        authorization: format!("Bearer {token}"),
        body: Bytes::from(
            serde_json::json!({
                "workflow_name": "bench_trigger",
                "input": { "topic": "load", "depth": 2 }
            })
            .to_string(),
        ),
    });

    // Warm-up, then the measured run.
    let warm_up = load(addr, &request, connections, Duration::from_secs(2)).await?;
    let before = inbox_count(&js).await?;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let measured = load(addr, &request, connections, duration).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ticks_used = cpu_ticks(pid).saturating_sub(cpu_before);
    sampler.abort();
    let stored = inbox_count(&js).await? - before;
    let accepted = measured.latencies.len() as u64;
    if stored != accepted {
        return Err(report::Error::LostWork {
            scenario: "http-trigger",
            what: "triggers stored",
            accepted: accepted as usize,
            completed: stored as usize,
            detail: "202 answers without their start on WF_INBOX".into(),
        }
        .into());
    }
    drop(gateway_process);

    let drain_started = Instant::now();
    let mut expected: HashSet<String> = warm_up.instance_ids.into_iter().collect();
    expected.extend(measured.instance_ids);
    let completed = drain(&server, &js, binaries, expected).await?;
    let drain_s = drain_started.elapsed().as_secs_f64();

    let mut samples = measured.latencies;
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&samples, p);
    let triggers_per_s = accepted as f64 / elapsed;
    Ok(Measurement {
        connections,
        duration_s: elapsed,
        raw_pipelined_publish_per_s: raw_pipelined,
        raw_concurrent_publish_per_s: raw_concurrent,
        accepted,
        errors: measured.errors,
        triggers_per_s,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: samples.last().copied().unwrap_or(0.0),
        ratio_to_concurrent_publish: triggers_per_s / raw_concurrent,
        ratio_to_pipelined_publish: triggers_per_s / raw_pipelined,
        gateway_cpu_us_per_trigger: cpu_ticks_used as f64 * 1e6 / USER_HZ / accepted as f64,
        gateway_idle_rss_kib: idle_rss,
        gateway_peak_rss_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
        stored_starts: stored,
        completed,
        drain_s,
        samples,
    })
}

/// Registers `yaml` for `tenant` straight into the bucket the gateway mirrors.
pub(crate) async fn register(
    js: &jetstream::Context,
    tenant: &str,
    yaml: &str,
) -> anyhow::Result<()> {
    let kv = js.get_key_value(stream::WF_DEFINITIONS_BUCKET).await?;
    Store::new(kv, ValidateOptions::default())
        .put(&Scope::Tenant(tenant.into()), yaml)
        .await
        .map_err(|e| anyhow::anyhow!("registering the benchmark workflow: {e}"))?;
    Ok(())
}

/// A loopback address with a port free at the moment, for a gateway to serve on.
pub(crate) fn free_address() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// Starts an orchestrator and a `test` worker and waits until every `expected` instance has
/// its `completed` event; returns how many did.
async fn drain(
    server: &switchyard_test_support::NatsServer,
    js: &jetstream::Context,
    binaries: Binaries<'_>,
    mut expected: HashSet<String>,
) -> anyhow::Result<usize> {
    let total = expected.len();
    let events = js.get_stream(stream::WF_EVENTS).await?;
    let consumer = events
        .create_consumer(OrderedConfig {
            filter_subjects: vec![
                subject::event(TENANT, "*", event::COMPLETED),
                subject::event(TENANT, "*", event::FAILED),
            ],
            ..OrderedConfig::default()
        })
        .await?;
    let mut done_events = consumer.messages().await?;
    let _engine = Processes(vec![
        spawn(
            binaries.orchestrator,
            server,
            &[("SWITCHYARD_ORCHESTRATOR__CONCURRENCY", "256")],
        )?,
        spawn(
            binaries.worker,
            server,
            &[("SWITCHYARD_WORKER__CONCURRENCY", "256")],
        )?,
    ]);
    let lost = |left: usize, detail: String| report::Error::LostWork {
        scenario: "http-trigger",
        what: "accepted workflows",
        accepted: total,
        completed: total - left,
        detail,
    };
    while !expected.is_empty() {
        let msg = match tokio::time::timeout(Duration::from_secs(60), done_events.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => bail!("reading {}: {e}", stream::WF_EVENTS),
            _ => {
                return Err(lost(expected.len(), "none completed for 60 s".into()).into());
            }
        };
        let Some((_, instance, ty)) = subject::parse_event(&msg.subject) else {
            continue;
        };
        if ty == event::FAILED && expected.contains(instance) {
            return Err(lost(
                expected.len(),
                format!(
                    "instance {instance} failed: {}",
                    String::from_utf8_lossy(&msg.payload)
                ),
            )
            .into());
        }
        expected.remove(instance);
    }
    Ok(total)
}

/// The unit of the CPU times in `/proc/<pid>/stat` on Linux.
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of a process so far, in `USER_HZ` ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

struct TriggerRequest {
    authorization: String,
    body: Bytes,
}

fn start_message(i: usize) -> Vec<u8> {
    encode_proto(&StartWorkflow {
        tenant: TENANT.into(),
        workflow: "bench_trigger".into(),
        instance_id: format!("raw-{i}"),
        input: br#"{"topic":"load","depth":2}"#.to_vec(),
        ..StartWorkflow::default()
    })
}

/// `tasks` publishers, each awaiting its PubAck before the next publish.
async fn concurrent_publish_rate(
    js: &jetstream::Context,
    tasks: usize,
    count: usize,
    sample: Vec<u8>,
) -> anyhow::Result<f64> {
    js.create_stream(jetstream::stream::Config {
        name: "BENCH_CONCURRENT".into(),
        subjects: vec!["bench.concurrent.>".into()],
        ..Default::default()
    })
    .await?;
    let per_task = count / tasks;
    let sample = Bytes::from(sample);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let js = js.clone();
        let sample = sample.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let mut headers = HeaderMap::new();
                headers.insert(header::MSG_ID, format!("conc-{t}-{i}").as_str());
                js.publish_with_headers(
                    format!("bench.concurrent.{}", i % 16),
                    headers,
                    sample.clone(),
                )
                .await?
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let rate = (per_task * tasks) as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("BENCH_CONCURRENT").await?;
    Ok(rate)
}

async fn inbox_count(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut inbox = js.get_stream(stream::WF_INBOX).await?;
    let info = inbox.info().await?;
    Ok(info.state.messages)
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = Request::get("/ready")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))?;
            if let Ok(r) = sender.send_request(req).await
                && r.status() == StatusCode::OK
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway never became ready")
}

/// What the connections of one load got back.
#[derive(Debug, Default)]
struct Load {
    /// Latency of every 202, in milliseconds.
    latencies: Vec<f64>,
    /// The instance id of every 202.
    instance_ids: Vec<String>,
    /// Other answers, by status code.
    errors: BTreeMap<u16, u64>,
}

/// `connections` keep-alive connections sending triggers back to back for `duration`. A
/// connection that breaks stops the run; answers other than 202 are counted.
async fn load(
    addr: SocketAddr,
    request: &Arc<TriggerRequest>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let deadline = Instant::now() + duration;
    let mut handles = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        handles.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let host = addr.to_string();
            let mut got = Load {
                latencies: Vec::with_capacity(64 * 1024),
                instance_ids: Vec::with_capacity(64 * 1024),
                ..Load::default()
            };
            while Instant::now() < deadline {
                let req = Request::post("/api/v1/workflows/trigger")
                    .header("host", host.as_str())
                    .header("authorization", request.authorization.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(request.body.clone()))?;
                let sent = Instant::now();
                let response = sender.send_request(req).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if status != StatusCode::ACCEPTED {
                    *got.errors.entry(status.as_u16()).or_default() += 1;
                    continue;
                }
                got.latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                let accepted: Accepted = serde_json::from_slice(&body)?;
                got.instance_ids.push(accepted.instance_id);
            }
            anyhow::Ok(got)
        }));
    }
    let mut all = Load::default();
    for h in handles {
        let got = h.await??;
        all.latencies.extend(got.latencies);
        all.instance_ids.extend(got.instance_ids);
        for (status, n) in got.errors {
            *all.errors.entry(status).or_default() += n;
        }
    }
    Ok(all)
}

/// The part of a 202 body the benchmark reads.
#[derive(Deserialize)]
struct Accepted {
    instance_id: String,
}
