//! The typed form of `bus.toml` and the objects it declares, with names from `switchyard-proto`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_proto::{stream, subject};

use crate::Error;

/// The definitions shipped with the crate (`bus.toml`).
pub const DEFAULT_TOML: &str = include_str!("../bus.toml");

/// Where [`DEFAULT_TOML`] came from, as named in error messages.
const DEFAULT_ORIGIN: &str = "bus.toml (built in)";

/// NATS refuses more replicas than this.
const MAX_REPLICAS: usize = 5;

/// Every stream, KV bucket and durable consumer Switchyard needs, with their settings.
///
/// Names and subjects are not configurable: each section maps to fixed names from
/// [`switchyard_proto::stream`] and [`switchyard_proto::subject`]. See `bus.toml` for the units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Replicas of every stream and KV bucket; consumers follow their stream. 1 on a single
    /// server, 3 on a 3-node cluster. [`crate::ApplyOptions::replicas`] overrides it.
    pub replicas: usize,
    pub streams: Streams,
    pub jobs: Jobs,
    pub consumers: Consumers,
    pub kv: KvBuckets,
    /// The `WF_OBJECTS` object store; defaults apply when the section is left out.
    #[serde(default)]
    pub objects: ObjectStoreSettings,
}

/// The streams that exist once, whatever the worker kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Streams {
    /// `WF_INBOX`: starts, results, cancels and signals for the orchestrator.
    pub inbox: StreamSettings,
    /// `WF_EVENTS`: workflow and step progress.
    pub events: StreamSettings,
    /// `USAGE`: usage events for the ledger.
    pub usage: StreamSettings,
    /// `DLQ`: dead letters.
    pub dlq: StreamSettings,
    /// `AUDIT`: who changed definitions, cancelled, signalled, or was refused.
    pub audit: StreamSettings,
    /// `WF_SCHEDULES`: the definitions' schedules and their firings, with the server's
    /// message scheduler allowed on it.
    pub schedules: StreamSettings,
    /// `WF_TRIGGERS`: tenants' own events, which start the workflows that name them.
    pub triggers: StreamSettings,
}

/// The template for the per-kind `JOBS_<KIND>` streams and their `worker-<kind>` consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    /// Worker kinds whose stream and consumer `bus apply` creates ahead of time (the
    /// built-in ones, in the shipped `bus.toml`) and whose credentials `auth-init` issues. A
    /// kind declared at run time need not be listed: its stream and consumer are created,
    /// from this template, when it first declares its operations.
    pub kinds: Vec<String>,
    pub stream: StreamSettings,
    pub consumer: ConsumerSettings,
}

/// The durable consumers that are not per worker kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumers {
    /// `orchestrator-commands` on `WF_INBOX` (starts, cancels, signals).
    pub orchestrator_commands: ConsumerSettings,
    /// `orchestrator-results` on `WF_INBOX` (job results).
    pub orchestrator_results: ConsumerSettings,
    /// `orchestrator-timers` on `WF_INBOX` (step timeouts and SLA deadlines, held back by
    /// delayed redelivery until they are due).
    pub orchestrator_timers: ConsumerSettings,
    /// `orchestrator-schedules` on `WF_SCHEDULES` (schedule firings, turned into starts).
    pub orchestrator_schedules: ConsumerSettings,
    /// `orchestrator-triggers` on `WF_TRIGGERS` (tenants' events, turned into starts).
    pub orchestrator_triggers: ConsumerSettings,
    /// `ledger-usage` on `USAGE`.
    pub ledger_usage: ConsumerSettings,
    /// `ledger-events` on `WF_EVENTS`.
    pub ledger_events: ConsumerSettings,
    /// `ledger-audit` on `AUDIT`.
    pub ledger_audit: ConsumerSettings,
}

