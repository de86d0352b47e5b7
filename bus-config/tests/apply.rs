//! `apply` and `status` against a real `nats-server -js` on a free port (the shared test
//! server, whose store limit does not depend on the disk space left).

use std::time::Duration;

use switchyard_bus_config::{
    ApplyOptions, BusConfig, ByteSize, DeliverPolicy, ObjectKind, Outcome, apply, status,
};
use switchyard_proto::{stream, subject};
use switchyard_test_support::NatsServer;

/// A JetStream context on `server`.
async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(server.client().await)
}

#[tokio::test]
async fn apply_creates_then_converges_then_updates_drift() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let cfg = BusConfig::default();
    let streams = cfg.stream_specs().len();
    let consumers = cfg.consumer_specs().len();
    let buckets = cfg.kv_specs().len();

    // Nothing exists yet: status says so rather than failing.
    let before = status(&js, &cfg).await.expect("status of an empty server");
    assert!(before.any_missing());
    assert!(before.streams.iter().all(|s| s.counts.is_none()));
    assert_eq!(before.dlq.messages, None);

    let first = apply(&js, &cfg, ApplyOptions::default())
        .await
        .expect("first apply");
    assert_eq!(
        first.objects.len(),
        streams + buckets + 1 + consumers,
        "{first}"
    );
    assert!(
        first.objects.iter().all(|o| o.outcome == Outcome::Created),
        "{first}"
    );
    assert!(first.changed());

    let second = apply(&js, &cfg, ApplyOptions::default())
        .await
        .expect("second apply");
    assert!(
        !second.changed(),
        "second apply must change nothing:\n{second}"
    );
    assert!(
        second
            .objects
            .iter()
            .all(|o| o.outcome == Outcome::Unchanged),
        "{second}"
    );
    assert!(
        second.to_string().contains("stream    WF_INBOX"),
        "{second}"
    );
    assert!(
        second.to_string().lines().all(|l| l.ends_with("unchanged")),
        "{second}"
    );

    // Growing the job streams is an in-place update, named in the report.
    let mut bigger = cfg.clone();
    bigger.jobs.stream.max_bytes = Some(ByteSize(2 << 30));
    bigger.consumers.ledger_usage.ack_wait = Duration::from_secs(60);
    bigger.objects.max_age = Some(Duration::from_secs(24 * 3600));
    let third = apply(&js, &bigger, ApplyOptions::default())
        .await
        .expect("update");
    assert!(third.changed());
    for kind in &bigger.jobs.kinds {
        let object = third
            .object(ObjectKind::Stream, &stream::jobs(kind))
            .expect("job stream");
        let Outcome::Updated { fields } = &object.outcome else {
            panic!("expected {} updated:\n{third}", object.name);
        };
        assert_eq!(fields.len(), 1, "{third}");
        assert_eq!(fields[0].field, "max_bytes");
        assert_eq!(
            (fields[0].server.as_str(), fields[0].declared.as_str()),
            ("1GiB", "2GiB")
        );
    }
    let ledger = third
        .object(
            ObjectKind::Consumer,
            &format!("{}/{}", stream::USAGE, stream::LEDGER_USAGE),
        )
        .expect("ledger consumer");
    assert!(
        matches!(&ledger.outcome, Outcome::Updated { fields } if fields[0].field == "ack_wait"),
        "{third}"
    );
    let objects = third
        .object(ObjectKind::ObjectStore, stream::WF_OBJECTS_BUCKET)
        .expect("object store");
    assert!(
        matches!(&objects.outcome, Outcome::Updated { fields } if fields[0].field == "max_age"),
        "{third}"
    );
    let inbox = third
        .object(ObjectKind::Stream, stream::WF_INBOX)
        .expect("inbox");
    assert_eq!(inbox.outcome, Outcome::Unchanged);
    let info = js
        .get_stream(stream::jobs("ai"))
        .await
        .expect("JOBS_AI")
        .cached_info()
        .clone();
    assert_eq!(
        info.config.max_bytes,
        2 << 30,
        "the server has the new limit"
    );
    let again = apply(&js, &bigger, ApplyOptions::default())
        .await
        .expect("apply again");
    assert!(!again.changed(), "{again}");

    // A change the server cannot make in place is reported, not forced.
    let mut other_policy = bigger.clone();
    other_policy.consumers.ledger_events.deliver_policy = DeliverPolicy::New;
    let fourth = apply(&js, &other_policy, ApplyOptions::default())
        .await
        .expect("drift");
    assert!(fourth.needs_action());
    assert!(!fourth.changed(), "{fourth}");
    let events = fourth
        .object(
            ObjectKind::Consumer,
            &format!("{}/{}", stream::WF_EVENTS, stream::LEDGER_EVENTS),
        )
        .expect("ledger-events");
    let Outcome::DriftNeedsAction { fields, updated } = &events.outcome else {
        panic!("expected drift needing action:\n{fourth}");
    };
    assert_eq!(fields[0].field, "deliver_policy");
    assert!(updated.is_empty());

    // Every declared object is there, empty.
    let report = status(&js, &cfg).await.expect("status");
    assert!(!report.any_missing(), "{report}");
    assert_eq!(report.streams.len(), streams + buckets + 1);
    for s in &report.streams {
        let counts = s.counts.expect("present");
        assert_eq!((counts.messages, counts.bytes), (0, 0), "{}", s.name);
    }
    let inbox = report
        .streams
        .iter()
        .find(|s| s.name == stream::WF_INBOX)
        .expect("inbox");
    assert_eq!(inbox.counts.expect("present").consumers, 3);
    assert_eq!(report.consumers.len(), consumers);
    for c in &report.consumers {
        let counts = c.counts.expect("present");
        assert_eq!(
            (
                counts.num_pending,
                counts.num_ack_pending,
                counts.num_redelivered
            ),
            (0, 0, 0)
        );
    }
    assert_eq!(report.dlq.messages, Some(0));
    let text = report.to_string();
    for name in cfg.stream_specs().iter().map(|s| &s.name) {
        assert!(text.contains(name.as_str()), "{name} not shown:\n{text}");
    }
    for c in cfg.consumer_specs() {
        assert!(text.contains(&format!("{}/{}", c.stream, c.name)), "{text}");
    }
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["dlq"]["messages"], 0);
}

#[tokio::test]
async fn status_counts_dead_letters_per_kind() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let cfg = BusConfig::default();
    apply(&js, &cfg, ApplyOptions::default())
        .await
        .expect("apply");
    for subject in [subject::dlq("ai"), subject::dlq("ai")] {
        js.publish(subject, "x".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    js.publish(subject::dlq("test"), "x".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let report = status(&js, &cfg).await.expect("status");
    assert_eq!(report.dlq.messages, Some(3));
    let (ai, test) = (subject::dlq("ai"), subject::dlq("test"));
    assert_eq!(report.dlq.by_subject.get(&ai), Some(&2));
    assert_eq!(report.dlq.by_subject.get(&test), Some(&1));
    let line = format!("dead letters: 3 ({ai} 2, {test} 1)");
    assert!(report.to_string().contains(&line), "{report}");
}

#[tokio::test]
async fn apply_refuses_an_invalid_replicas_override() {
    let server = NatsServer::start().await;
    let js = jetstream(&server).await;
    let error = apply(
        &js,
        &BusConfig::default(),
        ApplyOptions { replicas: Some(0) },
    )
    .await
    .expect_err("0 replicas");
    assert!(
        error
            .to_string()
            .contains("replicas override: 0 is out of range"),
        "{error}"
    );
}
