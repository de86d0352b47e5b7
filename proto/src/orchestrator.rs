//! The orchestrator's request/reply contract: the micro service `switchyard-orchestrator`,
//! its endpoints under `svc.orchestrator.`, and the request and reply of each. The engine
//! answers with these types, the gateway and the CLI ask with them, and the gateway's OpenAPI
//! schemas are derived from them (feature `openapi`), so the three cannot drift apart.
//!
//! Requests and replies are JSON. A failed request is answered with [`ErrorReply`] and the
//! headers [`ERROR_HEADER`] (the message) and [`ERROR_CODE_HEADER`] (an HTTP-like status);
//! only the header marks a failure, since an instance view has an `error` field of its own.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::subject;

/// The service name under which every orchestrator replica registers.
pub const SERVICE_NAME: &str = "switchyard-orchestrator";
/// The header that marks a failed request, with an HTTP-like status (400, 404, 409, 500).
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
/// The header with a failed request's message.
pub const ERROR_HEADER: &str = "Nats-Service-Error";
/// The endpoint group: `svc.orchestrator.<endpoint>`.
pub const GROUP: &str = "orchestrator";

/// One endpoint: its name under `svc.orchestrator.`, what it takes and what it answers.
pub trait Endpoint {
    const NAME: &'static str;
    type Request: Serialize + DeserializeOwned + fmt::Debug + Send + Sync;
    type Reply: Serialize + DeserializeOwned + fmt::Debug + Send;

    /// The request subject, e.g. `svc.orchestrator.instance.get`.
    fn subject() -> String {
        request_subject(Self::NAME)
    }
}

/// The request subject of an endpoint by name, e.g. `svc.orchestrator.instance.get`.
pub fn request_subject(endpoint: &str) -> String {
    format!("{}.{endpoint}", subject::service_group(GROUP))
}

/// The endpoints' names under `svc.orchestrator.`, for callers that speak raw JSON.
pub mod endpoint {
    pub const INSTANCE_GET: &str = "instance.get";
    pub const INSTANCE_RERUN: &str = "instance.rerun";
    pub const DLQ_LIST: &str = "dlq.list";
    pub const DLQ_GET: &str = "dlq.get";
    pub const DLQ_REPLAY: &str = "dlq.replay";
    pub const DLQ_PURGE: &str = "dlq.purge";
    pub const DEFINITIONS_LIST: &str = "definitions.list";
    pub const DEFINITIONS_GET: &str = "definitions.get";
    pub const DEFINITIONS_PUT: &str = "definitions.put";
    pub const DEFINITIONS_DELETE: &str = "definitions.delete";
    pub const DEFINITIONS_VALIDATE: &str = "definitions.validate";
    /// Followed by `.<kind>`: a worker kind declares its operations (docs/worker-protocol.md).
    /// The kind is a subject token so the broker can confine a kind's credentials to its own.
    pub const OPERATIONS_DECLARE: &str = "operations.declare";
    pub const OPERATIONS_RETIRE: &str = "operations.retire";
    pub const REGISTRY: &str = "registry";
}

/// `svc.orchestrator.operations.declare.<kind>`: where worker kind `kind` declares its
/// operations.
pub fn declare_subject(kind: &str) -> String {
    request_subject(&format!("{}.{kind}", endpoint::OPERATIONS_DECLARE))
}

/// The reply to a declaration: each operation version and whether this declaration stored
/// it (false when the same version with the same schemas was declared before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclareReply {
    pub kind: String,
    /// The kind's work-queue stream, which now exists.
    pub stream: String,
    /// The durable consumer its replicas pull from.
    pub consumer: String,
    pub operations: Vec<DeclaredVersion>,
}

/// One operation version of a [`DeclareReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredVersion {
    pub name: String,
    pub version: u32,
    pub created: bool,
}

