//! The worker loop against a real nats-server: each test is one promise the loop makes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use serde_json::json;
use switchyard_proto::{
    ContentType, DeadLetterReason, ErrorCode, JobStatus, decode, encode_proto, stream, subject,
};
use switchyard_test_support::{NatsOptions, NatsServer, old_nats_server_binary};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_success_is_published_and_acked_once() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    let echo = job(&instance, "s1", "test.echo", json!({"hello": "world"}));
    publish(&bus, &echo).await;
    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32);
    assert_eq!(result.job_id, echo.job_id);
    assert_eq!(result.attempts, 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"hello": "world"})
    );

    // Acked: nothing pending, nothing redelivered, the work queue is empty, and no second result.
    let info = settled(&bus).await;
    assert_eq!(
        (info.num_ack_pending, info.num_pending, info.num_redelivered),
        (0, 0, 0)
    );
    let jobs = bus
        .js
        .get_stream(stream::jobs("test"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(jobs, 0);
    assert!(
        tokio::time::timeout(SECOND, results.next()).await.is_err(),
        "a second result appeared"
    );
    assert_eq!(
        counter(
            &registry,
            "switchyard_jobs_total",
            &[("operation", "test.echo"), ("outcome", "succeeded")]
        ),
        1.0
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_retryable_failure_is_retried_with_growing_delays_then_succeeds() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    let flaky = with_retry(
        job(
            &instance,
            "s1",
            "test.fail",
            json!({"mode": "retryable", "times": 3}),
        ),
        5,
        200,
    );
    publish(&bus, &flaky).await;
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.attempts, 4);

    let mut attempts_at = Vec::new();
    for _ in 0..4 {
        let event = next_event(&mut events, SECOND).await;
        let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
        attempts_at.push(data["at_ms"].as_i64().unwrap());
    }
    let gaps: Vec<i64> = attempts_at.windows(2).map(|w| w[1] - w[0]).collect();
    // Policy: 200 ms doubling, jitter adds up to 100 %: [200,400), [400,800), [800,1600).
    assert!(
        gaps[0] >= 200 && gaps[1] >= 400 && gaps[2] >= 800,
        "gaps {gaps:?}"
    );
    assert!(gaps[0] < gaps[2], "delays did not grow: {gaps:?}");
    assert_eq!(
        counter(
            &registry,
            "switchyard_jobs_total",
            &[("outcome", "retried")]
        ),
        3.0
    );
    assert!(dead_letters(&bus).await.is_empty());

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn exhausted_attempts_leave_a_failed_result_and_a_dead_letter_with_the_original() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    let doomed = with_retry(
        job(&instance, "s1", "test.fail", json!({"mode": "retryable"})),
        3,
        100,
    );
    publish(&bus, &doomed).await;
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Failed as i32);
    let error = result.error.expect("an error");
    assert_eq!(error.code, ErrorCode::RetriesExhausted as i32);
    assert!(
        error.message.contains("after 3 attempts"),
        "{}",
        error.message
    );

    let letters = wait_for_dead_letters(&bus, 1, 5 * SECOND).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.payload,
        encode_proto(&doomed),
        "the original payload, byte for byte"
    );
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted as i32);
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.subject, subject::job("test.fail"));
    assert!(
        letter.error.contains("failing on purpose"),
        "{}",
        letter.error
    );
    assert_eq!(
        letter.headers.get("X-Correlation-ID").map(String::as_str),
        Some(format!("corr-{}", doomed.job_id).as_str())
    );

    // Terminated: not redelivered again.
    settled(&bus).await;
    assert_eq!(
        counter(
            &registry,
            "switchyard_dead_letters_total",
            &[("reason", "retries_exhausted")]
        ),
        1.0
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn permanent_failures_and_unknown_operations_are_not_retried() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    publish(
        &bus,
        &with_retry(
            job(&instance, "p", "test.fail", json!({"mode": "permanent"})),
            5,
            100,
        ),
    )
    .await;
    let first = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(
        (first.attempts, first.error.unwrap().code),
        (1, ErrorCode::Permanent as i32)
    );

    publish(&bus, &job(&instance, "u", "test.nope", json!({}))).await;
    let second = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(
        second.error.unwrap().code,
        ErrorCode::UnknownOperation as i32
    );

    publish(
        &bus,
        &job(&instance, "bad", "test.sleep", json!({"ms": "soon"})),
    )
    .await;
    let third = next_result(&mut results, 10 * SECOND).await;
    let error = third.error.unwrap();
    assert_eq!(error.code, ErrorCode::InvalidInput as i32);
    assert!(
        error.message.starts_with("field `ms`: expected integer"),
        "{}",
        error.message
    );

    let letters = wait_for_dead_letters(&bus, 3, 5 * SECOND).await;
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[1].reason, DeadLetterReason::UnknownOperation as i32);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_input_gets_the_same_answer_by_request_reply_as_through_the_stream() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    wait_for_services(&bus, 1).await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let bad = job(&instance, "bad", "test.sleep", json!({"ms": "soon"}));

    publish(&bus, &bad).await;
    let streamed = next_result(&mut results, 10 * SECOND)
        .await
        .error
        .expect("a failed result");

    let reply = bus
        .client
        .request("svc.test.sleep", encode_proto(&bad).into())
        .await
        .unwrap();
    let answered = decode::<switchyard_proto::JobResult>(ContentType::Protobuf, &reply.payload)
        .unwrap()
        .error
        .expect("a failed answer: the handler must not have run");

    assert_eq!(streamed.code, ErrorCode::InvalidInput as i32);
    assert_eq!(streamed.field, "ms");
    assert_eq!(answered, streamed);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_malformed_message_goes_to_the_dlq_and_the_next_one_is_processed() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    publish_raw(
        &bus,
        &subject::job("test.echo"),
        "garbage-1",
        b"\xff\xfe not protobuf".to_vec(),
    )
    .await;
    publish(&bus, &job(&instance, "after", "test.echo", json!({"n": 2}))).await;

    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(result.step_id, "after");
    assert_eq!(
        result.correlation_id, "corr-after",
        "taken from the job body"
    );
    assert_eq!(result.status, JobStatus::Succeeded as i32);
    let letters = wait_for_dead_letters(&bus, 1, 5 * SECOND).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Decode as i32);
    assert_eq!(letters[0].payload, b"\xff\xfe not protobuf");
    assert!(
        letters[0].error.contains("not a valid protobuf Job"),
        "{}",
        letters[0].error
    );
    assert_eq!(
        counter(
            &registry,
            "switchyard_jobs_total",
            &[("outcome", "malformed")]
        ),
        1.0
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn jobs_in_json_are_accepted_with_the_content_type_header() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    let body = json!({"job_id": "j-json", "tenant": TENANT, "instance_id": instance, "input": {"from": "shell"}});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    bus.js
        .publish_with_headers(
            subject::job("test.echo"),
            headers,
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(
        result.operation, "test.echo",
        "operation taken from the subject"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"from": "shell"})
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn two_replica_processes_share_the_work() {
    let bus = bus(Duration::from_secs(30)).await;
    let a = process(&bus, "replica-a");
    let b = process(&bus, "replica-b");
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    // Let both replicas register before the work arrives.
    wait_for_services(&bus, 2).await;

    for i in 0..40 {
        publish(
            &bus,
            &job(
                &instance,
                &format!("s{i}"),
                "test.sleep",
                json!({"ms": 100}),
            ),
        )
        .await;
    }
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for _ in 0..40 {
        let result = next_result(&mut results, 20 * SECOND).await;
        assert_eq!(result.status, JobStatus::Succeeded as i32);
        *by_worker.entry(result.worker_id).or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "{by_worker:?}");
    assert!(
        by_worker.values().all(|n| *n >= 5),
        "lopsided: {by_worker:?}"
    );

    for child in [a, b] {
        signal(&child, "TERM");
        let (status, log) = output_of(child);
        assert!(status.success(), "{log}");
    }
}

#[tokio::test]
async fn a_replica_killed_mid_job_has_its_job_completed_by_another() {
    let bus = bus(Duration::from_secs(2)).await;
    let victim = process(&bus, "victim");
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    publish(
        &bus,
        &job(&instance, "long", "test.sleep", json!({"ms": 3000})),
    )
    .await;
    let started = next_event(&mut events, 10 * SECOND).await;
    let data: serde_json::Value = serde_json::from_slice(&started.data).unwrap();
    assert_eq!(data["worker_id"], "victim");

    let survivor = process(&bus, "survivor");
    signal(&victim, "KILL");
    let (status, _) = output_of(victim);
    assert!(!status.success());

    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32);
    assert_eq!(result.worker_id, "survivor");
    assert_eq!(result.attempts, 2);

    signal(&survivor, "TERM");
    assert!(output_of(survivor).0.success());
}

