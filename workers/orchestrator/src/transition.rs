//! The pure transition function: an instance's state and one message in, the next state and
//! the effects to publish out. No I/O and no clock: the engine passes the time in, so the same
//! state and message always give the same answer, which is what makes redelivery and
//! compare-and-set retries safe.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Map, Value, json};
use switchyard_proto::{
    CancelWorkflow, ErrorCode, Job, JobResult, JobStatus, RerunWorkflow, RetryPolicy,
    SignalWorkflow, StartWorkflow, Timer, TimerKind, WorkflowEvent, event,
};

use switchyard_catalog::{Catalog, OperationSpec};
use switchyard_workflow::definition::{Definition, OnError, Scope, Step};

use crate::instance::{
    Effect, Failure, Instance, InstanceStatus, ItemState, PendingSignal, Rate, Slot, StepState,
    StepStatus, event_id, item_of, job_id,
};

/// How many applied signal ids an instance remembers.
const SEEN_SIGNALS: usize = 64;

/// What the transition needs from outside: the time and the allow-listed environment.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub now_ms: i64,
    pub env: &'a BTreeMap<String, String>,
    /// The live catalog: which operation runs a capability now, and each one's version.
    pub routes: &'a dyn Routes,
}

/// What the transition reads of the live catalog and registry. The engine's answer changes
/// as kinds declare operations and replicas come and go; what it chose is recorded in the
/// step's state, so a redelivered message is applied the same way.
pub trait Routes: Sync + std::fmt::Debug {
    /// The operation that runs a step naming `capability` now, trying the kinds in `prefer`
    /// first (docs/worker-protocol.md, "Capabilities"); `None` when nothing provides it.
    fn route(&self, capability: &str, prefer: &[String]) -> Option<OperationSpec>;
    /// The version of `operation` that jobs are published for.
    fn version(&self, operation: &str) -> Option<u32>;
    /// The schemas of `operation` when it was declared at run time (the engine checks
    /// what such workers return); `None` for a built-in operation.
    fn declared(&self, operation: &str) -> Option<OperationSpec>;
}

/// The built-in catalog with every kind live: what the transition sees when nothing was
/// declared at run time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Builtin;

impl Routes for Builtin {
    fn route(&self, capability: &str, prefer: &[String]) -> Option<OperationSpec> {
        ordered_providers(Catalog::builtin(), capability, prefer)
            .first()
            .map(|op| (*op).clone())
    }

    fn version(&self, operation: &str) -> Option<u32> {
        Catalog::builtin().get(operation).map(|op| op.version)
    }

    fn declared(&self, _operation: &str) -> Option<OperationSpec> {
        None
    }
}

/// The providers of `capability` in the order routing tries them (the first with a live
/// replica runs the step, or the first of all when none has one): the kinds `prefer` names,
/// in its order; then kinds declared at run time, by name; then built-in kinds.
pub fn ordered_providers<'a>(
    catalog: &'a Catalog,
    capability: &'a str,
    prefer: &[String],
) -> Vec<&'a OperationSpec> {
    let mut providers: Vec<&OperationSpec> = catalog.providers(capability).collect();
    providers.sort_by_key(|op| {
        (
            prefer
                .iter()
                .position(|k| *k == op.kind)
                .unwrap_or(prefer.len()),
            Catalog::builtin().get(&op.name).is_some(),
            op.kind.clone(),
        )
    });
    providers
}

/// A message for an existing instance.
#[derive(Debug, Clone)]
pub enum Input {
    Result(JobResult),
    Cancel(CancelWorkflow),
    /// Applied by [`rerun`], to the definition version it names, not by [`apply`].
    Rerun(RerunWorkflow),
    Signal(SignalWorkflow),
    Timer(Timer),
}

impl Input {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Result(_) => "result",
            Input::Cancel(_) => "cancel",
            Input::Rerun(_) => "rerun",
            Input::Signal(_) => "signal",
            Input::Timer(_) => "timer",
        }
    }
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this state (its `outbox` holds the effects to publish), then publish, then ack.
    Apply(Box<Instance>),
    /// Nothing changes (a duplicate, a stale result, a finished instance); ack.
    Ignore(&'static str),
    /// A timer that is not due yet: hand it back for this long.
    Later(Duration),
}

/// Creates an instance from a start message. A refused start (bad input) still creates the
/// instance, failed, so that whoever polls its id sees why.
pub fn start(def: &Definition, msg: &StartWorkflow, instance_id: &str, ctx: Ctx<'_>) -> Instance {
    let raw_input = if msg.input.is_empty() {
        Ok(Value::Object(Map::new()))
    } else {
        serde_json::from_slice::<Value>(&msg.input)
            .map_err(|e| format!("input: not valid JSON: {e}"))
    };
    let prepared = raw_input.and_then(|v| def.prepare_input(v.clone()).map_err(|p| p.to_string()));
    let mut inst = new_instance(msg, instance_id, &def.name, def.version, ctx);
    inst.steps = def
        .steps
        .iter()
        .map(|s| StepState::new(&s.id, s.operation.as_deref()))
        .collect();
    let mut fx = Vec::new();
    match prepared {
        Ok(input) => {
            inst.input = input;
            if msg.not_before_ms > ctx.now_ms {
                // Accepted and checked now; it runs when the start timer is due.
                inst.status = InstanceStatus::Scheduled;
                inst.not_before_ms = Some(msg.not_before_ms);
                let mut data = json!({
                    "workflow": def.name,
                    "version": def.version,
                    "not_before_ms": msg.not_before_ms,
                });
                if !inst.labels.is_empty() {
                    data["labels"] = json!(inst.labels);
                }
                push_event(&mut fx, &inst, event::SCHEDULED, None, data, ctx);
                push_timer(&mut fx, &inst, "", TimerKind::Start, msg.not_before_ms);
            } else {
                admit(def, &mut inst, ctx, &mut fx);
            }
        }
        Err(message) => {
            let failure = Failure {
                step: None,
                code: "invalid_input".into(),
                message,
            };
            finish_failed(&mut inst, failure, ctx, &mut fx);
        }
    }
    inst.outbox = fx;
    inst
}

