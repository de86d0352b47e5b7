//! The actions of [`crate::AuditEvent`]: the last tokens of `audit.<tenant>.<action>`.

/// A workflow definition was registered or replaced.
pub const DEFINITION_PUT: &str = "definition.put";
/// A workflow definition was deleted.
pub const DEFINITION_DELETE: &str = "definition.delete";
/// Cancellation of an instance was requested.
pub const INSTANCE_CANCEL: &str = "instance.cancel";
/// A signal was sent to an instance.
pub const INSTANCE_SIGNAL: &str = "instance.signal";
/// A finished instance was re-run from its failed steps.
pub const INSTANCE_RERUN: &str = "instance.rerun";
/// A dead letter was replayed.
pub const DLQ_REPLAY: &str = "dlq.replay";
/// Dead letters were purged.
pub const DLQ_PURGE: &str = "dlq.purge";
/// A request was refused for its credentials (missing, expired, wrong audience, bad signature).
pub const AUTH_FAILED: &str = "auth.failed";

/// The tenant of an audit event when no verified token named one.
pub const ANONYMOUS_TENANT: &str = "_anonymous";
/// The outcome of an action that was carried out.
pub const OK: &str = "ok";
