//! The transition function on its own: no bus, no clock.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{Value, json};
use switchyard_catalog::Catalog;
use switchyard_orchestrator::{
    instance::{Effect, Instance, InstanceStatus, StepStatus},
    transition::{self, Builtin, Ctx, Decision, Input},
};
use switchyard_proto::{
    CancelWorkflow, ErrorCode, Job, JobError, JobResult, JobStatus, SignalWorkflow, StartWorkflow,
    Timer, TimerKind,
};
use switchyard_workflow::{Definition, ValidateOptions};

const DIAMOND: &str = r#"
name: diamond
version: 1
input:
  items: { type: array, items: { type: integer }, required: true }
steps:
  - { id: a, operation: test.echo, input: { v: 1 } }
  - { id: b, operation: test.echo, needs: [a], input: { from: "{{ steps.a.output.v }}", side: b } }
  - { id: c, operation: test.echo, needs: [a], input: { from: "{{ steps.a.output.v }}", side: c } }
  - id: d
    operation: test.echo
    needs: [a]
    for_each: "{{ input.items }}"
    input: { n: "{{ item * 10 }}", at: "{{ index }}" }
  - id: e
    operation: test.echo
    needs: [b, c, d]
    input:
      b: "{{ steps.b.output.side }}"
      c: "{{ steps.c.output.side }}"
      d: "{{ steps.d.output | map(attribute='n') | list }}"
output: "{{ steps.e.output }}"
"#;

fn def(yaml: &str) -> Definition {
    Definition::parse(yaml, Catalog::builtin(), &ValidateOptions::default())
        .unwrap_or_else(|p| panic!("test definition invalid: {p}"))
}

fn env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn start_msg(input: Value) -> StartWorkflow {
    StartWorkflow {
        tenant: "acme".into(),
        workflow: "diamond".into(),
        instance_id: "i1".into(),
        input: serde_json::to_vec(&input).unwrap(),
        correlation_id: "corr".into(),
        ..StartWorkflow::default()
    }
}

fn jobs(inst: &Instance) -> Vec<Job> {
    inst.outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Job { job } => Some(job.clone()),
            _ => None,
        })
        .collect()
}

fn event_types(inst: &Instance) -> Vec<String> {
    inst.outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Event { event } => Some(format!("{}:{}", event.r#type, event.step_id)),
            _ => None,
        })
        .collect()
}

/// What an echo worker would answer.
fn echo(job: &Job) -> JobResult {
    JobResult {
        job_id: job.job_id.clone(),
        tenant: job.tenant.clone(),
        instance_id: job.instance_id.clone(),
        step_id: job.step_id.clone(),
        operation: job.operation.clone(),
        status: JobStatus::Succeeded as i32,
        output: job.input.clone(),
        attempts: 1,
        ..JobResult::default()
    }
}

fn failed(job: &Job, code: ErrorCode) -> JobResult {
    JobResult {
        status: JobStatus::Failed as i32,
        output: Vec::new(),
        error: Some(JobError {
            code: code as i32,
            message: "it broke".into(),
            ..JobError::default()
        }),
        ..echo(job)
    }
}

fn apply(d: &Definition, state: &Instance, input: Input) -> Option<Instance> {
    let env = env();
    match transition::apply(
        d,
        state,
        &input,
        Ctx {
            now_ms: 1_000,
            env: &env,
            routes: &Builtin,
        },
    ) {
        Decision::Apply(next) => Some(*next),
        Decision::Ignore(_) => None,
        Decision::Later(d) => panic!("unexpected delay {d:?}"),
    }
}

/// Delivers results in the order `choices` picks, re-delivering some; returns the final state
/// (outbox and bookkeeping cleared) and every job ever published.
fn run(
    d: &Definition,
    items: &[i64],
    choices: &[(usize, bool)],
) -> (Instance, BTreeSet<(String, Vec<u8>)>) {
    let env = env();
    let ctx = Ctx {
        now_ms: 1_000,
        env: &env,
        routes: &Builtin,
    };
    let mut state = transition::start(d, &start_msg(json!({ "items": items })), "i1", ctx);
    let mut published: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
    let mut pending: Vec<(JobResult, bool)> = Vec::new();
    let mut collect = |state: &Instance, pending: &mut Vec<(JobResult, bool)>| {
        for job in jobs(state) {
            if published.insert((job.job_id.clone(), job.input.clone())) {
                pending.push((echo(&job), false));
            }
        }
    };
    collect(&state, &mut pending);
    let mut choices = choices.iter().cycle();
    while !pending.is_empty() {
        let (pick, dup) = choices.next().copied().unwrap_or((0, false));
        let index = pick % pending.len();
        let (result, duplicated) = pending[index].clone();
        if dup && !duplicated {
            pending[index].1 = true; // delivered now and once more later
        } else {
            pending.remove(index);
        }
        if let Some(next) = apply(d, &state, Input::Result(result)) {
            state = next;
            collect(&state, &mut pending);
        }
    }
    state.outbox.clear();
    state.last_message = 0;
    (state, published)
}