/// Runs an accepted instance now, or for a definition with `concurrency:` queues it for a
/// slot of its key (it runs when the slot is granted).
fn admit(def: &Definition, inst: &mut Instance, ctx: Ctx<'_>, fx: &mut Vec<Effect>) {
    if let Some(limit) = def.rate_limit
        && !inst.rate_passed
    {
        match def.rate_key(None, &inst.input, ctx.env) {
            Ok(Some(value)) => {
                inst.status = InstanceStatus::Queued;
                let data = json!({
                    "workflow": inst.workflow,
                    "reason": "rate_limit",
                    "key": value,
                    "limit": limit.limit,
                    "per_ms": millis(limit.per),
                });
                push_event(fx, inst, event::QUEUED, None, data, ctx);
                let rate = rate_of(inst, "", "start", &value, limit);
                fx.push(Effect::Reserve { rate });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let failure = Failure {
                    step: None,
                    code: "template".into(),
                    message: format!("{}: {}", e.path, e.message),
                };
                return finish_failed(inst, failure, ctx, fx);
            }
        }
    }
    let value = match def.concurrency_key(&inst.input, ctx.env) {
        Ok(Some(value)) => value,
        Ok(None) => return begin(def, inst, ctx, fx),
        Err(e) => {
            let failure = Failure {
                step: None,
                code: "template".into(),
                message: format!("{}: {}", e.path, e.message),
            };
            return finish_failed(inst, failure, ctx, fx);
        }
    };
    let limit = def.concurrency.map_or(1, |c| c.limit);
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, value.as_bytes()).simple();
    let slot = Slot {
        key: format!("{}.{}.{digest}", inst.tenant, inst.workflow),
        value,
        limit,
        tenant: inst.tenant.clone(),
        instance: inst.id.clone(),
        run: inst.run,
    };
    inst.status = InstanceStatus::Queued;
    let data = json!({
        "workflow": inst.workflow,
        "reason": "concurrency",
        "key": slot.value,
        "limit": limit,
    });
    push_event(fx, inst, event::QUEUED, None, data, ctx);
    fx.push(Effect::Acquire { slot: slot.clone() });
    inst.slot = Some(slot);
}

/// A turn under `limit` for the instance's start (`step` empty) or a step.
fn rate_of(
    inst: &Instance,
    step: &str,
    scope: &str,
    value: &str,
    limit: switchyard_workflow::definition::RateLimit,
) -> Rate {
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, value.as_bytes()).simple();
    let per_us = u64::try_from(limit.per.as_micros()).unwrap_or(u64::MAX);
    Rate {
        key: format!("{}.{}.{scope}.{digest}", inst.tenant, inst.workflow),
        tenant: inst.tenant.clone(),
        instance: inst.id.clone(),
        step: step.to_owned(),
        run: inst.run,
        interval_us: (per_us / u64::from(limit.limit.max(1))).max(1),
        burst: limit.limit.max(1),
    }
}

/// Gives back the instance's concurrency slot (or its place in line) as it finishes.
fn release(inst: &Instance, fx: &mut Vec<Effect>) {
    if let Some(slot) = &inst.slot {
        fx.push(Effect::Release { slot: slot.clone() });
    }
}

/// Runs an accepted instance: the `started` event, the workflow's timeout, the first steps.
fn begin(def: &Definition, inst: &mut Instance, ctx: Ctx<'_>, fx: &mut Vec<Effect>) {
    inst.status = InstanceStatus::Running;
    let mut data = json!({ "workflow": def.name, "version": def.version, "input": inst.input });
    if !inst.labels.is_empty() {
        data["labels"] = json!(inst.labels);
    }
    if let Some(not_before) = inst.not_before_ms {
        data["not_before_ms"] = json!(not_before);
    }
    push_event(fx, inst, event::STARTED, None, data, ctx);
    if let Some(timeout) = def.timeout {
        let due = ctx.now_ms.saturating_add(millis(timeout));
        push_timer(fx, inst, "", TimerKind::WorkflowTimeout, due);
    }
    advance(def, inst, ctx, fx);
}

/// Creates a failed instance for a start that names no registered workflow (or version), so
/// that the refusal is visible under the instance id like any other failure.
pub fn start_refused(
    msg: &StartWorkflow,
    instance_id: &str,
    code: &str,
    message: String,
    ctx: Ctx<'_>,
) -> Instance {
    let mut inst = new_instance(msg, instance_id, &msg.workflow, msg.version, ctx);
    inst.input = serde_json::from_slice(&msg.input).unwrap_or(Value::Null);
    let mut fx = Vec::new();
    let failure = Failure {
        step: None,
        code: code.to_owned(),
        message,
    };
    finish_failed(&mut inst, failure, ctx, &mut fx);
    inst.outbox = fx;
    inst
}

/// The failure code of an instance that ran past its definition's `timeout`.
pub const WORKFLOW_TIMEOUT: &str = "timeout";

/// The failure code of an instance whose state grew too large to store.
pub const STATE_TOO_LARGE: &str = "state_too_large";

/// `next`, whose stored form would be `size` bytes, more than the `limit` a stored state may
/// have: failed instead, with the reason, and without the outputs, signals and effects that
/// made it too large (none of its effects was published). Its running steps are stopped and
/// the `failed` event tells workers to abort their jobs. The input is dropped only when it is
/// itself too large.
pub fn fail_too_large(mut next: Instance, size: usize, limit: usize, ctx: Ctx<'_>) -> Instance {
    next.outbox.clear();
    next.output = None;
    next.pending_signals.clear();
    for step in &mut next.steps {
        step.output = None;
        step.signal = None;
        for item in &mut step.items {
            item.output = None;
        }
    }
    if serde_json::to_vec(&next.input).map_or(0, |b| b.len()) > limit / 2 {
        next.input = Value::Null;
    }
    let failure = Failure {
        step: None,
        code: STATE_TOO_LARGE.to_owned(),
        message: format!(
            "the instance's state would have been {size} bytes, more than the {limit} bytes a \
             stored state may have: a step's input or output is too large"
        ),
    };
    let mut fx = Vec::new();
    finish_failed(&mut next, failure, ctx, &mut fx);
    next.outbox = fx;
    next
}

/// Why a re-run is refused: a field of the request that is wrong, or the instance's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The request's field at fault; `None` when the instance cannot be re-run as asked.
    pub field: Option<&'static str>,
    pub message: String,
}

