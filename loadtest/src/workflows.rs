//! The engine end to end: start messages published straight to `wf.start.<tenant>.<workflow>`,
//! one orchestrator process and `replicas` `test` worker processes, completion read from
//! `WF_EVENTS` (an ordered consumer, so no event is missed however slow the reader).
//!
//! Scenarios built on it:
//!
//! - `nats-direct`: N 1-step workflows published as fast as the server acks them; accepted
//!   starts/s and completed workflows/s beside the raw publish rate of the same server;
//! - `e2e`: N workflows of a chosen chain (1 or 3 `test.echo` steps) at a fixed start rate (or
//!   as fast as possible), start-publish to `completed` latency and sustained throughput;
//! - `scale`: 1-step workflows of `test.sleep` (a fixed job latency) through 1, 2 and 4 worker
//!   replicas with a fixed per-replica concurrency.
//!
//! Every run waits until every accepted start has its `completed` event and refuses to report
//! (a [`report::Error::LostWork`]) when one fails or none completes for a minute.

use std::{
    collections::VecDeque,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
    },
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use switchyard_proto::{StartWorkflow, encode_proto, event, header, stream, subject};
use switchyard_test_support::NatsServer;

use crate::{
    report::{self, Latency},
    worker_loop::{provisioned_server, raw_publish_rate, rss_kib},
};

pub(crate) const TENANT: &str = "bench";

/// Publishes kept waiting for their PubAck at once.
const WINDOW: usize = 512;

/// A workflow the engine scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chain {
    /// One `test.echo` step.
    OneStep,
    /// Three sequential `test.echo` steps, each feeding the next.
    ThreeSteps,
    /// One `test.sleep` step of this many milliseconds.
    Sleep(u64),
    /// One `test.echo` step under `concurrency: {key, limit}`, start `i` with key `i % keys`.
    Keyed { keys: u32, limit: u32 },
}

impl Chain {
    /// The chain of `steps` `test.echo` steps (1 or 3).
    pub fn of_steps(steps: u8) -> anyhow::Result<Chain> {
        match steps {
            1 => Ok(Chain::OneStep),
            3 => Ok(Chain::ThreeSteps),
            n => bail!("--steps: {n} is not offered; expected 1 or 3"),
        }
    }

    pub fn name(self) -> String {
        match self {
            Chain::OneStep => "one_step".into(),
            Chain::ThreeSteps => "three_steps".into(),
            Chain::Sleep(ms) => format!("sleep_{ms}ms"),
            Chain::Keyed { keys, limit } => format!("keyed_{keys}_{limit}"),
        }
    }

    pub fn steps(self) -> usize {
        match self {
            Chain::ThreeSteps => 3,
            Chain::OneStep | Chain::Sleep(_) | Chain::Keyed { .. } => 1,
        }
    }

    /// A short label for tables and charts.
    pub fn label(self) -> String {
        match self {
            Chain::OneStep => "1-step".into(),
            Chain::ThreeSteps => "3-step".into(),
            Chain::Sleep(ms) => format!("1-step {ms} ms sleep"),
            Chain::Keyed { keys, limit } => {
                format!("1-step, {keys} concurrency key(s), limit {limit}")
            }
        }
    }

    /// [`Chain::label`] of a workflow name, or the name itself.
    pub fn label_of(workflow: &str) -> String {
        [Chain::OneStep, Chain::ThreeSteps]
            .into_iter()
            .find(|c| c.name() == workflow)
            .map_or_else(|| workflow.to_owned(), Chain::label)
    }

    fn definition(self) -> String {
        match self {
            Chain::OneStep => {
                "name: one_step\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: { n: 1 } }\n".into()
            }
            Chain::ThreeSteps => r#"name: three_steps
version: 1
steps:
  - { id: a, operation: test.echo, input: { n: 1 } }
  - { id: b, operation: test.echo, needs: [a], input: { n: "{{ steps.a.output.n + 1 }}" } }
  - { id: c, operation: test.echo, needs: [b], input: { n: "{{ steps.b.output.n + 1 }}" } }
output: "{{ steps.c.output.n }}"
"#
            .into(),
            Chain::Sleep(ms) => format!(
                "name: sleep_{ms}ms\nversion: 1\nsteps:\n  - {{ id: a, operation: test.sleep, input: {{ ms: {ms} }} }}\n"
            ),
            Chain::Keyed { keys, limit } => format!(
                "name: keyed_{keys}_{limit}\nversion: 1\ninput:\n  k: {{ type: integer, required: true }}\nconcurrency: {{ key: \"{{{{ input.k }}}}\", limit: {limit} }}\nsteps:\n  - {{ id: a, operation: test.echo, input: {{ n: 1 }} }}\n"
            ),
        }
    }