macro_rules! endpoints {
    ($($(#[$doc:meta])* $ty:ident = $name:expr, $req:ty => $reply:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;

            impl Endpoint for $ty {
                const NAME: &'static str = $name;
                type Request = $req;
                type Reply = $reply;
            }
        )*

        /// Every endpoint's name.
        pub const ENDPOINTS: &[&str] = &[$($name),*];
    };
}

endpoints! {
    /// An instance's status, steps included.
    GetInstance = endpoint::INSTANCE_GET, InstanceGet => InstanceView;
    /// Re-runs a finished instance from its failed steps (or from a named step); audited.
    RerunInstance = endpoint::INSTANCE_RERUN, InstanceRerun => RerunReply;
    /// Dead letters, newest last, filtered; a page at a time.
    ListDeadLetters = endpoint::DLQ_LIST, DlqList => DlqPage;
    /// One dead letter with its original payload and headers.
    GetDeadLetter = endpoint::DLQ_GET, DlqRef => DlqLetter;
    /// Replays dead letters: one by its sequence, or those a filter selects; audited.
    ReplayDeadLetters = endpoint::DLQ_REPLAY, DlqReplay => DlqReplayReply;
    /// Removes dead letters (by default only those already replayed); audited.
    PurgeDeadLetters = endpoint::DLQ_PURGE, DlqPurge => DlqPurgeReply;
    /// The definitions a tenant sees (its own and the shared ones).
    ListDefinitions = endpoint::DEFINITIONS_LIST, DefinitionsList => DefinitionList;
    /// One definition version, with its text; the latest when no version is named.
    GetDefinition = endpoint::DEFINITIONS_GET, DefinitionRef => DefinitionDetail;
    /// Registers a new version; the same text again is not an error.
    PutDefinition = endpoint::DEFINITIONS_PUT, DefinitionSource => PutReply;
    /// Marks one version, or every version, deleted.
    DeleteDefinition = endpoint::DEFINITIONS_DELETE, DefinitionRef => DeleteReply;
    /// Checks a definition without registering it.
    ValidateDefinition = endpoint::DEFINITIONS_VALIDATE, DefinitionSource => ValidateReply;
    /// Every worker kind: its operations, live replicas and waiting jobs.
    GetRegistry = endpoint::REGISTRY, RegistryGet => RegistryView;
    /// Removes the declarations of a kind that no registered definition uses.
    RetireKind = endpoint::OPERATIONS_RETIRE, RetireRequest => RetireReply;
}

/// `registry`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryGet {
    /// Show only the definitions of this tenant (and the shared ones) under `used_by`;
    /// every tenant's when absent (the operator's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The registry: what each worker kind serves, who serves it now, and what waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryView {
    pub kinds: Vec<KindView>,
    pub capabilities: Vec<CapabilityView>,
    /// How often the engine asks every replica whether it is there (`$SRV.PING`).
    pub sweep_ms: u64,
}

/// One worker kind in the [`RegistryView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KindView {
    pub kind: String,
    /// Compiled into Switchyard (false for a kind declared at run time).
    pub builtin: bool,
    pub operations: Vec<OperationView>,
    /// The replicas that answered the engine's last sweeps.
    pub replicas: Vec<ReplicaView>,
    /// Milliseconds since a replica of this kind last answered; null when none ever did.
    pub heartbeat_age_ms: Option<i64>,
    /// Jobs on the kind's stream not yet delivered (null when the stream cannot be read).
    pub pending: Option<u64>,
    /// Jobs delivered and not yet acknowledged.
    pub ack_pending: Option<u64>,
    /// Registered definitions that run its operations.
    pub used_by: Vec<DefinitionUse>,
}

/// One operation of a [`KindView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationView {
    pub name: String,
    /// The version definitions are checked against (the latest).
    pub version: u32,
    /// Every stored version.
    pub versions: Vec<u32>,
    pub description: String,
    pub capabilities: Vec<String>,
}

/// One live replica of a [`KindView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaView {
    /// Its `$SRV` service instance id.
    pub id: String,
    /// The name it gives in job results, when it says.
    pub worker_id: Option<String>,
    /// The version of its service.
    pub version: String,
    /// Milliseconds since it last answered.
    pub heartbeat_age_ms: i64,
}

/// A registered definition that uses a kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionUse {
    /// The tenant that registered it; null for a shared (shipped) definition.
    pub tenant: Option<String>,
    pub name: String,
    pub version: u32,
}

impl fmt::Display for DefinitionUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{t}/{} v{}", self.name, self.version),
            None => write!(f, "{} v{} (shared)", self.name, self.version),
        }
    }
}

