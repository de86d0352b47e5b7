//! The worker loop that serves every worker kind.
//!
//! Pulls from the kind's durable consumer (shared by all replicas) only as many jobs as it has
//! free slots; decodes; checks attempts and deadline; runs the [`Handler`] with a cancellation
//! token while sending `+WPI` progress acks; then settles the message:
//!
//! | handler says | the loop does |
//! |---|---|
//! | output | publish the result, await its PubAck, then ack |
//! | retryable error, attempts left | `Nak` with exponential backoff and jitter |
//! | permanent error, or attempts used up | publish a failed result, copy to the DLQ, `Term` |
//! | not a job at all | copy to the DLQ with the decode error, `Term`, keep going |
//! | instance cancelled | publish a cancelled result, ack |
//! | shutdown grace ran out | `Nak` for another replica; no attempt used |
//! | infrastructure unavailable | `Nak` with a backoff; no attempt used, until `fault_patience` |
//!
//! Attempts count handler runs, not deliveries (ADR 14): what each delivery that did not
//! succeed ended in is kept in `WF_ATTEMPTS`. Publishing a result or a dead
//! letter that the bus does not take is retried within the delivery, with progress acks, so a
//! leader election does not run the handler again.
//!
//! It registers the replica as a NATS micro service (`$SRV.PING/INFO/STATS`) whose metadata
//! lists the kind's operations, with one request/reply endpoint per operation.

mod attempts;
mod bus;
mod cancel;
mod declare;
mod input;
mod service;

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use backon::BackoffBuilder as _;
use futures::StreamExt as _;
use prometheus::Registry;
use switchyard_proto::{
    ContentType, DeadLetterReason, ErrorCode, Job, JobError, JobStatus, decode, event, header,
    stream, subject,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    Config, Error,
    config::WorkerSettings,
    metrics::{ConsumerLag, LAG_SAMPLE_EVERY, Outcome, WorkerMetrics},
    telemetry::{self, Throttle},
};

use attempts::{Attempts, Record};

/// How long a worker whose stream is missing waits for an engine to create it when the kind
/// declares itself (at most `worker.fault_patience`).
const DECLARE_PATIENCE: Duration = Duration::from_secs(30);
/// Warnings about the bus not taking what a job produced: one line per few seconds in an outage.
static BUS_FAULTS: Throttle = Throttle::new(Duration::from_secs(5));
/// Warnings about jobs handed back for unavailable infrastructure.
static HAND_BACKS: Throttle = Throttle::new(Duration::from_secs(5));

pub use input::{InputError, JobInput};
pub use service::{Answer, SERVICE_PREFIX, ServiceSpec, serve};

/// An operation a worker kind performs, as listed in the service registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationInfo {
    /// `<kind>.<op>`, e.g. `test.echo`.
    pub name: &'static str,
    pub description: &'static str,
}

impl OperationInfo {
    /// The operations the built-in catalog declares for `kind`: what a built-in worker kind
    /// serves, declared in one place.
    pub fn of_kind(kind: &str) -> Vec<OperationInfo> {
        switchyard_catalog::Catalog::builtin()
            .operations()
            .filter(|spec| spec.kind == kind)
            .map(|spec| OperationInfo {
                name: spec.name.as_str(),
                description: spec.description.as_str(),
            })
            .collect()
    }
}

/// Why a handler did not produce an output. The worker loop maps each variant to a bus
/// outcome in one place, and to the wire in one place ([`JobFailure::to_job_error`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobFailure {
    /// Worth another attempt (a timeout, a 429, a 5xx). `retry_after` is a lower bound for
    /// the delay, e.g. from a `Retry-After` header.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The input does not fit the operation; retrying cannot help.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// Retrying cannot help.
    #[error("{message}")]
    Permanent { message: String },
    /// What the job names does not exist for its tenant (or is deleted); retrying cannot help.
    #[error("{message}")]
    NotFound { message: String },
    /// It changed since the version the job was based on; retrying the same job cannot help.
    #[error("{message}")]
    Conflict { message: String },
    /// Infrastructure the runtime manages (the database, the bus, the object store) cannot be
    /// reached. Not the job's failure: the loop hands the job back with a backoff and without
    /// using an attempt, until `worker.fault_patience` runs out (ADR 14).
    #[error("{dependency} is unavailable: {message}")]
    Unavailable { dependency: String, message: String },
}

impl JobFailure {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobFailure::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobFailure::Permanent {
            message: message.into(),
        }
    }

    pub fn invalid_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        JobFailure::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        JobFailure::NotFound {
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        JobFailure::Conflict {
            message: message.into(),
        }
    }

    /// `dependency` is what failed, for people: "the database", "the object store".
    pub fn unavailable(dependency: impl Into<String>, message: impl Into<String>) -> Self {
        JobFailure::Unavailable {
            dependency: dependency.into(),
            message: message.into(),
        }
    }

    /// The failure as it crosses the bus when the job is given up on: a code and the typed
    /// fields callers act on, and the text for people. The one mapping for both the stream
    /// path and the request/reply path.
    pub fn to_job_error(&self) -> JobError {
        let (code, field, retry_after) = match self {
            JobFailure::Retryable { retry_after, .. } => {
                (ErrorCode::RetriesExhausted, "", *retry_after)
            }
            JobFailure::InvalidInput { field, .. } => {
                (ErrorCode::InvalidInput, field.as_str(), None)
            }
            JobFailure::Permanent { .. } => (ErrorCode::Permanent, "", None),
            JobFailure::NotFound { .. } => (ErrorCode::NotFound, "", None),
            JobFailure::Conflict { .. } => (ErrorCode::Conflict, "", None),
            JobFailure::Unavailable { .. } => (ErrorCode::Unavailable, "", None),
        };
        JobError {
            code: code as i32,
            message: self.to_string(),
            retry_after_ms: retry_after
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            field: field.to_owned(),
        }
    }
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    /// 1 for the first attempt. Attempts count the handler's failures: a delivery handed back
    /// because infrastructure was unavailable or the replica was stopping does not use one.
    pub attempt: u32,
    /// Which delivery of the job this is, 1 for the first: every delivery counts.
    pub delivery: u32,
    pub max_attempts: u32,
    /// Cancelled when the instance is cancelled or shutdown's grace period ends. The loop also
    /// drops the handler's future then; the token is for work the handler spawned.
    pub cancel: CancellationToken,
    pub worker_id: Arc<str>,
    bus: bus::Bus,
    tenant: String,
    instance_id: String,
    step_id: String,
    operation: String,
    correlation_id: String,
    usage_seq: Arc<AtomicU32>,
}