    /// The input of start `i`.
    fn input(self, i: usize) -> Vec<u8> {
        match self {
            Chain::Keyed { keys, .. } => {
                format!("{{\"k\": {}}}", i % keys.max(1) as usize).into_bytes()
            }
            _ => b"{}".to_vec(),
        }
    }
}

/// The binaries the engine runs.
#[derive(Debug, Clone, Copy)]
pub struct Binaries<'a> {
    pub orchestrator: &'a Path,
    pub worker: &'a Path,
}

/// How the engine is set up for a session.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// `jetstream { sync_interval: always }` on the server.
    pub sync_always: bool,
    /// `test` worker processes.
    pub replicas: usize,
    /// `worker.concurrency` of each replica: jobs one replica runs at once.
    pub worker_concurrency: usize,
    /// `orchestrator.concurrency`.
    pub orchestrator_concurrency: usize,
    /// How long a run may go without a single completion before it counts as lost work.
    pub stall_timeout: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sync_always: false,
            replicas: 1,
            worker_concurrency: 256,
            orchestrator_concurrency: 256,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// One engine run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub workflow: String,
    pub steps: usize,
    pub sync_always: bool,
    pub replicas: usize,
    pub worker_concurrency: usize,
    pub workflows: usize,
    /// The start rate asked for; `None` = as fast as the server acks them.
    pub target_rate_per_s: Option<f64>,
    /// Starts PubAck'd by the server; each of them completed.
    pub accepted: usize,
    pub completed: usize,
    /// Accepted starts per second, first publish to last PubAck.
    pub accepted_per_s: f64,
    /// Completed workflows per second, first publish to last `completed` event.
    pub completed_per_s: f64,
    /// Start publish to `completed` event, as seen by the load generator.
    pub latency: Latency,
    pub orchestrator_rss_kib: u64,
    /// The sorted latency samples (ms), for charts; not written to JSON.
    #[serde(skip)]
    pub samples: Vec<f64>,
}

/// A nats-server with the Switchyard objects, one orchestrator and the `test` worker replicas.
/// Dropping it stops the processes, then the server.
#[derive(Debug)]
pub struct Engine {
    processes: Processes,
    client: async_nats::Client,
    js: jetstream::Context,
    orchestrator_pid: u32,
    setup: Setup,
    _server: NatsServer,
}

