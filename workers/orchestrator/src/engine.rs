//! The engine's bus loop: consume `WF_INBOX`, apply each message to its instance's state with
//! compare-and-set, publish the transition's effects, then ack.
//!
//! Messages are routed to a fixed set of shards by instance id, so one process handles an
//! instance's messages one at a time and keeps its state and revision in memory (the KV read is
//! a round trip saved on most messages). Other replicas may write the same instance; the
//! compare-and-set on the revision catches that, and the loser reloads and applies again.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    jetstream::{self, AckKind, consumer::PullConsumer, kv},
};
use futures::StreamExt as _;
use prometheus::Registry;
use switchyard_proto::{
    CancelWorkflow, ContentType, DeadLetterReason, JobResult, RerunWorkflow, SignalWorkflow,
    StartWorkflow, Timer, decode, encode_proto, event, header, now_ms, stream, subject,
};
use switchyard_runtime::{
    metrics::{ConsumerLag, LAG_SAMPLE_EVERY},
    telemetry::{self, TraceContext},
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use switchyard_workflow::{
    Operations, Store,
    definition::{self, ValidateOptions},
};

use crate::{
    Error, concurrency,
    instance::{Effect, Instance, timer_id},
    metrics::Metrics,
    registry::{self, LiveRoutes, Replicas},
    schedules, service,
    shared::Shared,
    transition::{self, Ctx, Decision, Input},
    triggers,
};

/// Headers copied from an inbox message onto the jobs and events it leads to.
const CARRIED: [&str; 3] = [
    header::CORRELATION_ID,
    header::TRACEPARENT,
    header::TRACESTATE,
];
/// How long a stored outbox may be republished by the next transition: well inside the
/// streams' two-minute duplicate window, so a republished copy is always dropped.
const REPUBLISH_WITHIN_MS: i64 = 60_000;
/// Deliveries of a start whose workflow is unknown before the instance is failed: a definition
/// registered through another replica reaches this one's memory a moment later.
const UNKNOWN_WORKFLOW_DELIVERIES: i64 = 4;
/// Compare-and-set attempts before the message is handed back for later.
const CAS_ATTEMPTS: usize = 16;

/// Room a stored state leaves in a message for its subject and headers.
const STATE_HEADROOM: usize = 4096;

/// The longest wait before a failing inbox message is delivered again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Bytes of stored state the shards' caches hold together at most; each shard gets its share.
const CACHE_BYTES: usize = 256 << 20;
/// A shard idle this long empties its cache, returning the memory a backlog took.
const CACHE_IDLE: Duration = Duration::from_secs(10);
/// Warnings about inbox messages that could not be handled or settled: in an outage, one line
/// every few seconds with the count held back, not one per message.
static RETRY_WARNINGS: switchyard_runtime::telemetry::Throttle =
    switchyard_runtime::telemetry::Throttle::new(Duration::from_secs(5));
static ACK_WARNINGS: switchyard_runtime::telemetry::Throttle =
    switchyard_runtime::telemetry::Throttle::new(Duration::from_secs(5));
/// The DLQ subject token for messages the orchestrator cannot read.
pub const DLQ_KIND: &str = "orchestrator";

/// How the orchestrator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Inbox messages handled at once (the number of shards).
    pub concurrency: usize,
    /// The allow-listed environment templates can read as `env.NAME`, with its values.
    pub env: BTreeMap<String, String>,
    /// This replica's name in logs and the service registry.
    pub replica_id: String,
    /// How long in-flight messages may take after shutdown begins.
    pub grace: Duration,
    /// Deliveries of a start, result, cancel or signal the engine keeps failing on before it
    /// goes to the DLQ (`dlq.orchestrator`) with the reason.
    pub max_deliveries: i64,
    /// How large rendering a template may make things.
    pub limits: switchyard_workflow::RenderLimits,
    /// How often every replica of every kind is asked whether it is there (`$SRV.PING`);
    /// capability routing and the registry see a stopped replica within two sweeps.
    pub replica_sweep: Duration,
}

/// The workflow engine of one process.
#[derive(Debug)]
pub struct Orchestrator {
    shared: Arc<Shared>,
    options: Options,
}