/// A capability and who provides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CapabilityView {
    pub name: String,
    /// The operation whose schemas define it.
    pub contract: String,
    /// Every operation that provides it.
    pub providers: Vec<String>,
}

/// `operations.retire`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    pub kind: String,
}

/// The operation versions a retire removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireReply {
    pub kind: String,
    pub retired: Vec<RetiredVersion>,
}

/// One operation version a retire removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredVersion {
    pub name: String,
    pub version: u32,
}

// ---- requests ----

/// `instance.get`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGet {
    pub tenant: String,
    pub instance_id: String,
}

/// `instance.rerun`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceRerun {
    pub tenant: String,
    pub instance_id: String,
    /// Also run this step, and everything downstream of it, again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    /// Continue under this version of the instance's workflow; it must keep the completed
    /// steps' ids and accept their outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Who asked, for the events and the audit log.
    pub requested_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// Which dead letters: every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqFilter {
    /// Only this tenant's letters; every tenant's when absent (an operator of the bus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The kind of consumer that gave up: a worker kind, `orchestrator` or `ledger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The job's operation, e.g. `ai.summarize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Why it was given up on: `retries_exhausted`, `permanent`, `decode`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Only letters stored at or after this time (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<i64>,
    /// Only letters stored before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<i64>,
    /// Whether replayed letters are included: only those (`true`), none of them (`false`),
    /// or both (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled: Option<bool>,
}

/// `dlq.list`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqList {
    #[serde(default)]
    pub filter: DlqFilter,
    /// At most this many letters, 1–500 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Letters after this stream sequence: the previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

/// A page of dead letters, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqPage {
    pub letters: Vec<DlqSummary>,
    /// Pass as `after` for the next page; absent when this page reached the end.
    pub next_cursor: Option<u64>,
}

/// One dead letter, without its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqSummary {
    /// Its sequence in the DLQ stream: how `show`, `replay` and `purge` name it.
    pub seq: u64,
    pub kind: String,
    /// The subject the original message was published to.
    pub subject: String,
    pub tenant: Option<String>,
    pub reason: String,
    pub error: String,
    /// Attempts (or deliveries) used before it was given up on.
    pub attempts: u32,
    pub job_id: Option<String>,
    pub operation: Option<String>,
    pub instance_id: Option<String>,
    pub step_id: Option<String>,
    /// The replica that gave up.
    pub worker_id: String,
    pub failed_at_ms: i64,
    /// Set once it was replayed.
    pub handled: Option<DlqHandled>,
}

/// What was done with a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqHandled {
    /// `rerun` (its instance re-ran from the job's step) or `republished`.
    pub action: String,
    pub at_ms: i64,
    pub by: String,
    /// For a re-run: the run it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
}

/// `dlq.get`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqRef {
    /// The caller's tenant; any tenant's letter when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub seq: u64,
}

/// One dead letter in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqLetter {
    #[serde(flatten)]
    pub summary: DlqSummary,
    /// The original message's headers.
    pub headers: BTreeMap<String, String>,
    /// The original payload: the job as JSON when it is one, else the payload as JSON or
    /// text, or null when it is not UTF-8 (then `payload_hex` has its bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    /// Set when the letter keeps only the first bytes of a payload too large for it.
    pub payload_truncated: bool,
}

/// `dlq.replay`: one letter (`seq`), or those `filter` selects (at most `limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqReplay {
    /// Only this tenant's letters; any tenant's when absent (an operator of the bus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<DlqFilter>,
    /// For a filter: at most this many, 1–1000 (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Who asked, for the audit log.
    pub requested_by: String,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqReplayReply {
    pub replayed: Vec<DlqReplayed>,
    /// Letters the filter selected that could not be replayed, with why.
    pub refused: Vec<DlqRefused>,
    /// Whether more letters matched than `limit`.
    pub more: bool,
}

/// One replayed letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqReplayed {
    pub seq: u64,
    /// `rerun` or `republished`.
    pub action: String,
    pub instance_id: Option<String>,
    pub run: Option<u32>,
    /// Where a republished message went.
    pub subject: Option<String>,
}

/// One letter a bulk replay left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqRefused {
    pub seq: u64,
    pub reason: String,
}

