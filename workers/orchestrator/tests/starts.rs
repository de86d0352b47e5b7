//! Time and events in workflows, on a real server: sleeping steps that survive the
//! orchestrator's death, delayed starts, schedules run by the bus's message scheduler, and
//! starts from a tenant's events.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt as _;
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

/// An event on a trigger's subject starts one instance, also when published twice with the
/// same message id; another message starts another; another tenant's event on the same
/// subject starts nothing of this tenant's.
#[tokio::test]
async fn an_event_on_a_trigger_subject_starts_exactly_one_instance() {
    let env = env().await;
    env.register(
        r#"
name: on_order
version: 1
input:
  order: { type: string, required: true }
steps:
  - { id: e, operation: test.echo, input: { said: "{{ input.order }}" } }
output: "{{ steps.e.output.said }}"
triggers:
  - subject: orders.created
    input: { order: "{{ event.order.id }}" }
"#,
    )
    .await;
    let mut started = env
        .client
        .subscribe(format!("wf.events.*.*.{}", event::STARTED))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let publish = |tenant: &str, msg_id: &str, order: &str| {
        let subject = subject::tenant_event(tenant, "orders.created");
        let msg_id = msg_id.to_owned();
        let body = serde_json::to_vec(&json!({ "order": { "id": order } })).unwrap();
        let bus = &env.bus;
        async move { bus.publish(&subject, &msg_id, body).await }
    };
    publish(TENANT, "order-1", "A-1").await;
    publish(TENANT, "order-1", "A-1").await;
    publish(TENANT, "order-2", "A-2").await;
    publish("globex", "order-3", "G-3").await;

    let mut instances = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, started.next()).await {
        let e: switchyard_proto::WorkflowEvent =
            switchyard_proto::decode(switchyard_proto::ContentType::Protobuf, &msg.payload)
                .expect("an event");
        instances.insert(e.instance_id.clone(), (e.tenant.clone(), event_data(&e)));
    }
    assert_eq!(instances.len(), 2, "{instances:#?}");
    let mut outputs = Vec::new();
    for (id, (tenant, data)) in &instances {
        assert_eq!(tenant, TENANT);
        assert_eq!(data["labels"]["trigger"], "orders.created", "{data}");
        let status = env.finished(id, T).await;
        assert_eq!(status["status"], "completed", "{status:#}");
        outputs.push(status["output"].clone());
    }
    outputs.sort_by_key(ToString::to_string);
    assert_eq!(outputs, [json!("A-1"), json!("A-2")]);
}