#[test]
fn in_order_results_complete_the_diamond() {
    let d = def(DIAMOND);
    let (state, published) = run(&d, &[1, 2, 3], &[]);
    assert_eq!(state.status, InstanceStatus::Completed);
    assert_eq!(
        state.output,
        Some(json!({ "b": "b", "c": "c", "d": [10, 20, 30] }))
    );
    // a, b, c, e and three items of d.
    assert_eq!(published.len(), 7);
    assert!(
        state
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Completed)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any interleaving and any duplication of parallel step results gives the same final state
    /// and the same set of published jobs.
    #[test]
    fn interleavings_and_duplicates_do_not_change_the_outcome(
        items in proptest::collection::vec(-5i64..5, 0..6),
        choices in proptest::collection::vec((0usize..64, any::<bool>()), 1..40),
    ) {
        let d = def(DIAMOND);
        let (reference, reference_jobs) = run(&d, &items, &[]);
        let (state, published) = run(&d, &items, &choices);
        prop_assert_eq!(&state, &reference);
        prop_assert_eq!(published, reference_jobs);
        prop_assert_eq!(state.status, InstanceStatus::Completed);
    }
}

#[test]
fn a_start_schedules_the_roots_with_deterministic_ids() {
    let d = def(DIAMOND);
    let env = env();
    let ctx = Ctx {
        now_ms: 5,
        env: &env,
        routes: &Builtin,
    };
    let state = transition::start(&d, &start_msg(json!({ "items": [] })), "i1", ctx);
    let again = transition::start(&d, &start_msg(json!({ "items": [] })), "i1", ctx);
    assert_eq!(state, again);
    let ids: Vec<String> = jobs(&state).iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, ["i1.a"]);
    assert_eq!(event_types(&state), ["started:", "step_scheduled:a"]);
}

#[test]
fn an_empty_for_each_completes_with_an_empty_list() {
    let d = def(DIAMOND);
    let (state, published) = run(&d, &[], &[]);
    assert_eq!(state.status, InstanceStatus::Completed);
    assert_eq!(state.output.unwrap()["d"], json!([]));
    assert_eq!(published.len(), 4);
}

#[test]
fn a_failed_item_fails_the_step_and_the_instance() {
    let d = def(DIAMOND);
    let env = env();
    let ctx = Ctx {
        now_ms: 1,
        env: &env,
        routes: &Builtin,
    };
    let state = transition::start(&d, &start_msg(json!({ "items": [1, 2] })), "i1", ctx);
    let a = jobs(&state).remove(0);
    let state = apply(&d, &state, Input::Result(echo(&a))).unwrap();
    let item = jobs(&state)
        .into_iter()
        .find(|j| j.job_id == "i1.d.1")
        .unwrap();
    let state = apply(
        &d,
        &state,
        Input::Result(failed(&item, ErrorCode::Permanent)),
    )
    .unwrap();
    assert_eq!(state.status, InstanceStatus::Failed);
    let error = state.error.clone().unwrap();
    assert_eq!(
        (error.step.as_deref(), error.code.as_str()),
        (Some("d"), "permanent")
    );
    assert!(error.message.contains("item 1"), "{}", error.message);
    assert!(event_types(&state).contains(&"failed:".to_owned()));
    // Late results change nothing once the instance has failed.
    let b = jobs(&transition::start(
        &d,
        &start_msg(json!({ "items": [1, 2] })),
        "i1",
        ctx,
    ));
    assert!(apply(&d, &state, Input::Result(echo(&b[0]))).is_none());
}