impl Refusal {
    fn state(message: String) -> Self {
        Refusal {
            field: None,
            message,
        }
    }
}

/// A re-run's new state and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerun {
    pub instance: Instance,
    /// The steps that run again, in the definition's order.
    pub steps: Vec<String>,
    /// The completed or skipped steps kept as they were.
    pub kept: Vec<String>,
}

/// Failure codes of an instance whose start was refused: it has nothing to re-run.
const REFUSED_STARTS: [&str; 2] = ["invalid_input", "unknown_workflow"];

/// Runs a finished instance again under `def` (its own version, or a newer one that keeps its
/// completed steps): completed steps keep their outputs and are not run again; failed,
/// cancelled and never-run steps, `req.from_step` when named, and every step downstream of
/// those run again, with attempts counted afresh. The instance's run goes up by one, so its
/// new jobs, events and timers are new messages and what the earlier run left behind (late
/// results, timers) changes nothing.
pub fn rerun(
    def: &Definition,
    state: &Instance,
    req: &RerunWorkflow,
    ctx: Ctx<'_>,
) -> Result<Rerun, Refusal> {
    if !state.status.is_finished() {
        return Err(Refusal::state(format!(
            "instance {:?} is {}: only a finished instance can be re-run",
            state.id,
            state.status.as_str()
        )));
    }
    if req.run != state.run + 1 {
        return Err(Refusal::state(format!(
            "instance {:?} is at run {}; this re-run was for run {}",
            state.id, state.run, req.run
        )));
    }
    if let Some(e) = &state.error
        && e.step.is_none()
        && REFUSED_STARTS.contains(&e.code.as_str())
    {
        return Err(Refusal::state(format!(
            "instance {:?} never started ({}: {}); start a new one",
            state.id, e.code, e.message
        )));
    }
    let from = if req.from_step.is_empty() {
        None
    } else {
        Some(def.step_index(&req.from_step).ok_or_else(|| Refusal {
            field: Some("from_step"),
            message: format!(
                "version {} of {:?} has no step {:?}",
                def.version, def.name, req.from_step
            ),
        })?)
    };
    if state.status == InstanceStatus::Completed && from.is_none() {
        return Err(Refusal::state(format!(
            "instance {:?} completed: name from_step to run a step and what follows it again",
            state.id
        )));
    }

    let again = steps_to_run_again(def, state, from);
    for old in &state.steps {
        if old.status == StepStatus::Completed && def.step_index(&old.id).is_none() {
            return Err(Refusal::state(format!(
                "version {} of {:?} has no step {:?}, which completed; a re-run keeps completed \
                 steps, so their ids must stay",
                def.version, def.name, old.id
            )));
        }
    }
    for (index, spec) in def.steps.iter().enumerate() {
        if again[index] {
            continue;
        }
        if let Some(old) = state
            .step(&spec.id)
            .filter(|s| s.status == StepStatus::Completed)
        {
            let output = old.output.clone().unwrap_or(Value::Null);
            def.check_step_output(index, &output).map_err(|e| {
                Refusal::state(format!(
                    "step {:?} completed with an output that version {} does not accept: {e}",
                    spec.id, def.version
                ))
            })?;
        }
    }
    let input = if def.version == state.version {
        state.input.clone()
    } else {
        def.prepare_input(state.input.clone()).map_err(|p| {
            Refusal::state(format!(
                "the instance's input does not fit version {}: {p}",
                def.version
            ))
        })?
    };

    let mut inst = state.clone();
    inst.outbox.clear();
    inst.run = req.run;
    inst.version = def.version;
    inst.input = input;
    inst.status = InstanceStatus::Running;
    inst.output = None;
    inst.error = None;
    inst.finished_at_ms = None;
    inst.updated_at_ms = ctx.now_ms;
    inst.pending_signals.clear();
    inst.steps = def
        .steps
        .iter()
        .enumerate()
        .map(|(index, spec)| match state.step(&spec.id) {
            Some(old) if !again[index] => old.clone(),
            _ => StepState::new(&spec.id, spec.operation.as_deref()),
        })
        .collect();
    let (mut steps, mut kept) = (Vec::new(), Vec::new());
    for (index, spec) in def.steps.iter().enumerate() {
        if again[index] {
            steps.push(spec.id.clone());
        } else {
            kept.push(spec.id.clone());
        }
    }
    let mut fx = Vec::new();
    let data = json!({
        "workflow": inst.workflow,
        "version": inst.version,
        "previous_version": state.version,
        "from_step": from.map(|i| def.steps[i].id.as_str()),
        "steps": steps,
        "kept": kept,
        "requested_by": req.requested_by,
        "reason": req.reason,
    });
    push_event(&mut fx, &inst, event::RERUN, None, data, ctx);
    if def.concurrency.is_some() {
        // A re-run takes a slot of its key like a start; it runs when granted.
        admit(def, &mut inst, ctx, &mut fx);
    } else {
        if let Some(timeout) = def.timeout {
            let due = ctx.now_ms.saturating_add(millis(timeout));
            push_timer(&mut fx, &inst, "", TimerKind::WorkflowTimeout, due);
        }
        advance(def, &mut inst, ctx, &mut fx);
    }
    inst.outbox = fx;
    Ok(Rerun {
        instance: inst,
        steps,
        kept,
    })
}