impl Orchestrator {
    /// Connects to the buckets (which `switchyard bus apply` creates) and registers metrics.
    pub async fn new(
        client: async_nats::Client,
        options: Options,
        registry: &Registry,
    ) -> Result<Self, Error> {
        let js = jetstream::new(client.clone());
        let bucket = |name: &'static str| {
            let js = js.clone();
            async move {
                js.get_key_value(name)
                    .await
                    .map_err(|_| Error::NotProvisioned {
                        what: format!("kv bucket {name}"),
                    })
            }
        };
        let state = bucket(stream::WF_STATE_BUCKET).await?;
        let concurrency = bucket(stream::CONCURRENCY_BUCKET).await?;
        let rates = bucket(stream::RATES_BUCKET).await?;
        let defs_kv = bucket(stream::WF_DEFINITIONS_BUCKET).await?;
        let operations = Arc::new(Operations::new(bucket(stream::OPERATIONS_BUCKET).await?));
        let definitions = Arc::new(
            Store::new(
                defs_kv,
                ValidateOptions {
                    env_allow: options.env.keys().cloned().collect(),
                    limits: options.limits,
                },
            )
            .with_operations(operations.clone()),
        );
        let replicas = Arc::new(Replicas::new(client.clone(), options.replica_sweep));
        let max_state_bytes = client
            .server_info()
            .max_payload
            .saturating_sub(STATE_HEADROOM);
        let shared = Arc::new(Shared {
            max_state_bytes,
            max_deliveries: options.max_deliveries,
            client,
            js,
            state,
            concurrency,
            rates,
            definitions,
            routes: LiveRoutes {
                operations: operations.clone(),
                replicas: replicas.clone(),
            },
            operations,
            replicas,
            metrics: {
                switchyard_runtime::dlq::register_metrics(registry, DLQ_KIND)?;
                Metrics::register(registry)?
            },
            lag: ConsumerLag::register(registry)?,
            env: options.env.clone(),
            replica_id: options.replica_id.clone(),
        });
        Ok(Orchestrator { shared, options })
    }

    /// The definitions this orchestrator resolves starts against.
    pub fn definitions(&self) -> Arc<Store> {
        self.shared.definitions.clone()
    }

    /// Consumes until `shutdown`, then finishes the messages in hand within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let shared = self.shared;
        shared
            .definitions
            .register_shipped(definition::shipped())
            .await?;
        // Declarations first: definitions that use declared operations check against them.
        let operations_watch = shared.operations.clone().watch(shutdown.clone()).await?;
        let watch = shared.definitions.clone().watch(shutdown.clone()).await?;

        let inbox =
            shared
                .js
                .get_stream(stream::WF_INBOX)
                .await
                .map_err(|_| Error::NotProvisioned {
                    what: format!("stream {}", stream::WF_INBOX),
                })?;
        let mut consumers = Vec::new();
        for name in [
            stream::ORCHESTRATOR_COMMANDS,
            stream::ORCHESTRATOR_RESULTS,
            stream::ORCHESTRATOR_TIMERS,
        ] {
            let consumer: PullConsumer =
                inbox
                    .get_consumer(name)
                    .await
                    .map_err(|_| Error::NotProvisioned {
                        what: format!("consumer {name} on {}", stream::WF_INBOX),
                    })?;
            consumers.push((name, consumer));
        }

        let ticks: PullConsumer = shared
            .js
            .get_stream(stream::WF_SCHEDULES)
            .await
            .map_err(|_| Error::NotProvisioned {
                what: format!("stream {}", stream::WF_SCHEDULES),
            })?
            .get_consumer(stream::ORCHESTRATOR_SCHEDULES)
            .await
            .map_err(|_| Error::NotProvisioned {
                what: format!(
                    "consumer {} on {}",
                    stream::ORCHESTRATOR_SCHEDULES,
                    stream::WF_SCHEDULES
                ),
            })?;

        let events: PullConsumer = shared
            .js
            .get_stream(stream::WF_TRIGGERS)
            .await
            .map_err(|_| Error::NotProvisioned {
                what: format!("stream {}", stream::WF_TRIGGERS),
            })?
            .get_consumer(stream::ORCHESTRATOR_TRIGGERS)
            .await
            .map_err(|_| Error::NotProvisioned {
                what: format!(
                    "consumer {} on {}",
                    stream::ORCHESTRATOR_TRIGGERS,
                    stream::WF_TRIGGERS
                ),
            })?;

        let tracker = TaskTracker::new();
        let service = service::start(shared.clone(), &tracker, shutdown.clone()).await?;
        tracker.spawn(triggers::run(shared.clone(), events, shutdown.clone()));
        tracker.spawn(schedules::reconcile_loop(shared.clone(), shutdown.clone()));
        tracker.spawn(schedules::ticks(shared.clone(), ticks, shutdown.clone()));
        tracker.spawn(shared.lag.clone().sample(
            consumers.iter().map(|(_, c)| c.clone()).collect(),
            LAG_SAMPLE_EVERY,
            shutdown.clone(),
        ));
        tracker.spawn(sample_dlq(shared.clone(), shutdown.clone()));
        tracker.spawn(registry::run(shared.clone(), shutdown.clone()));
        let shards = self.options.concurrency.max(1);
        let mut senders = Vec::with_capacity(shards);
        let cache_limit = CACHE_BYTES / shards;
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel::<Delivery>(16);
            senders.push(tx);
            let shared = shared.clone();
            tracker.spawn(shard(shared, rx, cache_limit));
        }
        let router = Router {
            senders: Arc::new(senders),
            hasher: RandomState::new(),
        };
        let pulls = TaskTracker::new();
        for (name, consumer) in consumers {
            let shared = shared.clone();
            let router = router.clone();
            let stop = shutdown.clone();
            let batch = shards * 2;
            pulls.spawn(async move { pull(name, consumer, batch, shared, router, stop).await });
        }
        drop(router);
        pulls.close();
        info!(
            replica_id = %shared.replica_id,
            shards,
            "orchestrator started"
        );

        shutdown.cancelled().await;
        pulls.wait().await;
        tracker.close();
        if tokio::time::timeout(self.options.grace, tracker.wait())
            .await
            .is_err()
        {
            warn!("grace period over: unacked messages will be redelivered");
        }
        watch.abort();
        operations_watch.abort();
        if let Err(e) = service.stop().await {
            warn!(error = %e, "cannot deregister the service");
        }
        info!("orchestrator stopped");
        Ok(())
    }
}