#[test]
fn cancel_signal_and_timers_follow_the_rules() {
    let d = def(r#"
name: gated
version: 1
steps:
  - { id: gate, wait_for_signal: { name: approval, sla: 1s } }
  - { id: work, operation: test.echo, needs: [gate], timeout: 2s, input: { by: "{{ steps.gate.output.by }}" } }
"#);
    let env = env();
    let ctx = |now_ms| Ctx {
        now_ms,
        env: &env,
        routes: &Builtin,
    };
    let state = transition::start(&d, &start_msg(json!({})), "i1", ctx(0));
    assert_eq!(state.steps[0].status, StepStatus::Waiting);
    let sla = state
        .outbox
        .iter()
        .find_map(|e| match e {
            Effect::Timer { timer } => Some(timer.clone()),
            _ => None,
        })
        .expect("an SLA timer");
    assert_eq!((sla.kind, sla.due_at_ms), (TimerKind::Sla as i32, 1_000));
    // Not due yet: hand it back for the rest of the time.
    assert_eq!(
        transition::apply(&d, &state, &Input::Timer(sla.clone()), ctx(400)),
        Decision::Later(std::time::Duration::from_millis(600))
    );
    let Decision::Apply(breached) =
        transition::apply(&d, &state, &Input::Timer(sla.clone()), ctx(1_000))
    else {
        panic!("the SLA timer applies when due");
    };
    assert!(breached.steps[0].sla_breached);
    assert_eq!(event_types(&breached), ["sla_breached:gate"]);
    // A second firing changes nothing.
    assert!(matches!(
        transition::apply(&d, &breached, &Input::Timer(sla), ctx(1_500)),
        Decision::Ignore(_)
    ));

    let signal = SignalWorkflow {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        name: "approval".into(),
        signal_id: "s1".into(),
        payload: serde_json::to_vec(&json!({ "by": "ann" })).unwrap(),
        ..SignalWorkflow::default()
    };
    let Decision::Apply(signalled) =
        transition::apply(&d, &breached, &Input::Signal(signal.clone()), ctx(1_600))
    else {
        panic!("the signal applies");
    };
    assert_eq!(signalled.steps[0].status, StepStatus::Completed);
    let work = jobs(&signalled).remove(0);
    assert_eq!(
        serde_json::from_slice::<Value>(&work.input).unwrap(),
        json!({ "by": "ann" })
    );
    assert_eq!(work.deadline_ms, 3_600);
    assert!(matches!(
        transition::apply(&d, &signalled, &Input::Signal(signal), ctx(1_700)),
        Decision::Ignore(_)
    ));

    let timeout = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        step_id: "work".into(),
        kind: TimerKind::StepTimeout as i32,
        due_at_ms: 3_600,
    };
    let Decision::Apply(timed_out) =
        transition::apply(&d, &signalled, &Input::Timer(timeout), ctx(3_600))
    else {
        panic!("the timeout applies");
    };
    assert_eq!(timed_out.status, InstanceStatus::Failed);
    assert_eq!(timed_out.error.as_ref().unwrap().code, "deadline_exceeded");

    let cancel = CancelWorkflow {
        reason: "no longer needed".into(),
        ..CancelWorkflow::default()
    };
    let Decision::Apply(cancelled) =
        transition::apply(&d, &signalled, &Input::Cancel(cancel.clone()), ctx(2_000))
    else {
        panic!("the cancel applies");
    };
    assert_eq!(cancelled.status, InstanceStatus::Cancelled);
    assert_eq!(cancelled.steps[1].status, StepStatus::Cancelled);
    assert_eq!(event_types(&cancelled), ["cancelled:"]);
    assert!(matches!(
        transition::apply(&d, &cancelled, &Input::Cancel(cancel), ctx(2_100)),
        Decision::Ignore(_)
    ));
}

#[test]
fn a_signal_that_arrives_early_is_kept_until_its_step_waits() {
    let d = def(r#"
name: early
version: 1
steps:
  - { id: first, operation: test.echo, input: {} }
  - { id: gate, needs: [first], wait_for_signal: { name: go } }
"#);
    let env = env();
    let ctx = Ctx {
        now_ms: 0,
        env: &env,
        routes: &Builtin,
    };
    let state = transition::start(&d, &start_msg(json!({})), "i1", ctx);
    let signal = SignalWorkflow {
        name: "go".into(),
        signal_id: "s".into(),
        payload: b"{\"ok\":true}".to_vec(),
        ..SignalWorkflow::default()
    };
    let state = apply(&d, &state, Input::Signal(signal)).expect("kept");
    assert_eq!(state.steps[1].status, StepStatus::Pending);
    let first = jobs(&transition::start(&d, &start_msg(json!({})), "i1", ctx)).remove(0);
    let done = apply(&d, &state, Input::Result(echo(&first))).unwrap();
    assert_eq!(done.status, InstanceStatus::Completed);
    assert_eq!(done.steps[1].output, Some(json!({ "ok": true })));
}
