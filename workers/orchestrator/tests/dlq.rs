//! Dead letters through the engine's service, against a real nats-server with `test` workers:
//! a step's letter replayed resumes its instance; a direct job's letter replayed is published
//! again and answers where the original asked; a handled letter is not replayed twice.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_orchestrator::service::endpoint;
use switchyard_proto::{Job, JobResult, JobStatus, RetryPolicy, decode, encode_proto, event};
use switchyard_test_harness::engine::try_query;

const T: Duration = Duration::from_secs(20);

/// Lists letters until `want` of them match `filter` (a letter is stored a moment after the
/// result that reports it).
async fn letters(env: &Env, filter: Value, want: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let page = env
            .query(endpoint::DLQ_LIST, json!({ "filter": filter }))
            .await;
        let letters = page["letters"].as_array().cloned().unwrap_or_default();
        if letters.len() >= want || tokio::time::Instant::now() >= deadline {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_steps_dead_letter_is_listed_shown_and_replayed_into_a_rerun() {
    let env = env().await;
    env.register(
        r#"
name: flaky
version: 1
steps:
  - { id: first, operation: test.echo, input: { n: 1 } }
  - id: call
    operation: test.fail
    needs: [first]
    input: { mode: retryable, runs: 1 }
    retry: { max_attempts: 2, initial_delay: 10ms, max_delay: 10ms, multiplier: 1 }
output: "{{ steps.call.output }}"
"#,
    )
    .await;
    let (instance, mut events) = env.start("flaky", json!({})).await;
    let failed = env.finished(&instance, T).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["error"]["code"], "retries_exhausted", "{failed:#}");

    // Listed: by tenant and instance; another tenant sees nothing of it.
    let listed = letters(
        &env,
        json!({ "tenant": TENANT, "instance_id": instance }),
        1,
    )
    .await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let letter = &listed[0];
    assert_eq!(letter["reason"], "retries_exhausted");
    assert_eq!(letter["operation"], "test.fail");
    assert_eq!(letter["step_id"], "call");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["handled"], Value::Null);
    let seq = letter["seq"].as_u64().expect("a sequence");
    let foreign = letters(
        &env,
        json!({ "tenant": "globex", "instance_id": instance }),
        0,
    )
    .await;
    assert!(foreign.is_empty());

    // Shown: the original job, its headers, the error and who gave up.
    let shown = env
        .query(endpoint::DLQ_GET, json!({ "tenant": TENANT, "seq": seq }))
        .await;
    assert_eq!(shown["payload"]["instance_id"], instance, "{shown:#}");
    assert_eq!(shown["payload"]["step_id"], "call");
    assert_eq!(shown["headers"]["Nats-Msg-Id"], format!("{instance}.call"));
    assert!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up after 2 attempts"))
    );
    assert_eq!(shown["worker_id"], "w1");
    let hidden = try_query(
        &env.client,
        endpoint::DLQ_GET,
        &json!({ "tenant": "globex", "seq": seq }),
    )
    .await
    .expect_err("another tenant's letter");
    assert_eq!(hidden["error"]["code"], "not_found");

    // Replayed: the instance re-runs from that step, and now completes.
    let replay = json!({ "tenant": TENANT, "seq": seq, "requested_by": "ops" });
    let reply = env.query(endpoint::DLQ_REPLAY, replay.clone()).await;
    assert_eq!(reply["replayed"][0]["action"], "rerun", "{reply}");
    assert_eq!(reply["replayed"][0]["run"], 1, "{reply}");
    until_event(&mut events, event::COMPLETED, T).await;
    let done = env.status(&instance).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["output"], json!({ "attempts": 1 }));
    assert_eq!(step(&done, "first")["attempts"], 1, "{done:#}");

    // A second replay of the handled letter is refused, saying who handled it.
    let again = try_query(&env.client, endpoint::DLQ_REPLAY, &replay)
        .await
        .expect_err("handled already");
    assert_eq!(again["error"]["code"], "conflict");
    assert!(
        again["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ops")),
        "{again}"
    );
    let handled = letters(&env, json!({ "tenant": TENANT, "handled": true }), 1).await;
    assert_eq!(handled[0]["handled"]["action"], "rerun");

    // Purged: what was handled goes; the count says how many.
    let purged = env
        .query(
            endpoint::DLQ_PURGE,
            json!({ "filter": { "tenant": TENANT }, "requested_by": "ops" }),
        )
        .await;
    assert_eq!(purged["purged"], 1, "{purged}");
    let gone = try_query(
        &env.client,
        endpoint::DLQ_GET,
        &json!({ "tenant": TENANT, "seq": seq }),
    )
    .await
    .expect_err("purged");
    assert_eq!(gone["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_direct_jobs_dead_letter_replayed_answers_its_reply_subject_and_fails_back_once() {
    let env = env().await;
    // A direct caller waits on an inbox of its own.
    let reply_subject = "_INBOX.direct-1";
    let mut replies = env
        .client
        .subscribe(reply_subject)
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let job = Job {
        job_id: "direct-1".into(),
        tenant: TENANT.into(),
        operation: "test.fail".into(),
        input: serde_json::to_vec(&json!({ "mode": "permanent" })).unwrap(),
        retry: Some(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }),
        reply_subject: reply_subject.into(),
        ..Job::default()
    };
    env.publish("jobs.test.fail", "direct-1", encode_proto(&job))
        .await;
    let first = tokio::time::timeout(T, futures::StreamExt::next(&mut replies))
        .await
        .expect("the first result")
        .expect("subscribed");
    let first: JobResult = decode(switchyard_proto::ContentType::Protobuf, &first.payload).unwrap();
    assert_eq!(first.status, JobStatus::Failed as i32);

    let listed = letters(
        &env,
        json!({ "tenant": TENANT, "operation": "test.fail" }),
        1,
    )
    .await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["instance_id"], Value::Null);
    let seq = listed[0]["seq"].as_u64().unwrap();

    let reply = env
        .query(
            endpoint::DLQ_REPLAY,
            json!({ "tenant": TENANT, "seq": seq, "requested_by": "ops" }),
        )
        .await;
    assert_eq!(reply["replayed"][0]["action"], "republished", "{reply}");
    assert_eq!(reply["replayed"][0]["subject"], "jobs.test.fail");
    // Its result goes where the original asked, under the original job id.
    let second = tokio::time::timeout(T, futures::StreamExt::next(&mut replies))
        .await
        .expect("the replayed job's result")
        .expect("subscribed");
    let second: JobResult =
        decode(switchyard_proto::ContentType::Protobuf, &second.payload).unwrap();
    assert_eq!(second.job_id, "direct-1");
    assert_eq!(second.attempts, 1, "attempts counted afresh");
    // The cause is still there: it is back in the DLQ, once, as a new letter.
    let now = letters(
        &env,
        json!({ "tenant": TENANT, "operation": "test.fail" }),
        2,
    )
    .await;
    assert_eq!(now.len(), 2, "{now:#?}");
    assert_eq!(now[0]["handled"]["action"], "republished");
    assert_eq!(now[1]["handled"], Value::Null);
    // Nothing replays it again by itself: the job stream is idle and the letters stay two.
    env.wait_idle(&[("JOBS_TEST", "worker-test")], T).await;
    let settled = env
        .query(
            endpoint::DLQ_LIST,
            json!({ "filter": { "tenant": TENANT, "operation": "test.fail" } }),
        )
        .await;
    assert_eq!(
        settled["letters"].as_array().map(Vec::len),
        Some(2),
        "no loop: {settled:#}"
    );
}