/// Which of `def`'s steps a re-run of `state` runs again: those that did not complete (or
/// were not skipped), `from`, and everything downstream of any of them.
fn steps_to_run_again(def: &Definition, state: &Instance, from: Option<usize>) -> Vec<bool> {
    let mut again: Vec<bool> = def
        .steps
        .iter()
        .map(|spec| {
            state
                .step(&spec.id)
                .is_none_or(|s| !matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
        })
        .collect();
    if let Some(index) = from {
        again[index] = true;
    }
    loop {
        let mut grew = false;
        for (index, spec) in def.steps.iter().enumerate() {
            if !again[index]
                && spec
                    .needs
                    .iter()
                    .any(|need| def.step_index(need).is_some_and(|n| again[n]))
            {
                again[index] = true;
                grew = true;
            }
        }
        if !grew {
            return again;
        }
    }
}

/// A running instance with no steps and no input yet.
fn new_instance(
    msg: &StartWorkflow,
    instance_id: &str,
    workflow: &str,
    version: u32,
    ctx: Ctx<'_>,
) -> Instance {
    Instance {
        id: instance_id.to_owned(),
        tenant: msg.tenant.clone(),
        workflow: workflow.to_owned(),
        version,
        correlation_id: msg.correlation_id.clone(),
        status: InstanceStatus::Running,
        input: Value::Null,
        output: None,
        error: None,
        labels: msg.labels.clone().into_iter().collect(),
        run: 0,
        rate_passed: false,
        slot: None,
        not_before_ms: None,
        started_at_ms: ctx.now_ms,
        finished_at_ms: None,
        updated_at_ms: ctx.now_ms,
        steps: Vec::new(),
        pending_signals: BTreeMap::new(),
        seen_signals: Vec::new(),
        last_message: 0,
        outbox: Vec::new(),
    }
}

/// The longest a timer is handed back for at once: one due later comes back after this and is
/// handed back again, so no delay exceeds what the server takes.
pub const LONGEST_HOLD: Duration = Duration::from_secs(24 * 3600);

/// Applies one message to an existing instance.
pub fn apply(def: &Definition, state: &Instance, input: &Input, ctx: Ctx<'_>) -> Decision {
    if let Input::Timer(timer) = input
        && timer.due_at_ms > ctx.now_ms
    {
        let wait = u64::try_from(timer.due_at_ms - ctx.now_ms).unwrap_or(0);
        return Decision::Later(Duration::from_millis(wait).min(LONGEST_HOLD));
    }
    if let Input::Timer(timer) = input
        && timer.run != state.run
    {
        return Decision::Ignore("timer of an earlier run");
    }
    if state.status.is_finished() {
        return Decision::Ignore("instance already finished");
    }
    let mut inst = state.clone();
    inst.outbox.clear();
    let mut fx = Vec::new();
    let changed = match input {
        Input::Result(r) => on_result(def, &mut inst, r, ctx, &mut fx),
        Input::Cancel(c) => on_cancel(&mut inst, c, ctx, &mut fx),
        Input::Signal(s) => on_signal(def, &mut inst, s, ctx, &mut fx),
        Input::Timer(t) => on_timer(def, &mut inst, t, ctx, &mut fx),
        Input::Rerun(_) => Err("a re-run of a running instance"),
    };
    match changed {
        Err(reason) => Decision::Ignore(reason),
        Ok(()) => {
            if inst.status == InstanceStatus::Running {
                advance(def, &mut inst, ctx, &mut fx);
            }
            inst.updated_at_ms = ctx.now_ms;
            inst.outbox = fx;
            Decision::Apply(Box::new(inst))
        }
    }
}

type Applied = Result<(), &'static str>;

fn on_result(
    def: &Definition,
    inst: &mut Instance,
    r: &JobResult,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Applied {
    let Some(index) = def.step_index(&r.step_id) else {
        return Err("result for a step the definition does not have");
    };
    let step = &inst.steps[index];
    if step.status != StepStatus::Scheduled {
        return Err("result for a step that is not running");
    }
    let item = if step.items.is_empty() {
        if r.job_id != job_id(&inst.id, &step.id, None, inst.run) {
            return Err("result of another job");
        }
        None
    } else {
        let i = item_of(&r.job_id, &inst.id, &step.id, inst.run).filter(|i| *i < step.items.len());
        let Some(i) = i else {
            return Err("result of another job");
        };
        if step.items[i].status != StepStatus::Scheduled {
            return Err("result for an item that is not running");
        }
        Some(i)
    };

    let outcome = match JobStatus::try_from(r.status) {
        Ok(JobStatus::Succeeded) => {
            let output = if r.output.is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_slice(&r.output).map_err(|e| Failure {
                    step: Some(r.step_id.clone()),
                    code: "invalid_output".into(),
                    message: format!("the job's output is not JSON: {e}"),
                })
            };
            output.and_then(|value| {
                check_output(def, index, step.operation.as_deref(), &value, ctx)
                    .map(|()| value)
                    .map_err(|message| Failure {
                        step: Some(r.step_id.clone()),
                        code: "invalid_output".into(),
                        message,
                    })
            })
        }
        _ => Err(Failure {
            step: Some(r.step_id.clone()),
            code: r
                .error
                .as_ref()
                .and_then(|e| ErrorCode::try_from(e.code).ok())
                .map_or("failed", error_code_name)
                .to_owned(),
            message: r
                .error
                .as_ref()
                .map_or_else(|| "the job failed".to_owned(), |e| e.message.clone()),
        }),
    };

    let step = &mut inst.steps[index];
    step.attempts = step.attempts.max(r.attempts);
    if r.started_at_ms > 0 {
        step.started_at_ms = Some(
            step.started_at_ms
                .map_or(r.started_at_ms, |s| s.min(r.started_at_ms)),
        );
    }
    if !r.worker_id.is_empty() {
        step.worker_id.clone_from(&r.worker_id);
    }
    match item {
        None => match outcome {
            Ok(output) => complete_step(inst, index, output, ctx, fx),
            Err(failure) => fail_step(def, inst, index, failure, ctx, fx),
        },
        Some(i) => {
            let it = &mut step.items[i];
            it.attempts = r.attempts;
            it.finished_at_ms = Some(ctx.now_ms);
            match outcome {
                Ok(output) => {
                    it.status = StepStatus::Completed;
                    it.output = Some(output);
                }
                Err(failure) => {
                    it.status = StepStatus::Failed;
                    it.error = Some(failure.clone());
                    if def.steps[index].on_error == OnError::Fail {
                        let failure = Failure {
                            message: format!("item {i}: {}", failure.message),
                            ..failure
                        };
                        fail_step(def, inst, index, failure, ctx, fx);
                        return Ok(());
                    }
                }
            }
            join_items(def, inst, index, ctx, fx);
        }
    }
    Ok(())
}

/// Finishes a `for_each` step once every item has: its output is the items' outputs in order.
fn join_items(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let step = &inst.steps[index];
    if !step.items.iter().all(|i| i.status.is_terminal()) {
        return;
    }
    let outputs: Vec<Value> = step
        .items
        .iter()
        .map(|i| i.output.clone().unwrap_or(Value::Null))
        .collect();
    let failed: Vec<usize> = step
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.status == StepStatus::Failed)
        .map(|(n, _)| n)
        .collect();
    if failed.is_empty() {
        complete_step(inst, index, Value::Array(outputs), ctx, fx);
    } else {
        let first = step.items[failed[0]].error.clone();
        let total = step.items.len();
        let step_id = step.id.clone();
        inst.steps[index].output = Some(Value::Array(outputs));
        let failure = Failure {
            step: Some(step_id),
            code: first
                .as_ref()
                .map_or_else(|| "failed".into(), |f| f.code.clone()),
            message: format!(
                "{} of {} items failed (first: item {}: {})",
                failed.len(),
                total,
                failed[0],
                first.map_or_else(String::new, |f| f.message)
            ),
        };
        fail_step(def, inst, index, failure, ctx, fx);
    }
}