impl JobContext {
    /// The tenant the job runs for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The object store for payloads passed by reference ([`crate::objects`]).
    pub fn objects(&self) -> &crate::objects::Objects {
        self.bus.objects()
    }

    /// Publishes a usage event for billing, with an id derived from the job so that a
    /// redelivered job's events are dropped as duplicates.
    pub async fn usage(&self, meter: &str, quantity: f64, unit: &str) -> Result<(), Error> {
        self.usage_with(meter, quantity, unit, Default::default())
            .await
    }

    /// Like [`JobContext::usage`], with attributes for the ledger to break the figure down by
    /// (e.g. `provider`, `model`). Keep the values to bounded sets.
    pub async fn usage_with(
        &self,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: std::collections::HashMap<String, String>,
    ) -> Result<(), Error> {
        let n = self.usage_seq.fetch_add(1, Ordering::Relaxed);
        self.usage_event(&n.to_string(), meter, quantity, unit, attributes)
            .await
            .map(drop)
    }

    /// A usage event for one thing the job counted, named by `key` (a card id, say) rather
    /// than by the order events were emitted in, so a redelivered job publishes the same event
    /// whatever order it runs in. Returns whether the stream stored it: `false` means a
    /// delivery before this one already did, so whoever keeps a counter must not count it
    /// again.
    pub async fn usage_once(
        &self,
        key: &str,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: std::collections::HashMap<String, String>,
    ) -> Result<bool, Error> {
        self.usage_event(&format!("k-{key}"), meter, quantity, unit, attributes)
            .await
    }

    async fn usage_event(
        &self,
        suffix: &str,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: std::collections::HashMap<String, String>,
    ) -> Result<bool, Error> {
        let event = switchyard_proto::UsageEvent {
            event_id: format!("{}-{meter}-{suffix}", self.job_id),
            tenant: self.tenant.clone(),
            meter: meter.to_owned(),
            quantity,
            unit: unit.to_owned(),
            instance_id: self.instance_id.clone(),
            step_id: self.step_id.clone(),
            operation: self.operation.clone(),
            at_ms: switchyard_proto::now_ms(),
            attributes,
        };
        self.bus.publish_usage(&event).await
    }

    /// Publishes a progress event `wf.events.<tenant>.<instance>.<event_type>` for whoever
    /// follows the instance. Jobs without an instance have no one to tell; this does nothing.
    pub async fn event(&self, event_type: &str, data: serde_json::Value) -> Result<(), Error> {
        if self.instance_id.is_empty() {
            return Ok(());
        }
        let n = self.usage_seq.fetch_add(1, Ordering::Relaxed);
        let event = switchyard_proto::WorkflowEvent {
            event_id: format!("{}-{}-{event_type}-{n}", self.job_id, self.attempt),
            tenant: self.tenant.clone(),
            instance_id: self.instance_id.clone(),
            r#type: event_type.to_owned(),
            step_id: self.step_id.clone(),
            data: serde_json::to_vec(&data).unwrap_or_default(),
            at_ms: switchyard_proto::now_ms(),
            correlation_id: self.correlation_id.clone(),
        };
        self.bus.publish_event(&event).await
    }
}

/// The product logic of one worker kind.
pub trait Handler: Send + Sync + 'static {
    /// The kind, e.g. `ai`: selects the stream `JOBS_AI` and consumer `worker-ai`.
    fn kind(&self) -> &'static str;

    /// The operations this kind performs.
    fn operations(&self) -> Vec<OperationInfo>;

    /// What the kind declares to the engine (docs/worker-protocol.md, section 2). Default: a
    /// built-in kind's catalog entries. A kind whose operations are discovered at run time
    /// (the `mcp` kind lists its servers' tools) declares them here.
    fn declaration(&self) -> switchyard_catalog::declare::Declaration {
        switchyard_catalog::declare::Declaration::builtin(self.kind())
    }

    /// Whether the kind serves `operation` though [`Handler::operations`] does not list it
    /// (one it discovered at run time), and the label its metrics count it under (a bounded
    /// set). Default: `None`, it serves only what it lists.
    fn discovered(&self, operation: &str) -> Option<&'static str> {
        let _ = operation;
        None
    }

    /// Sees a new value whenever [`Handler::declaration`] changed, so the replica declares
    /// again. Default: `None`, the declaration never changes.
    fn redeclarations(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Runs one job. Must be idempotent: a job can be delivered more than once.
    fn handle(
        &self,
        ctx: JobContext,
        job: &Job,
    ) -> impl Future<Output = Result<serde_json::Value, JobFailure>> + Send;

    /// The result an earlier delivery of `job` recorded when its external effect was done,
    /// for kinds that keep such records. The loop asks before giving a job up for used-up
    /// attempts or unavailable infrastructure: a job whose effect happened completes with
    /// it, so a workflow never reads "failed" for an effect that took place. Default: none.
    fn recorded(&self, job: &Job) -> impl Future<Output = Option<serde_json::Value>> + Send {
        let _ = job;
        std::future::ready(None)
    }
}

/// One replica of a worker kind, consuming its kind's jobs.
#[derive(Debug)]
pub struct Worker<H> {
    inner: Arc<Inner<H>>,
    client: async_nats::Client,
}

#[derive(Debug)]
struct Inner<H> {
    handler: H,
    kind: &'static str,
    operations: Vec<OperationInfo>,
    settings: WorkerSettings,
    grace: Duration,
    worker_id: Arc<str>,
    bus: bus::Bus,
    metrics: WorkerMetrics,
    lag: ConsumerLag,
    cancels: cancel::Cancels,
    /// Cancelled when shutdown's grace period is over: running jobs are handed back.
    hard_stop: CancellationToken,
    /// Set when the loop starts consuming.
    consuming: OnceLock<Consuming>,
}

/// What the stream loop needs besides the handler.
#[derive(Debug)]
struct Consuming {
    attempts: Attempts,
    /// How long a delivery keeps retrying to publish what it produced before it hands the job
    /// back: the consumer's `ack_wait`.
    settle_patience: Duration,
}

