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
        run: 0,
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

const CHAIN: &str = r#"
name: chain
version: 1
steps:
  - { id: a, operation: test.echo, input: { v: a } }
  - { id: b, operation: test.echo, needs: [a], input: { v: "{{ steps.a.output.v }}b" } }
  - { id: c, operation: test.echo, needs: [b], input: { v: "{{ steps.b.output.v }}c" }, timeout: 1m }
  - { id: d, operation: test.echo, needs: [c], input: { v: "{{ steps.c.output.v }}d" } }
output: "{{ steps.d.output.v }}"
"#;

fn ctx_at(now_ms: i64, env: &BTreeMap<String, String>) -> Ctx<'_> {
    Ctx {
        now_ms,
        env,
        routes: &Builtin,
    }
}

fn rerun_msg(run: u32, from_step: &str, version: u32) -> switchyard_proto::RerunWorkflow {
    switchyard_proto::RerunWorkflow {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        run,
        from_step: from_step.into(),
        version,
        requested_by: "ann".into(),
        ..Default::default()
    }
}

/// Runs CHAIN with step c failing permanently; returns the failed state and c's job.
fn chain_failing_at_c(d: &Definition) -> (Instance, Job) {
    let env = env();
    let mut state = transition::start(d, &start_msg(json!({})), "i1", ctx_at(1_000, &env));
    loop {
        let job = jobs(&state).remove(0);
        let result = if job.step_id == "c" {
            failed(&job, ErrorCode::Permanent)
        } else {
            echo(&job)
        };
        state = apply(d, &state, Input::Result(result)).expect("applies");
        if state.status.is_finished() {
            return (state, job);
        }
    }
}

#[test]
fn a_rerun_runs_the_failed_step_and_what_follows_with_the_earlier_outputs() {
    let d = def(CHAIN);
    let env = env();
    let (failed_state, old_c) = chain_failing_at_c(&d);
    assert_eq!(failed_state.status, InstanceStatus::Failed);
    assert_eq!(old_c.job_id, "i1.c");

    let rerun = transition::rerun(&d, &failed_state, &rerun_msg(1, "", 0), ctx_at(5_000, &env))
        .expect("a failed instance re-runs");
    assert_eq!(rerun.steps, ["c", "d"]);
    assert_eq!(rerun.kept, ["a", "b"]);
    let state = rerun.instance;
    assert_eq!((state.status, state.run), (InstanceStatus::Running, 1));
    assert_eq!(state.error, None);
    assert_eq!(state.steps[0], failed_state.steps[0], "a is kept as it was");
    assert_eq!(state.steps[1], failed_state.steps[1], "b is kept as it was");
    // Only c runs again, as a new job of run 1 with b's original output as its input.
    let again = jobs(&state);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job_id, "i1.c~r1");
    assert_eq!(again[0].effect_id(), "i1.c");
    assert_eq!(
        serde_json::from_slice::<Value>(&again[0].input).unwrap(),
        json!({ "v": "abc" })
    );
    assert_eq!(
        event_types(&state)[..2],
        ["rerun:".to_owned(), "step_scheduled:c".to_owned()]
    );
    let events: Vec<&switchyard_proto::WorkflowEvent> = state
        .outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Event { event } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(events[0].event_id, "i1.rerun~r1");
    assert_eq!(events[1].event_id, "i1.step_scheduled.c~r1");
    let data: Value = serde_json::from_slice(&events[0].data).unwrap();
    assert_eq!(data["run"], 1);
    assert_eq!(data["requested_by"], "ann");

    // What the first run left behind changes nothing: c's late result, c's old timeout.
    assert!(apply(&d, &state, Input::Result(echo(&old_c))).is_none());
    let old_timer = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        step_id: "c".into(),
        kind: TimerKind::StepTimeout as i32,
        due_at_ms: 0,
        run: 0,
    };
    assert!(apply(&d, &state, Input::Timer(old_timer)).is_none());

    // The re-run completes with the kept outputs.
    let mut state = apply(&d, &state, Input::Result(echo(&again[0]))).expect("c completes");
    let d_job = jobs(&state).remove(0);
    assert_eq!(d_job.job_id, "i1.d~r1");
    state = apply(&d, &state, Input::Result(echo(&d_job))).expect("d completes");
    assert_eq!(state.status, InstanceStatus::Completed);
    assert_eq!(state.output, Some(json!("abcd")));

    // A completed instance re-runs only from a named step, and that step's downstream with it.
    let refused = transition::rerun(&d, &state, &rerun_msg(2, "", 0), ctx_at(6_000, &env));
    assert!(refused.is_err_and(|r| r.field.is_none() && r.message.contains("from_step")));
    let from_b = transition::rerun(&d, &state, &rerun_msg(2, "b", 0), ctx_at(6_000, &env))
        .expect("re-runs from b");
    assert_eq!(
        (from_b.steps.clone(), from_b.kept.clone()),
        (
            vec!["b".to_owned(), "c".into(), "d".into()],
            vec!["a".to_owned()]
        )
    );
    assert_eq!(jobs(&from_b.instance)[0].job_id, "i1.b~r2");
}

