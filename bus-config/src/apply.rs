//! Creates what is missing, updates what drifted, reports what cannot change in place.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use serde::Serialize;
use tracing::{info, warn};

use crate::Error;
use crate::config::{
    AckPolicy, BusConfig, ByteSize, ConsumerSpec, DeliverPolicy, Discard, KvSpec, ObjectStoreSpec,
    Retention, Storage, StreamSpec,
};
use switchyard_proto::server::{MIN_SERVER_VERSION, Version};

/// Overrides of the definitions for one `apply`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Replicas of every stream and KV bucket, instead of the file's `replicas`.
    pub replicas: Option<usize>,
}

/// The kind of a JetStream object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Stream,
    Kv,
    ObjectStore,
    Consumer,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Stream => "stream",
            ObjectKind::Kv => "kv",
            ObjectKind::ObjectStore => "objects",
            ObjectKind::Consumer => "consumer",
        })
    }
}

/// One declared setting whose value on the server differs from the definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The setting, named as in `bus.toml` (`max_bytes`, `filter_subjects`…).
    pub field: &'static str,
    /// The value the server had.
    pub server: String,
    /// The value the definitions declare.
    pub declared: String,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.server, self.declared)
    }
}

/// What `apply` did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Created,
    /// Brought in line with the definitions in place.
    Updated {
        fields: Vec<FieldChange>,
    },
    Unchanged,
    /// Settings the server cannot change in place differ (`fields`); an operator must decide,
    /// e.g. drain and recreate. Settings it can change were updated (`updated`).
    DriftNeedsAction {
        fields: Vec<FieldChange>,
        updated: Vec<FieldChange>,
    },
}

/// One object and what `apply` did to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectReport {
    pub kind: ObjectKind,
    /// The stream, bucket or consumer name.
    pub name: String,
    /// The stream a consumer belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl ObjectReport {
    /// `stream/consumer` for consumers, the name otherwise.
    pub fn qualified_name(&self) -> String {
        match &self.stream {
            Some(stream) => format!("{stream}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// What `apply` did, per object, in the order it went through them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub objects: Vec<ObjectReport>,
}

impl ApplyReport {
    /// Whether `apply` created or updated anything.
    pub fn changed(&self) -> bool {
        self.objects.iter().any(|o| match &o.outcome {
            Outcome::Created | Outcome::Updated { .. } => true,
            Outcome::DriftNeedsAction { updated, .. } => !updated.is_empty(),
            Outcome::Unchanged => false,
        })
    }

    /// Whether some object differs in a way only an operator can fix.
    pub fn needs_action(&self) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o.outcome, Outcome::DriftNeedsAction { .. }))
    }

    /// The report on one object; `name` is `stream/consumer` for a consumer.
    pub fn object(&self, kind: ObjectKind, name: &str) -> Option<&ObjectReport> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.qualified_name() == name)
    }
}

fn join(changes: &[FieldChange]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .objects
            .iter()
            .map(|o| o.qualified_name().len())
            .max()
            .unwrap_or(0);
        for o in &self.objects {
            let kind = o.kind.to_string();
            let name = o.qualified_name();
            write!(f, "{kind:<9} {name:<width$}  ")?;
            match &o.outcome {
                Outcome::Created => writeln!(f, "created")?,
                Outcome::Unchanged => writeln!(f, "unchanged")?,
                Outcome::Updated { fields } => writeln!(f, "updated: {}", join(fields))?,
                Outcome::DriftNeedsAction { fields, updated } => {
                    write!(f, "drift needs action: {}", join(fields))?;
                    if !updated.is_empty() {
                        write!(f, "; updated: {}", join(updated))?;
                    }
                    writeln!(f)?;
                }
            }
        }
        Ok(())
    }
}

