//! Faults are not failures (ADR 14): deliveries that end because infrastructure was
//! unavailable or the replica was stopping use no attempts, a stopping replica does not bounce
//! jobs off its own open pull request, and a job whose effect was recorded completes with it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchyard_proto::{DeadLetterReason, ErrorCode, JobStatus, subject};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn unavailable_infrastructure_uses_no_attempts_and_the_job_completes_when_it_returns() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    // One attempt allowed; the database is "down" for the first two deliveries.
    publish(
        &bus,
        &with_retry(
            job(
                &instance,
                "db",
                "test.fail",
                json!({"mode": "unavailable", "times": 2}),
            ),
            1,
            100,
        ),
    )
    .await;
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.attempts, 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"attempts": 1})
    );
    assert!(dead_letters(&bus).await.is_empty());
    assert_eq!(
        counter(
            &registry,
            "switchyard_jobs_total",
            &[("operation", "test.fail"), ("outcome", "unavailable")]
        ),
        2.0
    );

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn infrastructure_unavailable_past_the_fault_patience_is_dead_lettered_as_unavailable() {
    let bus = bus(Duration::from_secs(30)).await;
    let mut config = config(&bus, "w1");
    config.worker.fault_patience = 2 * SECOND;
    let (stop, _registry, task) = in_process_with(&bus, config).await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    publish(
        &bus,
        &job(&instance, "db", "test.fail", json!({"mode": "unavailable"})),
    )
    .await;
    let result = next_result(&mut results, 30 * SECOND).await;
    assert_eq!(result.status, JobStatus::Failed as i32);
    let error = result.error.unwrap();
    assert_eq!(error.code, ErrorCode::Unavailable as i32);
    assert!(
        error.message.contains("worker.fault_patience")
            && error.message.contains("the database is unavailable"),
        "{}",
        error.message
    );
    let letters = wait_for_dead_letters(&bus, 1, 5 * SECOND).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, DeadLetterReason::Unavailable as i32);
    assert!(letters[0].attempts >= 1, "{:?}", letters[0]);

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_handed_back_when_the_grace_period_ends_keeps_its_attempt() {
    let bus = bus(Duration::from_secs(30)).await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;
    let mut events = events(&bus, &instance).await;

    // One attempt allowed, and a job longer than the stopping replica's grace period.
    publish(
        &bus,
        &with_retry(
            job(&instance, "long", "test.sleep", json!({"ms": 3000})),
            1,
            100,
        ),
    )
    .await;
    let stopping = process_with(
        &bus.server,
        "stopping",
        &[("SWITCHYARD_SHUTDOWN_GRACE", "300ms")],
    );
    next_event(&mut events, 10 * SECOND).await;
    signal(&stopping, "TERM");
    let (status, log) = output_of(stopping);
    assert!(status.success(), "{log}");
    assert!(log.contains("job handed back"), "{log}");

    let next = process(&bus, "next");
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.worker_id, "next");
    assert_eq!(result.attempts, 1);
    assert!(dead_letters(&bus).await.is_empty());

    signal(&next, "TERM");
    assert!(output_of(next).0.success());
}

#[tokio::test]
async fn a_stopping_replica_runs_what_its_open_pull_brings_instead_of_bouncing_it() {
    let bus = bus(Duration::from_secs(30)).await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    // A long pull: the server keeps serving it for seconds after the replica is told to stop.
    let stopping = process_with(
        &bus.server,
        "stopping",
        &[("SWITCHYARD_WORKER__PULL_EXPIRY", "3s")],
    );
    wait_for_services(&bus, 1).await;
    signal(&stopping, "TERM");
    publish(
        &bus,
        &with_retry(
            job(&instance, "late", "test.echo", json!({"late": true})),
            1,
            100,
        ),
    )
    .await;
    let (status, log) = output_of(stopping);
    assert!(status.success(), "{log}");

    // Whoever ran it, it ran once and was delivered at most once more.
    let next = process(&bus, "next");
    let result = next_result(&mut results, 40 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.attempts, 1);
    assert!(dead_letters(&bus).await.is_empty());
    let info = consumer_info(&bus).await;
    assert!(info.num_redelivered <= 1, "{info:?}");

    wait_for_services(&bus, 1).await;
    signal(&next, "TERM");
    let (status, log) = output_of(next);
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn a_job_whose_effect_was_recorded_completes_with_it_when_its_attempts_run_out() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    publish(
        &bus,
        &with_retry(
            job(
                &instance,
                "effect",
                "test.fail",
                json!({"mode": "retryable", "recorded": {"page": "p-1"}}),
            ),
            2,
            100,
        ),
    )
    .await;
    let result = next_result(&mut results, 20 * SECOND).await;
    assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&result.output).unwrap(),
        json!({"page": "p-1"})
    );
    assert!(dead_letters(&bus).await.is_empty());

    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn poison_jobs_reach_the_dlq_with_a_reason_and_good_jobs_keep_flowing() {
    let bus = bus(Duration::from_secs(30)).await;
    let (stop, _registry, task) = in_process(&bus, "w1").await;
    let instance = new_instance();
    let mut results = results(&bus, &instance).await;

    // A result for this job could never be published: `wf.result.a.b` is not its subject.
    let mut dotted = job(&instance, "dotted", "test.echo", json!({}));
    dotted.instance_id = "a.b".into();
    dotted.job_id = "dotted-1".into();
    publish(&bus, &dotted).await;
    // Garbage as large as the server takes: its dead letter, original included, would not be.
    let max_payload = bus.client.server_info().max_payload;
    let huge = vec![0xff_u8; max_payload - 4096];
    publish_raw(&bus, &subject::job("test.echo"), "huge-1", huge.clone()).await;
    publish(&bus, &job(&instance, "good", "test.echo", json!({"n": 1}))).await;

    let result = next_result(&mut results, 10 * SECOND).await;
    assert_eq!(result.step_id, "good");
    assert_eq!(result.status, JobStatus::Succeeded as i32);
    let letters = wait_for_dead_letters(&bus, 2, 10 * SECOND).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let dotted = letters
        .iter()
        .find(|l| l.error.contains("instance_id"))
        .expect("the dotted job's letter");
    assert_eq!(dotted.reason, DeadLetterReason::Decode as i32);
    assert!(
        dotted.error.contains("is not a subject token"),
        "{}",
        dotted.error
    );
    let cut = letters
        .iter()
        .find(|l| l.payload_truncated)
        .expect("the huge message's letter, cut to fit");
    assert_eq!(cut.reason, DeadLetterReason::Decode as i32);
    assert_eq!(cut.payload_size, huge.len() as u64);
    assert!(huge.starts_with(&cut.payload));
    let info = consumer_info(&bus).await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));

    stop.cancel();
    task.await.unwrap().unwrap();
}