#[tokio::test]
async fn sigterm_lets_in_flight_jobs_finish_before_exit() {
    let bus = bus(Duration::from_secs(30)).await;
    let worker = process(&bus, "w1");
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    publish(
        &bus,
        &job(&instance, "slow", "test.sleep", json!({"ms": 1500})),
    )
    .await;
    next_event(&mut events, 10 * SECOND).await;
    let signalled = Instant::now();
    signal(&worker, "TERM");
    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32);
    assert_eq!(result.attempts, 1);

    let (status, log) = output_of(worker);
    assert!(status.success(), "{log}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1000),
        "exited before the job could finish"
    );
    let info = consumer_info(&bus).await;
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0));
}

#[tokio::test]
async fn a_cancelled_instance_stops_its_running_job() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    publish(
        &bus,
        &job(&instance, "long", "test.sleep", json!({"ms": 60_000})),
    )
    .await;
    next_event(&mut events, 10 * SECOND).await;
    bus.client
        .publish(
            subject::event(TENANT, &instance, subject::CANCELLED_EVENT),
            "".into(),
        )
        .await
        .unwrap();
    let result = next_result(&mut results, 5 * SECOND).await;
    assert_eq!(result.status, JobStatus::Cancelled as i32);
    assert!(dead_letters(&bus).await.is_empty());

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_past_its_deadline_is_not_run() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    let mut late = job(&instance, "late", "test.echo", json!({}));
    late.deadline_ms = switchyard_proto::now_ms() - 1;
    publish(&bus, &late).await;
    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(
        result.error.unwrap().code,
        ErrorCode::DeadlineExceeded as i32
    );
    assert_eq!(
        wait_for_dead_letters(&bus, 1, 5 * SECOND).await[0].reason,
        DeadLetterReason::DeadlineExceeded as i32
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn every_replica_is_listed_in_the_service_registry_with_its_operations() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop1, _r1, t1) = in_process(&bus, "w1").await;
    let (stop2, _r2, t2) = in_process(&bus, "w2").await;
    wait_for_services(&bus, 2).await;

    let infos = service_infos(&bus).await;
    let mut ids: Vec<&str> = infos
        .iter()
        .map(|i| i["metadata"]["worker_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["w1", "w2"]);
    for info in &infos {
        assert_eq!(info["name"], "switchyard-test");
        assert_eq!(
            info["metadata"]["operations"], "test.echo,test.fail,test.sleep",
            "the catalog's operations of the kind, by name"
        );
        let subjects: Vec<&str> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["subject"].as_str().unwrap())
            .collect();
        assert!(subjects.contains(&"svc.test.echo"), "{subjects:?}");
    }

    // Each operation also answers request/reply.
    let request = job("", "q", "test.echo", json!({"ping": 1}));
    let reply = bus
        .client
        .request("svc.test.echo", encode_proto(&request).into())
        .await
        .unwrap();
    let result: switchyard_proto::JobResult =
        decode(ContentType::Protobuf, &reply.payload).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"ping": 1})
    );

    stop1.cancel();
    stop2.cancel();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_worker_refuses_an_unsupported_server_and_names_the_version_it_needs() {
    let old = old_nats_server_binary().expect(
        "an old (2.9) nats-server for this test: deploy/local/test.sh installs Debian's package `nats-server`",
    );
    let server = NatsServer::start_with(NatsOptions {
        binary: Some(old),
        auth: false,
        ..NatsOptions::default()
    })
    .await;
    let child = process_at(&server, "w-old");
    let (status, log) = output_of(child);
    assert!(!status.success());
    assert!(
        log.contains("is not supported: Switchyard needs nats-server 2.14.0 or newer"),
        "{log}"
    );
}

