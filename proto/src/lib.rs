//! The wire contract between Switchyard processes: the protobuf envelopes (generated from
//! `proto/`), the subjects and stream names they travel on, the header names every message
//! carries, and the error codes that cross process boundaries.
//!
//! Nothing else in the workspace spells a subject, stream or header name as a string literal;
//! it calls [`subject`], [`stream`] and [`header`]. This crate does no I/O.

pub mod audit;
pub mod codec;
pub mod event;
pub mod header;
pub mod json;
pub mod orchestrator;
pub mod server;
pub mod stream;
pub mod subject;

/// Generated envelope types (`switchyard.v1`). Their comments are the `.proto` file's, written
/// for readers of that file (`jobs.<kind>.<operation>` is a subject, not an HTML tag).
#[allow(missing_debug_implementations, clippy::all, rustdoc::invalid_html_tags)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchyard.v1.rs"));
}

pub use codec::{ContentType, DecodeError, decode, encode_json, encode_proto};
pub use v1::{
    AuditEvent, CancelWorkflow, DeadLetter, DeadLetterReason, ErrorCode, Job, JobError, JobResult,
    JobStatus, RetryPolicy, SignalWorkflow, StartWorkflow, Timer, TimerKind, UsageEvent,
    WorkflowEvent,
};

/// Milliseconds since the Unix epoch, the unit of every timestamp in the envelopes.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