#[test]
fn a_rerun_is_refused_when_it_cannot_apply() {
    let d = def(CHAIN);
    let env = env();
    let running = transition::start(&d, &start_msg(json!({})), "i1", ctx_at(1_000, &env));
    let refusal = transition::rerun(&d, &running, &rerun_msg(1, "", 0), ctx_at(2_000, &env))
        .expect_err("a running instance does not re-run");
    assert!(refusal.message.contains("running"), "{refusal:?}");

    let (failed_state, _) = chain_failing_at_c(&d);
    // The same re-run twice: the second names a run the instance is past.
    let first = transition::rerun(&d, &failed_state, &rerun_msg(1, "", 0), ctx_at(2_000, &env))
        .expect("re-runs")
        .instance;
    assert!(transition::rerun(&d, &first, &rerun_msg(1, "", 0), ctx_at(2_000, &env)).is_err());
    let unknown = transition::rerun(
        &d,
        &failed_state,
        &rerun_msg(1, "zz", 0),
        ctx_at(2_000, &env),
    )
    .expect_err("no such step");
    assert_eq!(unknown.field, Some("from_step"));

    // A newer version must keep the completed steps; one that does may add steps.
    let drops_b = def(&CHAIN
        .replace("version: 1", "version: 2")
        .replace("  - { id: b, operation: test.echo, needs: [a], input: { v: \"{{ steps.a.output.v }}b\" } }\n", "")
        .replace("needs: [b], input: { v: \"{{ steps.b.output.v }}c\" }", "needs: [a], input: { v: c }"));
    let refusal = transition::rerun(
        &drops_b,
        &failed_state,
        &rerun_msg(1, "", 2),
        ctx_at(2_000, &env),
    )
    .expect_err("b completed, and version 2 has no b");
    assert!(refusal.message.contains("\"b\""), "{refusal:?}");
    let adds_e = def(&CHAIN.replace("version: 1", "version: 2").replace(
        "output: \"{{ steps.d.output.v }}\"",
        "  - { id: e, operation: test.echo, needs: [a], input: { v: e } }\noutput: \"{{ steps.d.output.v }}\"",
    ));
    let moved = transition::rerun(
        &adds_e,
        &failed_state,
        &rerun_msg(1, "", 2),
        ctx_at(2_000, &env),
    )
    .expect("version 2 keeps a and b");
    assert_eq!(moved.instance.version, 2);
    assert_eq!(moved.steps, ["c", "d", "e"]);
    let ids: Vec<String> = jobs(&moved.instance)
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(ids, ["i1.c~r1", "i1.e~r1"]);

    // A start that was refused has nothing to re-run.
    let mut refused_start = failed_state.clone();
    refused_start.error = Some(switchyard_orchestrator::instance::Failure {
        step: None,
        code: "invalid_input".into(),
        message: "input: not valid JSON".into(),
    });
    let refusal = transition::rerun(
        &d,
        &refused_start,
        &rerun_msg(1, "", 0),
        ctx_at(2_000, &env),
    )
    .expect_err("nothing ran");
    assert!(refusal.message.contains("never started"), "{refusal:?}");
}

fn timers(inst: &Instance) -> Vec<Timer> {
    inst.outbox
        .iter()
        .filter_map(|e| match e {
            Effect::Timer { timer } => Some(timer.clone()),
            _ => None,
        })
        .collect()
}