impl<H: Handler> Worker<H> {
    /// Builds a replica; its metrics are registered in `registry`.
    pub fn new(
        client: async_nats::Client,
        config: &Config,
        handler: H,
        registry: &Registry,
    ) -> Result<Self, Error> {
        let kind = handler.kind();
        let operations = handler.operations();
        let inner = Inner {
            kind,
            operations,
            handler,
            settings: config.worker.clone(),
            grace: config.shutdown_grace,
            worker_id: Arc::from(config.worker_id()),
            bus: bus::Bus::new(client.clone(), kind),
            metrics: {
                crate::dlq::register_metrics(registry, kind)?;
                WorkerMetrics::register(registry)?
            },
            lag: ConsumerLag::register(registry)?,
            cancels: cancel::Cancels::default(),
            hard_stop: CancellationToken::new(),
            consuming: OnceLock::new(),
        };
        Ok(Worker {
            inner: Arc::new(inner),
            client,
        })
    }

    /// Consumes jobs until `shutdown` is cancelled, then lets in-flight jobs finish within
    /// the grace period and hands the rest back.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let inner = self.inner;
        let kind = inner.kind;
        let js = jetstream::new(self.client.clone());
        let stream_name = stream::jobs(kind);
        let not_provisioned = || Error::NotProvisioned {
            what: format!("stream {stream_name}"),
        };
        // The kind declares its operations (ADR 15): at once when its stream is missing, since
        // the engine creates it; otherwise in the background, for the registry.
        let mut declared = false;
        let jobs_stream = match js.get_stream(&stream_name).await {
            Ok(s) => s,
            Err(_) => {
                let patience = inner.settings.fault_patience.min(DECLARE_PATIENCE);
                let declaration = inner.handler.declaration();
                match declare::declare(&self.client, &declaration, Some(patience), &shutdown).await
                {
                    declare::Declared::Accepted => {
                        declared = true;
                        js.get_stream(&stream_name)
                            .await
                            .map_err(|_| not_provisioned())?
                    }
                    _ => return Err(not_provisioned()),
                }
            }
        };
        let consumer_name = stream::worker_consumer(kind);
        let consumer: PullConsumer =
            jobs_stream
                .get_consumer(&consumer_name)
                .await
                .map_err(|_| Error::NotProvisioned {
                    what: format!("consumer {consumer_name} on {stream_name}"),
                })?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        let attempts = Attempts::open(&js, kind).await?;
        let _ = inner.consuming.set(Consuming {
            attempts,
            settle_patience: ack_wait,
        });

        let tracker = TaskTracker::new();
        {
            let client = self.client.clone();
            let stop = shutdown.clone();
            let handler = inner.clone();
            tracker.spawn(async move {
                let mut changes = handler.handler.redeclarations();
                // A kind whose declaration changes declares once more after subscribing, so a
                // change before it is not missed.
                if !declared || changes.is_some() {
                    let declaration = handler.handler.declaration();
                    declare::declare(&client, &declaration, None, &stop).await;
                }
                let Some(changes) = changes.as_mut() else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                    let declaration = handler.handler.declaration();
                    declare::declare(&client, &declaration, None, &stop).await;
                }
            });
        }
        tracker.spawn(inner.lag.clone().sample(
            vec![consumer.clone()],
            LAG_SAMPLE_EVERY,
            shutdown.clone(),
        ));
        let slots = Arc::new(Semaphore::new(inner.settings.concurrency));
        let service = service::serve(
            &self.client,
            service::worker_spec(&inner),
            inner.clone(),
            slots.clone(),
            &tracker,
            shutdown.clone(),
        )
        .await?;
        cancel::watch(
            &self.client,
            inner.cancels.clone(),
            &tracker,
            shutdown.clone(),
        )
        .await?;
        info!(
            kind,
            worker_id = %inner.worker_id,
            concurrency = inner.settings.concurrency,
            ack_wait_ms = ack_wait.as_millis() as u64,
            "worker started"
        );

        let progress_every = (ack_wait / 3).max(Duration::from_millis(100));
        'pull: loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'pull,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break 'pull,
                },
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'pull,
                () = crate::nats::connected(&self.client) => {}
            }
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(inner.settings.pull_expiry)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "pull request failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'pull,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'pull,
                    }
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // No new pull. The open one is still served by the server until it
                        // expires: what it delivers is run like any job (it has its slot),
                        // because handing it back now would deliver it to this same request
                        // again, over and over.
                        let drain_inner = inner.clone();
                        let drain_tracker = tracker.clone();
                        tracker.spawn(async move {
                            while let Some(Ok(msg)) = batch.next().await {
                                match permits.pop() {
                                    Some(permit) if !drain_inner.hard_stop.is_cancelled() => {
                                        let inner = drain_inner.clone();
                                        drain_tracker.spawn(async move {
                                            inner.process(msg, permit, progress_every).await
                                        });
                                    }
                                    _ => {
                                        let back = drain_inner.hand_back_delay();
                                        let _ = msg.ack_with(AckKind::Nak(Some(back))).await;
                                    }
                                }
                            }
                        });
                        break 'pull;
                    }
                    next = batch.next() => match next {
                        None => break,
                        Some(Ok(msg)) => {
                            let Some(permit) = permits.pop() else {
                                let _ = msg.ack_with(AckKind::Nak(None)).await;
                                continue;
                            };
                            let inner = inner.clone();
                            tracker.spawn(async move { inner.process(msg, permit, progress_every).await });
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, "pull batch ended with an error");
                            break;
                        }
                    }
                }
            }
        }

        let in_flight = inner.settings.concurrency - slots.available_permits();
        info!(
            kind,
            in_flight,
            grace_ms = inner.grace.as_millis() as u64,
            "worker stopping"
        );
        tracker.close();
        if tokio::time::timeout(inner.grace, tracker.wait())
            .await
            .is_err()
        {
            warn!(kind, "grace period over: handing back running jobs");
            inner.hard_stop.cancel();
            tracker.wait().await;
        }
        if let Err(e) = service.stop().await {
            warn!(error = %e, "cannot deregister the service");
        }
        info!(kind, "worker stopped");
        Ok(())
    }
}