/// 50 starts with the same key and `limit: 2`, on two engine processes: never more than 2
/// run at once (checked from their events), all 50 complete, and another key's instance is
/// not held up by that queue. (The order slots are granted in is the unit tests' business:
/// two replicas take the starts in parallel, so the order they queue in is not the order
/// they were published in.)
#[tokio::test]
async fn a_concurrency_key_lets_limit_instances_run_at_once_across_replicas() {
    let mut env = bus(Duration::from_secs(2)).await;
    env.worker("w1").await;
    let mut first = orchestrator_process(&env.server, "o-first");
    let mut second = orchestrator_process(&env.server, "o-second");
    answer(&env).await;
    env.register(
        r#"
name: keyed
version: 1
input:
  customer: { type: string, required: true }
concurrency: { key: "{{ input.customer }}", limit: 2 }
steps:
  - { id: nap, operation: test.sleep, input: { ms: 100 } }
"#,
    )
    .await;
    let mut events = env
        .client
        .subscribe(format!("wf.events.{TENANT}.>"))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let mut busy = Vec::new();
    for i in 0..50 {
        let id = format!("busy-{i:02}");
        env.start_as("keyed", &id, json!({ "customer": "busy" }))
            .await;
        busy.push(id);
    }
    env.start_as("keyed", "quiet", json!({ "customer": "quiet" }))
        .await;

    // Each instance's start and end, from the events (a copy published twice counts once).
    let mut spans: std::collections::BTreeMap<String, (Option<i64>, Option<i64>)> =
        std::collections::BTreeMap::new();
    let mut quiet_done_while_queued = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while spans.values().filter(|(_, end)| end.is_some()).count() < 51 {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("every instance finishes in time")
            .expect("subscription open");
        let e: switchyard_proto::WorkflowEvent =
            switchyard_proto::decode(switchyard_proto::ContentType::Protobuf, &msg.payload)
                .expect("an event");
        let span = spans.entry(e.instance_id.clone()).or_default();
        match e.r#type.as_str() {
            t if t == event::STARTED => span.0 = span.0.or(Some(e.at_ms)),
            t if t == event::COMPLETED => {
                span.1 = span.1.or(Some(e.at_ms));
                if e.instance_id == "quiet" {
                    let finished = spans.values().filter(|(_, end)| end.is_some()).count();
                    quiet_done_while_queued = Some(finished);
                }
            }
            t if t == event::FAILED || t == event::CANCELLED => panic!("{e:?}"),
            _ => {}
        }
    }
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for id in &busy {
        let (Some(start), Some(end)) = spans[id] else {
            panic!("{id}: {:?}", spans[id]);
        };
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // Ends before starts at the same millisecond: a slot is given back before it is taken.
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut running, mut most) = (0, 0);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} instances of one key ran at once");
    assert_eq!(most, 2, "the limit is used");
    let quiet = quiet_done_while_queued.expect("the other key's instance completed");
    assert!(
        quiet < 25,
        "the other key waited behind the busy one: it finished {quiet}th"
    );
    let status = env.status("busy-49").await;
    assert_eq!(status["status"], "completed", "{status:#}");
    // The last one out of a key removes it: no key is left behind.
    let slots = env
        .js
        .get_key_value(switchyard_proto::stream::CONCURRENCY_BUCKET)
        .await
        .expect("the bucket");
    let mut left = Vec::new();
    let mut keys = slots.keys().await.expect("keys");
    while let Some(key) = keys.next().await {
        left.push(key.expect("a key"));
    }
    assert!(left.is_empty(), "keys left behind: {left:?}");
    first.kill().ok();
    second.kill().ok();
    first.wait().ok();
    second.wait().ok();
}

/// A step with `rate_limit` of 10 per second, in 100 instances on two engine replicas: its
/// runs spread over at least 9 s (a burst of 10, then one per 100 ms), none is lost.
#[tokio::test]
async fn a_step_rate_limit_spreads_its_runs_and_loses_none() {
    let mut env = env().await;
    env.orchestrator("o2").await;
    env.register(
        r#"
name: paced
version: 1
input:
  n: { type: integer, required: true }
steps:
  - id: call
    operation: test.echo
    rate_limit: { key: "provider", limit: 10, per: 1s }
    input: { n: "{{ input.n }}" }
output: "{{ steps.call.output.n }}"
"#,
    )
    .await;
    let mut events = env
        .client
        .subscribe(format!("wf.events.{TENANT}.>"))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let mut ids = Vec::new();
    for n in 0..100 {
        let id = format!("paced-{n:03}");
        env.start_as("paced", &id, json!({ "n": n })).await;
        ids.push(id);
    }
    let mut delayed: std::collections::BTreeMap<String, i64> = Default::default();
    let mut scheduled: std::collections::BTreeMap<String, i64> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while scheduled.len() < 100 {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("every step runs in time")
            .expect("subscription open");
        let e: switchyard_proto::WorkflowEvent =
            switchyard_proto::decode(switchyard_proto::ContentType::Protobuf, &msg.payload)
                .expect("an event");
        match e.r#type.as_str() {
            t if t == event::STEP_DELAYED => {
                delayed.entry(e.instance_id).or_insert(e.at_ms);
            }
            t if t == event::STEP_SCHEDULED => {
                scheduled.entry(e.instance_id).or_insert(e.at_ms);
            }
            _ => {}
        }
    }
    let first_asked = delayed.values().min().copied().expect("delayed events");
    let mut runs: Vec<i64> = scheduled.values().copied().collect();
    runs.sort_unstable();
    let spread = runs[99] - first_asked;
    assert!(spread >= 9_000, "100 runs at 10/s spread over {spread} ms");
    // No second holds more than the burst and the second's own turns.
    for (i, &at) in runs.iter().enumerate() {
        let within = runs[i..].iter().take_while(|&&t| t < at + 1_000).count();
        assert!(within <= 20, "{within} runs within a second from {at}");
    }
    for (n, id) in ids.iter().enumerate() {
        let status = env.finished(id, T).await;
        assert_eq!(status["status"], "completed", "{status:#}");
        assert_eq!(status["output"], n, "{status:#}");
    }
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

