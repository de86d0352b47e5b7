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
    JobStatus, RerunWorkflow, RetryPolicy, SignalWorkflow, StartWorkflow, Timer, TimerKind,
    UsageEvent, WorkflowEvent,
};

/// What separates a job id from the run of a re-run instance it belongs to:
/// `<instance>.<step>~r2` is the job of step `step` in the instance's second re-run.
pub const RERUN_SEPARATOR: &str = "~r";

/// The job id `job_id` would have had before any re-run: the same for every run of one step
/// (or item). Side effects are keyed by it, so a re-run does not repeat one already made.
pub fn job_base(job_id: &str) -> &str {
    match job_id.rsplit_once(RERUN_SEPARATOR) {
        Some((base, run)) if !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => job_id,
    }
}

/// The run of its instance a job id of [`RERUN_SEPARATOR`]'s form belongs to: 0 for the
/// start's run and for a job of no instance.
pub fn job_run(job_id: &str) -> u32 {
    job_id
        .rsplit_once(RERUN_SEPARATOR)
        .and_then(|(_, run)| run.parse().ok())
        .unwrap_or(0)
}

impl Job {
    /// The id its side effects are recorded under: [`job_base`] of its id, so a re-run of the
    /// step finds what an earlier run did instead of doing it again.
    pub fn effect_id(&self) -> &str {
        job_base(&self.job_id)
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the envelopes.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod job_id_tests {
    use super::*;

    #[test]
    fn a_reruns_job_id_has_the_base_of_the_first_run() {
        assert_eq!(job_base("i-1.summarize"), "i-1.summarize");
        assert_eq!(job_base("i-1.summarize~r2"), "i-1.summarize");
        assert_eq!(job_base("i-1.items.3~r12"), "i-1.items.3");
        assert_eq!(job_base("direct~rx"), "direct~rx");
        assert_eq!(job_base("direct~r"), "direct~r");
        assert_eq!(job_run("i-1.items.3~r12"), 12);
        assert_eq!(job_run("i-1.items.3"), 0);
    }
}