/// Samples the DLQ stream's message count every [`LAG_SAMPLE_EVERY`] until `shutdown`: every
/// replica reports the same figure (alert on `max`, not `sum`).
async fn sample_dlq(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LAG_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dlq = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if dlq.is_none() {
            dlq = shared.js.get_stream(stream::DLQ).await.ok();
        }
        let Some(s) = dlq.as_mut() else {
            debug!("no DLQ stream to sample");
            continue;
        };
        match s.info().await {
            Ok(info) => shared
                .metrics
                .dlq_messages
                .set(i64::try_from(info.state.messages).unwrap_or(i64::MAX)),
            Err(e) => debug!(error = %e, "cannot sample the DLQ"),
        }
    }
}

/// A message and what it asks for, decoded.
struct Delivery {
    msg: jetstream::Message,
    work: Work,
    received: Instant,
}

enum Work {
    Start {
        start: StartWorkflow,
        instance: String,
    },
    Apply {
        instance: String,
        /// The tenant the subject names (cancels and signals), checked against the state.
        tenant: Option<String>,
        input: Input,
    },
}

impl Work {
    fn instance(&self) -> &str {
        match self {
            Work::Start { instance, .. } | Work::Apply { instance, .. } => instance,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Work::Start { .. } => "start",
            Work::Apply { input, .. } => input.kind(),
        }
    }

    /// The correlation id the message's payload names, for messages sent without the header.
    fn correlation_id(&self) -> &str {
        match self {
            Work::Start { start, .. } => &start.correlation_id,
            Work::Apply { input, .. } => match input {
                Input::Result(r) => &r.correlation_id,
                Input::Cancel(c) => &c.correlation_id,
                Input::Rerun(r) => &r.correlation_id,
                Input::Signal(s) => &s.correlation_id,
                Input::Timer(_) => "",
            },
        }
    }
}

/// The span of one inbox message: a child of the trace its sender carried, with the ids every
/// log line about the instance needs. Returns the context its effects carry on.
fn message_span(delivery: &Delivery) -> (tracing::Span, TraceContext) {
    let headers = delivery.msg.headers.as_ref();
    let correlation_id = headers
        .and_then(|h| h.get(header::CORRELATION_ID))
        .map(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| delivery.work.correlation_id());
    let span = info_span!(
        "inbox_message",
        kind = delivery.work.kind(),
        instance_id = %delivery.work.instance(),
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty,
        "messaging.destination.name" = %delivery.msg.subject,
    );
    let trace = telemetry::continue_trace(&span, &telemetry::NatsExtractor(headers));
    (span, trace)
}

#[derive(Clone)]
struct Router {
    senders: Arc<Vec<mpsc::Sender<Delivery>>>,
    hasher: RandomState,
}

impl Router {
    async fn route(&self, delivery: Delivery) {
        let shard = (self.hasher.hash_one(delivery.work.instance()) as usize) % self.senders.len();
        if self.senders[shard].send(delivery).await.is_err() {
            debug!("shard closed; the message will be redelivered");
        }
    }
}