/// `dlq.purge`: the letters `filter` selects, or `seqs`. A filter that does not say
/// `handled` purges only the letters already replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqPurge {
    #[serde(default)]
    pub filter: DlqFilter,
    /// These letters only (still within `filter`'s tenant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seqs: Vec<u64>,
    pub requested_by: String,
}

/// How many letters a purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DlqPurgeReply {
    pub purged: u64,
}

/// What a re-run will do (`instance.rerun`): the engine applies it from the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RerunReply {
    pub instance_id: String,
    /// The instance's run from now on: 1 for its first re-run.
    pub run: u32,
    /// The definition version it continues under.
    pub version: u32,
    /// The steps that run again.
    pub steps: Vec<String>,
    /// The completed (or skipped) steps whose outputs are kept.
    pub kept: Vec<String>,
}

/// `definitions.list`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsList {
    pub tenant: String,
    #[serde(default)]
    pub include_deleted: bool,
}

/// `definitions.get` and `definitions.delete`; version `None` is the latest (get) or every
/// version (delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRef {
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub version: Option<u32>,
}

/// `definitions.put` and `definitions.validate`: the YAML (or JSON) text of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSource {
    pub tenant: String,
    pub source: String,
}

// ---- replies ----

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Accepted with a `not_before` still ahead; nothing runs yet.
    Scheduled,
    /// Waiting for a slot of its concurrency key; nothing runs yet.
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Scheduled => "scheduled",
            InstanceStatus::Queued => "queued",
            InstanceStatus::Running => "running",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            InstanceStatus::Completed | InstanceStatus::Failed | InstanceStatus::Cancelled
        )
    }
}

/// Where a step (or one item of a `for_each` step) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its `needs` have not all finished.
    Pending,
    /// Waiting for a named signal.
    Waiting,
    /// Waiting for a time (`sleep`, `sleep_until`), holding no worker.
    Sleeping,
    /// Waiting for its turn under its `rate_limit`.
    Delayed,
    /// Its job (or jobs) are published; a result is awaited.
    Scheduled,
    Completed,
    Failed,
    /// Its `when` was false.
    Skipped,
    /// The instance was cancelled or failed before the step finished.
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Waiting => "waiting",
            StepStatus::Sleeping => "sleeping",
            StepStatus::Delayed => "delayed",
            StepStatus::Scheduled => "scheduled",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Completed
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

/// An instance: its status, input, output and every step (`instance.get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView {
    pub instance_id: String,
    pub tenant: String,
    pub workflow: String,
    /// The definition version the instance runs.
    pub version: u32,
    pub status: InstanceStatus,
    pub correlation_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input: Value,
    /// The workflow's output, once completed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<InstanceError>,
    /// The labels given at the start.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many times it was re-run.
    #[serde(default)]
    pub run: u32,
    /// For a start with `not_before`: when it runs (or ran), in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// When it was accepted, or for a `scheduled` instance when it began to run.
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub steps: Vec<StepView>,
}

/// Why an instance failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceError {
    /// The step that failed; null when the instance failed before any step ran.
    pub step: Option<String>,
    /// `permanent`, `retries_exhausted`, `deadline_exceeded`, `invalid_input`, `template`,
    /// `unknown_workflow`, …
    pub code: String,
    pub message: String,
}

/// One step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepView {
    pub id: String,
    /// The operation it runs (`<kind>.<op>`): for a step naming a capability, the one chosen
    /// when it was scheduled (null until then); null for a step that only waits for a signal.
    pub operation: Option<String>,
    /// The version of the operation its job was published for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The capability the step names, when it names one instead of an operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    pub status: StepStatus,
    pub attempts: u32,
    pub scheduled_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub output: Option<Value>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// For `for_each` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemsView>,
    /// For steps that wait for a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalView>,
    /// For a sleeping step: when it wakes (or woke), in ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<i64>,
    /// The worker replica that ran it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// A step's last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepError {
    pub code: String,
    pub message: String,
}

/// The items of a `for_each` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemsView {
    pub total: usize,
    pub finished: usize,
    pub failed: usize,
}

/// The signal a step waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalView {
    pub name: String,
    pub received: bool,
    /// How long the step may wait before its SLA is breached.
    pub sla_ms: Option<u64>,
    pub sla_breached: bool,
}