/// Creates the declared objects that are missing, updates those that drifted, and leaves the
/// rest; running it twice in a row reports no change the second time.
///
/// Only the settings in [`BusConfig`] are compared; the server's defaults for everything else
/// are kept. Settings the server cannot change in place (a stream's retention or storage, a
/// consumer's ack or deliver policy) are reported as [`Outcome::DriftNeedsAction`]; nothing is
/// deleted or recreated. Streams come first, then the KV bucket, then the consumers. It stops
/// at the first server error; what it did before stays done, so running it again resumes.
pub async fn apply(
    js: &jetstream::Context,
    cfg: &BusConfig,
    opts: ApplyOptions,
) -> Result<ApplyReport, Error> {
    let problems = cfg.problems(opts.replicas);
    if !problems.is_empty() {
        return Err(Error::Invalid {
            origin: "bus config".to_owned(),
            problems,
        });
    }
    check_server(js).await?;
    let replicas = opts.replicas.unwrap_or(cfg.replicas);

    let mut report = ApplyReport::default();
    for spec in cfg.stream_specs() {
        report
            .objects
            .push(apply_stream(js, &spec, replicas).await?);
    }
    for spec in cfg.kv_specs() {
        report.objects.push(apply_kv(js, &spec, replicas).await?);
    }
    report
        .objects
        .push(apply_object_store(js, &cfg.object_store_spec(), replicas).await?);
    for spec in cfg.consumer_specs() {
        report.objects.push(apply_consumer(js, &spec).await?);
    }
    Ok(report)
}

/// Creates the `JOBS_<KIND>` stream and `worker-<kind>` consumer of worker kind `kind` from
/// the `[jobs]` template when they are missing, with `replicas` copies of the stream; what
/// exists is left as it is (an operator's `bus apply` may have tuned it). This is what a kind's
/// first declaration of its operations does, so `bus.toml` need not list every kind.
pub async fn ensure_kind(
    js: &jetstream::Context,
    cfg: &BusConfig,
    kind: &str,
    replicas: usize,
) -> Result<Vec<ObjectReport>, Error> {
    if let Err(e) = switchyard_proto::subject::check_token(kind) {
        return Err(Error::Invalid {
            origin: "worker kind".to_owned(),
            problems: vec![format!("{kind:?} is not a subject token: {e}")],
        });
    }
    let stream_spec = cfg.kind_stream_spec(kind);
    let mut reports = Vec::new();
    if current_stream(js, &stream_spec.name).await?.is_none() {
        reports.push(apply_stream(js, &stream_spec, replicas).await?);
    }
    let consumer_spec = cfg.kind_consumer_spec(kind);
    let stream = js
        .get_stream_no_info(&consumer_spec.stream)
        .await
        .map_err(|e| Error::Server {
            action: "reading stream of consumer",
            object: consumer_spec.stream.clone(),
            error: e.into(),
        })?;
    match stream.consumer_info(&consumer_spec.name).await {
        Ok(_) => {}
        Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            reports.push(apply_consumer(js, &consumer_spec).await?);
        }
        Err(e) => {
            return Err(Error::Server {
                action: "reading consumer",
                object: format!("{}/{}", consumer_spec.stream, consumer_spec.name),
                error: e.into(),
            });
        }
    }
    Ok(reports)
}

async fn check_server(js: &jetstream::Context) -> Result<(), Error> {
    let version = js.client().server_info().version;
    if Version::parse(&version).is_none_or(|v| v < MIN_SERVER_VERSION) {
        return Err(Error::UnsupportedServer {
            version,
            minimum: MIN_SERVER_VERSION,
        });
    }
    js.query_account()
        .await
        .map_err(|error| Error::JetStreamUnavailable {
            error: error.into(),
        })?;
    Ok(())
}

/// Declared against server values for one object, split by what the server can change in place.
#[derive(Default)]
struct Diff {
    updatable: Vec<FieldChange>,
    manual: Vec<FieldChange>,
}