async fn pull(
    name: &'static str,
    consumer: PullConsumer,
    batch: usize,
    shared: Arc<Shared>,
    router: Router,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = switchyard_runtime::nats::connected(&shared.client) => {}
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(consumer = name, error = %e, "cannot pull");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                n = messages.next() => n,
            };
            match next {
                Some(Ok(msg)) => {
                    let received = Instant::now();
                    match read(&msg) {
                        Ok(work) => {
                            router
                                .route(Delivery {
                                    msg,
                                    work,
                                    received,
                                })
                                .await;
                        }
                        Err(reason) => {
                            dead_letter(&shared, &msg, DeadLetterReason::Decode, &reason).await;
                        }
                    }
                }
                Some(Err(e)) => {
                    warn!(consumer = name, error = %e, "pull stream error");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Decodes an inbox message into the work it asks for.
fn read(msg: &jetstream::Message) -> Result<Work, String> {
    let content_type = ContentType::from_header(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(header::CONTENT_TYPE))
            .map(|v| v.as_str()),
    );
    let subject_name = msg.subject.as_str();
    let Some(parsed) = subject::parse_inbox(subject_name) else {
        return Err(format!("{subject_name:?} is not an inbox subject"));
    };
    let err = |e: switchyard_proto::DecodeError| e.to_string();
    Ok(match parsed {
        subject::Inbox::Start { .. } => {
            let start =
                switchyard_proto::codec::decode_start(subject_name, content_type, &msg.payload)
                    .map_err(err)?;
            let instance = if start.instance_id.is_empty() {
                derived_instance_id(msg)
            } else {
                start.instance_id.clone()
            };
            Work::Start { start, instance }
        }
        subject::Inbox::Result { instance } => {
            let r: JobResult = decode(content_type, &msg.payload).map_err(err)?;
            if r.instance_id != instance {
                return Err(format!(
                    "result names instance {:?} but was sent to {subject_name:?}",
                    r.instance_id
                ));
            }
            Work::Apply {
                instance: instance.to_owned(),
                tenant: None,
                input: Input::Result(r),
            }
        }
        subject::Inbox::Cancel { tenant, instance } => {
            let mut c: CancelWorkflow = decode(content_type, &msg.payload).map_err(err)?;
            c.tenant = tenant.to_owned();
            c.instance_id = instance.to_owned();
            Work::Apply {
                instance: instance.to_owned(),
                tenant: Some(tenant.to_owned()),
                input: Input::Cancel(c),
            }
        }
        subject::Inbox::Rerun { tenant, instance } => {
            let mut r: RerunWorkflow = decode(content_type, &msg.payload).map_err(err)?;
            r.tenant = tenant.to_owned();
            r.instance_id = instance.to_owned();
            Work::Apply {
                instance: instance.to_owned(),
                tenant: Some(tenant.to_owned()),
                input: Input::Rerun(r),
            }
        }
        subject::Inbox::Signal {
            tenant,
            instance,
            name,
        } => {
            let mut s: SignalWorkflow = decode(content_type, &msg.payload).map_err(err)?;
            if !s.payload.is_empty()
                && serde_json::from_slice::<serde_json::Value>(&s.payload).is_err()
            {
                return Err("signal payload is not JSON".into());
            }
            s.tenant = tenant.to_owned();
            s.instance_id = instance.to_owned();
            s.name = name.to_owned();
            if s.signal_id.is_empty() {
                s.signal_id = msg
                    .info()
                    .map(|i| format!("seq-{}", i.stream_sequence))
                    .unwrap_or_default();
            }
            Work::Apply {
                instance: instance.to_owned(),
                tenant: Some(tenant.to_owned()),
                input: Input::Signal(s),
            }
        }
        subject::Inbox::Timer { instance } => {
            let t: Timer = decode(content_type, &msg.payload).map_err(err)?;
            Work::Apply {
                instance: instance.to_owned(),
                tenant: None,
                input: Input::Timer(t),
            }
        }
    })
}

/// An instance id for a start that did not bring one: the same for every delivery of the same
/// message (its `Nats-Msg-Id`, else its place in the stream).
fn derived_instance_id(msg: &jetstream::Message) -> String {
    let name = match msg.headers.as_ref().and_then(|h| h.get(header::MSG_ID)) {
        Some(id) => format!("msg-id:{}", id.as_str()),
        None => match msg.info() {
            Ok(info) => format!(
                "{}:{}:{}",
                info.stream,
                info.stream_sequence,
                info.published.unix_timestamp_nanos()
            ),
            Err(_) => uuid::Uuid::new_v4().to_string(),
        },
    };
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// Moves `msg` to `dlq.orchestrator` with why it was given up on, then terminates it.
async fn dead_letter(
    shared: &Shared,
    msg: &jetstream::Message,
    why: DeadLetterReason,
    reason: &str,
) {
    let (seq, delivered) = msg
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or_default();
    warn!(subject = %msg.subject, seq, reason, "inbox message dead-lettered");
    let why = switchyard_runtime::dlq::Reason {
        kind: DLQ_KIND,
        reason: why,
        error: reason,
        attempts: u32::try_from(delivered).unwrap_or(0),
        job_id: "",
        worker_id: &shared.replica_id,
    };
    let stored = switchyard_runtime::dlq::publish(&shared.js, msg, why).await;
    let kind = subject::parse_inbox(msg.subject.as_str()).map_or("unknown", |i| match i {
        subject::Inbox::Start { .. } => "start",
        subject::Inbox::Result { .. } => "result",
        subject::Inbox::Cancel { .. } => "cancel",
        subject::Inbox::Rerun { .. } => "rerun",
        subject::Inbox::Signal { .. } => "signal",
        subject::Inbox::Timer { .. } => "timer",
    });
    match stored {
        Ok(_) => {
            shared
                .metrics
                .messages
                .with_label_values(&[kind, "dead_letter"])
                .inc();
            let _ = msg.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            error!(error = %e, "cannot dead-letter; handing the message back");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// An instance as this process last wrote or read it.
struct Cached {
    instance: Instance,
    revision: u64,
    /// The size of its stored state.
    bytes: usize,
}

/// The instances one shard last wrote or read, bounded by the bytes of their stored state.
struct StateCache {
    entries: HashMap<String, Cached>,
    bytes: usize,
    limit: usize,
}

impl StateCache {
    fn new(limit: usize) -> Self {
        StateCache {
            entries: HashMap::new(),
            bytes: 0,
            limit,
        }
    }

    fn get(&self, id: &str) -> Option<&Cached> {
        self.entries.get(id)
    }

    fn remove(&mut self, id: &str) {
        if let Some(gone) = self.entries.remove(id) {
            self.bytes -= gone.bytes;
        }
    }

    /// Keeps `cached`; past the limit the cache starts over (a cache miss only costs a read).
    fn insert(&mut self, id: String, cached: Cached) {
        self.remove(&id);
        if self.bytes + cached.bytes > self.limit {
            self.clear();
        }
        self.bytes += cached.bytes;
        self.entries.insert(id, cached);
    }

    /// Empties the cache and gives its memory back.
    fn clear(&mut self) {
        self.entries = HashMap::new();
        self.bytes = 0;
    }
}

async fn shard(shared: Arc<Shared>, mut rx: mpsc::Receiver<Delivery>, cache_limit: usize) {
    let mut cache = StateCache::new(cache_limit);
    loop {
        let delivery = match tokio::time::timeout(CACHE_IDLE, rx.recv()).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => break,
            Err(_) => {
                cache.clear();
                continue;
            }
        };
        let kind = delivery.work.kind();
        let received = delivery.received;
        let (span, trace) = message_span(&delivery);
        let outcome = async {
            let (outcome, ack) = match handle(&shared, &mut cache, &delivery, &trace).await {
                Ok(done) => done,
                Err(e) => {
                    cache.remove(delivery.work.instance());
                    let delivered = delivery.msg.info().map_or(1, |i| i.delivered);
                    // Timers are handed back until due, so their deliveries say nothing.
                    if kind != "timer" && delivered >= shared.max_deliveries {
                        dead_letter(
                            &shared,
                            &delivery.msg,
                            DeadLetterReason::RetriesExhausted,
                            &format!("gave up after {delivered} deliveries: {e}"),
                        )
                        .await;
                        return "dead_letter";
                    }
                    if let Some(held_back) = RETRY_WARNINGS.admit() {
                        warn!(error = %e, instance = delivery.work.instance(), kind, delivered, held_back, "cannot handle; retrying later");
                    }
                    let wait = Duration::from_secs(u64::try_from(delivered).unwrap_or(1).max(1))
                        .min(MAX_RETRY_DELAY);
                    ("retry", AckKind::Nak(Some(wait)))
                }
            };
            if let Err(e) = delivery.msg.ack_with(ack).await
                && let Some(held_back) = ACK_WARNINGS.admit()
            {
                warn!(error = %e, held_back, "cannot ack");
            }
            outcome
        }
        .instrument(span)
        .await;
        // A dead letter was counted when it was stored.
        if outcome != "dead_letter" {
            shared
                .metrics
                .messages
                .with_label_values(&[kind, outcome])
                .inc();
        }
        shared
            .metrics
            .handle_seconds
            .with_label_values(&[kind])
            .observe(received.elapsed().as_secs_f64());
    }
}

type Handled = (&'static str, AckKind);

async fn handle(
    shared: &Shared,
    cache: &mut StateCache,
    delivery: &Delivery,
    trace: &TraceContext,
) -> Result<Handled, Error> {
    let msg = &delivery.msg;
    let info = msg
        .info()
        .map_err(|e| Error::bus("reading message info", e))?;
    let seq = info.stream_sequence;
    let delivered = info.delivered;
    let id = delivery.work.instance().to_owned();
    let carried = carried_headers(msg, trace);
    let ctx = Ctx {
        now_ms: now_ms(),
        env: &shared.env,
        routes: &shared.routes,
    };

    for _ in 0..CAS_ATTEMPTS {
        let (current, from_cache) = match cache.get(&id) {
            Some(c) => (Some((c.instance.clone(), c.revision)), true),
            None => (load(shared, &id).await?, false),
        };
        if let Some((state, _)) = &current {
            if state.last_message == seq {
                // This message was applied but not acked: publish what it led to again.
                publish(shared, &state.outbox, &carried).await?;
                return Ok(("redelivered", AckKind::Ack));
            }
            if !from_cache {
                republish_recent(shared, state, &carried, ctx).await?;
            }
        }

        let (mut next, revision) = match (&delivery.work, current) {
            (Work::Start { .. }, Some(_)) => return Ok(("ignored", AckKind::Ack)),
            (Work::Start { start, instance }, None) => {
                let found =
                    shared
                        .definitions
                        .resolve(&start.tenant, &start.workflow, start.version);
                let inst = match found {
                    Some(entry) => transition::start(&entry.definition, start, instance, ctx),
                    None if delivered < UNKNOWN_WORKFLOW_DELIVERIES => {
                        return Ok(("later", AckKind::Nak(Some(Duration::from_millis(500)))));
                    }
                    None => {
                        let what = if start.version == 0 {
                            format!("no workflow named {:?} is registered", start.workflow)
                        } else {
                            format!(
                                "workflow {:?} has no version {}",
                                start.workflow, start.version
                            )
                        };
                        transition::start_refused(start, instance, "unknown_workflow", what, ctx)
                    }
                };
                (inst, None)
            }
            (Work::Apply { .. }, None) => {
                return Ok(("ignored", AckKind::Ack));
            }
            (Work::Apply { tenant, input, .. }, Some((state, revision))) => {
                if tenant.as_ref().is_some_and(|t| *t != state.tenant) {
                    warn!(instance = %id, "a cancel, re-run or signal named another tenant's instance; ignored");
                    return Ok(("ignored", AckKind::Ack));
                }
                // A re-run may move the instance to a newer version of its definition.
                let version = match input {
                    Input::Rerun(r) if r.version != 0 => r.version,
                    _ => state.version,
                };
                let Some(def) = shared
                    .definitions
                    .exact(&state.tenant, &state.workflow, version)
                    .await?
                else {
                    if let Input::Rerun(_) = input {
                        warn!(instance = %id, version, "a re-run named a version that is not registered; ignored");
                        return Ok(("ignored", AckKind::Ack));
                    }
                    if state.status.is_finished() {
                        return Ok(("ignored", AckKind::Ack));
                    }
                    return Err(switchyard_workflow::Error::Definition(format!(
                        "instance {id} runs {} version {}, which is not registered",
                        state.workflow, state.version
                    ))
                    .into());
                };
                if let Input::Rerun(r) = input {
                    match transition::rerun(&def, &state, r, ctx) {
                        Ok(rerun) => {
                            let next = rerun.instance;
                            info!(instance = %id, run = next.run, version = next.version, requested_by = %r.requested_by, "instance re-run");
                            (next, Some(revision))
                        }
                        Err(refusal) => {
                            if from_cache {
                                cache.remove(&id);
                                continue;
                            }
                            warn!(instance = %id, reason = %refusal.message, "re-run refused");
                            return Ok(("ignored", AckKind::Ack));
                        }
                    }
                } else {
                    match transition::apply(&def, &state, input, ctx) {
                        Decision::Ignore(reason) => {
                            if from_cache {
                                // Another replica may have moved the instance on: look again.
                                cache.remove(&id);
                                continue;
                            }
                            debug!(instance = %id, reason, "message changes nothing");
                            return Ok(("ignored", AckKind::Ack));
                        }
                        Decision::Later(delay) => {
                            return Ok(("later", AckKind::Nak(Some(delay))));
                        }
                        Decision::Apply(next) => (*next, Some(revision)),
                    }
                }
            }
        };

        next.last_message = seq;
        let mut bytes = serde_json::to_vec(&next).map_err(|e| Error::bus("encoding state", e))?;
        if bytes.len() > shared.max_state_bytes {
            // Redelivering would make it no smaller: the instance fails, once.
            warn!(instance = %id, bytes = bytes.len(), limit = shared.max_state_bytes, "instance state too large to store; failing the instance");
            next = transition::fail_too_large(next, bytes.len(), shared.max_state_bytes, ctx);
            bytes = serde_json::to_vec(&next).map_err(|e| Error::bus("encoding state", e))?;
        }
        let size = bytes.len();
        let written = match revision {
            None => shared
                .state
                .create(&id, bytes.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(Error::bus("creating instance state", e)),
                }),
            Some(rev) => shared
                .state
                .update(&id, bytes.into(), rev)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(Error::bus("updating instance state", e)),
                }),
        };
        let new_revision = match written {
            Ok(r) => r,
            Err(None) => {
                shared.metrics.conflicts.inc();
                cache.remove(&id);
                continue;
            }
            Err(Some(e)) => return Err(e),
        };
        publish(shared, &next.outbox, &carried).await?;
        record_metrics(shared, &delivery.work, &next);
        if matches!(delivery.work, Work::Start { .. }) {
            debug!(workflow = %next.workflow, version = next.version, tenant = %next.tenant, "instance started");
        }
        if next.status.is_finished() {
            debug!(workflow = %next.workflow, status = next.status.as_str(), "instance finished");
        }
        if next.status.is_finished() {
            cache.remove(&id);
        } else {
            cache.insert(
                id.clone(),
                Cached {
                    instance: next,
                    revision: new_revision,
                    bytes: size,
                },
            );
        }
        return Ok(("applied", AckKind::Ack));
    }
    Ok(("retry", AckKind::Nak(Some(Duration::from_millis(100)))))
}

async fn load(shared: &Shared, id: &str) -> Result<Option<(Instance, u64)>, Error> {
    let Some(entry) = shared
        .state
        .entry(id)
        .await
        .map_err(|e| Error::bus("reading instance state", e))?
    else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let instance: Instance = serde_json::from_slice(&entry.value)
        .map_err(|e| Error::bus("decoding instance state", e))?;
    Ok(Some((instance, entry.revision)))
}

/// A state read from the bucket may hold effects whose publisher died before publishing them;
/// publish again those that can still matter (jobs of steps still waiting for them, events,
/// timers). Only recent ones: older ones were long published or redelivered.
async fn republish_recent(
    shared: &Shared,
    state: &Instance,
    carried: &HeaderMap,
    ctx: Ctx<'_>,
) -> Result<(), Error> {
    if state.outbox.is_empty() || ctx.now_ms - state.updated_at_ms > REPUBLISH_WITHIN_MS {
        return Ok(());
    }
    let pending: Vec<Effect> = state
        .outbox
        .iter()
        .filter(|e| match e {
            Effect::Job { job } => state.awaits(job),
            Effect::Event { .. }
            | Effect::Timer { .. }
            | Effect::Acquire { .. }
            | Effect::Release { .. }
            | Effect::Reserve { .. } => true,
        })
        .cloned()
        .collect();
    publish(shared, &pending, carried).await
}

/// Publishes effects pipelined (all sent, then all PubAcks awaited).
pub(crate) async fn publish(
    shared: &Shared,
    effects: &[Effect],
    carried: &HeaderMap,
) -> Result<(), Error> {
    // Slots first: a grant is a timer published with the rest.
    let mut grants = Vec::new();
    for effect in effects {
        match effect {
            Effect::Acquire { slot } => {
                grants.extend(concurrency::carry_out(shared, slot, false).await?);
            }
            Effect::Release { slot } => {
                grants.extend(concurrency::carry_out(shared, slot, true).await?);
            }
            Effect::Reserve { rate } => grants.push(concurrency::reserve(shared, rate).await?),
            _ => {}
        }
    }
    let grants: Vec<Effect> = grants
        .into_iter()
        .map(|timer| Effect::Timer { timer })
        .collect();
    let mut acks = Vec::with_capacity(effects.len() + grants.len());
    for effect in effects.iter().chain(&grants) {
        let mut headers = carried.clone();
        headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
        let (subject_name, payload) = match effect {
            Effect::Job { job } => {
                headers.insert(header::MSG_ID, job.job_id.as_str());
                headers.insert(header::TENANT, job.tenant.as_str());
                set_correlation(&mut headers, &job.correlation_id);
                let kind = job.operation.split('.').next().unwrap_or_default();
                // Kinds declared at run time may be written in any language: their jobs are
                // JSON (docs/worker-protocol.md). The built-in kinds read protobuf.
                let payload = if shared.operations.is_declared_kind(kind) {
                    headers.insert(header::CONTENT_TYPE, ContentType::Json.header_value());
                    switchyard_proto::encode_json(job).map_err(|e| Error::Encode {
                        what: "a job as JSON",
                        reason: e.to_string(),
                    })?
                } else {
                    encode_proto(job)
                };
                (subject::job(&job.operation), payload)
            }
            Effect::Event { event } => {
                headers.insert(header::MSG_ID, event.event_id.as_str());
                headers.insert(header::TENANT, event.tenant.as_str());
                set_correlation(&mut headers, &event.correlation_id);
                (
                    subject::event(&event.tenant, &event.instance_id, &event.r#type),
                    encode_proto(event),
                )
            }
            Effect::Timer { timer } => {
                headers.insert(header::MSG_ID, timer_id(timer).as_str());
                headers.insert(header::TENANT, timer.tenant.as_str());
                (subject::timer(&timer.instance_id), encode_proto(timer))
            }
            Effect::Acquire { .. } | Effect::Release { .. } | Effect::Reserve { .. } => continue,
        };
        let ack = shared
            .js
            .publish_with_headers(subject_name, headers, payload.into())
            .await
            .map_err(|e| Error::bus("publishing an effect", e))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| Error::bus("storing an effect", e))?;
    }
    Ok(())
}

fn set_correlation(headers: &mut HeaderMap, correlation_id: &str) {
    if !correlation_id.is_empty() && headers.get(header::CORRELATION_ID).is_none() {
        headers.insert(header::CORRELATION_ID, correlation_id);
    }
}

/// The inbox message's correlation and trace headers, with the trace context replaced by the
/// message span's own (`trace`), so jobs and events are children of this step of the engine.
fn carried_headers(msg: &jetstream::Message, trace: &TraceContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(incoming) = &msg.headers {
        for name in CARRIED {
            if let Some(value) = incoming.get(name) {
                headers.insert(name, value.as_str());
            }
        }
    }
    trace.apply(&mut headers);
    headers
}

fn record_metrics(shared: &Shared, work: &Work, next: &Instance) {
    let m = &shared.metrics;
    if matches!(work, Work::Start { .. }) {
        m.started.with_label_values(&[&next.workflow]).inc();
    }
    for effect in &next.outbox {
        let Effect::Event { event: e } = effect else {
            continue;
        };
        if e.r#type == event::SLA_BREACHED {
            m.sla_breaches.with_label_values(&[&next.workflow]).inc();
        }
        if event::TERMINAL.contains(&e.r#type.as_str()) {
            let status = next.status.as_str();
            m.finished
                .with_label_values(&[&next.workflow, status])
                .inc();
            if let Some(end) = next.finished_at_ms {
                let tenant = m.tenants.label(&next.tenant);
                m.execution_seconds
                    .with_label_values(&[tenant.as_str(), &next.workflow, status])
                    .observe((end - next.started_at_ms).max(0) as f64 / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(bytes: usize) -> Cached {
        let instance = serde_json::from_value(serde_json::json!({
            "id": "i-1", "tenant": "acme", "workflow": "greet", "version": 1,
            "status": "running", "input": {}, "started_at_ms": 0, "updated_at_ms": 0,
            "steps": []
        }))
        .expect("an instance");
        Cached {
            instance,
            revision: 1,
            bytes,
        }
    }

    #[test]
    fn the_state_cache_is_bounded_by_the_bytes_of_stored_state() {
        let mut cache = StateCache::new(1_000);
        cache.insert("a".into(), cached(400));
        cache.insert("b".into(), cached(400));
        assert_eq!(cache.bytes, 800);
        // A newer state of the same instance replaces the older one's bytes.
        cache.insert("a".into(), cached(300));
        assert_eq!(cache.bytes, 700);
        // Past the limit it starts over with what it was given.
        cache.insert("c".into(), cached(400));
        assert_eq!((cache.entries.len(), cache.bytes), (1, 400));
        assert!(cache.get("c").is_some() && cache.get("a").is_none());
        cache.remove("c");
        cache.remove("c");
        assert_eq!(cache.bytes, 0);
    }
}