fn decide(d: &Definition, state: &Instance, input: Input, now_ms: i64) -> Decision {
    let env = env();
    transition::apply(d, state, &input, ctx_at(now_ms, &env))
}

const NAPPER: &str = r#"
name: napper
version: 1
input:
  until: { type: string, default: "1970-01-01T00:00:05Z" }
timeout: 1m
steps:
  - { id: nap, sleep: 3s }
  - { id: work, operation: test.echo, needs: [nap], input: { slept: "{{ steps.nap.output.slept_ms }}" } }
  - { id: wake, needs: [work], sleep_until: "{{ input.until }}" }
"#;

#[test]
fn a_sleeping_step_holds_no_job_and_wakes_on_its_timer() {
    let d = def(NAPPER);
    let env = env();
    let state = transition::start(&d, &start_msg(json!({})), "i1", ctx_at(1_000, &env));
    assert_eq!(state.status, InstanceStatus::Running);
    assert_eq!(state.steps[0].status, StepStatus::Sleeping);
    assert_eq!(state.steps[0].wake_at_ms, Some(4_000));
    assert!(jobs(&state).is_empty(), "a sleep publishes no job");
    assert_eq!(event_types(&state), ["started:", "step_sleeping:nap"]);
    let wake = timers(&state)
        .into_iter()
        .find(|t| t.kind == TimerKind::Wake as i32)
        .expect("a wake timer");
    assert_eq!((wake.step_id.as_str(), wake.due_at_ms), ("nap", 4_000));

    // Early: handed back for the time left; a second copy after waking changes nothing.
    assert_eq!(
        decide(&d, &state, Input::Timer(wake.clone()), 2_500),
        Decision::Later(std::time::Duration::from_millis(1_500))
    );
    let Decision::Apply(awake) = decide(&d, &state, Input::Timer(wake.clone()), 4_010) else {
        panic!("the wake timer applies when due");
    };
    assert_eq!(awake.steps[0].status, StepStatus::Completed);
    assert_eq!(
        awake.steps[0].output,
        Some(json!({"until_ms": 4_000, "slept_ms": 3_010}))
    );
    let job = jobs(&awake).pop().expect("the next step runs");
    assert_eq!(
        serde_json::from_slice::<Value>(&job.input).unwrap(),
        json!({"slept": 3_010})
    );
    assert!(matches!(
        decide(&d, &awake, Input::Timer(wake), 4_020),
        Decision::Ignore(_)
    ));

    // sleep_until in the past: the step completes at once.
    let Decision::Apply(done) = decide(&d, &awake, Input::Result(echo(&job)), 6_000) else {
        panic!("the result applies");
    };
    assert_eq!(done.steps[2].status, StepStatus::Completed);
    assert_eq!(done.status, InstanceStatus::Completed);
    assert_eq!(
        done.steps[2].output,
        Some(json!({"until_ms": 6_000, "slept_ms": 0}))
    );
}

