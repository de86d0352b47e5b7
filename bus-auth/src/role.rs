//! Who connects to the bus and what each may do there: one role per service, one per worker
//! kind, the operator's, and a publisher role per tenant.
//!
//! Permissions name subjects, not streams: JetStream is reached through `$JS.API.…` subjects,
//! KV buckets through `$KV.<bucket>.…` and object stores through `$O.<bucket>.…`, so each
//! role's list spells out exactly which streams, consumers and buckets it may touch.

use std::fmt;

use switchyard_proto::{audit, stream, subject};

use crate::Error;

/// What a user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects it may publish to (wildcards allowed).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (services), whatever their reply subject.
    pub responses: bool,
}

/// A user of the bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The deployment's operator (the `switchyard` command): applies the bus, inspects and
    /// repairs it. Everything.
    Operator,
    /// The HTTP gateway.
    Gateway,
    /// The workflow engine.
    Orchestrator,
    /// The ledger: usage, instance history, audit log.
    Ledger,
    /// The replicas of one worker kind.
    Worker(String),
    /// Another service publishing one tenant's workflows straight onto the bus.
    Tenant(String),
}

/// The service roles a deployment with `kinds` of workers needs, in a stable order.
pub fn service_roles<S: AsRef<str>>(kinds: &[S]) -> Vec<Role> {
    let mut roles = vec![
        Role::Operator,
        Role::Gateway,
        Role::Orchestrator,
        Role::Ledger,
    ];
    roles.extend(kinds.iter().map(|k| Role::Worker(k.as_ref().to_owned())));
    roles
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Operator => f.write_str("operator"),
            Role::Gateway => f.write_str("gateway"),
            Role::Orchestrator => f.write_str("orchestrator"),
            Role::Ledger => f.write_str("ledger"),
            Role::Worker(kind) => write!(f, "worker-{kind}"),
            Role::Tenant(tenant) => write!(f, "tenant-{tenant}"),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    /// `operator`, `gateway`, `orchestrator`, `ledger`, `worker-<kind>` or `tenant-<tenant>`.
    fn from_str(s: &str) -> Result<Role, Error> {
        let role = match s {
            "operator" => Role::Operator,
            "gateway" => Role::Gateway,
            "orchestrator" => Role::Orchestrator,
            "ledger" => Role::Ledger,
            _ => {
                if let Some(kind) = s.strip_prefix("worker-") {
                    Role::Worker(kind.to_owned())
                } else if let Some(tenant) = s.strip_prefix("tenant-") {
                    Role::Tenant(tenant.to_owned())
                } else {
                    return Err(Error::Role(format!(
                        "{s:?} is not a role: operator, gateway, orchestrator, ledger, \
                         worker-<kind> or tenant-<tenant>"
                    )));
                }
            }
        };
        role.check()?;
        Ok(role)
    }
}

