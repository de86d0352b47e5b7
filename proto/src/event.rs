//! The types of workflow events: the last token of `wf.events.<tenant>.<instance>.<type>` and
//! the `type` field of [`crate::WorkflowEvent`]. Consumers (the gateway's SSE, the ledger)
//! match on these.

/// A start with `not_before` was accepted: the instance runs at `data.not_before_ms`.
pub const SCHEDULED: &str = "scheduled";
/// The instance waits for a slot of its concurrency key (`data.key`, `data.limit`).
pub const QUEUED: &str = "queued";
/// The instance was accepted and its first steps scheduled.
pub const STARTED: &str = "started";
/// Every step finished; `data` holds the workflow's output.
pub const COMPLETED: &str = "completed";
/// A step failed with `on_error: fail` or the start was refused; `data` holds the reason.
pub const FAILED: &str = "failed";
/// The instance was cancelled; workers abort its running jobs when they see this.
pub const CANCELLED: &str = "cancelled";
/// A step's job (or, for `for_each`, its jobs) was published.
pub const STEP_SCHEDULED: &str = "step_scheduled";
/// A worker began running a step's job (sent by the worker loop, once per attempt).
pub const STEP_STARTED: &str = "step_started";
/// A step's attempt failed with a retryable error and will run again after a delay.
pub const STEP_RETRYING: &str = "step_retrying";
/// A step finished successfully.
pub const STEP_COMPLETED: &str = "step_completed";
/// A step failed (after its retries); `data` says whether the instance goes on.
pub const STEP_FAILED: &str = "step_failed";
/// A step's `when` was false, so it did not run.
pub const STEP_SKIPPED: &str = "step_skipped";
/// A step is waiting for a named signal.
pub const STEP_WAITING: &str = "step_waiting";
/// A step waits for its rate limit until `data.at_ms`.
pub const STEP_DELAYED: &str = "step_delayed";
/// A step sleeps until `data.until_ms`, holding no worker.
pub const STEP_SLEEPING: &str = "step_sleeping";
/// A waiting step got its signal.
pub const STEP_SIGNALLED: &str = "step_signalled";
/// A finished instance began to run again from its failed steps; `data` names the run, the
/// steps that run again and who asked. Events of a re-run carry `run` in their data.
pub const RERUN: &str = "rerun";
/// A waiting step passed its SLA deadline without a signal.
pub const SLA_BREACHED: &str = "sla_breached";

/// Event types after which an instance does nothing more.
pub const TERMINAL: [&str; 3] = [COMPLETED, FAILED, CANCELLED];