impl Engine {
    /// Starts a fresh server and the processes, registers `chains` and waits until every
    /// replica answers a `$SRV.PING`.
    pub async fn start(
        binaries: Binaries<'_>,
        setup: Setup,
        chains: &[Chain],
    ) -> anyhow::Result<Engine> {
        let (server, client, js) = provisioned_server(setup.sync_always).await?;
        let orchestrator_concurrency = setup.orchestrator_concurrency.to_string();
        let orchestrator = spawn(
            binaries.orchestrator,
            &server,
            &[(
                "SWITCHYARD_ORCHESTRATOR__CONCURRENCY",
                &orchestrator_concurrency,
            )],
        )?;
        let orchestrator_pid = orchestrator.id();
        let mut processes = Processes(vec![orchestrator]);
        let concurrency = setup.worker_concurrency.to_string();
        for _ in 0..setup.replicas {
            processes.0.push(spawn(
                binaries.worker,
                &server,
                &[("SWITCHYARD_WORKER__CONCURRENCY", &concurrency)],
            )?);
        }
        let engine = Engine {
            processes,
            client,
            js,
            orchestrator_pid,
            setup,
            _server: server,
        };
        for chain in chains {
            register(&engine.client, &chain.definition()).await?;
        }
        engine.wait_for_replicas().await?;
        Ok(engine)
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// The raw pipelined JetStream publish rate of this server, with a start message's size.
    pub async fn raw_publish_rate(&self, count: usize) -> anyhow::Result<f64> {
        raw_publish_rate(
            &self.js,
            count,
            start_message("raw", "raw-0", b"{}".to_vec()),
        )
        .await
    }

    async fn wait_for_replicas(&self) -> anyhow::Result<()> {
        // The NATS micro-service API: every replica of `switchyard-test` answers its PING.
        let ping = "$SRV.PING.switchyard-test".to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let inbox = self.client.new_inbox();
            let mut replies = self.client.subscribe(inbox.clone()).await?;
            self.client
                .publish_with_reply(ping.clone(), inbox, "".into())
                .await?;
            let mut answered = 0;
            let window = tokio::time::sleep(Duration::from_millis(300));
            tokio::pin!(window);
            loop {
                tokio::select! {
                    _ = &mut window => break,
                    r = replies.next() => match r { Some(_) => answered += 1, None => break },
                }
            }
            if answered >= self.setup.replicas {
                return Ok(());
            }
            if let Some(exited) = self.processes.exited() {
                bail!("{exited} exited during start-up");
            }
            if Instant::now() > deadline {
                bail!(
                    "{answered} of {} test worker replicas answered $SRV.PING within 60 s",
                    self.setup.replicas
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `workflows` instances of `chain` (registered at [`Engine::start`]) at `rate` per
    /// second (`None`: as fast as the server acks them) and waits for every one to complete.
    pub async fn run(
        &self,
        scenario: &'static str,
        chain: Chain,
        workflows: usize,
        rate: Option<f64>,
    ) -> anyhow::Result<Run> {
        anyhow::ensure!(workflows > 0, "--workflows must be at least 1");
        let workflow = chain.name();
        let events = self.js.get_stream(stream::WF_EVENTS).await?;
        let consumer = events
            .create_consumer(OrderedConfig {
                filter_subjects: vec![
                    subject::event(TENANT, "*", event::COMPLETED),
                    subject::event(TENANT, "*", event::FAILED),
                ],
                deliver_policy: DeliverPolicy::New,
                ..OrderedConfig::default()
            })
            .await?;
        let mut done_events = consumer.messages().await?;

        // Instance ids unique to this run, ending in the index.
        let prefix = format!("{workflow}-{}", switchyard_proto::now_ms());
        let origin = Instant::now();
        let sent: Arc<Vec<AtomicU64>> =
            Arc::new((0..workflows).map(|_| AtomicU64::new(0)).collect());
        let publisher = tokio::spawn(publish_starts(
            self.js.clone(),
            chain,
            workflow.clone(),
            prefix.clone(),
            workflows,
            rate,
            origin,
            sent.clone(),
        ));

        let mut done = vec![false; workflows];
        let mut completed = 0;
        let mut samples = Vec::with_capacity(workflows);
        let mut last = origin;
        let lost = |completed: usize, detail: String| report::Error::LostWork {
            scenario,
            what: "workflows",
            accepted: workflows,
            completed,
            detail,
        };
        while completed < workflows {
            let msg = match tokio::time::timeout(self.setup.stall_timeout, done_events.next()).await
            {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(e))) => bail!("reading {}: {e}", stream::WF_EVENTS),
                Ok(None) => bail!("the {} consumer ended", stream::WF_EVENTS),
                Err(_) => {
                    if publisher.is_finished() {
                        publisher.await??;
                    }
                    return Err(lost(
                        completed,
                        format!("none completed for {:?}", self.setup.stall_timeout),
                    )
                    .into());
                }
            };
            let Some((_, instance, ty)) = subject::parse_event(&msg.subject) else {
                continue;
            };
            let Some(i) = instance
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i < workflows)
            else {
                continue;
            };
            if ty == event::FAILED {
                return Err(lost(
                    completed,
                    format!(
                        "instance {instance} failed: {}",
                        String::from_utf8_lossy(&msg.payload)
                    ),
                )
                .into());
            }
            if !done[i] {
                done[i] = true;
                completed += 1;
                last = Instant::now();
                let at = last.duration_since(origin).as_nanos() as u64;
                let started = sent[i].load(Ordering::Acquire);
                samples.push(at.saturating_sub(started) as f64 / 1e6);
            }
        }
        let (accepted, accepted_per_s) = publisher.await??;
        if accepted != workflows {
            return Err(lost(completed, format!("only {accepted} starts were PubAck'd")).into());
        }
        let latency = Latency::of(&mut samples);
        Ok(Run {
            workflow,
            steps: chain.steps(),
            sync_always: self.setup.sync_always,
            replicas: self.setup.replicas,
            worker_concurrency: self.setup.worker_concurrency,
            workflows,
            target_rate_per_s: rate,
            accepted,
            completed,
            accepted_per_s,
            completed_per_s: workflows as f64 / last.duration_since(origin).as_secs_f64(),
            latency,
            orchestrator_rss_kib: rss_kib(self.orchestrator_pid),
            samples,
        })
    }
}

/// The start message of instance `instance` of `workflow`.
fn start_message(workflow: &str, instance: &str, input: Vec<u8>) -> Vec<u8> {
    encode_proto(&StartWorkflow {
        tenant: TENANT.into(),
        workflow: workflow.into(),
        instance_id: instance.into(),
        input,
        ..StartWorkflow::default()
    })
}

/// Publishes the starts, recording in `sent[i]` when start `i` went out (ns after `origin`);
/// at most [`WINDOW`] PubAcks outstanding. Returns the PubAck'd count and their rate.
#[allow(clippy::too_many_arguments)]
async fn publish_starts(
    js: jetstream::Context,
    chain: Chain,
    workflow: String,
    prefix: String,
    count: usize,
    rate: Option<f64>,
    origin: Instant,
    sent: Arc<Vec<AtomicU64>>,
) -> anyhow::Result<(usize, f64)> {
    let subject_name = subject::start(TENANT, &workflow);
    let mut tick = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut pending = VecDeque::with_capacity(WINDOW);
    let mut acked = 0;
    for (i, slot) in sent.iter().enumerate().take(count) {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let instance = format!("{prefix}-{i}");
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, instance.as_str());
        let payload = start_message(&workflow, &instance, chain.input(i));
        slot.store(origin.elapsed().as_nanos() as u64, Ordering::Release);
        pending.push_back(
            js.publish_with_headers(subject_name.clone(), headers, payload.into())
                .await?,
        );
        if pending.len() >= WINDOW
            && let Some(ack) = pending.pop_front()
        {
            ack.await?;
            acked += 1;
        }
    }
    for ack in pending {
        ack.await?;
        acked += 1;
    }
    Ok((acked, acked as f64 / origin.elapsed().as_secs_f64()))
}