#[tokio::test]
async fn a_job_that_keeps_crashing_its_replica_ends_in_the_dlq_without_running_again() {
    let bus = bus(Duration::from_secs(2)).await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    // One attempt allowed; the replica running it dies.
    publish(
        &bus,
        &with_retry(
            job(&instance, "poison", "test.sleep", json!({"ms": 5000})),
            1,
            100,
        ),
    )
    .await;
    let victim = process(&bus, "victim");
    next_event(&mut events, 10 * SECOND).await;
    signal(&victim, "KILL");
    let _ = output_of(victim);

    // The redelivery exceeds the job's attempts: dead-lettered, not run a second time.
    let next = process(&bus, "next");
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Failed as i32);
    assert_eq!(result.worker_id, "next");
    let error = result.error.unwrap();
    assert_eq!(error.code, ErrorCode::RetriesExhausted as i32);
    assert!(
        error.message.contains("earlier deliveries did not finish"),
        "{}",
        error.message
    );
    let letters = wait_for_dead_letters(&bus, 1, 5 * SECOND).await;
    assert_eq!((letters.len(), letters[0].attempts), (1, 2));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err(),
        "the handler ran again"
    );

    signal(&next, "TERM");
    assert!(output_of(next).0.success());
}

/// With no stream and no engine to create it when the kind declares itself (within
/// `worker.fault_patience`), the worker says what to do.
#[tokio::test]
async fn a_worker_on_an_unprovisioned_bus_says_to_apply_it() {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let mut config = switchyard_runtime::Config {
        nats_url: server.url(),
        ..Default::default()
    };
    config.worker.fault_patience = Duration::from_secs(1);
    let worker = switchyard_runtime::Worker::new(
        client,
        &config,
        switchyard_test_worker::TestWorker,
        &prometheus::Registry::new(),
    )
    .unwrap();
    let err = worker
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream JOBS_TEST is missing on the NATS server: run `switchyard bus apply` first"
    );
}