/// What to do with a message, decided in one place from what happened.
#[derive(Debug)]
enum Verdict {
    Succeeded(serde_json::Value),
    Retry {
        delay: Duration,
        error: String,
    },
    GiveUp {
        reason: DeadLetterReason,
        error: JobError,
    },
    Cancelled,
    /// The replica is stopping: back for another one, no attempt used.
    HandBack,
    /// Infrastructure the job needs is unavailable: back with a backoff, no attempt used.
    Fault {
        fault: String,
    },
}

/// How a run ended, before attempts are taken into account.
#[derive(Debug)]
enum RunEnd {
    Done(Result<serde_json::Value, JobFailure>),
    /// The kind does not perform the job's operation; the handler did not run.
    UnknownOperation {
        operation: String,
        kind: &'static str,
    },
    /// Earlier deliveries used up the job's attempts; the handler did not run again.
    /// `crashed`: some of them ended without a verdict (a replica died mid-job).
    AttemptsUsedUp {
        crashed: bool,
    },
    /// Delivered more often than `worker.max_deliveries`, whatever the deliveries ended in.
    DeliveredTooOften {
        delivered: u32,
        last_fault: String,
    },
    DeadlineExceeded,
    InstanceCancelled,
    ShuttingDown,
}

fn verdict(
    end: RunEnd,
    attempt: u32,
    max_attempts: u32,
    retry_delay: impl FnOnce() -> Duration,
) -> Verdict {
    match end {
        RunEnd::Done(Ok(output)) => Verdict::Succeeded(output),
        RunEnd::Done(Err(JobFailure::Retryable {
            message,
            retry_after,
        })) if attempt < max_attempts => {
            let delay = retry_delay();
            Verdict::Retry {
                delay: retry_after.map_or(delay, |r| r.max(delay)),
                error: message,
            }
        }
        RunEnd::Done(Err(failure @ JobFailure::Retryable { .. })) => Verdict::GiveUp {
            reason: DeadLetterReason::RetriesExhausted,
            error: JobError {
                message: format!("gave up after {attempt} attempts: {failure}"),
                ..failure.to_job_error()
            },
        },
        RunEnd::Done(Err(failure @ JobFailure::Unavailable { .. })) => Verdict::Fault {
            fault: failure.to_string(),
        },
        RunEnd::Done(Err(failure)) => Verdict::GiveUp {
            reason: DeadLetterReason::Permanent,
            error: failure.to_job_error(),
        },
        RunEnd::UnknownOperation { operation, kind } => Verdict::GiveUp {
            reason: DeadLetterReason::UnknownOperation,
            error: job_error(
                ErrorCode::UnknownOperation,
                format!("unknown operation {operation:?} for the {kind} worker"),
            ),
        },
        RunEnd::AttemptsUsedUp { crashed } => Verdict::GiveUp {
            reason: DeadLetterReason::RetriesExhausted,
            error: job_error(
                ErrorCode::RetriesExhausted,
                if crashed {
                    format!(
                        "gave up after {max_attempts} attempts: earlier deliveries did not finish (a replica may have crashed)"
                    )
                } else {
                    format!("gave up after {max_attempts} attempts")
                },
            ),
        },
        RunEnd::DeliveredTooOften {
            delivered,
            last_fault,
        } => Verdict::GiveUp {
            reason: DeadLetterReason::Unavailable,
            error: job_error(
                ErrorCode::Unavailable,
                if last_fault.is_empty() {
                    format!("gave up after {delivered} deliveries (worker.max_deliveries)")
                } else {
                    format!(
                        "gave up after {delivered} deliveries (worker.max_deliveries); last: {last_fault}"
                    )
                },
            ),
        },
        RunEnd::DeadlineExceeded => Verdict::GiveUp {
            reason: DeadLetterReason::DeadlineExceeded,
            error: job_error(ErrorCode::DeadlineExceeded, "deadline exceeded".into()),
        },
        RunEnd::InstanceCancelled => Verdict::Cancelled,
        RunEnd::ShuttingDown => Verdict::HandBack,
    }
}

fn job_error(code: ErrorCode, message: String) -> JobError {
    JobError {
        code: code as i32,
        message,
        ..JobError::default()
    }
}

/// The most a job's input may grow to when its object references are resolved.
const MAX_RESOLVED_BYTES: usize = 64 << 20;

/// Checks a job's input against its operation's schema in the catalog, so a handler only
/// ever sees input of the declared shape. Operations the catalog does not list are the
/// handler's to check.
fn check_input(job: &Job) -> Result<(), JobFailure> {
    let Some(spec) = switchyard_catalog::Catalog::builtin().get(&job.operation) else {
        return Ok(());
    };
    let input: serde_json::Value = if job.input.is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(&job.input)
            .map_err(|e| JobFailure::invalid_input("input", e.to_string()))?
    };
    spec.input.validate(&input).map_err(|errors| {
        let field = match errors.first() {
            Some(e) if !e.path.is_empty() => e.path.clone(),
            _ => "input".to_owned(),
        };
        let message = match errors.as_slice() {
            [only] => only.message.clone(),
            all => all
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        };
        JobFailure::invalid_input(field, message)
    })
}

/// The delay before attempt `attempt + 1`: exponential with jitter, from the job's policy or
/// the worker's defaults.
fn retry_delay(settings: &WorkerSettings, job: &Job, attempt: u32) -> Duration {
    let policy = job.retry.unwrap_or_default();
    let initial = if policy.initial_delay_ms > 0 {
        Duration::from_millis(policy.initial_delay_ms)
    } else {
        settings.initial_delay
    };
    let max = if policy.max_delay_ms > 0 {
        Duration::from_millis(policy.max_delay_ms)
    } else {
        settings.max_delay
    };
    let factor = if policy.multiplier >= 1.0 {
        policy.multiplier as f32
    } else {
        settings.multiplier
    };
    backon::ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max.max(initial))
        .with_factor(factor)
        .with_jitter()
        .with_max_times(attempt as usize)
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
}

struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<H: Handler> Inner<H> {
    fn declares(&self, operation: &str) -> Option<&'static str> {
        self.operations
            .iter()
            .find(|o| o.name == operation)
            .map(|o| o.name)
            .or_else(|| self.handler.discovered(operation))
    }

    fn context(
        &self,
        job: &Job,
        attempt: u32,
        max_attempts: u32,
        cancel: CancellationToken,
    ) -> JobContext {
        JobContext {
            job_id: job.job_id.clone(),
            attempt,
            delivery: attempt,
            max_attempts,
            cancel,
            worker_id: self.worker_id.clone(),
            bus: self.bus.clone(),
            tenant: job.tenant.clone(),
            instance_id: job.instance_id.clone(),
            step_id: job.step_id.clone(),
            operation: job.operation.clone(),
            correlation_id: job.correlation_id.clone(),
            usage_seq: Arc::new(AtomicU32::new(0)),
        }
    }

    fn max_attempts(&self, job: &Job) -> u32 {
        job.retry
            .as_ref()
            .map(|r| r.max_attempts)
            .filter(|n| *n > 0)
            .unwrap_or(self.settings.max_attempts)
    }

    async fn process(
        self: Arc<Self>,
        msg: jetstream::Message,
        permit: OwnedSemaphorePermit,
        progress_every: Duration,
    ) {
        let started = Instant::now();
        let gauge = self.metrics.in_flight.with_label_values(&[self.kind]);
        gauge.inc();
        let _in_flight = InFlight(&gauge);
        let (delivered, stream_seq) = match msg.info() {
            Ok(info) => (
                u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX),
                info.stream_sequence,
            ),
            Err(_) => (1, 0),
        };
        if delivered > 1 {
            self.metrics
                .redeliveries
                .with_label_values(&[self.kind])
                .inc();
        }

        let job = match self.decode(&msg, stream_seq) {
            Ok(job) => job,
            Err(reason) => {
                warn!(subject = %msg.subject, stream_seq, error = %reason, "malformed job: dead-lettering");
                let stored = self
                    .patiently(&msg, "the dead letter", || {
                        self.bus.dead_letter(
                            &msg,
                            DeadLetterReason::Decode,
                            &reason,
                            delivered,
                            "",
                            &self.worker_id,
                        )
                    })
                    .await;
                let outcome = match stored {
                    Ok(()) => {
                        self.metrics
                            .dead_letters
                            .with_label_values(&[self.kind, "decode"])
                            .inc();
                        settle(&msg, AckKind::Term, Outcome::Malformed).await
                    }
                    Err(e) => {
                        let delay = fault_delay(delivered);
                        log_hand_back(&format!("the bus is unavailable: {e}"), delay);
                        settle(&msg, AckKind::Nak(Some(delay)), Outcome::Unavailable).await
                    }
                };
                self.record("unknown", outcome, started);
                drop(permit);
                return;
            }
        };

        let op_label = self.declares(&job.operation).unwrap_or("unknown");
        let span = info_span!(
            "job",
            job_id = %job.job_id,
            operation = %job.operation,
            correlation_id = %job.correlation_id,
            trace_id = tracing::field::Empty,
            tenant = %job.tenant,
            instance_id = %job.instance_id,
            attempt = delivered,
            "messaging.destination.name" = %msg.subject,
        );
        // Results and dead letters are published inside this span and carry its context.
        telemetry::continue_trace(&span, &telemetry::NatsExtractor(msg.headers.as_ref()));
        let outcome = self
            .run_job(&msg, &job, delivered, stream_seq, progress_every)
            .instrument(span)
            .await;
        self.record(op_label, outcome, started);
        drop(permit);
    }

    fn record(&self, operation: &str, outcome: Outcome, started: Instant) {
        self.metrics
            .jobs
            .with_label_values(&[self.kind, operation, outcome.as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[self.kind, operation])
            .observe(started.elapsed().as_secs_f64());
    }

    fn decode(&self, msg: &jetstream::Message, stream_seq: u64) -> Result<Job, String> {
        let content_type = ContentType::from_header(
            msg.headers
                .as_ref()
                .and_then(|h| h.get(header::CONTENT_TYPE))
                .map(|v| v.as_str()),
        );
        let mut job: Job = decode(content_type, &msg.payload).map_err(|e| e.to_string())?;
        let from_subject = subject::operation_of_job(&msg.subject).unwrap_or_default();
        if job.operation.is_empty() {
            job.operation = from_subject.to_owned();
        } else if job.operation != from_subject {
            return Err(format!(
                "field `operation`: {:?} does not match the subject {:?}",
                job.operation,
                msg.subject.as_str()
            ));
        }
        // Both name subjects the loop publishes to (`wf.result.<instance>`,
        // `wf.events.<tenant>.…`): a job whose result could never be published is refused here.
        for (field, value) in [("instance_id", &job.instance_id), ("tenant", &job.tenant)] {
            if !value.is_empty()
                && let Err(e) = subject::check_token(value)
            {
                return Err(format!(
                    "field `{field}`: {value:?} is not a subject token: {e}"
                ));
            }
        }
        if !job.input.is_empty() && serde_json::from_slice::<serde_json::Value>(&job.input).is_err()
        {
            return Err("field `input`: not a JSON document".into());
        }
        if job.correlation_id.is_empty()
            && let Some(id) = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(header::CORRELATION_ID))
        {
            job.correlation_id = id.as_str().to_owned();
        }
        if job.job_id.is_empty() {
            // Deterministic, so a redelivery publishes under the same message ids.
            job.job_id = format!("{}-{stream_seq}", stream::jobs(self.kind));
        }
        Ok(job)
    }

    async fn run_job(
        &self,
        msg: &jetstream::Message,
        job: &Job,
        delivered: u32,
        stream_seq: u64,
        progress_every: Duration,
    ) -> Outcome {
        let max_attempts = self.max_attempts(job);
        let record = match self
            .earlier_deliveries(msg, job, delivered, stream_seq)
            .await
        {
            Ok(record) => record,
            Err(e) => {
                // Without the record, attempts cannot be told from faults: wait for the bus.
                let fault = format!("the bus (attempt records) is unavailable: {e}");
                let delay = fault_delay(delivered);
                log_hand_back(&fault, delay);
                return settle(msg, AckKind::Nak(Some(delay)), Outcome::Unavailable).await;
            }
        };
        let attempt = record.attempts_used(delivered) + 1;
        let end = if self.declares(&job.operation).is_none() {
            RunEnd::UnknownOperation {
                operation: job.operation.clone(),
                kind: self.kind,
            }
        } else if delivered > self.settings.max_deliveries {
            RunEnd::DeliveredTooOften {
                delivered,
                last_fault: record.last_fault.clone(),
            }
        } else if attempt > max_attempts {
            RunEnd::AttemptsUsedUp {
                crashed: record.has_unaccounted(delivered),
            }
        } else if job.deadline_ms > 0 && job.deadline_ms <= switchyard_proto::now_ms() {
            RunEnd::DeadlineExceeded
        } else {
            match self.admit(job).await {
                Err(failure) => RunEnd::Done(Err(failure)),
                Ok(resolved) => {
                    let job = resolved.as_ref().unwrap_or(job);
                    let counts = (attempt, delivered, max_attempts);
                    self.run_handler(msg, job, counts, progress_every).await
                }
            }
        };
        let verdict = match verdict(end, attempt, max_attempts, || {
            retry_delay(&self.settings, job, attempt)
        }) {
            Verdict::Fault { fault }
                if record.faulty_for(switchyard_proto::now_ms())
                    >= self.settings.fault_patience =>
            {
                Verdict::GiveUp {
                    reason: DeadLetterReason::Unavailable,
                    error: job_error(
                        ErrorCode::Unavailable,
                        format!(
                            "gave up after {} of unavailable infrastructure (worker.fault_patience): {fault}",
                            humantime_serde::re::humantime::format_duration(
                                self.settings.fault_patience
                            )
                        ),
                    ),
                }
            }
            other => other,
        };
        let verdict = self.effects_win(job, verdict).await;
        let delivery = Delivery {
            msg,
            job,
            attempt,
            stream_seq,
            record,
        };
        self.settle_verdict(delivery, verdict).await
    }

    /// The record of what earlier deliveries of the job ended in; a first delivery has none.
    async fn earlier_deliveries(
        &self,
        msg: &jetstream::Message,
        job: &Job,
        delivered: u32,
        stream_seq: u64,
    ) -> Result<Record, Error> {
        let empty = Record {
            job_id: job.job_id.clone(),
            ..Record::default()
        };
        match self.consuming.get() {
            Some(c) if delivered > 1 => {
                self.patiently(msg, "the attempt record", || {
                    c.attempts.read(stream_seq, &job.job_id)
                })
                .await
            }
            _ => Ok(empty),
        }
    }

    /// A job given up on for used-up attempts or unavailable infrastructure whose effect an
    /// earlier delivery recorded as done completes with that result instead.
    async fn effects_win(&self, job: &Job, verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::GiveUp {
                reason: DeadLetterReason::RetriesExhausted | DeadLetterReason::Unavailable,
                ..
            } => match self.handler.recorded(job).await {
                Some(output) => {
                    info!(
                        "giving up, but an earlier delivery did the effect: completing with its result"
                    );
                    Verdict::Succeeded(output)
                }
                None => verdict,
            },
            other => other,
        }
    }

    /// Runs `op` until it succeeds, retrying with a backoff while the bus refuses it, for up to
    /// the consumer's `ack_wait`, and keeps the delivery alive with progress acks meanwhile: a
    /// leader election or a short restart is ridden out within one delivery, without running
    /// the handler again.
    async fn patiently<T, F, Fut>(
        &self,
        msg: &jetstream::Message,
        what: &str,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let patience = self
            .consuming
            .get()
            .map_or(Duration::from_secs(30), |c| c.settle_patience);
        let give_up_at = Instant::now() + patience;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let e = match op().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            if Instant::now() + delay >= give_up_at || self.hard_stop.is_cancelled() {
                return Err(e);
            }
            if let Some(held_back) = BUS_FAULTS.admit() {
                warn!(error = %e, held_back, "the bus did not take {what}: retrying");
            }
            let _ = msg.ack_with(AckKind::Progress).await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.hard_stop.cancelled() => return Err(e),
            }
        }
    }

    /// What every job goes through before its handler, whichever way it came (stream or
    /// request/reply): its input checked against the operation's schema, then its object
    /// references resolved. `Some` is the job with the values in place of references.
    async fn admit(&self, job: &Job) -> Result<Option<Job>, JobFailure> {
        check_input(job)?;
        self.resolve_references(job).await
    }

    /// Runs the handler; `counts` is (attempt, delivery, max attempts).
    async fn run_handler(
        &self,
        msg: &jetstream::Message,
        job: &Job,
        (attempt, delivery, max_attempts): (u32, u32, u32),
        progress_every: Duration,
    ) -> RunEnd {
        self.bus
            .lifecycle_event(
                job,
                event::STEP_STARTED,
                attempt,
                serde_json::json!({
                    "attempt": attempt,
                    "max_attempts": max_attempts,
                    "worker_id": &*self.worker_id,
                    "operation": job.operation,
                }),
            )
            .await;
        let instance = self.cancels.watch(&job.tenant, &job.instance_id);
        let cancel = CancellationToken::new();
        let mut ctx = self.context(job, attempt, max_attempts, cancel.clone());
        ctx.delivery = delivery;
        let deadline = async {
            if job.deadline_ms > 0 {
                let left = u64::try_from(job.deadline_ms - switchyard_proto::now_ms()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(left)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let handler = self.handler.handle(ctx, job);
        tokio::pin!(handler, deadline);
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
        let end = loop {
            tokio::select! {
                out = &mut handler => break RunEnd::Done(out),
                _ = &mut deadline => break RunEnd::DeadlineExceeded,
                _ = instance.cancelled() => break RunEnd::InstanceCancelled,
                _ = self.hard_stop.cancelled() => break RunEnd::ShuttingDown,
                _ = progress.tick() => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        warn!(error = %e, "cannot send progress ack");
                    }
                }
            }
        };
        cancel.cancel();
        end
    }

    /// The job with every object reference in its input replaced by the value it names
    /// ([`crate::objects`]), or `None` when the input holds none (the usual case, decided
    /// without parsing). Handlers never see references.
    async fn resolve_references(&self, job: &Job) -> Result<Option<Job>, JobFailure> {
        let prefix = switchyard_proto::stream::OBJECT_REF_PREFIX.as_bytes();
        if !job.input.windows(prefix.len()).any(|w| w == prefix) {
            return Ok(None);
        }
        let mut input: serde_json::Value = serde_json::from_slice(&job.input)
            .map_err(|e| JobFailure::invalid_input("input", e.to_string()))?;
        self.bus
            .objects()
            .resolve(&job.tenant, &mut input, MAX_RESOLVED_BYTES)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    JobFailure::unavailable("the object store", e.to_string())
                } else {
                    JobFailure::invalid_input("input", e.to_string())
                }
            })?;
        let mut job = job.clone();
        job.input = serde_json::to_vec(&input).unwrap_or_default();
        Ok(Some(job))
    }

    async fn settle_verdict(&self, d: Delivery<'_>, verdict: Verdict) -> Outcome {
        let Delivery {
            msg, job, attempt, ..
        } = d;
        match verdict {
            Verdict::Succeeded(output) => {
                let result = service::job_result(
                    job,
                    JobStatus::Succeeded,
                    Some(output),
                    None,
                    attempt,
                    &self.worker_id,
                );
                let published = self
                    .patiently(msg, "the result", || {
                        self.bus.publish_result(msg, job, &result)
                    })
                    .await;
                if let Err(e) = published {
                    return self
                        .hand_back(d, Some(format!("the bus is unavailable: {e}")))
                        .await;
                }
                debug!("job succeeded");
                // The result is durable; if the ack is lost, a redelivery republishes it under
                // the same message id and JetStream drops the copy.
                let acked = self
                    .patiently(msg, "the ack", || async {
                        msg.double_ack().await.map_err(Error::jetstream)
                    })
                    .await;
                if let Err(e) = acked {
                    warn!(error = %e, "ack not confirmed");
                }
                self.forget(&d).await;
                Outcome::Succeeded
            }
            Verdict::Retry { delay, error } => {
                info!(delay_ms = delay.as_millis() as u64, error = %error, "job failed: retrying later");
                self.bus
                    .lifecycle_event(
                        job,
                        event::STEP_RETRYING,
                        attempt,
                        serde_json::json!({
                            "attempt": attempt,
                            "delay_ms": delay.as_millis() as u64,
                            "error": error,
                        }),
                    )
                    .await;
                if let Some(c) = self.consuming.get() {
                    let mut record = d.record.clone();
                    record.failures = attempt;
                    c.attempts.write(d.stream_seq, &record).await;
                }
                settle(msg, AckKind::Nak(Some(delay)), Outcome::Retried).await
            }
            Verdict::GiveUp { reason, error } => {
                let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                warn!(code = code.as_str_name(), error = %error.message, "job failed: dead-lettering");
                let message = error.message.clone();
                let result = service::job_result(
                    job,
                    JobStatus::Failed,
                    None,
                    Some(error),
                    attempt,
                    &self.worker_id,
                );
                let published = self
                    .patiently(msg, "the failed result and dead letter", || async {
                        self.bus.publish_result(msg, job, &result).await?;
                        self.bus
                            .dead_letter(
                                msg,
                                reason,
                                &message,
                                attempt,
                                &job.job_id,
                                &self.worker_id,
                            )
                            .await
                    })
                    .await;
                if let Err(e) = published {
                    return self
                        .hand_back(d, Some(format!("the bus is unavailable: {e}")))
                        .await;
                }
                let label = reason
                    .as_str_name()
                    .trim_start_matches("DEAD_LETTER_REASON_")
                    .to_ascii_lowercase();
                self.metrics
                    .dead_letters
                    .with_label_values(&[self.kind, label.as_str()])
                    .inc();
                let outcome = settle(msg, AckKind::Term, Outcome::Failed).await;
                self.forget(&d).await;
                outcome
            }
            Verdict::Cancelled => {
                info!("instance cancelled: job stopped");
                let failed = job_error(ErrorCode::Cancelled, "instance cancelled".into());
                let result = service::job_result(
                    job,
                    JobStatus::Cancelled,
                    None,
                    Some(failed),
                    attempt,
                    &self.worker_id,
                );
                let published = self
                    .patiently(msg, "the cancelled result", || {
                        self.bus.publish_result(msg, job, &result)
                    })
                    .await;
                match published {
                    Ok(()) => {
                        let outcome = settle(msg, AckKind::Ack, Outcome::Cancelled).await;
                        self.forget(&d).await;
                        outcome
                    }
                    Err(e) => {
                        self.hand_back(d, Some(format!("the bus is unavailable: {e}")))
                            .await
                    }
                }
            }
            Verdict::HandBack => {
                info!("shutting down: job handed back");
                self.hand_back(d, None).await
            }
            Verdict::Fault { fault } => self.hand_back(d, Some(fault)).await,
        }
    }

    /// Gives the job back without using an attempt, recording why: `fault` names the
    /// infrastructure that failed (the job comes back after a backoff), `None` is a replica
    /// stopping (another takes it once this one's pull request has expired).
    async fn hand_back(&self, d: Delivery<'_>, fault: Option<String>) -> Outcome {
        let mut record = d.record;
        record.failures = d.attempt - 1;
        let (record, delay, outcome) = match &fault {
            Some(fault) => {
                let record = record.with_fault(fault, switchyard_proto::now_ms());
                let delay = fault_delay(record.handed_back);
                log_hand_back(fault, delay);
                (record, Some(delay), Outcome::Unavailable)
            }
            None => {
                record.handed_back += 1;
                (record, Some(self.hand_back_delay()), Outcome::HandedBack)
            }
        };
        if let Some(c) = self.consuming.get() {
            c.attempts.write(d.stream_seq, &record).await;
        }
        settle(d.msg, AckKind::Nak(delay), outcome).await
    }

    /// How long a job handed back by a stopping replica waits: until this replica's last pull
    /// request has expired, so that it goes to another replica instead of back to this one.
    fn hand_back_delay(&self) -> Duration {
        self.settings.pull_expiry
    }

    /// Drops the record of a settled job that had one.
    async fn forget(&self, d: &Delivery<'_>) {
        if d.record.failures + d.record.handed_back > 0
            && let Some(c) = self.consuming.get()
        {
            c.attempts.forget(d.stream_seq).await;
        }
    }
}