fn on_cancel(
    inst: &mut Instance,
    c: &CancelWorkflow,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Applied {
    inst.status = InstanceStatus::Cancelled;
    inst.finished_at_ms = Some(ctx.now_ms);
    inst.error = Some(Failure {
        step: None,
        code: "cancelled".into(),
        message: if c.reason.is_empty() {
            "cancelled".into()
        } else {
            c.reason.clone()
        },
    });
    stop_unfinished(inst, ctx);
    let data = json!({
        "workflow": inst.workflow,
        "reason": c.reason,
        "requested_by": c.requested_by,
        "duration_ms": ctx.now_ms - inst.started_at_ms,
    });
    push_event(fx, inst, event::CANCELLED, None, data, ctx);
    release(inst, fx);
    Ok(())
}

fn on_signal(
    def: &Definition,
    inst: &mut Instance,
    s: &SignalWorkflow,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Applied {
    if !s.signal_id.is_empty() && inst.seen_signals.contains(&s.signal_id) {
        return Err("signal already applied");
    }
    let payload: Value = if s.payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&s.payload).unwrap_or(Value::Null)
    };
    let waits_for = |st: &Step| {
        st.wait_for_signal
            .as_ref()
            .is_some_and(|w| w.name == s.name)
    };
    let waiting = def
        .steps
        .iter()
        .enumerate()
        .find(|(i, st)| waits_for(st) && inst.steps[*i].status == StepStatus::Waiting)
        .map(|(i, _)| i);
    if let Some(index) = waiting {
        remember_signal(inst, &s.signal_id);
        deliver_signal(def, inst, index, payload, ctx, fx);
        return Ok(());
    }
    let will_wait = def
        .steps
        .iter()
        .enumerate()
        .any(|(i, st)| waits_for(st) && inst.steps[i].status == StepStatus::Pending);
    if !will_wait || inst.pending_signals.contains_key(&s.name) {
        return Err("no step waits for this signal");
    }
    remember_signal(inst, &s.signal_id);
    inst.pending_signals.insert(
        s.name.clone(),
        PendingSignal {
            signal_id: s.signal_id.clone(),
            payload,
        },
    );
    Ok(())
}

fn remember_signal(inst: &mut Instance, signal_id: &str) {
    if signal_id.is_empty() {
        return;
    }
    inst.seen_signals.push(signal_id.to_owned());
    if inst.seen_signals.len() > SEEN_SIGNALS {
        inst.seen_signals.remove(0);
    }
}