/// A schedule every 2 s, with two orchestrator replicas, one of them killed half-way: one
/// instance per tick over 20 s, none twice; a cron schedule in a time zone fires too; a
/// version without schedules stops them.
#[tokio::test]
async fn a_schedule_starts_exactly_one_instance_per_tick_across_replicas() {
    let mut env = bus(Duration::from_secs(2)).await;
    env.worker("w1").await;
    let mut first = orchestrator_process(&env.server, "o-first");
    let mut second = orchestrator_process(&env.server, "o-second");
    answer(&env).await;
    let mut started = env
        .client
        .subscribe(format!("wf.events.{TENANT}.*.{}", event::STARTED))
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let ticker = |version: u32, schedules: &str| {
        format!(
            r#"
name: ticker
version: {version}
input:
  said: {{ type: string, required: true }}
steps:
  - {{ id: e, operation: test.echo, input: {{ said: "{{{{ input.said }}}}" }} }}
{schedules}"#
        )
    };
    env.register(&ticker(
        1,
        "schedules:\n  - { every: 2s, input: { said: tick } }\n",
    ))
    .await;
    env.register(
        r#"
name: crony
version: 1
steps:
  - { id: e, operation: test.echo, input: { said: cron } }
schedules:
  - { name: berlin, cron: "*/2 * * * * *", time_zone: Europe/Berlin }
"#,
    )
    .await;

    let began = tokio::time::Instant::now();
    let mut ticks: Vec<(String, i64)> = Vec::new();
    let mut cron = Vec::new();
    let mut killed = false;
    while began.elapsed() < Duration::from_secs(20) {
        if !killed && began.elapsed() >= Duration::from_secs(10) {
            first.kill().expect("SIGKILL");
            killed = true;
        }
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), started.next()).await
        else {
            continue;
        };
        let e: switchyard_proto::WorkflowEvent =
            switchyard_proto::decode(switchyard_proto::ContentType::Protobuf, &msg.payload)
                .expect("an event");
        let data = event_data(&e);
        match data["workflow"].as_str() {
            Some("ticker") => {
                assert_eq!(data["labels"]["schedule"], "0", "{data}");
                assert_eq!(data["input"]["said"], "tick", "{data}");
                ticks.push((e.instance_id.clone(), e.at_ms));
            }
            Some("crony") => cron.push(e.instance_id.clone()),
            other => panic!("an unexpected start of {other:?}"),
        }
    }
    let _ = first.kill();
    first.wait().expect("reaped");
    // An event may be published again (ADR 4), so instances are counted, not deliveries.
    let ids: std::collections::BTreeSet<&String> = ticks.iter().map(|(id, _)| id).collect();
    assert!(
        (9..=11).contains(&ids.len()),
        "{} instances in 20 s of a 2 s schedule: {ticks:?}",
        ids.len()
    );
    // One per tick: the firings the instances are named after are 2 s apart.
    let mut fired: Vec<i64> = ids
        .iter()
        .map(|id| {
            id.rsplit('-')
                .next()
                .unwrap()
                .parse()
                .expect("ms in the id")
        })
        .collect();
    fired.sort_unstable();
    for pair in fired.windows(2) {
        assert!(
            pair[1] - pair[0] >= 1_500,
            "two starts for one tick: {fired:?}"
        );
    }
    let cron: std::collections::BTreeSet<String> = cron.into_iter().collect();
    assert!(
        cron.len() >= 5,
        "the cron schedule fired {} times",
        cron.len()
    );
    for id in &ids {
        let status = env.finished(id, T).await;
        assert_eq!(status["status"], "completed", "{status:#}");
    }

    // A version without schedules removes them: no start after it settles.
    env.register(&ticker(2, "")).await;
    env.query(
        switchyard_proto::orchestrator::endpoint::DEFINITIONS_DELETE,
        json!({ "tenant": TENANT, "name": "crony" }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while tokio::time::timeout(Duration::from_millis(100), started.next())
        .await
        .is_ok()
    {}
    let quiet = tokio::time::timeout(Duration::from_secs(5), started.next()).await;
    assert!(quiet.is_err(), "a start after the schedules were removed");
    second.kill().ok();
    second.wait().ok();
}