/// Where a definition is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DefinitionScope {
    /// A shipped template, visible to every tenant.
    Shared,
    /// The tenant's own; shadows a shared one of the same name.
    Tenant,
}

/// One registered definition version (`definitions.list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionSummary {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub scope: DefinitionScope,
    pub registered_at_ms: i64,
    pub deleted: bool,
    /// How many steps it has.
    pub steps: usize,
}

/// `definitions.list`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionList {
    pub definitions: Vec<DefinitionSummary>,
}

/// One step of a definition, as `definitions.get` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionStep {
    pub id: String,
    pub operation: Option<String>,
    /// The capability it names instead of an operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    pub needs: Vec<String>,
    /// The signal it waits for, if any.
    pub wait_for_signal: Option<String>,
}

/// One definition version with its text (`definitions.get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionDetail {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub scope: DefinitionScope,
    pub registered_at_ms: i64,
    pub deleted: bool,
    /// The input's JSON Schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input: Value,
    pub steps: Vec<DefinitionStep>,
    /// The text as registered.
    pub source: String,
}

/// `definitions.put`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutReply {
    pub name: String,
    pub version: u32,
    /// False when the same version with the same text was registered already.
    pub created: bool,
    /// What may keep its instances waiting, e.g. an operation whose kind has no live
    /// replica: they wait for one rather than fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `definitions.delete`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteReply {
    /// How many versions were marked deleted.
    pub deleted: usize,
}

/// `definitions.validate`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateReply {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Every problem with its path; empty when valid.
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// One reason a definition (or a workflow input) is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = DefinitionProblem))]
pub struct Problem {
    /// Where, like `steps[2].input.topic` or `steps[1].needs[0]`; empty for the whole text.
    pub path: String,
    /// The line in the definition's text, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

// ---- errors ----

/// What a caller acts on when a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceErrorCode {
    /// The request does not fit its endpoint.
    BadRequest,
    /// The definition does not validate; `problems` says why.
    InvalidDefinition,
    /// No such instance or definition for this tenant.
    NotFound,
    /// The version exists with other content.
    Conflict,
    /// The engine could not complete the request; the log has why.
    Internal,
}

impl ServiceErrorCode {
    /// The HTTP-like status carried in [`ERROR_CODE_HEADER`].
    pub fn status(self) -> u16 {
        match self {
            ServiceErrorCode::BadRequest | ServiceErrorCode::InvalidDefinition => 400,
            ServiceErrorCode::NotFound => 404,
            ServiceErrorCode::Conflict => 409,
            ServiceErrorCode::Internal => 500,
        }
    }
}

/// The error of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub code: ServiceErrorCode,
    pub message: String,
    /// For `invalid_definition`: every problem with its path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

impl ServiceError {
    pub fn new(code: ServiceErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

/// The body of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ServiceError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_a_distinct_subject_under_the_group() {
        let mut subjects: Vec<String> = ENDPOINTS.iter().map(|e| request_subject(e)).collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), ENDPOINTS.len());
        assert_eq!(GetInstance::subject(), "svc.orchestrator.instance.get");
    }

    #[test]
    fn error_codes_map_to_the_statuses_callers_branch_on() {
        let cases = [
            (ServiceErrorCode::BadRequest, "bad_request", 400),
            (
                ServiceErrorCode::InvalidDefinition,
                "invalid_definition",
                400,
            ),
            (ServiceErrorCode::NotFound, "not_found", 404),
            (ServiceErrorCode::Conflict, "conflict", 409),
            (ServiceErrorCode::Internal, "internal", 500),
        ];
        for (code, wire, status) in cases {
            assert_eq!(serde_json::to_value(code).unwrap(), wire);
            assert_eq!(code.status(), status, "{wire}");
        }
    }

    #[test]
    fn a_view_without_labels_still_reads() {
        // Replies from a replica that predates labels.
        let view: InstanceView = serde_json::from_value(serde_json::json!({
            "instance_id": "i", "tenant": "t", "workflow": "w", "version": 1,
            "status": "running", "correlation_id": "c", "input": {}, "output": null,
            "error": null, "started_at_ms": 1, "finished_at_ms": null, "duration_ms": null,
            "steps": []
        }))
        .unwrap();
        assert!(view.labels.is_empty());
        assert!(!view.status.is_finished());
    }
}