/// A letter is replayed only into the failure it caused: once its instance moved on (re-run
/// and completed), replaying it is refused, and the letter is left unhandled. A re-run sent
/// on another tenant's subject changes nothing.
#[tokio::test]
async fn a_letter_whose_instance_moved_on_is_not_replayed() {
    let env = env().await;
    env.register(
        "name: moved\nversion: 1\nsteps:\n  - { id: call, operation: test.fail, input: { mode: permanent, runs: 1 } }\n",
    )
    .await;
    let (instance, mut events) = env.start("moved", json!({})).await;
    assert_eq!(env.finished(&instance, T).await["status"], "failed");
    let listed = letters(
        &env,
        json!({ "tenant": TENANT, "instance_id": instance }),
        1,
    )
    .await;
    let seq = listed[0]["seq"].as_u64().expect("a letter");

    // Another tenant's re-run on the bus: ignored by the engine (the subject names globex).
    let foreign = switchyard_proto::RerunWorkflow {
        run: 1,
        ..Default::default()
    };
    env.publish(
        &switchyard_proto::subject::rerun("globex", &instance),
        "foreign-rerun",
        encode_proto(&foreign),
    )
    .await;
    // The engine took it and left the instance as it was.
    env.wait_idle(&[("WF_INBOX", "orchestrator-commands")], T)
        .await;
    let still = env.status(&instance).await;
    assert_eq!(
        (still["status"].clone(), still["run"].clone()),
        (json!("failed"), json!(0))
    );

    let reply = env
        .query(
            endpoint::INSTANCE_RERUN,
            json!({ "tenant": TENANT, "instance_id": instance, "requested_by": "ops" }),
        )
        .await;
    assert_eq!(reply["run"], 1, "{reply}");
    until_event(&mut events, event::COMPLETED, T).await;

    let refused = try_query(
        &env.client,
        endpoint::DLQ_REPLAY,
        &json!({ "tenant": TENANT, "seq": seq, "requested_by": "ops" }),
    )
    .await
    .expect_err("the instance completed since");
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not fail because of this job")),
        "{refused}"
    );
    let letter = env
        .query(endpoint::DLQ_GET, json!({ "tenant": TENANT, "seq": seq }))
        .await;
    assert_eq!(
        letter["handled"],
        Value::Null,
        "a refused replay marks nothing"
    );
}