#[tokio::test]
async fn a_direct_caller_gets_the_result_on_its_own_reply_subject() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let inbox = bus.client.new_inbox();
    let mut replies = bus.client.subscribe(inbox.clone()).await.unwrap();

    let mut direct = job("", "direct", "test.echo", json!({"direct": true}));
    direct.job_id = "direct-1".into();
    direct.reply_subject = inbox;
    direct.correlation_id = String::new();
    publish(&bus, &direct).await;
    let result = next_result(&mut replies, 10 * SECOND).await;
    assert_eq!(result.job_id, "direct-1");
    assert_eq!(
        result.correlation_id, "corr-direct-1",
        "taken from the X-Correlation-ID header"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"direct": true})
    );
    // The ack follows the result.
    let deadline = Instant::now() + 5 * SECOND;
    while consumer_info(&bus).await.num_ack_pending > 0 {
        assert!(Instant::now() < deadline, "the job was never acked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_running_when_the_server_dies_completes_after_it_returns() {
    let mut bus = bus(Duration::from_secs(2)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut events = events(&bus, &instance).await;

    publish(
        &bus,
        &job(
            &instance,
            "through-crash",
            "test.sleep",
            json!({"ms": 1000}),
        ),
    )
    .await;
    next_event(&mut events, 10 * SECOND).await;
    // The job finishes while the server is down: its result and ack cannot go out.
    bus.server.kill();
    tokio::time::sleep(2 * SECOND).await;
    bus.server.restart().await;

    // A plain subscription misses what is published while its own client reconnects, so the
    // result is read from the stream that stored it.
    let inbox = bus.js.get_stream(stream::WF_INBOX).await.unwrap();
    let deadline = Instant::now() + 30 * SECOND;
    let stored = loop {
        if let Ok(msg) = inbox
            .get_last_raw_message_by_subject(&subject::result(&instance))
            .await
        {
            break msg;
        }
        assert!(
            Instant::now() < deadline,
            "no result stored after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let result: switchyard_proto::JobResult =
        decode(ContentType::Protobuf, &stored.payload).unwrap();
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.step_id, "through-crash");
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let info = consumer_info(&bus).await;
        let queued = bus
            .js
            .get_stream(stream::jobs("test"))
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        if info.num_ack_pending == 0 && queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job was never settled: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dead_letters(&bus).await.is_empty());
    let settled = counter(
        &registry,
        "switchyard_jobs_total",
        &[("outcome", "succeeded")],
    );
    assert!(settled >= 1.0, "no success recorded");

    stop.cancel();
    task.await.unwrap().unwrap();
}