/// The KV buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvBuckets {
    /// `WF_STATE`: one key per workflow instance.
    pub state: KvSettings,
    /// `WF_DEFINITIONS`: one key per registered workflow definition version.
    pub definitions: KvSettings,
    /// `WF_IDEMPOTENCY`: one key per `Idempotency-Key` the gateway has seen.
    pub idempotency: KvSettings,
    /// `WF_ATTEMPTS`: what the deliveries of each unsettled job ended in.
    pub attempts: KvSettings,
    /// `WF_OPERATIONS`: the operations worker kinds declared at run time.
    pub operations: KvSettings,
    /// `WF_DLQ_HANDLED`: the dead letters that were replayed.
    pub dlq_handled: KvSettings,
    /// `WF_CONCURRENCY`: who holds and who waits for each concurrency key's slots.
    pub concurrency: KvSettings,
    /// `WF_RATES`: when each rate-limited key may next run.
    pub rates: KvSettings,
}

/// The declared settings of one stream. Only these are compared with the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub retention: Retention,
    pub storage: Storage,
    pub discard: Discard,
    /// Total size limit; `None` (key left out) is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// Age limit; `None` (key left out) keeps messages until another limit applies.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// Messages kept per subject; `None` (key left out) is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs_per_subject: Option<i64>,
}

/// The declared settings of one durable pull consumer. Only these are compared with the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    pub ack_policy: AckPolicy,
    pub deliver_policy: DeliverPolicy,
    /// How long the server waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries per message; -1 is unlimited.
    pub max_deliver: i64,
    /// Messages delivered and not yet acked, across all clients of the consumer.
    pub max_ack_pending: i64,
}

/// The declared settings of one KV bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSettings {
    /// Values kept per key (1 to 64).
    pub history: i64,
    pub storage: Storage,
    /// How long a value lives; `None` (key left out) keeps it until deleted.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

/// The declared settings of the object store. Only these are compared with the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreSettings {
    pub storage: Storage,
    /// Age limit of each object; `None` (key left out) keeps objects until deleted.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// Total size limit; `None` (key left out) is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
}

impl Default for ObjectStoreSettings {
    /// On file, each object kept a week (longer than any workflow that reads it should run).
    fn default() -> Self {
        ObjectStoreSettings {
            storage: Storage::File,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: None,
        }
    }
}

/// Stream retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    Limits,
    #[serde(alias = "workqueue")]
    WorkQueue,
    Interest,
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    File,
    Memory,
}

/// What a full stream does: drop its oldest messages or refuse new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discard {
    Old,
    New,
}

/// How a consumer's messages are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    Explicit,
    All,
    None,
}

/// Where a new consumer starts in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    All,
    Last,
    New,
    LastPerSubject,
}

/// A size in bytes, written in `bus.toml` as an integer or as `"512MiB"`, `"1GiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    /// The size as the signed byte count the JetStream API uses.
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit = unit.trim();
        let expected = "expected bytes as an integer or a string like \"512MiB\" or \"1GiB\" \
                        (units: B, KiB, MiB, GiB, TiB)";
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: {expected}"))?;
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| format!("{text:?}: unknown unit {unit:?}; {expected}"))?
        };
        number
            .checked_mul(multiplier)
            .filter(|n| i64::try_from(*n).is_ok())
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, multiplier) in UNITS {
            if self.0 >= multiplier && self.0.is_multiple_of(multiplier) {
                return write!(f, "{}{name}", self.0 / multiplier);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: integer bytes or a string like \"1GiB\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                ByteSize::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v}: a size cannot be negative")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One stream as it should exist on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    pub settings: StreamSettings,
    /// Whether the server's message scheduler runs on it (`allow_msg_schedules`); once on,
    /// the server keeps it on.
    pub schedules: bool,
}

/// One durable pull consumer as it should exist on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerSpec {
    pub stream: String,
    pub name: String,
    /// One or more filter subjects; the server gets `filter_subject` for one and
    /// `filter_subjects` for several.
    pub filter_subjects: Vec<String>,
    pub settings: ConsumerSettings,
}