fn on_timer(
    def: &Definition,
    inst: &mut Instance,
    t: &Timer,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Applied {
    if TimerKind::try_from(t.kind) == Ok(TimerKind::Start) {
        if inst.status != InstanceStatus::Scheduled {
            return Err("start timer of an instance already running");
        }
        inst.started_at_ms = ctx.now_ms;
        admit(def, inst, ctx, fx);
        return Ok(());
    }
    if TimerKind::try_from(t.kind) == Ok(TimerKind::Proceed) && t.step_id.is_empty() {
        if inst.status != InstanceStatus::Queued || inst.rate_passed {
            return Err("a rate-limit turn for a start already past it");
        }
        inst.rate_passed = true;
        inst.started_at_ms = ctx.now_ms;
        admit(def, inst, ctx, fx);
        return Ok(());
    }
    if TimerKind::try_from(t.kind) == Ok(TimerKind::Grant) {
        if inst.status != InstanceStatus::Queued {
            return Err("a concurrency slot granted to an instance not waiting for one");
        }
        inst.started_at_ms = ctx.now_ms;
        begin(def, inst, ctx, fx);
        return Ok(());
    }
    if TimerKind::try_from(t.kind) == Ok(TimerKind::WorkflowTimeout) {
        let timeout = def.timeout.unwrap_or_default();
        let failure = Failure {
            step: None,
            code: WORKFLOW_TIMEOUT.to_owned(),
            message: format!(
                "the workflow ran longer than its timeout, {}",
                humantime::format_duration(timeout)
            ),
        };
        // Its running jobs are cancelled by the `failed` event, as when a step times out.
        finish_failed(inst, failure, ctx, fx);
        return Ok(());
    }
    let Some(index) = def.step_index(&t.step_id) else {
        return Err("timer for a step the definition does not have");
    };
    let step = &mut inst.steps[index];
    match TimerKind::try_from(t.kind) {
        Ok(TimerKind::StepTimeout) if step.status == StepStatus::Scheduled => {
            let timeout = def.steps[index].timeout.unwrap_or_default();
            let failure = Failure {
                step: Some(step.id.clone()),
                code: error_code_name(ErrorCode::DeadlineExceeded).to_owned(),
                message: format!("timed out after {}", humantime::format_duration(timeout)),
            };
            for item in step.items.iter_mut().filter(|i| !i.status.is_terminal()) {
                item.status = StepStatus::Failed;
                item.error = Some(failure.clone());
                item.finished_at_ms = Some(ctx.now_ms);
            }
            fail_step(def, inst, index, failure, ctx, fx);
            Ok(())
        }
        Ok(TimerKind::Sla) if step.status == StepStatus::Waiting && !step.sla_breached => {
            step.sla_breached = true;
            let wait = def.steps[index].wait_for_signal.as_ref();
            let data = json!({
                "signal": wait.map(|w| w.name.as_str()),
                "sla_ms": wait.and_then(|w| w.sla).map(|d| d.as_millis() as u64),
                "waited_ms": ctx.now_ms - step.scheduled_at_ms.unwrap_or(ctx.now_ms),
            });
            let id = step.id.clone();
            push_event(fx, inst, event::SLA_BREACHED, Some(&id), data, ctx);
            Ok(())
        }
        Ok(TimerKind::Proceed) if step.status == StepStatus::Delayed => {
            proceed(def, inst, index, ctx, fx);
            Ok(())
        }
        Ok(TimerKind::Wake) if step.status == StepStatus::Sleeping => {
            let until = step.wake_at_ms.unwrap_or(t.due_at_ms);
            let slept = ctx.now_ms - step.scheduled_at_ms.unwrap_or(ctx.now_ms);
            complete_step(
                inst,
                index,
                json!({ "until_ms": until, "slept_ms": slept }),
                ctx,
                fx,
            );
            Ok(())
        }
        _ => Err("timer for a step that moved on"),
    }
}

/// Moves every step whose `needs` are done: skips it, makes it wait, or schedules its job,
/// then finishes the instance when nothing is left to do.
pub(crate) fn advance(def: &Definition, inst: &mut Instance, ctx: Ctx<'_>, fx: &mut Vec<Effect>) {
    loop {
        let mut moved = false;
        for index in 0..def.steps.len() {
            if inst.status != InstanceStatus::Running {
                return;
            }
            if inst.steps[index].status != StepStatus::Pending || !needs_done(def, inst, index) {
                continue;
            }
            moved = true;
            start_step(def, inst, index, ctx, fx);
        }
        if !moved {
            break;
        }
    }
    if inst.status == InstanceStatus::Running && inst.steps.iter().all(|s| s.status.is_terminal()) {
        finish_completed(def, inst, ctx, fx);
    }
}

/// A need is done when it completed, was skipped, or failed with `on_error: continue`.
fn needs_done(def: &Definition, inst: &Instance, index: usize) -> bool {
    def.steps[index].needs.iter().all(|need| {
        def.step_index(need)
            .is_some_and(|n| inst.steps[n].status.is_terminal())
    })
}

fn start_step(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let spec = &def.steps[index];
    let steps = steps_view(inst);
    let scope = Scope {
        input: &inst.input,
        steps: &steps,
        item: None,
        signal: None,
        env: ctx.env,
    };
    match def.eval_when(index, &scope) {
        Ok(true) => {}
        Ok(false) => {
            let step = &mut inst.steps[index];
            step.status = StepStatus::Skipped;
            step.finished_at_ms = Some(ctx.now_ms);
            push_event(
                fx,
                inst,
                event::STEP_SKIPPED,
                Some(&spec.id),
                json!({}),
                ctx,
            );
            return;
        }
        Err(e) => {
            let failure = template_failure(&spec.id, &e);
            fail_step(def, inst, index, failure, ctx, fx);
            return;
        }
    }
    if let Some(limit) = spec.rate_limit {
        match def.rate_key(Some(index), &inst.input, ctx.env) {
            Ok(Some(value)) => {
                let step = &mut inst.steps[index];
                step.status = StepStatus::Delayed;
                step.scheduled_at_ms = Some(ctx.now_ms);
                let data =
                    json!({ "key": value, "limit": limit.limit, "per_ms": millis(limit.per) });
                push_event(fx, inst, event::STEP_DELAYED, Some(&spec.id), data, ctx);
                let rate = rate_of(inst, &spec.id, &format!("step-{}", spec.id), &value, limit);
                fx.push(Effect::Reserve { rate });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let failure = template_failure(&spec.id, &e);
                fail_step(def, inst, index, failure, ctx, fx);
                return;
            }
        }
    }
    proceed(def, inst, index, ctx, fx);
}

/// Goes on with a step whose `when` held (and whose rate limit, if any, gave it its turn):
/// sleeps, waits for its signal, or schedules its job.
fn proceed(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let spec = &def.steps[index];
    let steps = steps_view(inst);
    let scope = Scope {
        input: &inst.input,
        steps: &steps,
        item: None,
        signal: None,
        env: ctx.env,
    };
    if spec.sleep.is_some() {
        let wake = def.wake_at_ms(index, &scope, ctx.now_ms);
        sleep(def, inst, index, wake, ctx, fx);
        return;
    }
    if let Some(wait) = &spec.wait_for_signal {
        let step = &mut inst.steps[index];
        step.status = StepStatus::Waiting;
        step.scheduled_at_ms = Some(ctx.now_ms);
        let data = json!({ "signal": wait.name, "sla_ms": wait.sla.map(|d| d.as_millis() as u64) });
        push_event(fx, inst, event::STEP_WAITING, Some(&spec.id), data, ctx);
        if let Some(pending) = inst.pending_signals.remove(&wait.name) {
            deliver_signal(def, inst, index, pending.payload, ctx, fx);
        } else if let Some(sla) = wait.sla {
            push_timer(fx, inst, &spec.id, TimerKind::Sla, ctx.now_ms + millis(sla));
        }
        return;
    }
    schedule(def, inst, index, None, ctx, fx);
}

/// Puts a sleeping step to sleep until `wake` with a wake timer, or completes it when that
/// time has passed.
fn sleep(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    wake: Result<Option<i64>, switchyard_workflow::definition::RenderError>,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let id = def.steps[index].id.clone();
    let at = match wake {
        Ok(Some(at)) => at,
        Ok(None) => ctx.now_ms,
        Err(e) => {
            let failure = template_failure(&id, &e);
            fail_step(def, inst, index, failure, ctx, fx);
            return;
        }
    };
    let step = &mut inst.steps[index];
    step.status = StepStatus::Sleeping;
    step.scheduled_at_ms = Some(ctx.now_ms);
    step.wake_at_ms = Some(at);
    let data = json!({ "until_ms": at, "sleep_ms": at - ctx.now_ms });
    push_event(fx, inst, event::STEP_SLEEPING, Some(&id), data, ctx);
    if at <= ctx.now_ms {
        let output = json!({ "until_ms": at, "slept_ms": 0 });
        complete_step(inst, index, output, ctx, fx);
    } else {
        push_timer(fx, inst, &id, TimerKind::Wake, at);
    }
}

fn deliver_signal(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    payload: Value,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let spec = &def.steps[index];
    let name = spec.wait_for_signal.as_ref().map(|w| w.name.clone());
    inst.steps[index].signal = Some(payload.clone());
    let data = json!({ "signal": name, "payload": payload });
    push_event(fx, inst, event::STEP_SIGNALLED, Some(&spec.id), data, ctx);
    if spec.runs_job() {
        schedule(def, inst, index, Some(payload), ctx, fx);
    } else {
        complete_step(inst, index, payload, ctx, fx);
    }
}

/// Publishes the step's job, or one job per item for `for_each`.
fn schedule(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    signal: Option<Value>,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let spec = &def.steps[index];
    // A capability runs on the operation the registry picks now; the choice is kept in the
    // step's state, so the result is checked against what actually ran.
    let (operation, routed) = match (&spec.operation, &spec.capability) {
        (Some(operation), _) => (operation.clone(), None),
        (None, Some(capability)) => match ctx.routes.route(capability, &spec.prefer) {
            Some(op) => (op.name.clone(), Some(op)),
            None => {
                let failure = Failure {
                    step: Some(spec.id.clone()),
                    code: "unknown_operation".into(),
                    message: format!("no operation provides capability {capability:?} any more"),
                };
                fail_step(def, inst, index, failure, ctx, fx);
                return;
            }
        },
        (None, None) => return,
    };
    let steps = steps_view(inst);
    let scope = Scope {
        input: &inst.input,
        steps: &steps,
        item: None,
        signal: signal.as_ref(),
        env: ctx.env,
    };
    let rendered: Result<Vec<(Option<usize>, Value)>, _> = match def.eval_for_each(index, &scope) {
        Err(e) => Err(e),
        Ok(None) => def
            .render_step_input(index, &scope)
            .map(|v| vec![(None, v)]),
        Ok(Some(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let scope = Scope {
                    item: Some((item, i)),
                    ..scope
                };
                def.render_step_input(index, &scope).map(|v| (Some(i), v))
            })
            .collect(),
    };
    let inputs = match rendered {
        Ok(inputs) => inputs,
        Err(e) => {
            let failure = template_failure(&spec.id, &e);
            fail_step(def, inst, index, failure, ctx, fx);
            return;
        }
    };
    let inputs = match &routed {
        None => inputs,
        Some(op) => match inputs
            .into_iter()
            .map(|(item, input)| fit_input(op, input).map(|v| (item, v)))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(inputs) => inputs,
            Err(message) => {
                let failure = Failure {
                    step: Some(spec.id.clone()),
                    code: "invalid_input".into(),
                    message,
                };
                fail_step(def, inst, index, failure, ctx, fx);
                return;
            }
        },
    };
    let version = routed
        .as_ref()
        .map(|op| op.version)
        .or_else(|| ctx.routes.version(&operation));
    let deadline_ms = spec.timeout.map(|t| ctx.now_ms + millis(t));
    let for_each = spec.has_for_each;
    let count = inputs.len();
    {
        let step = &mut inst.steps[index];
        step.status = StepStatus::Scheduled;
        step.scheduled_at_ms = Some(ctx.now_ms);
        step.operation = Some(operation.clone());
        step.version = version;
        if for_each {
            step.items = (0..count)
                .map(|_| ItemState {
                    status: StepStatus::Scheduled,
                    attempts: 0,
                    output: None,
                    error: None,
                    finished_at_ms: None,
                })
                .collect();
        }
    }
    let mut data = if for_each {
        json!({ "operation": operation, "items": count })
    } else {
        json!({ "operation": operation, "job_id": job_id(&inst.id, &spec.id, None, inst.run) })
    };
    data["version"] = json!(version);
    if let Some(capability) = &spec.capability {
        data["capability"] = json!(capability);
    }
    push_event(fx, inst, event::STEP_SCHEDULED, Some(&spec.id), data, ctx);
    if for_each && count == 0 {
        complete_step(inst, index, Value::Array(Vec::new()), ctx, fx);
        return;
    }
    for (item, input) in inputs {
        fx.push(Effect::Job {
            job: Job {
                job_id: job_id(&inst.id, &spec.id, item, inst.run),
                tenant: inst.tenant.clone(),
                instance_id: inst.id.clone(),
                step_id: spec.id.clone(),
                operation: operation.clone(),
                input: serde_json::to_vec(&input).unwrap_or_default(),
                retry: spec.retry.as_ref().map(|r| RetryPolicy {
                    max_attempts: r.max_attempts.unwrap_or(0),
                    initial_delay_ms: r.initial_delay.map_or(0, |d| millis(d) as u64),
                    max_delay_ms: r.max_delay.map_or(0, |d| millis(d) as u64),
                    multiplier: r.multiplier.unwrap_or(0.0),
                }),
                deadline_ms: deadline_ms.unwrap_or(0),
                correlation_id: inst.correlation_id.clone(),
                reply_subject: String::new(),
                created_at_ms: ctx.now_ms,
            },
        });
    }
    if let Some(due) = deadline_ms {
        push_timer(fx, inst, &spec.id, TimerKind::StepTimeout, due);
    }
}

