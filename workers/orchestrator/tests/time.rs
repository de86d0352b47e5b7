//! Time in workflows, on a real server: sleeping steps that survive the orchestrator's death,
//! delayed starts, and schedules run by the bus's message scheduler.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchyard_proto::{StartWorkflow, encode_proto, event, subject};

const T: Duration = Duration::from_secs(30);

const NAPPER: &str = r#"
name: napper
version: 1
steps:
  - { id: before, operation: test.echo, input: { at: "start" } }
  - { id: nap, needs: [before], sleep: 3s }
  - { id: after, needs: [nap], operation: test.echo, input: { slept: "{{ steps.nap.output.slept_ms }}" } }
output: "{{ steps.after.output.slept }}"
"#;

/// A 3 s sleep whose orchestrator is killed and replaced while it sleeps still wakes at about
/// 3 s: the wake timer is a stored message, not a task of the process that set it.
#[tokio::test]
async fn a_sleep_survives_the_orchestrator_being_killed_and_wakes_on_time() {
    let mut env = bus(Duration::from_secs(2)).await;
    env.worker("w1").await;
    let mut first = orchestrator_process(&env.server, "o-first");
    answer(&env).await;
    env.register(NAPPER).await;
    let (instance, mut events) = env.start("napper", json!({})).await;
    let (sleeping, _) = until_event(&mut events, event::STEP_SLEEPING, T).await;
    let until = event_data(&sleeping)["until_ms"]
        .as_i64()
        .expect("until_ms");
    assert_eq!(until - sleeping.at_ms, 3_000, "{:?}", event_data(&sleeping));
    let status = env.status(&instance).await;
    assert_eq!(step(&status, "nap")["status"], "sleeping", "{status:#}");
    assert_eq!(step(&status, "nap")["wake_at_ms"], until, "{status:#}");

    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = orchestrator_process(&env.server, "o-second");

    let woke = loop {
        let (completed, _) = until_event(&mut events, event::STEP_COMPLETED, T).await;
        if completed.step_id == "nap" {
            break completed;
        }
    };
    let late = woke.at_ms - until;
    assert!(
        (0..1_500).contains(&late),
        "woke {late} ms after its time (slept {} ms)",
        woke.at_ms - sleeping.at_ms
    );
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let slept = status["output"].as_i64().expect("slept_ms");
    assert!((3_000..4_500).contains(&slept), "slept {slept} ms");
    second.kill().ok();
    second.wait().ok();
}

/// A start with `not_before` is `scheduled` until its time, then runs; a cancel before then
/// ends it without running a step.
#[tokio::test]
async fn a_start_with_not_before_runs_at_its_time() {
    let env = env().await;
    env.register(
        r#"
name: later
version: 1
steps:
  - { id: e, operation: test.echo, input: { said: "now" } }
output: "{{ steps.e.output.said }}"
"#,
    )
    .await;
    let start = |instance: &str, not_before_ms: i64| StartWorkflow {
        tenant: TENANT.into(),
        workflow: "later".into(),
        instance_id: instance.into(),
        not_before_ms,
        requested_at_ms: switchyard_proto::now_ms(),
        ..StartWorkflow::default()
    };
    let mut events = env
        .client
        .subscribe(subject::events_of(TENANT, "delayed"))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let due = switchyard_proto::now_ms() + 2_000;
    env.publish(
        &subject::start(TENANT, "later"),
        "delayed",
        encode_proto(&start("delayed", due)),
    )
    .await;
    let (scheduled, _) = until_event(&mut events, event::SCHEDULED, T).await;
    assert_eq!(event_data(&scheduled)["not_before_ms"], due);
    let status = env.status("delayed").await;
    assert_eq!(status["status"], "scheduled", "{status:#}");
    assert_eq!(status["not_before_ms"], due, "{status:#}");
    assert_eq!(step(&status, "e")["status"], "pending", "{status:#}");

    let (started, _) = until_event(&mut events, event::STARTED, T).await;
    assert!(
        (due..due + 1_500).contains(&started.at_ms),
        "started at {} for {due}",
        started.at_ms
    );
    let status = env.finished("delayed", T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert!(status["started_at_ms"].as_i64() >= Some(due), "{status:#}");

    env.publish(
        &subject::start(TENANT, "later"),
        "called-off",
        encode_proto(&start("called-off", switchyard_proto::now_ms() + 60_000)),
    )
    .await;
    for _ in 0..100 {
        if env.status("called-off").await["status"] == "scheduled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.cancel("called-off", "not needed").await;
    let status = env.finished("called-off", T).await;
    assert_eq!(status["status"], "cancelled", "{status:#}");
    assert_eq!(step(&status, "e")["status"], "cancelled", "{status:#}");
}

/// Waits until an orchestrator answers queries.
async fn answer(env: &Env) {
    for _ in 0..200 {
        let listed = env
            .client
            .request(
                switchyard_orchestrator::service::request_subject(
                    switchyard_proto::orchestrator::endpoint::DEFINITIONS_LIST,
                ),
                serde_json::to_vec(&json!({ "tenant": TENANT }))
                    .unwrap()
                    .into(),
            )
            .await;
        if listed.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no orchestrator answered");
}