impl Diff {
    /// Records `field` if it differs and says whether it did.
    fn check(
        &mut self,
        field: &'static str,
        server: String,
        declared: String,
        in_place: bool,
    ) -> bool {
        if server == declared {
            return false;
        }
        let change = FieldChange {
            field,
            server,
            declared,
        };
        if in_place {
            self.updatable.push(change)
        } else {
            self.manual.push(change)
        }
        true
    }

    fn outcome(self) -> Outcome {
        match (self.manual.is_empty(), self.updatable.is_empty()) {
            (true, true) => Outcome::Unchanged,
            (true, false) => Outcome::Updated {
                fields: self.updatable,
            },
            (false, _) => Outcome::DriftNeedsAction {
                fields: self.manual,
                updated: self.updatable,
            },
        }
    }
}

fn unlimited_or(value: i64, show: impl Fn(i64) -> String) -> String {
    if value <= 0 {
        "unlimited".to_owned()
    } else {
        show(value)
    }
}

fn show_bytes(value: i64) -> String {
    unlimited_or(value, |v| ByteSize(v.unsigned_abs()).to_string())
}

fn show_count(value: i64) -> String {
    unlimited_or(value, |v| v.to_string())
}

fn show_duration(value: Duration) -> String {
    if value.is_zero() {
        "unlimited".to_owned()
    } else {
        humantime_serde::re::humantime::format_duration(value).to_string()
    }
}

fn show_subjects(subjects: &[String]) -> String {
    let mut sorted = subjects.to_vec();
    sorted.sort();
    sorted.dedup();
    format!("[{}]", sorted.join(", "))
}

fn show_retention(r: stream::RetentionPolicy) -> &'static str {
    match r {
        stream::RetentionPolicy::Limits => "limits",
        stream::RetentionPolicy::WorkQueue => "work_queue",
        stream::RetentionPolicy::Interest => "interest",
    }
}

fn show_storage(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

fn show_discard(d: stream::DiscardPolicy) -> &'static str {
    match d {
        stream::DiscardPolicy::Old => "old",
        stream::DiscardPolicy::New => "new",
    }
}

fn show_ack(a: consumer::AckPolicy) -> String {
    match a {
        consumer::AckPolicy::Explicit => "explicit".to_owned(),
        consumer::AckPolicy::All => "all".to_owned(),
        consumer::AckPolicy::None => "none".to_owned(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}").to_lowercase(),
    }
}

fn show_deliver(d: &consumer::DeliverPolicy) -> String {
    match d {
        consumer::DeliverPolicy::All => "all".to_owned(),
        consumer::DeliverPolicy::Last => "last".to_owned(),
        consumer::DeliverPolicy::New => "new".to_owned(),
        consumer::DeliverPolicy::LastPerSubject => "last_per_subject".to_owned(),
        other => format!("{other:?}"),
    }
}

fn nats_retention(r: Retention) -> stream::RetentionPolicy {
    match r {
        Retention::Limits => stream::RetentionPolicy::Limits,
        Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
        Retention::Interest => stream::RetentionPolicy::Interest,
    }
}