fn complete_step(
    inst: &mut Instance,
    index: usize,
    output: Value,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let step = &mut inst.steps[index];
    step.status = StepStatus::Completed;
    step.finished_at_ms = Some(ctx.now_ms);
    step.output = Some(output);
    let data = json!({
        "operation": step.operation,
        "attempts": step.attempts,
        "duration_ms": step.scheduled_at_ms.map(|s| ctx.now_ms - s),
        "output": step.output,
    });
    let id = step.id.clone();
    push_event(fx, inst, event::STEP_COMPLETED, Some(&id), data, ctx);
}

/// Records a step failure; with `on_error: fail` the instance fails with it.
fn fail_step(
    def: &Definition,
    inst: &mut Instance,
    index: usize,
    failure: Failure,
    ctx: Ctx<'_>,
    fx: &mut Vec<Effect>,
) {
    let on_error = def.steps[index].on_error;
    let step = &mut inst.steps[index];
    step.status = StepStatus::Failed;
    step.finished_at_ms = Some(ctx.now_ms);
    step.error = Some(failure.clone());
    let data = json!({
        "operation": step.operation,
        "attempts": step.attempts,
        "code": failure.code,
        "message": failure.message,
        "on_error": match on_error { OnError::Fail => "fail", OnError::Continue => "continue" },
    });
    let id = step.id.clone();
    push_event(fx, inst, event::STEP_FAILED, Some(&id), data, ctx);
    if on_error == OnError::Fail {
        finish_failed(inst, failure, ctx, fx);
    }
}

