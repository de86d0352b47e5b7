//! The engine against a real nats-server, with `test` workers doing the work.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_orchestrator::service::endpoint;
use switchyard_proto::{JobResult, JobStatus, decode, event, subject};

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn three_sequential_steps_pass_templated_outputs_along() {
    let env = env().await;
    env.register(
        r#"
name: greet
version: 1
input:
  name: { type: string, required: true }
  level: { type: string }
steps:
  - id: a
    operation: test.echo
    input:
      greeting: "hello {{ input.name }}"
      level: "{{ input.level | default('intermediate') }}"
  - id: b
    operation: test.echo
    needs: [a]
    input:
      shout: "{{ steps.a.output.greeting | upper }}"
      parts: "{{ [steps.a.output.level, env.PUBLIC_NAME] }}"
  - id: c
    operation: test.sleep
    needs: [b]
    input:
      ms: 10
output:
  shout: "{{ steps.b.output.shout }}"
  parts: "{{ steps.b.output.parts }}"
  slept: "{{ steps.c.output.slept_ms }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("greet", json!({ "name": "ada" })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(
        status["output"],
        json!({ "shout": "HELLO ADA", "parts": ["intermediate", "Switchyard"], "slept": 10 })
    );
    for id in ["a", "b", "c"] {
        assert_eq!(step(&status, id)["status"], "completed");
        assert_eq!(step(&status, id)["attempts"], 1);
    }
    let (done, before) = until_event(&mut events, event::COMPLETED, T).await;
    assert_eq!(done.correlation_id, format!("corr-{instance}"));
    let types: Vec<String> = before
        .iter()
        .filter(|e| e.r#type.starts_with("step_scheduled") || e.r#type == "step_completed")
        .map(|e| format!("{}:{}", e.r#type, e.step_id))
        .collect();
    assert_eq!(
        types,
        [
            "step_scheduled:a",
            "step_completed:a",
            "step_scheduled:b",
            "step_completed:b",
            "step_scheduled:c",
            "step_completed:c"
        ]
    );
    assert!(before.iter().any(|e| e.r#type == event::STARTED));
    assert!(
        before
            .iter()
            .all(|e| e.correlation_id == format!("corr-{instance}"))
    );
}

#[tokio::test]
async fn parallel_branches_run_together_and_join() {
    let env = env().await;
    env.register(
        r#"
name: fan
version: 1
steps:
  - { id: a, operation: test.echo, input: { x: 1 } }
  - { id: b, operation: test.sleep, needs: [a], input: { ms: 300 } }
  - { id: c, operation: test.sleep, needs: [a], input: { ms: 300 } }
  - id: d
    operation: test.echo
    needs: [b, c]
    input: { total: "{{ steps.b.output.slept_ms + steps.c.output.slept_ms }}" }
output: "{{ steps.d.output.total }}"
"#,
    )
    .await;
    let (instance, _) = env.start("fan", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 600);
    let (b, c, d) = (step(&status, "b"), step(&status, "c"), step(&status, "d"));
    let at = |s: &Value, k: &str| s[k].as_i64().unwrap();
    // Both branches were scheduled before either finished: they ran side by side.
    assert!(at(b, "scheduled_at_ms") < at(c, "finished_at_ms"));
    assert!(at(c, "scheduled_at_ms") < at(b, "finished_at_ms"));
    // The join waited for both.
    assert!(at(d, "scheduled_at_ms") >= at(b, "finished_at_ms").max(at(c, "finished_at_ms")));
}

#[tokio::test]
async fn a_false_when_skips_the_step_and_its_dependents_still_run() {
    let env = env().await;
    env.register(
        r#"
name: maybe
version: 1
input:
  notify: { type: boolean, default: false }
steps:
  - { id: a, operation: test.echo, input: { v: 1 } }
  - { id: notify, operation: test.echo, needs: [a], when: "{{ input.notify }}", input: { sent: true } }
  - id: after
    operation: test.echo
    needs: [notify]
    input: { notified: "{{ steps.notify.status }}" }
output: "{{ steps.after.output.notified }}"
"#,
    )
    .await;
    let (instance, _) = env.start("maybe", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(step(&status, "notify")["status"], "skipped");
    assert_eq!(status["output"], "skipped");

    let (instance, _) = env.start("maybe", json!({ "notify": true })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(step(&status, "notify")["status"], "completed");
    assert_eq!(status["output"], "completed");
}

#[tokio::test]
async fn for_each_over_fifty_items_joins_in_order() {
    let env = env().await;
    env.register(
        r#"
name: each
version: 1
input:
  words: { type: array, items: { type: string }, required: true }
steps:
  - id: per_word
    operation: test.echo
    for_each: "{{ input.words }}"
    input: { word: "{{ item | upper }}", index: "{{ index }}" }
  - id: total
    operation: test.echo
    needs: [per_word]
    input: { count: "{{ steps.per_word.output | length }}" }
output:
  words: "{{ steps.per_word.output | map(attribute='word') | list }}"
  indexes: "{{ steps.per_word.output | map(attribute='index') | list }}"
  count: "{{ steps.total.output.count }}"
"#,
    )
    .await;
    let words: Vec<String> = (0..50).map(|i| format!("w{i:02}")).collect();
    let (instance, _) = env.start("each", json!({ "words": words })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let expected: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    assert_eq!(status["output"]["words"], json!(expected));
    assert_eq!(
        status["output"]["indexes"],
        json!((0..50).collect::<Vec<_>>())
    );
    assert_eq!(status["output"]["count"], 50);
    assert_eq!(step(&status, "per_word")["items"]["finished"], 50);
}

#[tokio::test]
async fn a_retryable_failure_is_retried_then_succeeds() {
    let env = env().await;
    env.register(
        r#"
name: flaky
version: 1
steps:
  - id: f
    operation: test.fail
    input: { mode: retryable, times: 2 }
    retry: { max_attempts: 4, initial_delay: 100ms, max_delay: 1s, multiplier: 2 }
output: "{{ steps.f.output.attempts }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("flaky", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 3);
    assert_eq!(step(&status, "f")["attempts"], 3);
    let (_, before) = until_event(&mut events, event::COMPLETED, T).await;
    let retrying = before
        .iter()
        .filter(|e| e.r#type == event::STEP_RETRYING)
        .count();
    let started = before
        .iter()
        .filter(|e| e.r#type == event::STEP_STARTED)
        .count();
    assert_eq!((retrying, started), (2, 3));
}

#[tokio::test]
async fn a_permanent_failure_fails_the_instance_naming_the_step_and_reason() {
    let env = env().await;
    env.register(
        r#"
name: doomed
version: 1
steps:
  - { id: ok, operation: test.echo, input: {} }
  - { id: boom, operation: test.fail, needs: [ok], input: { mode: permanent } }
  - { id: never, operation: test.echo, needs: [boom], input: {} }
"#,
    )
    .await;
    let (instance, mut events) = env.start("doomed", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    assert_eq!(status["error"]["step"], "boom");
    assert_eq!(status["error"]["code"], "permanent");
    assert!(
        status["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failing on purpose")
    );
    assert_eq!(step(&status, "never")["status"], "cancelled");
    let (failed, _) = until_event(&mut events, event::FAILED, T).await;
    assert_eq!(event_data(&failed)["step"], "boom");
}

#[tokio::test]
async fn on_error_continue_proceeds_past_a_failed_step() {
    let env = env().await;
    env.register(
        r#"
name: tolerant
version: 1
steps:
  - { id: boom, operation: test.fail, input: { mode: permanent }, on_error: continue }
  - id: next
    operation: test.echo
    needs: [boom]
    input: { previous: "{{ steps.boom.status }}", why: "{{ steps.boom.error }}" }
output: "{{ steps.next.output }}"
"#,
    )
    .await;
    let (instance, _) = env.start("tolerant", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(step(&status, "boom")["status"], "failed");
    assert_eq!(status["output"]["previous"], "failed");
    assert!(
        status["output"]["why"]
            .as_str()
            .unwrap()
            .contains("failing on purpose")
    );
}

#[tokio::test]
async fn cancelling_stops_remaining_steps_and_aborts_the_running_job() {
    let env = env().await;
    env.register(
        r#"
name: long
version: 1
steps:
  - { id: slow, operation: test.sleep, input: { ms: 10000 } }
  - { id: after, operation: test.echo, needs: [slow], input: {} }
"#,
    )
    .await;
    let (instance, mut events) = env.start("long", json!({})).await;
    let mut results = env
        .client
        .subscribe(subject::result(&instance))
        .await
        .unwrap();
    until_event(&mut events, event::STEP_STARTED, T).await;
    // A cancel on another tenant's subject does not reach this tenant's instance.
    let foreign = switchyard_proto::CancelWorkflow::default();
    env.publish(
        &subject::cancel("globex", &instance),
        "foreign-cancel",
        switchyard_proto::encode_proto(&foreign),
    )
    .await;
    let cancels = |env: &Env, outcome: &str| {
        env.registries()
            .iter()
            .flat_map(prometheus::Registry::gather)
            .filter(|f| f.name() == "switchyard_orchestrator_messages_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                let labels: Vec<&str> = m.get_label().iter().map(|l| l.value()).collect();
                labels.contains(&"cancel") && (outcome.is_empty() || labels.contains(&outcome))
            })
            .map(|m| m.get_counter().get_value())
            .sum::<f64>()
    };
    let deadline = tokio::time::Instant::now() + T;
    while cancels(&env, "") < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the foreign cancel was never handled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cancels(&env, "ignored"), 1.0);
    assert_eq!(env.status(&instance).await["status"], "running");
    env.cancel(&instance, "changed my mind").await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "cancelled", "{status:#}");
    assert_eq!(status["error"]["message"], "changed my mind");
    assert_eq!(step(&status, "slow")["status"], "cancelled");
    assert_eq!(step(&status, "after")["status"], "cancelled");
    // The worker stopped the 10 s sleep and reported it cancelled well before it would end.
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut results),
    )
    .await
    .expect("the aborted job reports")
    .unwrap();
    let r: JobResult = decode(switchyard_proto::ContentType::Protobuf, &msg.payload).unwrap();
    assert_eq!(r.status, JobStatus::Cancelled as i32);
}

#[tokio::test]
async fn a_signal_resumes_a_waiting_step_and_an_sla_breach_is_reported() {
    let mut env = env().await;
    env.register(
        r#"
name: approval
version: 1
steps:
  - { id: draft, operation: test.echo, input: { text: draft } }
  - id: approve
    needs: [draft]
    wait_for_signal: { name: approval, sla: 300ms }
  - id: publish
    operation: test.echo
    needs: [approve]
    input: { by: "{{ steps.approve.output.by }}", text: "{{ steps.draft.output.text }}" }
output: "{{ steps.publish.output }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("approval", json!({})).await;
    until_event(&mut events, event::STEP_WAITING, T).await;
    let (breach, _) = until_event(&mut events, event::SLA_BREACHED, T).await;
    assert_eq!(breach.step_id, "approve");
    assert!(event_data(&breach)["waited_ms"].as_i64().unwrap() >= 300);
    let status = env.status(&instance).await;
    assert_eq!(status["status"], "running");
    assert_eq!(step(&status, "approve")["status"], "waiting");
    assert_eq!(step(&status, "approve")["signal"]["sla_breached"], true);

    env.signal(&instance, "approval", json!({ "by": "ann" }))
        .await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], json!({ "by": "ann", "text": "draft" }));
    assert!(env.counter("switchyard_sla_breaches_total") >= 1.0);
    env.components.detach();
}

#[tokio::test]
async fn a_failed_instance_reruns_from_its_failed_step_keeping_earlier_outputs() {
    let env = env().await;
    env.register(
        r#"
name: four
version: 1
steps:
  - { id: fetch, operation: test.echo, input: { text: fetched } }
  - { id: think, operation: test.sleep, needs: [fetch], input: { ms: 5 } }
  - { id: flaky, operation: test.fail, needs: [think], input: { mode: permanent, runs: 1 } }
  - { id: report, operation: test.echo, needs: [flaky], input: { text: "{{ steps.fetch.output.text }}", slept: "{{ steps.think.output.slept_ms }}", attempts: "{{ steps.flaky.output.attempts }}" } }
output: "{{ steps.report.output }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("four", json!({})).await;
    let failed = env.finished(&instance, T).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["step"], "flaky", "{failed:#}");
    assert_eq!(step(&failed, "report")["status"], "cancelled");
    let ran = |op: &str| {
        switchyard_test_harness::metrics::counter(
            env.registries(),
            "switchyard_jobs_total",
            &[("operation", op)],
        )
    };
    assert_eq!(
        (ran("test.echo"), ran("test.sleep"), ran("test.fail")),
        (1.0, 1.0, 1.0)
    );

    // Another tenant's instance is not there; a running one is refused.
    let foreign = switchyard_test_harness::engine::try_query(
        &env.client,
        endpoint::INSTANCE_RERUN,
        &json!({ "tenant": "globex", "instance_id": instance, "requested_by": "eve" }),
    )
    .await
    .expect_err("another tenant's instance");
    assert_eq!(foreign["error"]["code"], "not_found", "{foreign}");

    // Nothing new is registered: the cause went away (the step fails in run 0 only).
    let reply = env
        .query(
            endpoint::INSTANCE_RERUN,
            json!({ "tenant": TENANT, "instance_id": instance, "requested_by": "ann", "reason": "provider back" }),
        )
        .await;
    assert_eq!(reply["run"], 1, "{reply}");
    assert_eq!(reply["steps"], json!(["flaky", "report"]), "{reply}");
    assert_eq!(reply["kept"], json!(["fetch", "think"]), "{reply}");
    let (rerun, _) = until_event(&mut events, event::RERUN, T).await;
    assert_eq!(event_data(&rerun)["requested_by"], "ann");
    // Its state is stored before its events are published.
    until_event(&mut events, event::COMPLETED, T).await;
    let done = env.status(&instance).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["run"], 1);
    // The report uses the first run's outputs of fetch and think, and the re-run's flaky.
    assert_eq!(
        done["output"],
        json!({ "text": "fetched", "slept": 5, "attempts": 1 })
    );
    assert_eq!(
        step(&done, "flaky")["attempts"],
        1,
        "attempts counted afresh"
    );
    // fetch and think ran once each; flaky twice; report once.
    assert_eq!(
        (ran("test.echo"), ran("test.sleep"), ran("test.fail")),
        (2.0, 1.0, 2.0)
    );

    // A second re-run of a completed instance needs a step to start from.
    let again = switchyard_test_harness::engine::try_query(
        &env.client,
        endpoint::INSTANCE_RERUN,
        &json!({ "tenant": TENANT, "instance_id": instance, "requested_by": "ann" }),
    )
    .await
    .expect_err("a completed instance");
    assert_eq!(again["error"]["code"], "conflict", "{again}");
}

#[tokio::test]
async fn a_step_timeout_fails_the_step() {
    let env = env().await;
    env.register(
        r#"
name: slowpoke
version: 1
steps:
  - { id: slow, operation: test.sleep, input: { ms: 120000 }, timeout: 300ms }
"#,
    )
    .await;
    let (instance, _) = env.start("slowpoke", json!({})).await;
    // Without the timeout the step would take two minutes; with it, it fails long before.
    let status = env.finished(&instance, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    assert_eq!(status["error"]["code"], "deadline_exceeded");
}

#[tokio::test]
async fn a_workflow_timeout_fails_the_instance_and_cancels_its_running_job() {
    let env = env().await;
    env.register(
        r#"
name: bounded
version: 1
timeout: 2s
steps:
  - { id: quick, operation: test.echo, input: { n: 1 } }
  - { id: slow, operation: test.sleep, needs: [quick], input: { ms: 10000 } }
"#,
    )
    .await;
    let (instance, mut events) = env.start("bounded", json!({})).await;
    let mut results = env
        .client
        .subscribe(subject::result(&instance))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    until_event(&mut events, event::STEP_STARTED, T).await;
    let started = std::time::Instant::now();
    let status = env.finished(&instance, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(status["status"], "failed", "{status:#}");
    assert_eq!(status["error"]["code"], "timeout", "{status:#}");
    assert_eq!(status["error"]["step"], Value::Null, "{status:#}");
    assert!(
        status["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeout, 2s")),
        "{status:#}"
    );
    // Well before the step's own 10 s, within the timers' tolerance.
    assert!(took < Duration::from_secs(8), "{took:?}");
    let steps = status["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["status"], "completed", "{status:#}");
    assert_eq!(steps[1]["status"], "cancelled", "{status:#}");
    // The sleeping job was told and reports itself cancelled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let msg = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut results))
            .await
            .expect("the sleeping job's result")
            .expect("subscribed");
        let result: JobResult =
            decode(switchyard_proto::ContentType::Protobuf, &msg.payload).expect("a job result");
        if result.step_id == "slow" {
            assert_eq!(JobStatus::try_from(result.status), Ok(JobStatus::Cancelled));
            break;
        }
    }
}

#[tokio::test]
async fn an_instance_runs_the_version_it_started_with() {
    let env = env().await;
    let v1 = r#"
name: versioned
version: 1
steps:
  - { id: wait, wait_for_signal: { name: go } }
  - { id: v, operation: test.echo, needs: [wait], input: { version: 1 } }
output: "{{ steps.v.output.version }}"
"#;
    env.register(v1).await;
    let (instance, mut events) = env.start("versioned", json!({})).await;
    until_event(&mut events, event::STEP_WAITING, T).await;
    env.register(&v1.replace("version: 1", "version: 2")).await;
    env.signal(&instance, "go", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(
        (status["version"].clone(), status["output"].clone()),
        (json!(1), json!(1))
    );
    let (later, mut events) = env.start("versioned", json!({})).await;
    until_event(&mut events, event::STEP_WAITING, T).await;
    let status = env.status(&later).await;
    assert_eq!(status["version"], 2);
}

#[tokio::test]
async fn unknown_workflows_and_bad_input_fail_visibly() {
    let env = env().await;
    env.register(
        r#"
name: typed
version: 1
input:
  n: { type: integer, required: true }
steps:
  - { id: a, operation: test.echo, input: { n: "{{ input.n }}" } }
"#,
    )
    .await;
    let (instance, _) = env.start("typed", json!({ "n": "three" })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["code"], "invalid_input");
    assert!(
        status["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input.n"),
        "{status:#}"
    );

    let (instance, _) = env.start("nope", json!({})).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["error"]["code"], "unknown_workflow", "{status:#}");

    // Another tenant cannot see the instance.
    let other = env
        .query(
            endpoint::INSTANCE_GET,
            json!({ "tenant": "globex", "instance_id": instance }),
        )
        .await;
    assert_eq!(other["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_malformed_inbox_message_goes_to_the_dlq_and_the_next_one_runs() {
    let env = env().await;
    env.register("name: one\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: {} }\n")
        .await;
    env.publish(
        &subject::start(TENANT, "one"),
        "garbage-1",
        b"\xff\x00not protobuf".to_vec(),
    )
    .await;
    let (instance, _) = env.start("one", json!({})).await;
    assert_eq!(env.finished(&instance, T).await["status"], "completed");
    let mut dlq = env
        .js
        .get_stream(switchyard_proto::stream::DLQ)
        .await
        .unwrap();
    let info = dlq.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 1);
    let raw = dlq
        .get_last_raw_message_by_subject(&subject::dlq("orchestrator"))
        .await
        .unwrap();
    let letter: switchyard_proto::DeadLetter =
        decode(switchyard_proto::ContentType::Protobuf, &raw.payload).unwrap();
    assert_eq!(letter.payload, b"\xff\x00not protobuf");
    assert!(letter.error.contains("protobuf"), "{}", letter.error);
}

/// A JSON start from a shell: input that is not an object fails the instance visibly (as a
/// bad input does), and a field the start does not have is dead-lettered with the reason
/// instead of being ignored.
#[tokio::test]
async fn json_starts_are_strict_and_bad_input_fails_the_instance() {
    let env = env().await;
    env.register("name: one\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: {} }\n")
        .await;
    let json_start = |body: Value, msg_id: &'static str| {
        let env = &env;
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(switchyard_proto::header::MSG_ID, msg_id);
            headers.insert(switchyard_proto::header::CONTENT_TYPE, "application/json");
            env.publish_with(
                &subject::start(TENANT, "one"),
                headers,
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        }
    };
    json_start(
        json!({ "instance_id": "text-input", "input": "not an object" }),
        "s-1",
    )
    .await;
    let status = env.finished("text-input", T).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    assert_eq!(status["error"]["code"], "invalid_input", "{status:#}");
    assert!(
        status["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input"),
        "{status:#}"
    );

    json_start(json!({ "instance_id": "typo", "foo": "bar" }), "s-2").await;
    let (instance, _) = env.start("one", json!({})).await;
    assert_eq!(env.finished(&instance, T).await["status"], "completed");
    assert!(
        env.query(
            endpoint::INSTANCE_GET,
            json!({ "tenant": TENANT, "instance_id": "typo" })
        )
        .await["error"]["code"]
            == "not_found",
        "a start with an unknown field starts nothing"
    );
    let raw = env
        .js
        .get_stream(switchyard_proto::stream::DLQ)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&subject::dlq("orchestrator"))
        .await
        .unwrap();
    let letter: switchyard_proto::DeadLetter =
        decode(switchyard_proto::ContentType::Protobuf, &raw.payload).unwrap();
    assert!(
        letter.error.contains("unknown field `foo`"),
        "{}",
        letter.error
    );
}

#[tokio::test]
async fn definitions_can_be_validated_listed_fetched_and_deleted() {
    let env = env().await;
    let bad = "name: bad\nversion: 1\nsteps:\n  - { id: a, operation: test.nope, input: {} }\n";
    let reply = env
        .query(
            endpoint::DEFINITIONS_VALIDATE,
            json!({ "tenant": TENANT, "source": bad }),
        )
        .await;
    assert_eq!(reply["valid"], false);
    assert_eq!(reply["problems"][0]["path"], "steps[0].operation");
    let reply = env
        .query(
            endpoint::DEFINITIONS_PUT,
            json!({ "tenant": TENANT, "source": bad }),
        )
        .await;
    assert_eq!(reply["error"]["code"], "invalid_definition");

    let good = "name: good\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: {} }\n";
    let put = |src: &str| {
        env.query(
            endpoint::DEFINITIONS_PUT,
            json!({ "tenant": TENANT, "source": src }),
        )
    };
    assert_eq!(put(good).await["created"], true);
    assert_eq!(put(good).await["created"], false);
    let changed = good.replace("input: {}", "input: { x: 1 }");
    assert_eq!(put(&changed).await["error"]["code"], "conflict");

    let list = env
        .query(endpoint::DEFINITIONS_LIST, json!({ "tenant": TENANT }))
        .await;
    let names: Vec<&str> = list["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"good"));
    for shipped in [
        "research_to_docs",
        "research_to_slack",
        "research_pipeline",
        "meeting_to_tasks",
        "linkedin_post",
    ] {
        assert!(names.contains(&shipped), "{shipped} missing from {names:?}");
    }
    let got = env
        .query(
            endpoint::DEFINITIONS_GET,
            json!({ "tenant": TENANT, "name": "good" }),
        )
        .await;
    assert_eq!(got["source"], good);
    let deleted = env
        .query(
            endpoint::DEFINITIONS_DELETE,
            json!({ "tenant": TENANT, "name": "good" }),
        )
        .await;
    assert_eq!(deleted["deleted"], 1);
    let got = env
        .query(
            endpoint::DEFINITIONS_GET,
            json!({ "tenant": TENANT, "name": "good" }),
        )
        .await;
    assert_eq!(got["error"]["code"], "not_found");
    // The queries are discoverable as a NATS micro service.
    let info = env
        .client
        .request("$SRV.INFO.switchyard-orchestrator", "".into())
        .await
        .expect("$SRV.INFO answers");
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for name in switchyard_proto::orchestrator::ENDPOINTS {
        let wanted = switchyard_orchestrator::service::request_subject(name);
        assert!(
            subjects.contains(&wanted.as_str()),
            "{wanted} not in {subjects:?}"
        );
    }
    // Other tenants do not see a tenant's definitions.
    let list = env
        .query(
            endpoint::DEFINITIONS_LIST,
            json!({ "tenant": "globex", "include_deleted": true }),
        )
        .await;
    assert!(
        list["definitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["name"] != "good")
    );
}

const FANOUT: &str = r#"
name: fanout
version: 1
input:
  n: { type: integer, default: 10 }
steps:
  - { id: a, operation: test.echo, input: { x: 1 } }
  - id: many
    operation: test.echo
    needs: [a]
    for_each: "{{ range(input.n) | list }}"
    input: { i: "{{ item }}" }
  - id: tail
    operation: test.sleep
    needs: [many]
    input: { ms: 20 }
output: "{{ steps.many.output | length }}"
"#;

#[tokio::test]
async fn two_orchestrator_replicas_race_on_the_same_instances() {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    env.worker("w2").await;
    env.orchestrator("o1").await;
    env.orchestrator("o2").await;
    env.register(FANOUT).await;
    let mut instances = Vec::new();
    for _ in 0..30 {
        instances.push(env.start("fanout", json!({ "n": 20 })).await.0);
    }
    for instance in &instances {
        let status = env.finished(instance, Duration::from_secs(60)).await;
        assert_eq!(status["status"], "completed", "{status:#}");
        assert_eq!(status["output"], 20);
    }
    // Whether the two raced on one instance this time is chance: the conflict path has a test
    // of its own that makes one (below).
    eprintln!(
        "compare-and-set conflicts: {}",
        env.counter("switchyard_orchestrator_state_conflicts_total")
    );
    let applied = |registry: usize| -> f64 {
        env.registries()[registry]
            .gather()
            .iter()
            .filter(|f| f.name() == "switchyard_orchestrator_messages_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| m.get_label().iter().any(|l| l.value() == "applied"))
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    eprintln!("messages applied: {} and {}", applied(0), applied(1));
}

/// Another writer moves an instance's state on behind the replica that caches it: the
/// replica's compare-and-set fails, it reloads, and the signal still applies, once.
#[tokio::test]
async fn a_state_changed_behind_the_cache_is_reloaded_and_the_message_applied() {
    let env = env().await;
    env.register(
        r#"
name: gated
version: 1
steps:
  - id: gate
    wait_for_signal: { name: go }
  - id: after
    operation: test.echo
    needs: [gate]
    input: { by: "{{ steps.gate.output.by }}" }
output: "{{ steps.after.output.by }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("gated", json!({})).await;
    until_event(&mut events, event::STEP_WAITING, T).await;
    // The same state written again: a new revision the replica's cache does not know.
    let kv = env
        .js
        .get_key_value(switchyard_proto::stream::WF_STATE_BUCKET)
        .await
        .unwrap();
    let current = kv
        .get(&instance)
        .await
        .unwrap()
        .expect("the instance's state");
    kv.put(&instance, current).await.unwrap();
    env.signal(&instance, "go", json!({ "by": "ann" })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], "ann");
    assert_eq!(
        env.counter("switchyard_orchestrator_state_conflicts_total"),
        1.0
    );
}

#[tokio::test]
async fn a_killed_orchestrator_process_is_replaced_and_every_instance_completes() {
    let mut env = bus(Duration::from_secs(2)).await;
    env.worker("w1").await;
    let mut first = orchestrator_process(&env.server, "o-first");
    answering(&env).await;
    env.register(FANOUT).await;
    let mut instances = Vec::new();
    let mut events = Vec::new();
    for _ in 0..20 {
        let (i, e) = env.start("fanout", json!({ "n": 5 })).await;
        instances.push(i);
        events.push(e);
    }
    // Kill it mid-run: once some instance has made progress, before they all finished.
    until_event(&mut events[0], event::STEP_SCHEDULED, T).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let mut second = orchestrator_process(&env.server, "o-second");
    for instance in &instances {
        let status = env.finished(instance, Duration::from_secs(60)).await;
        assert_eq!(status["status"], "completed", "{status:#}");
        assert_eq!(status["output"], 5);
    }
    second.kill().ok();
    second.wait().ok();
}

/// Waits until an orchestrator answers queries (registration needs one running).
async fn answering(env: &Env) {
    for _ in 0..200 {
        let reply = env
            .client
            .request(
                switchyard_orchestrator::service::request_subject(endpoint::DEFINITIONS_LIST),
                serde_json::to_vec(&json!({ "tenant": TENANT }))
                    .unwrap()
                    .into(),
            )
            .await;
        if reply.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no orchestrator answered");
}

/// A step that fails once, then waits `delay` before its second attempt.
fn patient(name: &str, delay: &str) -> String {
    format!(
        r#"
name: {name}
version: 1
steps:
  - id: f
    operation: test.fail
    input: {{ mode: retryable, times: 1 }}
    retry: {{ max_attempts: 2, initial_delay: {delay}, max_delay: {delay}, multiplier: 1 }}
output: "{{{{ steps.f.output.attempts }}}}"
"#
    )
}

/// A retry timer armed by one orchestrator fires after that orchestrator is killed: its
/// replacement runs the step's next attempt when it is due.
#[tokio::test]
async fn a_retry_timer_outlives_the_orchestrator_that_armed_it() {
    let mut env = bus(Duration::from_secs(2)).await;
    env.worker("w1").await;
    let mut first = orchestrator_process(&env.server, "o-first");
    answering(&env).await;
    env.register(&patient("patient", "3s")).await;
    let (instance, mut events) = env.start("patient", json!({})).await;
    until_event(&mut events, event::STEP_RETRYING, T).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let mut second = orchestrator_process(&env.server, "o-second");
    let status = env.finished(&instance, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 2);
    second.kill().ok();
    second.wait().ok();
}

/// Fifty instances waiting a minute for their retry do not delay a new start: it completes
/// while they all still wait.
#[tokio::test]
async fn pending_timers_do_not_hold_back_starts() {
    let env = env().await;
    env.register(&patient("waits_a_minute", "60s")).await;
    env.register(
        r#"
name: quick
version: 1
steps:
  - id: e
    operation: test.echo
    input: { said: "now" }
output: "{{ steps.e.output.said }}"
"#,
    )
    .await;
    let mut waiting = Vec::new();
    for _ in 0..50 {
        waiting.push(env.start("waits_a_minute", json!({})).await);
    }
    for (_, events) in &mut waiting {
        until_event(events, event::STEP_RETRYING, T).await;
    }
    let (quick, _) = env.start("quick", json!({})).await;
    let status = env.finished(&quick, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], "now");
    for (instance, _) in &waiting {
        let status = env.status(instance).await;
        assert_eq!(status["status"], "running", "{status:#}");
        env.cancel(instance, "the test is over").await;
    }
}

/// Writes an instance's state as a replica would have right before dying: the state stored
/// with its outbox, nothing of the outbox published, the message not acked.
async fn state_written_then_crashed(env: &Env, yaml: &str, instance: &str, last_message: u64) {
    use switchyard_orchestrator::transition::{self, Builtin, Ctx};
    use switchyard_workflow::{Scope, Store, ValidateOptions};
    let defs = env
        .js
        .get_key_value(switchyard_proto::stream::WF_DEFINITIONS_BUCKET)
        .await
        .unwrap();
    let store = Store::new(defs, ValidateOptions::default());
    let (_, def) = store
        .put(&Scope::Tenant(TENANT.into()), yaml)
        .await
        .expect("register");
    let start = switchyard_proto::StartWorkflow {
        tenant: TENANT.into(),
        workflow: def.name.clone(),
        instance_id: instance.into(),
        input: b"{}".to_vec(),
        ..Default::default()
    };
    let env_vars = std::collections::BTreeMap::new();
    let ctx = Ctx {
        now_ms: switchyard_proto::now_ms(),
        env: &env_vars,
        routes: &Builtin,
    };
    let mut state = transition::start(&def, &start, instance, ctx);
    assert!(!state.outbox.is_empty());
    state.last_message = last_message;
    let kv = env
        .js
        .get_key_value(switchyard_proto::stream::WF_STATE_BUCKET)
        .await
        .unwrap();
    kv.create(instance, serde_json::to_vec(&state).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_redelivered_message_publishes_what_its_transition_stored() {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    let yaml = "name: crashy\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: { v: 7 } }\noutput: \"{{ steps.a.output.v }}\"\n";
    // The start is in the inbox, unacked; the state it led to is stored; its job never went out.
    let instance = "crashed-after-write";
    let start = switchyard_proto::StartWorkflow {
        tenant: TENANT.into(),
        workflow: "crashy".into(),
        instance_id: instance.into(),
        ..Default::default()
    };
    let ack = env
        .js
        .publish(
            subject::start(TENANT, "crashy"),
            switchyard_proto::encode_proto(&start).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    state_written_then_crashed(&env, yaml, instance, ack.sequence).await;

    // A new replica gets the start again, sees it applied, and publishes the stored job.
    env.orchestrator("o-new").await;
    let status = env.finished(instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 7);
    assert_eq!(step(&status, "a")["attempts"], 1);
    assert!(
        env.counter_reaches("switchyard_orchestrator_messages_total", 2.0, T)
            .await
            >= 2.0,
        "the start and the result"
    );
}

#[tokio::test]
async fn the_next_message_publishes_what_a_dead_replica_stored() {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    let yaml = r#"
name: crashy2
version: 1
steps:
  - { id: a, operation: test.echo, input: { v: 7 } }
  - { id: gate, wait_for_signal: { name: go } }
  - { id: b, operation: test.echo, needs: [a, gate], input: { v: "{{ steps.a.output.v }}" } }
output: "{{ steps.b.output.v }}"
"#;
    // The start was acked long ago (another replica), but job `a` never went out; then a
    // signal arrives before anything else.
    let instance = "crashed-before-publish";
    state_written_then_crashed(&env, yaml, instance, 1_000_000).await;
    env.orchestrator("o-new").await;
    env.signal(instance, "go", json!({})).await;
    let status = env.finished(instance, T).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 7);
}

/// A result whose state cannot be stored (two step outputs that together are larger than a
/// message may be) fails its instance once, with the reason, instead of being redelivered.
#[tokio::test]
async fn a_result_whose_state_cannot_be_stored_fails_its_instance_once() {
    let env = env().await;
    env.register(
        "name: big\nversion: 1\ninput:\n  n: { type: integer }\nsteps:\n  \
         - { id: a, operation: test.echo, input: { text: \"{{ 'x' * input.n }}\" } }\n  \
         - { id: b, operation: test.echo, needs: [a], input: { text: \"{{ 'y' * input.n }}\" } }\n",
    )
    .await;
    let (instance, mut events) = env.start("big", json!({ "n": 600_000 })).await;
    let (failed, _) = until_event(&mut events, event::FAILED, T).await;
    let data = event_data(&failed);
    assert_eq!(data["code"], "state_too_large", "{data}");
    assert!(
        data["message"].as_str().unwrap().contains("bytes"),
        "{data}"
    );
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["error"]["code"], "state_too_large");
    // Handled once: nothing of it is left in the inbox to come back.
    env.wait_idle(
        &[(
            switchyard_proto::stream::WF_INBOX,
            switchyard_proto::stream::ORCHESTRATOR_RESULTS,
        )],
        T,
    )
    .await;
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            until_event(&mut events, event::FAILED, T)
        )
        .await
        .is_err(),
        "the result was handled again"
    );
}

/// A message the engine keeps failing on (here: a cancel for an instance whose stored state
/// is unreadable) goes to the DLQ after a bounded number of deliveries, with the reason.
#[tokio::test]
async fn an_inbox_message_that_keeps_failing_goes_to_the_dlq() {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    let mut options = switchyard_test_harness::orchestrator_options("o1");
    options.max_deliveries = 3;
    env.components.orchestrator(&env.bus, options).await;
    let instance = switchyard_test_harness::engine::new_instance();
    env.js
        .publish(format!("$KV.WF_STATE.{instance}"), "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    env.cancel(&instance, "poison").await;

    let deadline = tokio::time::Instant::now() + T;
    let letter = loop {
        let mut dlq = env
            .js
            .get_stream(switchyard_proto::stream::DLQ)
            .await
            .unwrap();
        if let Ok(raw) = dlq
            .get_last_raw_message_by_subject(&subject::dlq("orchestrator"))
            .await
        {
            break decode::<switchyard_proto::DeadLetter>(
                switchyard_proto::ContentType::Protobuf,
                &raw.payload,
            )
            .unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter after {T:?}"
        );
        let _ = dlq.info().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letter.attempts, 3, "{letter:?}");
    assert!(letter.subject.starts_with("wf.cancel."), "{letter:?}");
    assert!(
        letter.error.contains("decoding instance state"),
        "{}",
        letter.error
    );
    env.wait_idle(
        &[(
            switchyard_proto::stream::WF_INBOX,
            switchyard_proto::stream::ORCHESTRATOR_COMMANDS,
        )],
        T,
    )
    .await;
}

/// A template that doubles a string (the attack from a viewer's `validate`) is refused at
/// validation, rendering within the limits instead of growing without end.
#[tokio::test]
async fn a_template_that_keeps_doubling_a_string_is_refused_at_validation() {
    let env = env().await;
    let doubling = format!(
        "{{% set a = 'x' * 1024 %}}{}{{{{ a }}}}",
        "{% set a = a ~ a %}".repeat(16)
    );
    let source = format!(
        "name: grow\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: {{ text: {doubling:?} }}\n"
    );
    let reply = env
        .query(
            endpoint::DEFINITIONS_VALIDATE,
            json!({ "tenant": TENANT, "source": source }),
        )
        .await;
    assert_eq!(reply["valid"], false, "{reply}");
    assert_eq!(
        reply["problems"][0]["path"], "steps[0].input.text",
        "{reply}"
    );
    let message = reply["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("over the render limit"), "{message}");
}

/// A step whose input renders over the limit at run time fails with the reason, naming the
/// templated value; the engine goes on.
#[tokio::test]
async fn a_step_whose_input_renders_over_the_limit_fails_naming_it() {
    let env = env().await;
    env.register(
        "name: grow_later\nversion: 1\ninput:\n  n: { type: integer }\n\
         steps:\n  - { id: a, operation: test.echo, input: { text: \"{{ 'x' * input.n }}\" } }\n",
    )
    .await;
    let (instance, _) = env.start("grow_later", json!({ "n": 2_000_000 })).await;
    let status = env.finished(&instance, T).await;
    assert_eq!(status["status"], "failed", "{status}");
    let error = step(&status, "a")["error"].clone();
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("steps[0].input.text") && message.contains("over the render limit"),
        "{status}"
    );
    let (fine, _) = env.start("grow_later", json!({ "n": 10 })).await;
    assert_eq!(env.finished(&fine, T).await["status"], "completed");
}