/// `$JS.API` subjects that read a stream's info.
fn stream_info(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// Pulling from, acknowledging and inspecting one durable consumer.
fn consume(stream: &str, consumer: &str) -> Vec<String> {
    vec![
        stream_info(stream),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]
}

/// Ephemeral and ordered consumers on `stream` (watching, listing, reading back, following
/// an instance's events): created, read, flow-controlled and deleted by whoever made them.
fn ephemeral_consumers(stream: &str) -> Vec<String> {
    vec![
        stream_info(stream),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Reading one message of `stream` by sequence or subject.
fn get_message(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]
}

/// Reading a KV bucket: single keys, watching and listing.
fn kv_read(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    let mut subjects = ephemeral_consumers(&stream);
    subjects.extend(get_message(&stream));
    subjects
}

/// Reading and writing a KV bucket.
fn kv_write(bucket: &str) -> Vec<String> {
    let mut subjects = vec![format!("$KV.{bucket}.>")];
    subjects.extend(kv_read(bucket));
    subjects
}

/// Reading and writing the object store.
fn objects() -> Vec<String> {
    let bucket = stream::WF_OBJECTS_BUCKET;
    let stream = format!("OBJ_{bucket}");
    let mut subjects = vec![
        format!("$O.{bucket}.>"),
        format!("$JS.API.STREAM.PURGE.{stream}"),
    ];
    subjects.extend(ephemeral_consumers(&stream));
    subjects.extend(get_message(&stream));
    subjects
}

/// What every service needs: JetStream's account info and the replies to its own requests.
fn service_base() -> Permissions {
    Permissions {
        publish: vec!["$JS.API.INFO".into()],
        subscribe: vec!["_INBOX.>".into()],
        responses: false,
    }
}

/// Serving `svc.<group>.…` with NATS's service API (discovery under `$SRV`).
fn serve(p: &mut Permissions, group: &str) {
    let name = format!("switchyard-{group}");
    p.subscribe.extend([
        format!("{}.>", subject::service_group(group)),
        "$SRV.*".into(),
        format!("$SRV.*.{name}"),
        format!("$SRV.*.{name}.>"),
    ]);
    p.responses = true;
}

impl Role {
    /// The user's name in its JWT and the file name of its credentials.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Refuses a worker kind or tenant that is not a single subject token.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Role::Worker(token) | Role::Tenant(token) => subject::check_token(token)
                .map_err(|e| Error::Role(format!("{self}: {token:?} {e}"))),
            _ => Ok(()),
        }
    }

    /// The inbox prefix a client of this role must use (NATS's default `_INBOX` for
    /// services); a tenant may read only replies under its own.
    pub fn inbox_prefix(&self) -> String {
        match self {
            Role::Tenant(tenant) => format!("_INBOX_{tenant}"),
            _ => "_INBOX".into(),
        }
    }

    /// What this role may publish and subscribe to.
    pub fn permissions(&self) -> Permissions {
        match self {
            Role::Operator => Permissions {
                publish: vec![">".into()],
                subscribe: vec![">".into()],
                responses: true,
            },
            Role::Gateway => gateway(),
            Role::Orchestrator => orchestrator(),
            Role::Ledger => ledger(),
            Role::Worker(kind) => worker(kind),
            Role::Tenant(tenant) => Permissions {
                publish: vec![
                    format!("wf.start.{tenant}.>"),
                    format!("wf.cancel.{tenant}.*"),
                    format!("wf.rerun.{tenant}.*"),
                    format!("wf.signal.{tenant}.>"),
                    // Its own events, which start the workflows whose triggers name them.
                    subject::tenant_event(tenant, ">"),
                ],
                subscribe: vec![
                    format!("wf.events.{tenant}.>"),
                    format!("{}.>", self.inbox_prefix()),
                ],
                responses: false,
            },
        }
    }
}

fn gateway() -> Permissions {
    let mut p = service_base();
    p.publish.extend(
        [
            subject::ALL_STARTS,
            subject::ALL_CANCELS,
            subject::ALL_SIGNALS,
            subject::ALL_AUDIT,
            // Signed inbound webhooks, as the tenant's events.
            subject::ALL_TENANT_EVENTS,
            // Requests to the engine, the ledger and the workers' services, and the registry's
            // discovery of who serves what.
            "svc.>",
            "$SRV.INFO",
            // Readiness and the registry read stream state.
            "$JS.API.STREAM.INFO.*",
        ]
        .map(String::from),
    );
    // `?wait` follows an instance's events with a plain subscription, event streams with
    // an ephemeral consumer each.
    p.subscribe.push(subject::ALL_EVENTS.into());
    p.publish.extend(ephemeral_consumers(stream::WF_EVENTS));
    // A read-only mirror of the definitions; transcripts too long for a message are stored.
    p.publish.extend(kv_read(stream::WF_DEFINITIONS_BUCKET));
    p.publish.extend(kv_read(stream::OPERATIONS_BUCKET));
    p.publish.extend(objects());
    // The Idempotency-Keys it has seen, each with its request's fingerprint.
    p.publish.extend(kv_write(stream::IDEMPOTENCY_BUCKET));
    p
}