fn nats_storage(s: Storage) -> stream::StorageType {
    match s {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

fn nats_discard(d: Discard) -> stream::DiscardPolicy {
    match d {
        Discard::Old => stream::DiscardPolicy::Old,
        Discard::New => stream::DiscardPolicy::New,
    }
}

fn nats_ack(a: AckPolicy) -> consumer::AckPolicy {
    match a {
        AckPolicy::Explicit => consumer::AckPolicy::Explicit,
        AckPolicy::All => consumer::AckPolicy::All,
        AckPolicy::None => consumer::AckPolicy::None,
    }
}

fn nats_deliver(d: DeliverPolicy) -> consumer::DeliverPolicy {
    match d {
        DeliverPolicy::All => consumer::DeliverPolicy::All,
        DeliverPolicy::Last => consumer::DeliverPolicy::Last,
        DeliverPolicy::New => consumer::DeliverPolicy::New,
        DeliverPolicy::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
    }
}

/// JetStream spells "unlimited" as -1, and also accepts 0 for most limits.
fn limit(value: i64) -> i64 {
    if value <= 0 { -1 } else { value }
}

fn stream_config(spec: &StreamSpec, replicas: usize) -> stream::Config {
    let s = &spec.settings;
    stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: nats_retention(s.retention),
        storage: nats_storage(s.storage),
        discard: nats_discard(s.discard),
        max_bytes: s.max_bytes.map_or(-1, ByteSize::as_i64),
        max_age: s.max_age.unwrap_or(Duration::ZERO),
        duplicate_window: s.duplicate_window,
        max_messages_per_subject: s.max_msgs_per_subject.unwrap_or(-1),
        num_replicas: replicas,
        allow_message_schedules: spec.schedules,
        ..Default::default()
    }
}

/// Compares the declared settings with `server` and returns the differences and `server` with
/// the in-place-changeable ones set to the declared values.
fn diff_stream(declared: &stream::Config, server: &stream::Config) -> (Diff, stream::Config) {
    let mut d = Diff::default();
    let mut patched = server.clone();
    if d.check(
        "subjects",
        show_subjects(&server.subjects),
        show_subjects(&declared.subjects),
        true,
    ) {
        patched.subjects = declared.subjects.clone();
    }
    d.check(
        "retention",
        show_retention(server.retention).to_owned(),
        show_retention(declared.retention).to_owned(),
        false,
    );
    d.check(
        "storage",
        show_storage(server.storage).to_owned(),
        show_storage(declared.storage).to_owned(),
        false,
    );
    if d.check(
        "discard",
        show_discard(server.discard).to_owned(),
        show_discard(declared.discard).to_owned(),
        true,
    ) {
        patched.discard = declared.discard;
    }
    if d.check(
        "max_bytes",
        show_bytes(server.max_bytes),
        show_bytes(declared.max_bytes),
        true,
    ) {
        patched.max_bytes = declared.max_bytes;
    }
    if d.check(
        "max_age",
        show_duration(server.max_age),
        show_duration(declared.max_age),
        true,
    ) {
        patched.max_age = declared.max_age;
    }
    if d.check(
        "duplicate_window",
        show_duration(server.duplicate_window),
        show_duration(declared.duplicate_window),
        true,
    ) {
        patched.duplicate_window = declared.duplicate_window;
    }
    if d.check(
        "max_msgs_per_subject",
        show_count(server.max_messages_per_subject),
        show_count(declared.max_messages_per_subject),
        true,
    ) {
        patched.max_messages_per_subject = declared.max_messages_per_subject;
    }
    if d.check(
        "replicas",
        server.num_replicas.max(1).to_string(),
        declared.num_replicas.to_string(),
        true,
    ) {
        patched.num_replicas = declared.num_replicas;
    }
    // The server turns message schedules on in place, never off.
    if d.check(
        "allow_msg_schedules",
        server.allow_message_schedules.to_string(),
        declared.allow_message_schedules.to_string(),
        declared.allow_message_schedules,
    ) {
        patched.allow_message_schedules = declared.allow_message_schedules;
    }
    (d, patched)
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The stream's current info, or `None` when it does not exist.
pub(crate) async fn current_stream_info(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Info>, Error> {
    match js.get_stream(name).await {
        // get_stream fetches the info; no second request needed.
        Ok(stream) => Ok(Some(stream.cached_info().clone())),
        Err(error) if is_stream_not_found(&error) => Ok(None),
        Err(error) => Err(Error::Server {
            action: "reading stream",
            object: name.to_owned(),
            error: error.into(),
        }),
    }
}

/// The stream's current config, or `None` when it does not exist.
async fn current_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, Error> {
    Ok(current_stream_info(js, name).await?.map(|info| info.config))
}

/// Applies `patched` when `diff` has in-place changes, and logs what is left to an operator.
async fn update_stream(
    js: &jetstream::Context,
    kind: ObjectKind,
    name: &str,
    diff: Diff,
    patched: stream::Config,
) -> Result<ObjectReport, Error> {
    if !diff.updatable.is_empty() {
        js.update_stream(&patched)
            .await
            .map_err(|error| Error::Server {
                action: "updating stream",
                object: name.to_owned(),
                error: error.into(),
            })?;
        info!(%kind, name, fields = %join(&diff.updatable), "updated");
    }
    if !diff.manual.is_empty() {
        warn!(%kind, name, fields = %join(&diff.manual), "drift needs manual action");
    }
    Ok(ObjectReport {
        kind,
        name: name.to_owned(),
        stream: None,
        outcome: diff.outcome(),
    })
}

async fn apply_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
    replicas: usize,
) -> Result<ObjectReport, Error> {
    let declared = stream_config(spec, replicas);
    let Some(server) = current_stream(js, &spec.name).await? else {
        js.create_stream(declared)
            .await
            .map_err(|error| Error::Server {
                action: "creating stream",
                object: spec.name.clone(),
                error: error.into(),
            })?;
        info!(stream = %spec.name, "created stream");
        return Ok(ObjectReport {
            kind: ObjectKind::Stream,
            name: spec.name.clone(),
            stream: None,
            outcome: Outcome::Created,
        });
    };
    let (diff, patched) = diff_stream(&declared, &server);
    update_stream(js, ObjectKind::Stream, &spec.name, diff, patched).await
}

/// The stream behind a KV bucket; this prefix is fixed by the NATS KV design, not by Switchyard.
pub(crate) fn kv_stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

async fn apply_kv(
    js: &jetstream::Context,
    spec: &KvSpec,
    replicas: usize,
) -> Result<ObjectReport, Error> {
    let stream_name = kv_stream_name(&spec.bucket);
    let Some(server) = current_stream(js, &stream_name).await? else {
        js.create_key_value(kv::Config {
            bucket: spec.bucket.clone(),
            history: spec.settings.history,
            storage: nats_storage(spec.settings.storage),
            num_replicas: replicas,
            max_age: spec.settings.max_age.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|error| Error::Server {
            action: "creating kv bucket",
            object: spec.bucket.clone(),
            error: error.into(),
        })?;
        info!(bucket = %spec.bucket, "created kv bucket");
        return Ok(ObjectReport {
            kind: ObjectKind::Kv,
            name: spec.bucket.clone(),
            stream: None,
            outcome: Outcome::Created,
        });
    };

    let mut d = Diff::default();
    let mut patched = server.clone();
    if d.check(
        "history",
        server.max_messages_per_subject.to_string(),
        spec.settings.history.to_string(),
        true,
    ) {
        patched.max_messages_per_subject = spec.settings.history;
    }
    d.check(
        "storage",
        show_storage(server.storage).to_owned(),
        show_storage(nats_storage(spec.settings.storage)).to_owned(),
        false,
    );
    let max_age = spec.settings.max_age.unwrap_or_default();
    if d.check(
        "max_age",
        show_duration(server.max_age),
        show_duration(max_age),
        true,
    ) {
        patched.max_age = max_age;
    }
    if d.check(
        "replicas",
        server.num_replicas.max(1).to_string(),
        replicas.to_string(),
        true,
    ) {
        patched.num_replicas = replicas;
    }
    update_stream(js, ObjectKind::Kv, &spec.bucket, d, patched).await
}

/// The stream behind an object store; this prefix is fixed by the NATS object store design.
pub(crate) fn object_store_stream_name(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

async fn apply_object_store(
    js: &jetstream::Context,
    spec: &ObjectStoreSpec,
    replicas: usize,
) -> Result<ObjectReport, Error> {
    let s = &spec.settings;
    let max_bytes = s.max_bytes.map_or(-1, ByteSize::as_i64);
    let max_age = s.max_age.unwrap_or_default();
    let stream_name = object_store_stream_name(&spec.bucket);
    let Some(server) = current_stream(js, &stream_name).await? else {
        js.create_object_store(object_store::Config {
            bucket: spec.bucket.clone(),
            storage: nats_storage(s.storage),
            max_age,
            max_bytes,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| Error::Server {
            action: "creating object store",
            object: spec.bucket.clone(),
            error: error.into(),
        })?;
        info!(bucket = %spec.bucket, "created object store");
        return Ok(ObjectReport {
            kind: ObjectKind::ObjectStore,
            name: spec.bucket.clone(),
            stream: None,
            outcome: Outcome::Created,
        });
    };
    // The object store is a stream with fixed subjects; only its limits are declared.
    let declared = stream::Config {
        storage: nats_storage(s.storage),
        max_age,
        max_bytes,
        num_replicas: replicas,
        ..server.clone()
    };
    let (diff, patched) = diff_stream(&declared, &server);
    update_stream(js, ObjectKind::ObjectStore, &spec.bucket, diff, patched).await
}

fn consumer_config(spec: &ConsumerSpec) -> consumer::Config {
    let s = &spec.settings;
    let mut config = consumer::Config {
        durable_name: Some(spec.name.clone()),
        name: Some(spec.name.clone()),
        ack_policy: nats_ack(s.ack_policy),
        deliver_policy: nats_deliver(s.deliver_policy),
        ack_wait: s.ack_wait,
        max_deliver: limit(s.max_deliver),
        max_ack_pending: s.max_ack_pending,
        ..Default::default()
    };
    set_filters(&mut config, &spec.filter_subjects);
    config
}

/// One filter goes in `filter_subject`, several in `filter_subjects`, as the server reports them.
fn set_filters(config: &mut consumer::Config, filters: &[String]) {
    if let [one] = filters {
        config.filter_subject = one.clone();
        config.filter_subjects = Vec::new();
    } else {
        config.filter_subject = String::new();
        config.filter_subjects = filters.to_vec();
    }
}

fn filters_of(config: &consumer::Config) -> Vec<String> {
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    filters
}

fn diff_consumer(spec: &ConsumerSpec, server: &consumer::Config) -> (Diff, consumer::Config) {
    let s = &spec.settings;
    let mut d = Diff::default();
    let mut patched = server.clone();
    if let Some(deliver_subject) = &server.deliver_subject {
        d.check(
            "type",
            format!("push ({deliver_subject})"),
            "pull".to_owned(),
            false,
        );
    }
    if d.check(
        "filter_subjects",
        show_subjects(&filters_of(server)),
        show_subjects(&spec.filter_subjects),
        true,
    ) {
        set_filters(&mut patched, &spec.filter_subjects);
    }
    d.check(
        "ack_policy",
        show_ack(server.ack_policy),
        show_ack(nats_ack(s.ack_policy)),
        false,
    );
    d.check(
        "deliver_policy",
        show_deliver(&server.deliver_policy),
        show_deliver(&nats_deliver(s.deliver_policy)),
        false,
    );
    if d.check(
        "ack_wait",
        show_duration(server.ack_wait),
        show_duration(s.ack_wait),
        true,
    ) {
        patched.ack_wait = s.ack_wait;
    }
    if d.check(
        "max_deliver",
        show_count(server.max_deliver),
        show_count(s.max_deliver),
        true,
    ) {
        patched.max_deliver = limit(s.max_deliver);
    }
    if d.check(
        "max_ack_pending",
        show_count(server.max_ack_pending),
        show_count(s.max_ack_pending),
        true,
    ) {
        patched.max_ack_pending = s.max_ack_pending;
    }
    (d, patched)
}

async fn apply_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<ObjectReport, Error> {
    let object = format!("{}/{}", spec.stream, spec.name);
    let server_error = |action: &'static str| {
        let object = object.clone();
        move |error: async_nats::Error| Error::Server {
            action,
            object,
            error,
        }
    };
    let stream = js
        .get_stream_no_info(&spec.stream)
        .await
        .map_err(|e| server_error("reading stream of consumer")(e.into()))?;
    let report = |outcome| ObjectReport {
        kind: ObjectKind::Consumer,
        name: spec.name.clone(),
        stream: Some(spec.stream.clone()),
        outcome,
    };

    let current = match stream.consumer_info(&spec.name).await {
        Ok(info) => info.config,
        Err(error) if error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
            stream
                .create_consumer_strict(consumer_config(spec))
                .await
                .map_err(|e| server_error("creating consumer")(e.into()))?;
            info!(stream = %spec.stream, consumer = %spec.name, "created consumer");
            return Ok(report(Outcome::Created));
        }
        Err(error) => return Err(server_error("reading consumer")(error.into())),
    };

    let (diff, patched) = diff_consumer(spec, &current);
    if !diff.updatable.is_empty() {
        stream
            .update_consumer(patched)
            .await
            .map_err(|e| server_error("updating consumer")(e.into()))?;
        info!(
            stream = %spec.stream,
            consumer = %spec.name,
            fields = %join(&diff.updatable),
            "updated consumer"
        );
    }
    if !diff.manual.is_empty() {
        warn!(
            stream = %spec.stream,
            consumer = %spec.name,
            fields = %join(&diff.manual),
            "consumer drift needs manual action"
        );
    }
    Ok(report(diff.outcome()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_drift_needs_action_and_size_drift_is_patched() {
        let spec = &BusConfig::default().stream_specs()[0];
        let declared = stream_config(spec, 1);
        let mut server = declared.clone();
        server.retention = stream::RetentionPolicy::Limits;
        server.max_bytes = -1;
        let (diff, patched) = diff_stream(&declared, &server);
        assert_eq!(patched.max_bytes, declared.max_bytes);
        assert_eq!(
            patched.retention,
            stream::RetentionPolicy::Limits,
            "kept as on the server"
        );
        let Outcome::DriftNeedsAction { fields, updated } = diff.outcome() else {
            panic!("expected drift needing action");
        };
        assert_eq!(fields[0].field, "retention");
        assert_eq!(updated[0].to_string(), "max_bytes unlimited -> 1GiB");
    }

    #[test]
    fn one_filter_or_several_compare_as_sets() {
        let cfg = BusConfig::default();
        for spec in cfg.consumer_specs() {
            let mut server = consumer_config(&spec);
            // What the server reports for an unlimited max_deliver.
            server.max_deliver = -1;
            server.filter_subjects.reverse();
            let (diff, _) = diff_consumer(&spec, &server);
            assert_eq!(diff.outcome(), Outcome::Unchanged, "{}", spec.name);
        }
    }

    #[test]
    fn the_report_reads_as_lines() {
        let report = ApplyReport {
            objects: vec![
                ObjectReport {
                    kind: ObjectKind::Stream,
                    name: "WF_INBOX".to_owned(),
                    stream: None,
                    outcome: Outcome::Unchanged,
                },
                ObjectReport {
                    kind: ObjectKind::Consumer,
                    name: "worker-ai".to_owned(),
                    stream: Some("JOBS_AI".to_owned()),
                    outcome: Outcome::Updated {
                        fields: vec![FieldChange {
                            field: "ack_wait",
                            server: "10s".to_owned(),
                            declared: "30s".to_owned(),
                        }],
                    },
                },
            ],
        };
        let text = report.to_string();
        assert!(
            text.contains("stream    WF_INBOX           unchanged\n"),
            "{text}"
        );
        assert!(
            text.contains("consumer  JOBS_AI/worker-ai  updated: ack_wait 10s -> 30s\n"),
            "{text}"
        );
        assert!(report.changed());
        assert!(!report.needs_action());
    }
}