/// Child processes, stopped with SIGTERM (and waited for) when dropped.
#[derive(Debug)]
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Processes {
    /// A description of the first child that has exited, if any.
    fn exited(&self) -> Option<String> {
        self.0.iter().find_map(|c| {
            let path = format!("/proc/{}/stat", c.id());
            match std::fs::read_to_string(path) {
                Ok(stat) if !stat.contains(") Z ") => None,
                _ => Some(format!("process {}", c.id())),
            }
        })
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// Starts a Switchyard binary with a clean environment: `server` as its NATS (each binary
/// takes its own user's credentials), warnings only, and `extra` settings.
pub(crate) fn spawn(
    binary: &Path,
    server: &NatsServer,
    extra: &[(&str, &str)],
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .envs(server.process_env())
        .env("SWITCHYARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (build it first: cargo build --release -p <its package>)",
            binary.display()
        )
    })
}

/// Registers a workflow definition for the benchmark tenant through the orchestrator's
/// service endpoint, waiting for the orchestrator to answer.
pub(crate) async fn register(client: &async_nats::Client, source: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "tenant": TENANT, "source": source });
    let subject_name = switchyard_proto::orchestrator::request_subject(
        switchyard_proto::orchestrator::endpoint::DEFINITIONS_PUT,
    );
    for _ in 0..300 {
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

/// `nats-direct` on a fresh engine: the raw publish rate, then `workflows` 1-step workflows
/// published as fast as the server acks them.
pub async fn nats_direct(
    binaries: Binaries<'_>,
    workflows: usize,
    sync_always: bool,
) -> anyhow::Result<NatsDirect> {
    let setup = Setup {
        sync_always,
        ..Setup::default()
    };
    let engine = Engine::start(binaries, setup, &[Chain::OneStep]).await?;
    let raw = engine.raw_publish_rate(workflows.max(20_000)).await?;
    let run = engine
        .run("nats-direct", Chain::OneStep, workflows, None)
        .await?;
    Ok(NatsDirect {
        raw_publish_per_s: raw,
        ratio_to_raw: run.completed_per_s / raw,
        run,
    })
}

/// `nats-direct` figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NatsDirect {
    pub raw_publish_per_s: f64,
    /// Completed 1-step workflows per second divided by the raw publish rate.
    pub ratio_to_raw: f64,
    #[serde(flatten)]
    pub run: Run,
}

/// `scale`: `chain` workflows through each count of `replicas`, `per_replica` workflows per
/// replica, on a fresh engine each time.
pub async fn scale(
    binaries: Binaries<'_>,
    chain: Chain,
    replicas: &[usize],
    worker_concurrency: usize,
    per_replica: usize,
) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for &n in replicas {
        let setup = Setup {
            replicas: n,
            worker_concurrency,
            ..Setup::default()
        };
        let engine = Engine::start(binaries, setup, &[chain]).await?;
        runs.push(engine.run("scale", chain, per_replica * n, None).await?);
    }
    Ok(runs)
}
