//! The sampled gauges and the product's workflow histogram, read from the registries a process
//! serves on `/metrics`: consumer lag (worker loop and orchestrator), DLQ depth (orchestrator),
//! and `workflow_execution_duration_seconds{tenant_id, workflow_type, status}`.

mod common;

use std::time::Duration;

use common::*;
use prometheus::{Registry, proto::MetricFamily};
use serde_json::json;
use switchyard_proto::{Job, encode_proto, stream, subject};
use switchyard_runtime::{Config, Worker, config::WorkerSettings, metrics::ConsumerLag};
use switchyard_test_worker::TestWorker;
use tokio_util::sync::CancellationToken;

/// Sampling runs every five seconds in production; a loaded machine gets a generous deadline.
const T: Duration = Duration::from_secs(40);

/// The value of gauge `name` with every label in `labels`, if the registry has it.
fn gauge(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
    let families: Vec<MetricFamily> = registry.gather();
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_gauge().get_value() as i64)
}

async fn gauge_becomes(
    registry: &Registry,
    name: &str,
    labels: &[(&str, &str)],
    want: i64,
) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let value = gauge(registry, name, labels);
        if value == Some(want) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn test_job(n: usize) -> Job {
    Job {
        job_id: format!("lag-{n}"),
        tenant: TENANT.into(),
        operation: "test.echo".into(),
        input: serde_json::to_vec(&json!({ "n": n })).unwrap(),
        ..Job::default()
    }
}

#[tokio::test]
async fn consumer_lag_is_the_backlog_until_a_worker_takes_it() {
    let env = bus(Duration::from_secs(30)).await;
    for n in 0..3 {
        env.publish(
            &subject::job("test.echo"),
            &format!("lag-{n}"),
            encode_proto(&test_job(n)),
        )
        .await;
    }
    let stream_name = stream::jobs("test");
    let consumer_name = stream::worker_consumer("test");
    let labels = [
        ("stream", stream_name.as_str()),
        ("consumer", consumer_name.as_str()),
    ];

    // Nobody pulls yet: the sampler sees the three jobs waiting.
    let registry = Registry::new();
    let lag = ConsumerLag::register(&registry).unwrap();
    let consumer = env
        .js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .get_consumer(&consumer_name)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(
        lag.clone()
            .sample(vec![consumer], Duration::from_millis(50), stop.clone()),
    );
    assert_eq!(
        gauge_becomes(
            &registry,
            "switchyard_consumer_pending_messages",
            &labels,
            3
        )
        .await,
        Some(3)
    );
    assert_eq!(
        gauge(
            &registry,
            "switchyard_consumer_ack_pending_messages",
            &labels
        ),
        Some(0)
    );

    // A worker replica drains it, and its own /metrics says so.
    let worker_registry = Registry::new();
    let config = Config {
        nats_url: env.server.url(),
        worker: WorkerSettings {
            pull_expiry: Duration::from_millis(500),
            worker_id: Some("lag".into()),
            ..WorkerSettings::default()
        },
        ..Config::default()
    };
    let worker = Worker::new(
        env.server.client().await,
        &config,
        TestWorker,
        &worker_registry,
    )
    .unwrap();
    let worker_stop = CancellationToken::new();
    tokio::spawn(worker.run(worker_stop.clone()));
    assert_eq!(
        gauge_becomes(
            &registry,
            "switchyard_consumer_pending_messages",
            &labels,
            0
        )
        .await,
        Some(0)
    );
    assert_eq!(
        gauge_becomes(
            &worker_registry,
            "switchyard_consumer_pending_messages",
            &labels,
            0
        )
        .await,
        Some(0),
        "the worker loop samples the consumer it pulls from"
    );
    assert!(
        gauge(
            &worker_registry,
            "switchyard_consumer_ack_pending_messages",
            &labels
        )
        .is_some()
    );
    stop.cancel();
    worker_stop.cancel();
}

#[tokio::test]
async fn the_orchestrator_reports_dlq_depth_its_consumers_and_durations_by_tenant() {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    let index = env.orchestrator("o1").await;
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
    let registry = env.registries()[index].clone();

    assert_eq!(
        gauge_becomes(&registry, "switchyard_dlq_messages", &[], 1).await,
        Some(1),
        "the malformed start is the one dead letter"
    );
    for consumer in [
        stream::ORCHESTRATOR_COMMANDS,
        stream::ORCHESTRATOR_RESULTS,
        stream::ORCHESTRATOR_TIMERS,
    ] {
        let labels = [("stream", stream::WF_INBOX), ("consumer", consumer)];
        assert_eq!(
            gauge_becomes(
                &registry,
                "switchyard_consumer_pending_messages",
                &labels,
                0
            )
            .await,
            Some(0),
            "{consumer}"
        );
    }

    let histogram = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "workflow_execution_duration_seconds")
        .expect("the histogram is registered");
    let finished: Vec<_> = histogram
        .get_metric()
        .iter()
        .map(|m| {
            let labels: Vec<(String, String)> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            (labels, m.get_histogram().get_sample_count())
        })
        .collect();
    assert_eq!(
        finished,
        vec![(
            vec![
                ("status".to_owned(), "completed".to_owned()),
                ("tenant_id".to_owned(), TENANT.to_owned()),
                ("workflow_type".to_owned(), "one".to_owned()),
            ],
            1
        )],
    );
}