fn orchestrator() -> Permissions {
    let mut p = service_base();
    for consumer in [
        stream::ORCHESTRATOR_COMMANDS,
        stream::ORCHESTRATOR_RESULTS,
        stream::ORCHESTRATOR_TIMERS,
    ] {
        p.publish.extend(consume(stream::WF_INBOX, consumer));
    }
    // The definitions' schedules: it keeps one message per schedule (reading back what is
    // there, purging what is gone) and turns each firing into a start.
    p.publish.extend(consume(
        stream::WF_SCHEDULES,
        stream::ORCHESTRATOR_SCHEDULES,
    ));
    p.publish.extend(get_message(stream::WF_SCHEDULES));
    // Tenants' events, each turned into the starts of the workflows that name it.
    p.publish
        .extend(consume(stream::WF_TRIGGERS, stream::ORCHESTRATOR_TRIGGERS));
    p.publish
        .push(format!("$JS.API.STREAM.PURGE.{}", stream::WF_SCHEDULES));
    p.publish
        .extend([subject::ALL_SCHEDULES, subject::ALL_STARTS].map(String::from));
    p.publish.extend(
        [
            "jobs.>".to_owned(),
            subject::ALL_EVENTS.to_owned(),
            subject::ALL_TIMERS.to_owned(),
            subject::dlq("orchestrator"),
            // A re-run it accepted goes through its own inbox, like any command; it audits
            // the re-runs and dead-letter replays its service carries out.
            subject::ALL_RERUNS.to_owned(),
            subject::audit("*", audit::INSTANCE_RERUN),
            subject::audit("*", audit::DLQ_REPLAY),
            subject::audit("*", audit::DLQ_PURGE),
            "$JS.API.STREAM.INFO.*".to_owned(),
            // The registry asks every service whether it is there.
            "$SRV.PING".to_owned(),
        ]
        .map(String::from),
    );
    p.publish.extend(kv_write(stream::WF_STATE_BUCKET));
    p.publish.extend(kv_write(stream::WF_DEFINITIONS_BUCKET));
    // Operators list, show, replay and purge dead letters through its service.
    p.publish.extend(ephemeral_consumers(stream::DLQ));
    p.publish.extend(get_message(stream::DLQ));
    p.publish
        .push(format!("$JS.API.STREAM.MSG.DELETE.{}", stream::DLQ));
    p.publish.extend(kv_write(stream::DLQ_HANDLED_BUCKET));
    // Concurrency keys: who holds a slot, who waits (ADR 20).
    p.publish.extend(kv_write(stream::CONCURRENCY_BUCKET));
    p.publish.extend(kv_write(stream::RATES_BUCKET));
    // Worker kinds declare their operations to it: it stores them and creates a new kind's
    // work-queue stream and consumer (never changing or deleting existing ones; ADR 15).
    // Subject wildcards match whole tokens, so stream creation cannot be narrowed to
    // `JOBS_*`; consumers it may create only with a `jobs.>` filter, which only job streams
    // hold, and it may read none of them.
    p.publish.extend(kv_write(stream::OPERATIONS_BUCKET));
    p.publish.extend(
        [
            "$JS.API.STREAM.CREATE.*",
            "$JS.API.CONSUMER.CREATE.*.*.jobs.>",
            "$JS.API.CONSUMER.INFO.*.*",
        ]
        .map(String::from),
    );
    serve(&mut p, "orchestrator");
    p
}

fn ledger() -> Permissions {
    let mut p = service_base();
    for (stream, consumer) in [
        (stream::USAGE, stream::LEDGER_USAGE),
        (stream::WF_EVENTS, stream::LEDGER_EVENTS),
        (stream::AUDIT, stream::LEDGER_AUDIT),
    ] {
        p.publish.extend(consume(stream, consumer));
        // Rebuilding the read models replays the stream with an ordered consumer.
        p.publish.extend(ephemeral_consumers(stream));
    }
    p.publish.push(subject::dlq("ledger"));
    serve(&mut p, "ledger");
    p
}

fn worker(kind: &str) -> Permissions {
    let mut p = service_base();
    p.publish
        .extend(consume(&stream::jobs(kind), &stream::worker_consumer(kind)));
    p.publish.extend([
        subject::ALL_RESULTS.to_owned(),
        subject::ALL_USAGE.to_owned(),
        subject::ALL_EVENTS.to_owned(),
        subject::dlq(kind),
        // Declaring its own operations, and no other kind's.
        switchyard_proto::orchestrator::declare_subject(kind),
        // A job published with a reply subject of its own gets its result there too: to the
        // stream that captures it (found by name), or straight to the publisher's inbox.
        "$JS.API.STREAM.NAMES".to_owned(),
        "_INBOX.>".to_owned(),
    ]);
    // Cancelling a job whose instance was cancelled or failed.
    p.subscribe.extend([
        subject::ALL_CANCELLED_EVENTS.to_owned(),
        subject::ALL_FAILED_EVENTS.to_owned(),
    ]);
    p.publish.extend(objects());
    // What its own jobs' deliveries ended in (ADR 14): it writes only its kind's keys.
    let attempts = stream::ATTEMPTS_BUCKET;
    p.publish.extend([
        format!("$KV.{attempts}.{kind}.>"),
        format!("$JS.API.STREAM.INFO.KV_{attempts}"),
    ]);
    p.publish.extend(get_message(&format!("KV_{attempts}")));
    serve(&mut p, kind);
    p
}