/// The object store as it should exist on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectStoreSpec {
    pub bucket: String,
    pub settings: ObjectStoreSettings,
}

/// One KV bucket as it should exist on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvSpec {
    pub bucket: String,
    pub settings: KvSettings,
}

impl Default for BusConfig {
    /// The built-in definitions; they are validated by the crate's tests.
    fn default() -> Self {
        match Self::from_toml_str(DEFAULT_TOML) {
            Ok(config) => config,
            Err(error) => panic!("the built-in bus.toml is invalid: {error}"),
        }
    }
}

impl BusConfig {
    /// Reads and validates definitions from a file in the `bus.toml` format.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates definitions in the `bus.toml` format.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        let origin = if text == DEFAULT_TOML {
            DEFAULT_ORIGIN
        } else {
            "bus config"
        };
        Self::parse(text, origin)
    }

    fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let config: BusConfig = toml::from_str(text).map_err(|error| Error::Parse {
            origin: origin.to_owned(),
            error,
        })?;
        let problems = config.problems(None);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// Every problem with the definitions, each naming its key and the fix; empty when valid.
    ///
    /// `replicas` overrides the file's `replicas` when given.
    pub(crate) fn problems(&self, replicas: Option<usize>) -> Vec<String> {
        let mut problems = Vec::new();
        match replicas {
            Some(r) if !(1..=MAX_REPLICAS).contains(&r) => problems.push(format!(
                "replicas override: {r} is out of range; expected 1 to {MAX_REPLICAS}"
            )),
            None if !(1..=MAX_REPLICAS).contains(&self.replicas) => problems.push(format!(
                "replicas: {} is out of range; expected 1 to {MAX_REPLICAS}",
                self.replicas
            )),
            _ => {}
        }

        if self.jobs.kinds.is_empty() {
            problems.push("jobs.kinds: must not be empty".to_owned());
        }
        for (i, kind) in self.jobs.kinds.iter().enumerate() {
            if let Err(error) = subject::check_token(kind) {
                problems.push(format!(
                    "jobs.kinds: {kind:?} is not a subject token: {error}"
                ));
            }
            if self.jobs.kinds[..i].contains(kind) {
                problems.push(format!("jobs.kinds: {kind:?} is listed twice"));
            }
        }

        let streams = [
            ("streams.inbox", &self.streams.inbox),
            ("streams.events", &self.streams.events),
            ("streams.usage", &self.streams.usage),
            ("streams.dlq", &self.streams.dlq),
            ("streams.audit", &self.streams.audit),
            ("streams.schedules", &self.streams.schedules),
            ("streams.triggers", &self.streams.triggers),
            ("jobs.stream", &self.jobs.stream),
        ];
        for (key, settings) in streams {
            stream_problems(key, settings, &mut problems);
        }

        let consumers = [
            ("jobs.consumer", &self.jobs.consumer),
            (
                "consumers.orchestrator_commands",
                &self.consumers.orchestrator_commands,
            ),
            (
                "consumers.orchestrator_results",
                &self.consumers.orchestrator_results,
            ),
            ("consumers.ledger_usage", &self.consumers.ledger_usage),
            ("consumers.ledger_events", &self.consumers.ledger_events),
            ("consumers.ledger_audit", &self.consumers.ledger_audit),
        ];
        for (key, settings) in consumers {
            consumer_problems(key, settings, &mut problems);
        }

        if self.objects.max_bytes == Some(ByteSize(0)) {
            problems.push("objects.max_bytes: must be above 0; leave it out for unlimited".into());
        }
        if self.objects.max_age == Some(Duration::ZERO) {
            problems.push("objects.max_age: must be above 0; leave it out to keep objects".into());
        }
        for (key, kv) in [
            ("kv.state", &self.kv.state),
            ("kv.definitions", &self.kv.definitions),
            ("kv.operations", &self.kv.operations),
        ] {
            let history = kv.history;
            if !(1..=64).contains(&history) {
                problems.push(format!(
                    "{key}.history: {history} is out of range; expected 1 to 64"
                ));
            }
        }
        problems
    }

    /// The streams to create, in the order `apply` creates them.
    pub fn stream_specs(&self) -> Vec<StreamSpec> {
        let inbox = [
            subject::ALL_STARTS,
            subject::ALL_RESULTS,
            subject::ALL_CANCELS,
            subject::ALL_RERUNS,
            subject::ALL_SIGNALS,
            subject::ALL_TIMERS,
        ];
        let mut specs = vec![StreamSpec {
            name: stream::WF_INBOX.to_owned(),
            subjects: inbox.map(str::to_owned).to_vec(),
            settings: self.streams.inbox.clone(),
            schedules: false,
        }];
        specs.extend(
            self.jobs
                .kinds
                .iter()
                .map(|kind| self.kind_stream_spec(kind)),
        );
        let others = [
            (stream::WF_EVENTS, subject::ALL_EVENTS, &self.streams.events),
            (stream::USAGE, subject::ALL_USAGE, &self.streams.usage),
            (stream::DLQ, subject::ALL_DLQ, &self.streams.dlq),
            (stream::AUDIT, subject::ALL_AUDIT, &self.streams.audit),
            (
                stream::WF_TRIGGERS,
                subject::ALL_TENANT_EVENTS,
                &self.streams.triggers,
            ),
        ];
        specs.extend(
            others
                .into_iter()
                .map(|(name, subject, settings)| StreamSpec {
                    name: name.to_owned(),
                    subjects: vec![subject.to_owned()],
                    settings: settings.clone(),
                    schedules: false,
                }),
        );
        specs.push(StreamSpec {
            name: stream::WF_SCHEDULES.to_owned(),
            subjects: vec![
                subject::ALL_SCHEDULES.to_owned(),
                subject::ALL_TICKS.to_owned(),
            ],
            settings: self.streams.schedules.clone(),
            schedules: true,
        });
        specs
    }

    /// The `JOBS_<KIND>` stream of worker kind `kind`, from the `[jobs]` template.
    pub fn kind_stream_spec(&self, kind: &str) -> StreamSpec {
        StreamSpec {
            name: stream::jobs(kind),
            subjects: vec![subject::jobs_of(kind)],
            settings: self.jobs.stream.clone(),
            schedules: false,
        }
    }

    /// The `worker-<kind>` consumer of worker kind `kind`, from the `[jobs]` template.
    pub fn kind_consumer_spec(&self, kind: &str) -> ConsumerSpec {
        ConsumerSpec {
            stream: stream::jobs(kind),
            name: stream::worker_consumer(kind),
            filter_subjects: vec![subject::jobs_of(kind)],
            settings: self.jobs.consumer.clone(),
        }
    }

    /// The durable consumers to create, after their streams.
    pub fn consumer_specs(&self) -> Vec<ConsumerSpec> {
        let mut specs: Vec<ConsumerSpec> = self
            .jobs
            .kinds
            .iter()
            .map(|kind| self.kind_consumer_spec(kind))
            .collect();
        let c = &self.consumers;
        let others: [(&str, &str, &[&str], &ConsumerSettings); 8] = [
            (
                stream::WF_INBOX,
                stream::ORCHESTRATOR_COMMANDS,
                &[
                    subject::ALL_STARTS,
                    subject::ALL_CANCELS,
                    subject::ALL_RERUNS,
                    subject::ALL_SIGNALS,
                ],
                &c.orchestrator_commands,
            ),
            (
                stream::WF_INBOX,
                stream::ORCHESTRATOR_RESULTS,
                &[subject::ALL_RESULTS],
                &c.orchestrator_results,
            ),
            (
                stream::WF_INBOX,
                stream::ORCHESTRATOR_TIMERS,
                &[subject::ALL_TIMERS],
                &c.orchestrator_timers,
            ),
            (
                stream::WF_SCHEDULES,
                stream::ORCHESTRATOR_SCHEDULES,
                &[subject::ALL_TICKS],
                &c.orchestrator_schedules,
            ),
            (
                stream::WF_TRIGGERS,
                stream::ORCHESTRATOR_TRIGGERS,
                &[subject::ALL_TENANT_EVENTS],
                &c.orchestrator_triggers,
            ),
            (
                stream::USAGE,
                stream::LEDGER_USAGE,
                &[subject::ALL_USAGE],
                &c.ledger_usage,
            ),
            (
                stream::WF_EVENTS,
                stream::LEDGER_EVENTS,
                &[subject::ALL_EVENTS],
                &c.ledger_events,
            ),
            (
                stream::AUDIT,
                stream::LEDGER_AUDIT,
                &[subject::ALL_AUDIT],
                &c.ledger_audit,
            ),
        ];
        specs.extend(
            others
                .into_iter()
                .map(|(stream, name, filters, settings)| ConsumerSpec {
                    stream: stream.to_owned(),
                    name: name.to_owned(),
                    filter_subjects: filters.iter().map(|s| (*s).to_owned()).collect(),
                    settings: settings.clone(),
                }),
        );
        specs
    }

    /// The object store to create.
    pub fn object_store_spec(&self) -> ObjectStoreSpec {
        ObjectStoreSpec {
            bucket: stream::WF_OBJECTS_BUCKET.to_owned(),
            settings: self.objects.clone(),
        }
    }

    /// The KV buckets to create.
    pub fn kv_specs(&self) -> Vec<KvSpec> {
        vec![
            KvSpec {
                bucket: stream::WF_STATE_BUCKET.to_owned(),
                settings: self.kv.state.clone(),
            },
            KvSpec {
                bucket: stream::WF_DEFINITIONS_BUCKET.to_owned(),
                settings: self.kv.definitions.clone(),
            },
            KvSpec {
                bucket: stream::IDEMPOTENCY_BUCKET.to_owned(),
                settings: self.kv.idempotency.clone(),
            },
            KvSpec {
                bucket: stream::ATTEMPTS_BUCKET.to_owned(),
                settings: self.kv.attempts.clone(),
            },
            KvSpec {
                bucket: stream::OPERATIONS_BUCKET.to_owned(),
                settings: self.kv.operations.clone(),
            },
            KvSpec {
                bucket: stream::DLQ_HANDLED_BUCKET.to_owned(),
                settings: self.kv.dlq_handled.clone(),
            },
            KvSpec {
                bucket: stream::CONCURRENCY_BUCKET.to_owned(),
                settings: self.kv.concurrency.clone(),
            },
            KvSpec {
                bucket: stream::RATES_BUCKET.to_owned(),
                settings: self.kv.rates.clone(),
            },
        ]
    }
}