/// One delivery being settled: the message, the job it carries, which attempt it was and what
/// earlier deliveries ended in.
struct Delivery<'a> {
    msg: &'a jetstream::Message,
    job: &'a Job,
    attempt: u32,
    stream_seq: u64,
    record: Record,
}

/// The delay before a job handed back for the `n`th time for unavailable infrastructure
/// comes back: 1 s doubling to 30 s, with jitter, so an outage is ridden out without a storm.
fn fault_delay(n: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(n.saturating_sub(1).min(16) as usize)
        .unwrap_or(Duration::from_secs(30))
}

fn log_hand_back(fault: &str, delay: Duration) {
    if let Some(held_back) = HAND_BACKS.admit() {
        warn!(
            fault,
            delay_ms = delay.as_millis() as u64,
            held_back,
            "infrastructure unavailable: job handed back without using an attempt"
        );
    }
}

/// Acks, naks or terms `msg`; `outcome` is what happened if the server takes it. When it does
/// not, the server redelivers the job after `ack_wait`.
async fn settle(msg: &jetstream::Message, kind: AckKind, outcome: Outcome) -> Outcome {
    match msg.ack_with(kind).await {
        Ok(()) => outcome,
        Err(e) => {
            if let Some(held_back) = BUS_FAULTS.admit() {
                warn!(error = %e, held_back, "cannot settle a job: it will be redelivered");
            }
            Outcome::BusError
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::RetryPolicy;

    #[test]
    fn retryable_failures_retry_until_the_last_attempt() {
        let retry = || RunEnd::Done(Err(JobFailure::retryable("busy")));
        assert!(matches!(
            verdict(retry(), 1, 3, || Duration::from_secs(1)),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            verdict(retry(), 2, 3, || Duration::from_secs(1)),
            Verdict::Retry { .. }
        ));
        let last = verdict(retry(), 3, 3, || Duration::from_secs(1));
        let (code, _, error) = given_up(&last);
        assert_eq!(code, ErrorCode::RetriesExhausted);
        assert!(error.message.contains("after 3 attempts"), "{last:?}");
    }

    #[test]
    fn jobs_that_cannot_run_are_given_up_with_their_own_reason() {
        let used_up = verdict(RunEnd::AttemptsUsedUp { crashed: true }, 4, 3, || {
            Duration::ZERO
        });
        let (code, _, error) = given_up(&used_up);
        assert_eq!(code, ErrorCode::RetriesExhausted);
        assert!(error.message.contains("after 3 attempts"), "{used_up:?}");
        let end = RunEnd::UnknownOperation {
            operation: "test.nope".into(),
            kind: "test",
        };
        let unknown = verdict(end, 1, 3, || Duration::ZERO);
        let (code, reason, error) = given_up(&unknown);
        assert_eq!(code, ErrorCode::UnknownOperation);
        assert_eq!(reason, DeadLetterReason::UnknownOperation);
        assert_eq!(
            error.message,
            "unknown operation \"test.nope\" for the test worker"
        );
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let end = RunEnd::Done(Err(JobFailure::Retryable {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(9)),
        }));
        let Verdict::Retry { delay, .. } = verdict(end, 1, 3, || Duration::from_secs(1)) else {
            panic!("no retry")
        };
        assert_eq!(delay, Duration::from_secs(9));
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        for (failure, code) in [
            (
                JobFailure::invalid_input("ms", "not a number"),
                ErrorCode::InvalidInput,
            ),
            (JobFailure::permanent("no"), ErrorCode::Permanent),
            (JobFailure::not_found("no card c1"), ErrorCode::NotFound),
            (
                JobFailure::conflict("card c1 is at version 2"),
                ErrorCode::Conflict,
            ),
        ] {
            let v = verdict(RunEnd::Done(Err(failure.clone())), 1, 5, || Duration::ZERO);
            let (got, reason, error) = given_up(&v);
            assert_eq!(got, code, "{failure:?}");
            assert_eq!(reason, DeadLetterReason::Permanent);
            assert_eq!(error, &failure.to_job_error());
        }
    }

    fn given_up(v: &Verdict) -> (ErrorCode, DeadLetterReason, &JobError) {
        match v {
            Verdict::GiveUp { reason, error } => (
                ErrorCode::try_from(error.code).expect("a known code"),
                *reason,
                error,
            ),
            other => panic!("not given up: {other:?}"),
        }
    }

    #[test]
    fn every_failure_crosses_the_bus_as_a_code_with_its_typed_fields() {
        // Callers branch on these (HTTP 422 naming the field, 404, 412, 503 with Retry-After):
        // none of them may depend on the message text.
        let cases = [
            (
                JobFailure::Retryable {
                    message: "ClickUp rate limited the call".into(),
                    retry_after: Some(Duration::from_millis(7_250)),
                },
                ErrorCode::RetriesExhausted,
                "",
                7_250,
            ),
            (
                JobFailure::retryable("timed out"),
                ErrorCode::RetriesExhausted,
                "",
                0,
            ),
            (
                JobFailure::invalid_input("content.quote", "must be a string"),
                ErrorCode::InvalidInput,
                "content.quote",
                0,
            ),
            (
                JobFailure::permanent("refused"),
                ErrorCode::Permanent,
                "",
                0,
            ),
            (JobFailure::not_found("card c1"), ErrorCode::NotFound, "", 0),
            (
                JobFailure::conflict("card c1 is at 2"),
                ErrorCode::Conflict,
                "",
                0,
            ),
        ];
        for (failure, code, field, retry_after_ms) in cases {
            let e = failure.to_job_error();
            assert_eq!(e.code, code as i32, "{failure:?}");
            assert_eq!(e.field, field, "{failure:?}");
            assert_eq!(e.retry_after_ms, retry_after_ms, "{failure:?}");
            assert_eq!(e.message, failure.to_string());
        }
    }

    #[test]
    fn retry_delays_grow_and_stay_within_bounds() {
        let settings = WorkerSettings::default();
        let job = Job {
            retry: Some(RetryPolicy {
                max_attempts: 10,
                initial_delay_ms: 100,
                max_delay_ms: 2_000,
                multiplier: 2.0,
            }),
            ..Job::default()
        };
        let delays: Vec<Duration> = (1..=8).map(|a| retry_delay(&settings, &job, a)).collect();
        // Jitter adds up to the delay itself, so attempt n lies in [100ms·2^(n-1), 2·that].
        for (i, d) in delays.iter().enumerate() {
            let base =
                Duration::from_millis(100 * 2u64.pow(i as u32)).min(Duration::from_millis(2_000));
            assert!(
                *d >= base && *d <= base * 2,
                "attempt {}: {d:?} not in [{base:?}, {:?}]",
                i + 1,
                base * 2
            );
        }
        assert!(delays[3] > delays[0]);
    }
}
