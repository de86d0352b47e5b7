//! The state of one workflow instance, as stored (JSON) under its id in the `WF_STATE` bucket.
//!
//! It records everything a user asks about (each step's status, attempts, timings, output or
//! error) and the effects of the last transition, so that a redelivered message can publish
//! them again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_proto::{Job, Timer, WorkflowEvent};

pub use switchyard_proto::orchestrator::{InstanceStatus, StepStatus};

/// Why a step or an instance failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step that failed; `None` when the instance failed before any step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A short machine-readable reason: an [`switchyard_proto::ErrorCode`] name in lowercase
    /// (`permanent`, `retries_exhausted`, `deadline_exceeded`…), or `invalid_input`,
    /// `template`, `unknown_workflow`.
    pub code: String,
    pub message: String,
}

/// One step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub id: String,
    pub status: StepStatus,
    /// The operation it runs: the definition's, or for a capability the one chosen when
    /// the step was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The version of `operation` its job was published for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Deliveries the step's job took (the largest over its items).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// One entry per `for_each` item, in the list's order; empty for other steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemState>,
    /// The payload of the signal a `wait_for_signal` step received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sla_breached: bool,
    /// For a sleeping step: when it wakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker_id: String,
}

impl StepState {
    pub fn new(id: &str, operation: Option<&str>) -> Self {
        StepState {
            id: id.to_owned(),
            status: StepStatus::Pending,
            operation: operation.map(str::to_owned),
            version: None,
            attempts: 0,
            scheduled_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            output: None,
            error: None,
            items: Vec::new(),
            signal: None,
            sla_breached: false,
            wake_at_ms: None,
            worker_id: String::new(),
        }
    }
}

/// One item of a `for_each` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    pub status: StepStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
}

/// A signal that arrived before its step began to wait for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub signal_id: String,
    pub payload: Value,
}

/// A message a transition decided to publish. Ids are deterministic, so publishing one twice
/// is harmless: JetStream drops the copy within its duplicate window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Job {
        job: Job,
    },
    Event {
        event: WorkflowEvent,
    },
    Timer {
        timer: Timer,
    },
    /// Take a slot of the instance's concurrency key, or wait in line for one; a slot is
    /// granted with a `grant` timer. Carried out by compare-and-set in `WF_CONCURRENCY`, so
    /// doing it again changes nothing.
    Acquire {
        slot: Slot,
    },
    /// Give the slot back (or leave the line) and grant freed slots to those waiting.
    Release {
        slot: Slot,
    },
    /// Take the next turn under a rate limit (GCRA in `WF_RATES`); a `proceed` timer due at
    /// that turn goes on.
    Reserve {
        rate: Rate,
    },
}

/// A turn under a rate limit, asked for by a start (`step` empty) or a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// The key in `WF_RATES`: `<tenant>.<workflow>.<scope>.<digest of the key's value>`.
    pub key: String,
    pub tenant: String,
    pub instance: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub run: u32,
    /// Microseconds between turns: the period over the limit.
    pub interval_us: u64,
    /// Turns that may be taken at once: the limit.
    pub burst: u32,
}

/// An instance's place under a concurrency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The key in `WF_CONCURRENCY`: `<tenant>.<workflow>.<digest of the key's value>`.
    pub key: String,
    /// The key's value, as rendered.
    pub value: String,
    pub limit: u32,
    pub tenant: String,
    pub instance: String,
    /// The run that asked (its grant timer carries it).
    #[serde(default)]
    pub run: u32,
}

/// The whole state of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub tenant: String,
    pub workflow: String,
    /// The definition version the instance runs, fixed at start.
    pub version: u32,
    #[serde(default)]
    pub correlation_id: String,
    pub status: InstanceStatus,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many times the instance was re-run (0 until it is). Job, event and timer ids of a
    /// re-run carry it, so they are new messages, and what an earlier run left behind is
    /// told apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: u32,
    /// Whether its start passed the definition's `rate_limit`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_passed: bool,
    /// Its concurrency key, for a definition with `concurrency:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// For a start with `not_before`: when it runs. Until then the instance is `scheduled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// When it was accepted, or for a start with `not_before` when it began to run.
    pub started_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    /// In the definition's declaration order.
    pub steps: Vec<StepState>,
    /// Signals received before their step waited, by signal name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_signals: BTreeMap<String, PendingSignal>,
    /// Ids of the signals already applied, so a repeated signal changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_signals: Vec<String>,
    /// Stream sequence (in `WF_INBOX`) of the message the last transition applied.
    #[serde(default)]
    pub last_message: u64,
    /// What the last transition published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Effect>,
}

impl Instance {
    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Whether `job` still waits for its result: its step (or its `for_each` item) is
    /// scheduled. A job that is not may already have run, so it must not be published again.
    pub fn awaits(&self, job: &Job) -> bool {
        let Some(step) = self.step(&job.step_id) else {
            return false;
        };
        if step.status != StepStatus::Scheduled {
            return false;
        }
        if step.items.is_empty() {
            return job.job_id == job_id(&self.id, &step.id, None, self.run);
        }
        item_of(&job.job_id, &self.id, &step.id, self.run)
            .and_then(|i| step.items.get(i))
            .is_some_and(|i| i.status == StepStatus::Scheduled)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The id of the job that runs a step, or item `index` of a `for_each` step, in run `run`.
///
/// Within a run a step never runs twice at the engine level (the worker loop retries a job
/// under the same id), so a republished job is always a duplicate. A re-run's jobs end in
/// [`switchyard_proto::RERUN_SEPARATOR`] and the run, so they are new jobs with fresh
/// attempts, and a late result of an earlier run is told apart.
pub fn job_id(instance: &str, step: &str, index: Option<usize>, run: u32) -> String {
    let base = match index {
        Some(i) => format!("{instance}.{step}.{i}"),
        None => format!("{instance}.{step}"),
    };
    with_run(base, run)
}

fn with_run(base: String, run: u32) -> String {
    if run == 0 {
        base
    } else {
        format!("{base}{}{run}", switchyard_proto::RERUN_SEPARATOR)
    }
}

/// The `for_each` item a job id of [`job_id`] names, when it names one of this step's items
/// in run `run`.
pub fn item_of(job_id_text: &str, instance: &str, step: &str, run: u32) -> Option<usize> {
    let base = switchyard_proto::job_base(job_id_text);
    let index: usize = base.rsplit('.').next()?.parse().ok()?;
    (job_id(instance, step, Some(index), run) == job_id_text).then_some(index)
}

/// The id of an event that happens at most once per run of an instance (or of a step).
pub fn event_id(instance: &str, event_type: &str, step: Option<&str>, run: u32) -> String {
    let base = match step {
        Some(step) => format!("{instance}.{event_type}.{step}"),
        None => format!("{instance}.{event_type}"),
    };
    with_run(base, run)
}

/// The `Nats-Msg-Id` of a timer.
pub fn timer_id(timer: &Timer) -> String {
    with_run(
        format!(
            "timer.{}.{}.{}",
            timer.instance_id, timer.step_id, timer.kind
        ),
        timer.run,
    )
}