fn stream_problems(key: &str, s: &StreamSettings, problems: &mut Vec<String>) {
    if s.max_bytes == Some(ByteSize(0)) {
        problems.push(format!(
            "{key}.max_bytes: must be above 0; leave it out for unlimited"
        ));
    }
    if s.discard == Discard::New && s.max_bytes.is_none() {
        problems.push(format!(
            "{key}.discard: \"new\" needs max_bytes, or the stream never refuses anything"
        ));
    }
    if s.max_age == Some(Duration::ZERO) {
        problems.push(format!(
            "{key}.max_age: must be above 0; leave it out for unlimited"
        ));
    }
    if s.duplicate_window.is_zero() {
        problems.push(format!(
            "{key}.duplicate_window: must be above 0, e.g. \"2m\""
        ));
    }
    if let Some(max_age) = s.max_age
        && s.duplicate_window > max_age
    {
        problems.push(format!(
            "{key}.duplicate_window: must not be longer than max_age"
        ));
    }
    if let Some(n) = s.max_msgs_per_subject
        && n < 1
    {
        problems.push(format!(
            "{key}.max_msgs_per_subject: {n} must be above 0; leave it out for unlimited"
        ));
    }
}

fn consumer_problems(key: &str, c: &ConsumerSettings, problems: &mut Vec<String>) {
    if c.ack_wait.is_zero() {
        problems.push(format!("{key}.ack_wait: must be above 0, e.g. \"30s\""));
    }
    if c.max_deliver == 0 || c.max_deliver < -1 {
        problems.push(format!(
            "{key}.max_deliver: {} is invalid; expected a positive count or -1 for unlimited",
            c.max_deliver
        ));
    }
    if c.max_ack_pending == 0 || c.max_ack_pending < -1 {
        problems.push(format!(
            "{key}.max_ack_pending: {} is invalid; expected a positive count or -1 for unlimited",
            c.max_ack_pending
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_definitions_parse_and_cover_every_worker_kind() {
        let config = BusConfig::from_toml_str(DEFAULT_TOML).expect("built-in bus.toml is valid");
        assert_eq!(config.replicas, 1);
        assert_eq!(
            config.jobs.kinds,
            ["research", "ai", "cards", "integration", "mcp", "test"],
            "the shipped file provisions the built-in kinds"
        );

        let streams: Vec<String> = config.stream_specs().into_iter().map(|s| s.name).collect();
        for expected in [
            stream::WF_INBOX,
            stream::WF_EVENTS,
            stream::USAGE,
            stream::DLQ,
            stream::AUDIT,
            stream::WF_SCHEDULES,
            stream::WF_TRIGGERS,
        ] {
            assert!(
                streams.iter().any(|s| s == expected),
                "stream {expected} missing"
            );
        }
        for kind in &config.jobs.kinds {
            assert!(
                streams.contains(&stream::jobs(kind)),
                "stream for {kind} missing"
            );
        }
        // The audit log is bounded in size as well as in age, oldest entries dropped first.
        let audit = &config.streams.audit;
        assert_eq!(audit.max_bytes, Some(ByteSize(8 << 30)));
        assert_eq!(audit.discard, Discard::Old);

        let consumers = config.consumer_specs();
        for kind in &config.jobs.kinds {
            let c = consumers
                .iter()
                .find(|c| c.name == stream::worker_consumer(kind))
                .expect("worker consumer");
            assert_eq!(c.stream, stream::jobs(kind));
            assert_eq!(c.filter_subjects, vec![subject::jobs_of(kind)]);
            assert_eq!(c.settings.max_deliver, -1);
            assert_eq!(c.settings.ack_wait, Duration::from_secs(30));
        }
        let commands = consumers
            .iter()
            .find(|c| c.name == stream::ORCHESTRATOR_COMMANDS)
            .expect("orchestrator-commands");
        assert_eq!(commands.filter_subjects.len(), 4);
        assert!(
            !commands
                .filter_subjects
                .iter()
                .any(|s| s == subject::ALL_RESULTS)
        );
        assert_eq!(consumers.len(), config.jobs.kinds.len() + 8);

        // Only the schedules' stream runs the server's message scheduler.
        let specs = config.stream_specs();
        let scheduled: Vec<&str> = specs
            .iter()
            .filter(|s| s.schedules)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(scheduled, [stream::WF_SCHEDULES]);

        let inbox = &config.streams.inbox;
        assert_eq!(inbox.retention, Retention::WorkQueue);
        assert_eq!(inbox.discard, Discard::New);
        assert_eq!(inbox.max_bytes, Some(ByteSize(1 << 30)));
        assert_eq!(inbox.duplicate_window, Duration::from_secs(120));
        assert_eq!(
            config.streams.usage.max_age,
            Some(Duration::from_secs(35 * 86_400))
        );
        assert_eq!(config.kv_specs()[0].bucket, stream::WF_STATE_BUCKET);
        assert_eq!(config.kv.state.history, 1);
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name_and_line() {
        let text = DEFAULT_TOML.replace("[streams.dlq]\n", "[streams.dlq]\nmax_agee = \"1d\"\n");
        let error = BusConfig::from_toml_str(&text)
            .expect_err("typo must be rejected")
            .to_string();
        assert!(error.contains("unknown field `max_agee`"), "{error}");
        assert!(
            error.contains("max_age"),
            "should list the accepted keys: {error}"
        );
        assert!(error.contains("line"), "should point at the line: {error}");
    }

    #[test]
    fn an_unknown_stream_section_is_rejected() {
        let text = format!("{DEFAULT_TOML}\n[streams.audits]\nretention = \"limits\"\n");
        let error = BusConfig::from_toml_str(&text)
            .expect_err("unknown stream")
            .to_string();
        assert!(error.contains("unknown field `audits`"), "{error}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = DEFAULT_TOML
            .replace(
                "kinds = [\"research\", ",
                "kinds = [\"research\", \"a.b\", ",
            )
            .replace("\"test\"]", "\"ai\"]")
            .replace(
                "max_deliver = -1\nmax_ack_pending = 10000\n\n# orchestrator-commands",
                "max_deliver = 0\nmax_ack_pending = 10000\n\n# orchestrator-commands",
            );
        let Err(Error::Invalid { problems, .. }) = BusConfig::from_toml_str(&text) else {
            panic!("expected validation problems");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("jobs.kinds: \"a.b\" is not a subject token"),
            "{all}"
        );
        assert!(all.contains("jobs.kinds: \"ai\" is listed twice"), "{all}");
        // A kind left out is not a problem: it gets its stream when it declares itself.
        assert!(!all.contains("test"), "{all}");
        assert!(
            all.contains("jobs.consumer.max_deliver: 0 is invalid"),
            "{all}"
        );
    }

    #[test]
    fn discard_new_without_a_size_limit_is_refused() {
        let text = DEFAULT_TOML.replacen("max_bytes = \"1GiB\"\n", "", 1);
        let error = BusConfig::from_toml_str(&text)
            .expect_err("no max_bytes")
            .to_string();
        assert!(
            error.contains("streams.inbox.discard: \"new\" needs max_bytes"),
            "{error}"
        );
    }

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("512 MiB"), Ok(ByteSize(512 << 20)));
        assert_eq!(ByteSize::parse("1024"), Ok(ByteSize(1024)));
        assert!(
            ByteSize::parse("1GB")
                .unwrap_err()
                .contains("unknown unit \"GB\"")
        );
        assert!(ByteSize::parse("lots").is_err());
        assert!(
            ByteSize::parse("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");

        let text = DEFAULT_TOML.replacen("max_bytes = \"1GiB\"", "max_bytes = 2048", 1);
        let config = BusConfig::from_toml_str(&text).expect("integer size");
        assert_eq!(config.streams.inbox.max_bytes, Some(ByteSize(2048)));
        let text = DEFAULT_TOML.replacen("max_bytes = \"1GiB\"", "max_bytes = -1", 1);
        let error = BusConfig::from_toml_str(&text)
            .expect_err("negative size")
            .to_string();
        assert!(error.contains("cannot be negative"), "{error}");
    }

    #[test]
    fn the_effective_config_round_trips_through_toml() {
        let config = BusConfig::default();
        let text = toml::to_string(&config).expect("serializes");
        assert_eq!(BusConfig::from_toml_str(&text).expect("parses"), config);
    }

    #[test]
    fn load_names_the_file_it_cannot_read() {
        let error = BusConfig::load("/nonexistent/bus.toml")
            .expect_err("missing file")
            .to_string();
        assert!(error.contains("/nonexistent/bus.toml"), "{error}");
    }
}