fn finish_failed(inst: &mut Instance, failure: Failure, ctx: Ctx<'_>, fx: &mut Vec<Effect>) {
    inst.status = InstanceStatus::Failed;
    inst.finished_at_ms = Some(ctx.now_ms);
    stop_unfinished(inst, ctx);
    let data = json!({
        "workflow": inst.workflow,
        "step": failure.step,
        "code": failure.code,
        "message": failure.message,
        "duration_ms": ctx.now_ms - inst.started_at_ms,
    });
    inst.error = Some(failure);
    push_event(fx, inst, event::FAILED, None, data, ctx);
    release(inst, fx);
}

fn finish_completed(def: &Definition, inst: &mut Instance, ctx: Ctx<'_>, fx: &mut Vec<Effect>) {
    let steps = steps_view(inst);
    let scope = Scope {
        input: &inst.input,
        steps: &steps,
        item: None,
        signal: None,
        env: ctx.env,
    };
    match def.render_output(&scope) {
        Ok(output) => {
            inst.status = InstanceStatus::Completed;
            inst.finished_at_ms = Some(ctx.now_ms);
            let data = json!({
                "workflow": inst.workflow,
                "output": output,
                "duration_ms": ctx.now_ms - inst.started_at_ms,
            });
            inst.output = Some(output);
            push_event(fx, inst, event::COMPLETED, None, data, ctx);
            release(inst, fx);
        }
        Err(e) => {
            let failure = Failure {
                step: None,
                code: "template".into(),
                message: format!("rendering the output: {}: {}", e.path, e.message),
            };
            finish_failed(inst, failure, ctx, fx);
        }
    }
}

/// Marks what had not finished as cancelled (the instance ended around it).
fn stop_unfinished(inst: &mut Instance, ctx: Ctx<'_>) {
    for step in inst.steps.iter_mut().filter(|s| !s.status.is_terminal()) {
        step.status = StepStatus::Cancelled;
        step.finished_at_ms = Some(ctx.now_ms);
        for item in step.items.iter_mut().filter(|i| !i.status.is_terminal()) {
            item.status = StepStatus::Cancelled;
            item.finished_at_ms = Some(ctx.now_ms);
        }
    }
}

/// The `steps` object templates see: `{ id: { status, output, error } }`.
fn steps_view(inst: &Instance) -> Value {
    let mut map = Map::new();
    for s in &inst.steps {
        map.insert(
            s.id.clone(),
            json!({
                "status": s.status.as_str(),
                "output": s.output,
                "error": s.error.as_ref().map(|e| e.message.as_str()),
            }),
        );
    }
    Value::Object(map)
}

/// A capability's input (checked against its contract) as the chosen operation takes it:
/// fields it does not declare dropped when it declares a closed object, its own defaults
/// applied, then checked against its schema.
fn fit_input(op: &OperationSpec, mut input: Value) -> Result<Value, String> {
    if let Value::Object(fields) = &mut input
        && !op.input.allows_additional()
    {
        fields.retain(|name, _| op.input.properties.contains_key(name));
    }
    op.input.apply_defaults(&mut input);
    op.input.validate(&input).map_err(|errors| {
        format!(
            "the input does not match the input schema of {} version {}: {}",
            op.name, op.version, errors[0]
        )
    })?;
    Ok(input)
}

/// Checks a step's output: against the definition's contract for a declared operation, and
/// for a capability against the declared schema of the operation that ran it.
fn check_output(
    def: &Definition,
    index: usize,
    ran: Option<&str>,
    output: &Value,
    ctx: Ctx<'_>,
) -> Result<(), String> {
    def.check_step_output(index, output)?;
    if def.steps[index].capability.is_some()
        && let Some(op) = ran.and_then(|name| ctx.routes.declared(name))
    {
        op.output.validate(output).map_err(|errors| {
            format!(
                "the output does not match the output schema of {} version {}: {}",
                op.name, op.version, errors[0]
            )
        })?;
    }
    Ok(())
}

fn template_failure(step: &str, e: &switchyard_workflow::definition::RenderError) -> Failure {
    Failure {
        step: Some(step.to_owned()),
        code: "template".into(),
        message: format!("{}: {}", e.path, e.message),
    }
}

fn push_event(
    fx: &mut Vec<Effect>,
    inst: &Instance,
    event_type: &str,
    step: Option<&str>,
    data: Value,
    ctx: Ctx<'_>,
) {
    let mut data = data;
    if inst.run > 0
        && let Value::Object(fields) = &mut data
    {
        fields.insert("run".into(), json!(inst.run));
    }
    fx.push(Effect::Event {
        event: WorkflowEvent {
            event_id: event_id(&inst.id, event_type, step, inst.run),
            tenant: inst.tenant.clone(),
            instance_id: inst.id.clone(),
            r#type: event_type.to_owned(),
            step_id: step.unwrap_or_default().to_owned(),
            data: serde_json::to_vec(&data).unwrap_or_default(),
            at_ms: ctx.now_ms,
            correlation_id: inst.correlation_id.clone(),
        },
    });
}

fn push_timer(fx: &mut Vec<Effect>, inst: &Instance, step: &str, kind: TimerKind, due_at_ms: i64) {
    fx.push(Effect::Timer {
        timer: Timer {
            tenant: inst.tenant.clone(),
            instance_id: inst.id.clone(),
            step_id: step.to_owned(),
            kind: kind as i32,
            due_at_ms,
            run: inst.run,
        },
    });
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The lowercase short name of an error code, as in the JSON form of a job result.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unspecified => "failed",
        ErrorCode::InvalidInput => "invalid_input",
        ErrorCode::Permanent => "permanent",
        ErrorCode::RetriesExhausted => "retries_exhausted",
        ErrorCode::DeadlineExceeded => "deadline_exceeded",
        ErrorCode::UnknownOperation => "unknown_operation",
        ErrorCode::Decode => "decode",
        ErrorCode::Cancelled => "cancelled",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Conflict => "conflict",
        ErrorCode::Unavailable => "unavailable",
    }
}