#[test]
fn a_bad_sleep_until_fails_the_step_and_a_cancel_ends_a_sleep() {
    let d = def(r#"
name: napper
version: 1
input:
  until: { type: string, required: true }
steps:
  - { id: wake, sleep_until: "{{ input.until }}" }
"#);
    let env = env();
    let state = transition::start(
        &d,
        &start_msg(json!({"until": "soon"})),
        "i1",
        ctx_at(1_000, &env),
    );
    assert_eq!(state.status, InstanceStatus::Failed);
    let error = state.steps[0].error.clone().expect("the step's error");
    assert_eq!(error.code, "template");
    assert!(
        error.message.contains("\"soon\" is not an RFC 3339 time"),
        "{error:?}"
    );

    let state = transition::start(
        &d,
        &start_msg(json!({"until": "1970-06-01T00:00:00Z"})),
        "i1",
        ctx_at(1_000, &env),
    );
    assert_eq!(state.steps[0].status, StepStatus::Sleeping);
    let cancel = CancelWorkflow {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        ..CancelWorkflow::default()
    };
    let cancelled = apply(&d, &state, Input::Cancel(cancel)).expect("cancel applies");
    assert_eq!(cancelled.status, InstanceStatus::Cancelled);
    assert_eq!(cancelled.steps[0].status, StepStatus::Cancelled);
}

#[test]
fn a_start_with_not_before_is_scheduled_then_runs_when_due() {
    let d = def(NAPPER);
    let env = env();
    let msg = StartWorkflow {
        not_before_ms: 60_000,
        ..start_msg(json!({}))
    };
    let state = transition::start(&d, &msg, "i1", ctx_at(1_000, &env));
    assert_eq!(state.status, InstanceStatus::Scheduled);
    assert!(!state.status.is_finished());
    assert_eq!(state.not_before_ms, Some(60_000));
    assert_eq!(event_types(&state), ["scheduled:"]);
    assert!(state.steps.iter().all(|s| s.status == StepStatus::Pending));
    let start = timers(&state).pop().expect("a start timer");
    assert_eq!(
        (start.kind, start.due_at_ms),
        (TimerKind::Start as i32, 60_000)
    );

    // A signal or a stray result before the start changes no step.
    assert_eq!(
        decide(&d, &state, Input::Timer(start.clone()), 59_000),
        Decision::Later(std::time::Duration::from_secs(1))
    );
    let Decision::Apply(running) = decide(&d, &state, Input::Timer(start.clone()), 60_005) else {
        panic!("the start timer applies when due");
    };
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(running.started_at_ms, 60_005);
    assert_eq!(event_types(&running), ["started:", "step_sleeping:nap"]);
    let kinds: Vec<i32> = timers(&running).iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TimerKind::WorkflowTimeout as i32, TimerKind::Wake as i32],
        "the workflow's timeout counts from the real start"
    );
    assert!(matches!(
        decide(&d, &running, Input::Timer(start), 60_010),
        Decision::Ignore(_)
    ));

    // A time already past starts at once.
    let msg = StartWorkflow {
        not_before_ms: 500,
        ..start_msg(json!({}))
    };
    let state = transition::start(&d, &msg, "i1", ctx_at(1_000, &env));
    assert_eq!(state.status, InstanceStatus::Running);
    assert_eq!(state.not_before_ms, None);

    // Cancelled while it waits: the start timer then changes nothing.
    let msg = StartWorkflow {
        not_before_ms: 60_000,
        ..start_msg(json!({}))
    };
    let state = transition::start(&d, &msg, "i1", ctx_at(1_000, &env));
    let start = timers(&state).pop().expect("a start timer");
    let cancel = CancelWorkflow {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        ..CancelWorkflow::default()
    };
    let cancelled = apply(&d, &state, Input::Cancel(cancel)).expect("cancel applies");
    assert_eq!(cancelled.status, InstanceStatus::Cancelled);
    assert!(matches!(
        decide(&d, &cancelled, Input::Timer(start), 60_010),
        Decision::Ignore(_)
    ));
}

#[test]
fn a_concurrency_keyed_start_queues_runs_when_granted_and_gives_the_slot_back() {
    let d = def(r#"
name: keyed
version: 1
input:
  customer: { type: string, required: true }
concurrency: { key: "{{ input.customer }}", limit: 2 }
steps:
  - { id: e, operation: test.echo, input: { c: "{{ input.customer }}" } }
"#);
    let env = env();
    let state = transition::start(
        &d,
        &StartWorkflow {
            workflow: "keyed".into(),
            ..start_msg(json!({"customer": "c-1"}))
        },
        "i1",
        ctx_at(1_000, &env),
    );
    assert_eq!(state.status, InstanceStatus::Queued);
    assert!(!state.status.is_finished());
    assert_eq!(event_types(&state), ["queued:"]);
    assert!(jobs(&state).is_empty());
    let slot = state
        .outbox
        .iter()
        .find_map(|e| match e {
            Effect::Acquire { slot } => Some(slot.clone()),
            _ => None,
        })
        .expect("an acquire");
    assert_eq!((slot.value.as_str(), slot.limit), ("c-1", 2));
    assert!(slot.key.starts_with("acme.keyed."), "{}", slot.key);
    // The same value always names the same key; another value another.
    let other = transition::start(
        &d,
        &start_msg(json!({"customer": "c-2"})),
        "i2",
        ctx_at(1_000, &env),
    );
    assert_ne!(other.slot.as_ref().map(|s| &s.key), Some(&slot.key));

    let grant = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        kind: TimerKind::Grant as i32,
        ..Timer::default()
    };
    let Decision::Apply(running) = decide(&d, &state, Input::Timer(grant.clone()), 2_000) else {
        panic!("the grant applies");
    };
    assert_eq!(running.status, InstanceStatus::Running);
    assert_eq!(running.started_at_ms, 2_000);
    assert_eq!(event_types(&running), ["started:", "step_scheduled:e"]);
    assert!(matches!(
        decide(&d, &running, Input::Timer(grant), 2_010),
        Decision::Ignore(_)
    ));
    let job = jobs(&running).pop().expect("the job");
    let Decision::Apply(done) = decide(&d, &running, Input::Result(echo(&job)), 3_000) else {
        panic!("the result applies");
    };
    assert_eq!(done.status, InstanceStatus::Completed);
    assert!(
        done.outbox
            .iter()
            .any(|e| matches!(e, Effect::Release { slot: s } if s.key == slot.key)),
        "the slot is given back"
    );

    // Cancelled while queued: it leaves the line.
    let cancel = CancelWorkflow {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        ..CancelWorkflow::default()
    };
    let cancelled = apply(&d, &state, Input::Cancel(cancel)).expect("cancel applies");
    assert!(
        cancelled
            .outbox
            .iter()
            .any(|e| matches!(e, Effect::Release { .. }))
    );
}

#[test]
fn rate_limits_hold_a_start_or_a_step_until_its_turn() {
    let d = def(r#"
name: paced
version: 1
input:
  user: { type: string, required: true }
rate_limit: { key: "{{ input.user }}", limit: 5, per: 1m }
concurrency: { key: "{{ input.user }}", limit: 1 }
steps:
  - id: call
    operation: test.echo
    rate_limit: { key: "all", limit: 10, per: 1s }
    input: { u: "{{ input.user }}" }
"#);
    let env = env();
    let state = transition::start(
        &d,
        &start_msg(json!({"user": "u-1"})),
        "i1",
        ctx_at(1_000, &env),
    );
    assert_eq!(state.status, InstanceStatus::Queued);
    let rate = state
        .outbox
        .iter()
        .find_map(|e| match e {
            Effect::Reserve { rate } => Some(rate.clone()),
            _ => None,
        })
        .expect("a turn is asked for");
    assert_eq!(
        (rate.interval_us, rate.burst, rate.step.as_str()),
        (12_000_000, 5, "")
    );
    assert!(rate.key.starts_with("acme.paced.start."), "{}", rate.key);

    // Its turn: it then queues for its concurrency slot.
    let proceed = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        kind: TimerKind::Proceed as i32,
        ..Timer::default()
    };
    let Decision::Apply(slotted) = decide(&d, &state, Input::Timer(proceed.clone()), 2_000) else {
        panic!("the turn applies");
    };
    assert_eq!(slotted.status, InstanceStatus::Queued);
    assert!(slotted.rate_passed);
    assert!(
        slotted
            .outbox
            .iter()
            .any(|e| matches!(e, Effect::Acquire { .. }))
    );
    assert!(matches!(
        decide(&d, &slotted, Input::Timer(proceed), 2_010),
        Decision::Ignore(_)
    ));
    let grant = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        kind: TimerKind::Grant as i32,
        ..Timer::default()
    };
    let Decision::Apply(running) = decide(&d, &slotted, Input::Timer(grant), 3_000) else {
        panic!("the grant applies");
    };
    // The step waits for its own turn, then its job goes out.
    assert_eq!(running.steps[0].status, StepStatus::Delayed);
    assert!(jobs(&running).is_empty());
    let step_turn = Timer {
        tenant: "acme".into(),
        instance_id: "i1".into(),
        step_id: "call".into(),
        kind: TimerKind::Proceed as i32,
        ..Timer::default()
    };
    let Decision::Apply(called) = decide(&d, &running, Input::Timer(step_turn), 4_000) else {
        panic!("the step's turn applies");
    };
    assert_eq!(called.steps[0].status, StepStatus::Scheduled);
    assert_eq!(jobs(&called).len(), 1);
}
