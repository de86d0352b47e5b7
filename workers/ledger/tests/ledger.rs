//! The ledger on a real nats-server (with the bus applied) and its own Postgres database:
//! usage delivered twice is counted once and the rollups equal the events; the instance read
//! model follows workflows run by the real orchestrator and `test` worker; a rebuild from the
//! streams reproduces every table; a malformed message is dead-lettered and the next batch is
//! stored.

use std::{collections::BTreeMap, time::Duration};

use async_nats::HeaderMap;
use prometheus::Registry;
use serde_json::{Value, json};
use sqlx::{PgPool, Row as _};
use switchyard_ledger::{Ledger, Source, store};
use switchyard_proto::{
    AuditEvent, ContentType, DeadLetter, DeadLetterReason, Job, JobStatus, UsageEvent, decode,
    encode_proto, header, stream, subject,
};
use switchyard_runtime::config::LedgerSettings;
use switchyard_test_harness::{Bus, Components, TestDatabase, engine, jobs, metrics};
use tokio_util::sync::CancellationToken;

use switchyard_test_harness::TENANT;
const T: Duration = Duration::from_secs(20);
/// 2026-01-15T12:00:00Z and the next day, in ms.
const DAY1: i64 = 1_768_478_400_000;
const DAY2: i64 = DAY1 + 86_400_000;

struct Env {
    bus: Bus,
    db: TestDatabase,
    registry: Registry,
    components: Components,
    ledger_stop: CancellationToken,
    /// The running ledger's task, to wait for once stopped.
    ledger: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::ops::Deref for Env {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.ledger_stop.cancel();
    }
}

async fn env(batch_size: usize) -> Env {
    let env = env_without_ledger().await;
    env.start_ledger(batch_size).await;
    env
}

/// A bus and a migrated database, with no ledger reading yet.
async fn env_without_ledger() -> Env {
    let bus = switchyard_test_harness::bus().await;
    let db = switchyard_test_harness::database().await;
    store::migrate(&db.pool).await.expect("migrate");
    Env {
        bus,
        db,
        registry: Registry::new(),
        components: Components::default(),
        ledger_stop: CancellationToken::new(),
        ledger: std::sync::Mutex::new(None),
    }
}

impl Env {
    async fn start_ledger(&self, batch_size: usize) {
        let settings = LedgerSettings {
            batch_size,
            batch_wait: Duration::from_millis(50),
            lag_interval: Duration::from_millis(100),
        };
        let ledger =
            Ledger::build(self.db.pool.clone(), &settings, "l1", &self.registry).expect("ledger");
        let run = ledger.run(
            self.bus
                .connect_as(&switchyard_test_support::Role::Ledger)
                .await,
            self.ledger_stop.clone(),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("the ledger stopped: {e}");
            }
        });
        *self.ledger.lock().unwrap() = Some(task);
    }

    /// Stops the ledger and waits until it has.
    async fn stop_ledger(&self) {
        self.ledger_stop.cancel();
        let task = self.ledger.lock().unwrap().take();
        if let Some(task) = task {
            task.await.expect("the ledger task");
        }
    }

    /// Starts a `test` worker and an orchestrator in this process.
    async fn engine(&mut self) {
        self.components = Components::engine(&self.bus).await;
    }

    async fn register(&self, yaml: &str) {
        engine::register(&self.client, TENANT, yaml).await;
    }

    async fn start(&self, workflow: &str, instance: &str, input: Value) {
        engine::start_as(&self.bus, TENANT, workflow, instance, input).await;
    }

    /// Publishes to a stream and waits for the PubAck; without `msg_id` the stream stores
    /// every copy.
    async fn publish(
        &self,
        subject_name: &str,
        msg_id: Option<&str>,
        content_type: Option<&str>,
        payload: Vec<u8>,
    ) {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(header::MSG_ID, id);
        }
        if let Some(ct) = content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        self.bus.publish_with(subject_name, headers, payload).await;
    }

    /// Waits until every durable consumer of the ledger has nothing pending or unacked.
    async fn caught_up(&self) {
        let consumers: Vec<(&str, &str)> = Source::ALL
            .iter()
            .map(|s| (s.stream(), s.consumer()))
            .collect();
        self.bus.wait_idle(&consumers, T).await;
    }

    /// Asks the ledger's service endpoint `svc.ledger.<op>`.
    async fn ask(&self, op: &str, tenant: &str, input: Value) -> Result<Value, String> {
        let job = Job {
            job_id: format!("q-{}", switchyard_proto::now_ms()),
            tenant: tenant.into(),
            operation: format!("ledger.{op}"),
            input: serde_json::to_vec(&input).unwrap(),
            ..Job::default()
        };
        let result = jobs::ask_service(&self.client, &job, T).await;
        if result.status == JobStatus::Succeeded as i32 {
            Ok(serde_json::from_slice(&result.output).unwrap())
        } else {
            Err(result.error.map(|e| e.message).unwrap_or_default())
        }
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metrics::counter(std::slice::from_ref(&self.registry), name, labels)
    }
}

fn usage(id: usize, meter: &str, quantity: f64, at_ms: i64, instance: &str) -> UsageEvent {
    UsageEvent {
        event_id: format!("job-{id}-{meter}-0"),
        tenant: TENANT.into(),
        meter: meter.into(),
        quantity,
        unit: if meter == "tokens" { "token" } else { "card" }.into(),
        instance_id: instance.into(),
        step_id: "s".into(),
        operation: "ai.generate".into(),
        at_ms,
        attributes: [("model".to_owned(), "local".to_owned())].into(),
    }
}

/// Every row of every ledger table, as JSON text, sorted.
async fn snapshot(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for table in store::TABLES {
        let sql = format!("SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .expect("select");
        out.push((
            table.to_owned(),
            rows.iter().map(|r| r.get::<String, _>(0)).collect(),
        ));
    }
    out
}

#[tokio::test]
async fn usage_delivered_twice_is_counted_once_and_rollups_equal_the_events() {
    let env = env(7).await;
    // 30 operations: 20 token counts of 0.1 (exact in the ledger, not in f64) over two days,
    // 10 card fetches; each event stored twice in the stream, some copies as JSON.
    let mut events = Vec::new();
    for i in 0..20 {
        let at = if i % 2 == 0 { DAY1 } else { DAY2 };
        events.push(usage(i, "tokens", 0.1, at + i as i64, "i-1"));
    }
    for i in 20..30 {
        events.push(usage(i, "cards_fetched", 1.0, DAY1 + i as i64, ""));
    }
    for round in 0..2 {
        for (n, e) in events.iter().enumerate() {
            let subject_name = subject::usage(TENANT, &e.meter);
            if (n + round) % 3 == 0 {
                let body = serde_json::to_vec(e).unwrap();
                env.publish(&subject_name, None, Some(header::JSON), body)
                    .await;
            } else {
                env.publish(&subject_name, None, None, encode_proto(e))
                    .await;
            }
        }
    }
    let info = env
        .js
        .get_stream(stream::USAGE)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone();
    assert_eq!(info.messages, 60, "the stream holds both copies");
    env.caught_up().await;

    let pool = &env.db.pool;
    let (count, tokens, cards): (i64, String, String) = sqlx::query(
        "SELECT count(*),
                (SELECT sum(quantity)::text FROM ledger.usage_events WHERE meter = 'tokens'),
                (SELECT sum(quantity)::text FROM ledger.usage_events WHERE meter = 'cards_fetched')
         FROM ledger.usage_events",
    )
    .fetch_one(pool)
    .await
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .unwrap();
    assert_eq!(count, 30, "one row per operation");
    assert_eq!(tokens, "2.0", "20 × 0.1, exactly");
    assert_eq!(cards, "10");

    // The rollups are exactly the events summed per tenant, day, meter and unit.
    let mismatch: i64 = sqlx::query(
        "WITH expected AS (
             SELECT tenant, day, meter, unit, sum(quantity) AS quantity, count(*) AS events
             FROM ledger.usage_events GROUP BY 1, 2, 3, 4),
         actual AS (SELECT tenant, day, meter, unit, quantity, events FROM ledger.usage_daily)
         SELECT count(*) FROM ((SELECT * FROM expected EXCEPT SELECT * FROM actual)
                               UNION ALL (SELECT * FROM actual EXCEPT SELECT * FROM expected)) d",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(mismatch, 0);
    let days: Vec<(String, String, f64)> = sqlx::query(
        "SELECT day::text, meter, quantity::float8 FROM ledger.usage_daily ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    assert_eq!(
        days,
        [
            ("2026-01-15".into(), "cards_fetched".into(), 10.0),
            ("2026-01-15".into(), "tokens".into(), 1.0),
            ("2026-01-16".into(), "tokens".into(), 1.0),
        ]
    );

    let usage_stream = [("stream", stream::USAGE)];
    let outcome = |o: &str| {
        env.counter(
            "switchyard_ledger_messages_total",
            &[usage_stream[0], ("outcome", o)],
        )
    };
    assert_eq!((outcome("stored"), outcome("duplicate")), (30.0, 30.0));
    let quantity = env.counter(
        "switchyard_usage_quantity_total",
        &[("tenant_id", TENANT), ("meter", "cards_fetched")],
    );
    assert_eq!(quantity, 10.0);

    // The query endpoint answers from the rollups.
    let by_meter = env
        .ask(
            "usage",
            TENANT,
            json!({ "from": "2026-01-01", "to": "2026-01-31" }),
        )
        .await
        .unwrap();
    let rows = by_meter["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{by_meter:#}");
    assert_eq!(rows[1]["meter"], "tokens");
    assert!((rows[1]["quantity"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    assert_eq!(rows[1]["events"], 20);
    let other = env
        .ask(
            "usage",
            "globex",
            json!({ "from": "2026-01-01", "to": "2026-01-31" }),
        )
        .await
        .unwrap();
    assert_eq!(other["usage"], json!([]), "another tenant sees nothing");
    let bad = env
        .ask("usage", TENANT, json!({ "from": "2026-02-30" }))
        .await
        .unwrap_err();
    assert!(bad.starts_with("field `from`"), "{bad}");
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_and_the_next_batch_is_stored() {
    let env = env(100).await;
    env.publish(
        &subject::usage(TENANT, "tokens"),
        Some("garbage-1"),
        None,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    env.publish(
        &subject::usage(TENANT, "tokens"),
        Some("garbage-2"),
        Some(header::JSON),
        br#"{"tenant": "acme", "meter": "tokens", "quantity": 3}"#.to_vec(),
    )
    .await;
    env.caught_up().await;
    for i in 0..5 {
        let e = usage(i, "tokens", 2.0, DAY1, "");
        env.publish(
            &subject::usage(TENANT, "tokens"),
            None,
            None,
            encode_proto(&e),
        )
        .await;
    }
    env.caught_up().await;

    let stored: f64 =
        sqlx::query("SELECT COALESCE(sum(quantity), 0)::float8 FROM ledger.usage_events")
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(stored, 10.0, "the batch after the bad messages is stored");

    let dlq = env.js.get_stream(stream::DLQ).await.unwrap();
    let mut letters = Vec::new();
    for seq in 1..=2 {
        let raw = dlq.get_raw_message(seq).await.expect("a dead letter");
        assert_eq!(raw.subject.as_str(), subject::dlq("ledger"));
        let letter: DeadLetter = decode(ContentType::Protobuf, &raw.payload).unwrap();
        letters.push(letter);
    }
    assert_eq!(letters[0].payload, vec![0xff, 0xff, 0xff]);
    assert_eq!(letters[0].reason, DeadLetterReason::Decode as i32);
    assert!(letters[0].error.contains("protobuf"), "{:?}", letters[0]);
    assert_eq!(letters[1].error, "field `event_id` is empty");
    assert_eq!(letters[1].subject, subject::usage(TENANT, "tokens"));
    assert_eq!(
        env.counter(
            "switchyard_ledger_messages_total",
            &[("stream", stream::USAGE), ("outcome", "malformed")]
        ),
        2.0
    );
}

/// One batch holding good events, an undecodable one and one the database refuses (a NUL in
/// an attribute, which `jsonb` cannot hold): the two bad ones are dead-lettered with their
/// reasons and every good one is stored.
#[tokio::test]
async fn a_batch_with_bad_messages_stores_its_good_ones_and_dead_letters_only_the_bad() {
    let env = env_without_ledger().await;
    let tokens = subject::usage(TENANT, "tokens");
    let good = |i| encode_proto(&usage(i, "tokens", 2.0, DAY1, ""));
    let mut refused = usage(9, "tokens", 5.0, DAY1, "");
    refused
        .attributes
        .insert("model".into(), "nul\u{0}inside".into());
    env.publish(&tokens, None, None, good(0)).await;
    env.publish(&tokens, None, None, vec![0xff, 0xff, 0xff])
        .await;
    env.publish(&tokens, None, None, good(1)).await;
    env.publish(&tokens, None, None, encode_proto(&refused))
        .await;
    env.publish(&tokens, None, None, good(2)).await;
    // Everything is in the stream before the ledger reads: its first batch holds all five.
    env.start_ledger(100).await;
    env.caught_up().await;

    let ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM ledger.usage_events ORDER BY event_id")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(ids, ["job-0-tokens-0", "job-1-tokens-0", "job-2-tokens-0"]);
    let daily: f64 = sqlx::query_scalar("SELECT sum(quantity)::float8 FROM ledger.usage_daily")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(daily, 6.0);

    let dlq = env.js.get_stream(stream::DLQ).await.unwrap();
    assert_eq!(dlq.cached_info().state.messages, 2);
    let letter = |seq| {
        let dlq = dlq.clone();
        async move {
            let raw = dlq.get_raw_message(seq).await.expect("a dead letter");
            decode::<DeadLetter>(ContentType::Protobuf, &raw.payload).unwrap()
        }
    };
    let undecodable = letter(1).await;
    assert_eq!(undecodable.reason, DeadLetterReason::Decode as i32);
    assert_eq!(undecodable.payload, vec![0xff, 0xff, 0xff]);
    let refused_letter = letter(2).await;
    assert_eq!(refused_letter.payload, encode_proto(&refused));
    assert!(!refused_letter.error.is_empty(), "{refused_letter:?}");
}

const OK: &str = r#"
name: ok
version: 3
steps:
  - id: greet
    operation: test.echo
    input: { text: "hi" }
  - id: nap
    operation: test.sleep
    needs: [greet]
    input: { ms: 60 }
"#;

const BOOM: &str = r#"
name: boom
version: 1
input:
  who: { type: string, required: true }
steps:
  - id: explode
    operation: test.fail
    input: { mode: permanent }
"#;

const SLOW: &str = r#"
name: slow
version: 1
steps:
  - id: wait
    operation: test.sleep
    input: { ms: 20000 }
"#;

#[tokio::test]
async fn the_read_model_follows_real_workflows_and_a_rebuild_reproduces_every_table() {
    let mut env = env(50).await;
    env.engine().await;
    for yaml in [OK, BOOM, SLOW] {
        env.register(yaml).await;
    }
    env.start("ok", "i-ok-1", json!({})).await;
    env.start("ok", "i-ok-2", json!({})).await;
    env.start("boom", "i-boom", json!({ "who": "x" })).await;
    // Refused at the start (no `who`): failed without ever being started.
    env.start("boom", "i-refused", json!({})).await;
    env.start("slow", "i-slow", json!({})).await;
    // Cancel once its step is under way.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = engine::status(&env.client, TENANT, "i-slow").await;
        if s["status"] == "running" && s["steps"][0]["status"] != "pending" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cancel = switchyard_proto::CancelWorkflow {
        reason: "enough".into(),
        requested_by: "test".into(),
        ..Default::default()
    };
    env.publish(
        &subject::cancel(TENANT, "i-slow"),
        Some("cancel-i-slow"),
        None,
        encode_proto(&cancel),
    )
    .await;

    // Wait for the read model to show every instance finished.
    let deadline = tokio::time::Instant::now() + T;
    let list = loop {
        let list = env.ask("instances", TENANT, json!({})).await.unwrap();
        let finished = list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] != "running")
            .count();
        if finished == 5 {
            break list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id: BTreeMap<&str, &Value> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance_id"].as_str().unwrap(), i))
        .collect();
    let ok = by_id["i-ok-1"];
    assert_eq!(
        (&ok["workflow"], &ok["version"], &ok["status"]),
        (&json!("ok"), &json!(3), &json!("completed"))
    );
    assert_eq!(ok["correlation_id"], "corr-i-ok-1");
    let took = ok["duration_ms"].as_i64().unwrap();
    assert!(took >= 60, "the sleep step took 60 ms: {ok:#}");
    assert_eq!(
        ok["finished_at_ms"].as_i64().unwrap() - ok["started_at_ms"].as_i64().unwrap(),
        took
    );
    let boom = by_id["i-boom"];
    assert_eq!(
        (&boom["status"], &boom["error_code"], &boom["failed_step"]),
        (&json!("failed"), &json!("permanent"), &json!("explode"))
    );
    let refused = by_id["i-refused"];
    assert_eq!(
        (
            &refused["workflow"],
            &refused["status"],
            &refused["error_code"],
            &refused["started_at_ms"]
        ),
        (
            &json!("boom"),
            &json!("failed"),
            &json!("invalid_input"),
            &Value::Null
        ),
        "{refused:#}"
    );
    let slow = by_id["i-slow"];
    assert_eq!(
        (&slow["status"], &slow["error_code"]),
        (&json!("cancelled"), &json!("cancelled"))
    );
    assert!(slow["duration_ms"].as_i64().unwrap() < 20_000);

    let stats = env.ask("stats", TENANT, json!({})).await.unwrap();
    let per: BTreeMap<&str, &Value> = stats["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["workflow"].as_str().unwrap(), w))
        .collect();
    assert_eq!(per["ok"]["counts"]["completed"], 2);
    assert_eq!(per["boom"]["counts"]["failed"], 2);
    assert_eq!(per["slow"]["counts"]["cancelled"], 1);
    assert!(per["ok"]["duration_ms"]["p50"].as_f64().unwrap() >= 60.0);

    // A late copy of `started` (stored again in the stream) must not move a finished instance
    // back to running.
    let late = switchyard_proto::WorkflowEvent {
        event_id: "late-started".into(),
        tenant: TENANT.into(),
        instance_id: "i-ok-1".into(),
        r#type: "started".into(),
        data: serde_json::to_vec(&json!({ "workflow": "ok", "version": 3 })).unwrap(),
        at_ms: ok["started_at_ms"].as_i64().unwrap(),
        correlation_id: "corr-i-ok-1".into(),
        ..Default::default()
    };
    env.publish(
        &subject::event(TENANT, "i-ok-1", "started"),
        None,
        None,
        encode_proto(&late),
    )
    .await;
    env.caught_up().await;
    let again = env
        .ask(
            "instances",
            TENANT,
            json!({ "correlation_id": "corr-i-ok-1" }),
        )
        .await
        .unwrap();
    assert_eq!(again["instances"].as_array().unwrap().len(), 1, "{again:#}");
    assert_eq!(&again["instances"][0], ok, "unchanged by the late event");

    // Usage tied to an instance, and audit entries, so the rebuild covers every table.
    for i in 0..3 {
        let e = usage(100 + i, "tokens", 5.0, DAY1, "i-ok-1");
        env.publish(
            &subject::usage(TENANT, "tokens"),
            None,
            None,
            encode_proto(&e),
        )
        .await;
    }
    for (i, action) in ["definition.put", "instance.cancel"].iter().enumerate() {
        let a = AuditEvent {
            event_id: format!("audit-{i}"),
            tenant: TENANT.into(),
            actor: "ada".into(),
            action: (*action).into(),
            target: "i-slow".into(),
            outcome: "ok".into(),
            at_ms: DAY1 + i as i64,
            correlation_id: "c".into(),
            attributes: Default::default(),
        };
        env.publish(
            &subject::audit(TENANT, action),
            None,
            None,
            encode_proto(&a),
        )
        .await;
    }
    env.caught_up().await;
    let by_workflow = env
        .ask(
            "usage",
            TENANT,
            json!({ "from": "2026-01-15", "to": "2026-01-15", "group_by": "workflow" }),
        )
        .await
        .unwrap();
    assert_eq!(by_workflow["usage"][0]["workflow"], "ok", "{by_workflow:#}");
    assert_eq!(by_workflow["usage"][0]["quantity"], 15.0);

    // Stop the live ledger so nothing moves, then rebuild and compare every row.
    env.stop_ledger().await;
    let before = snapshot(&env.db.pool).await;
    assert!(
        before.iter().all(|(_, rows)| !rows.is_empty()),
        "{before:#?}"
    );
    let report = switchyard_ledger::rebuild::rebuild(&env.db.pool, &env.client, 4)
        .await
        .expect("rebuild");
    let after = snapshot(&env.db.pool).await;
    assert_eq!(before, after, "{report}");
    assert_eq!(report.streams[0].stored, 3, "{report}");
    let events = &report.streams[1];
    assert!(
        events.ignored > 0,
        "step progress events are skipped: {report}"
    );
}

/// A re-run onto a newer version of the definition: the row shows the run and the version it
/// re-ran under, which only the `rerun` event names.
#[tokio::test]
async fn a_rerun_onto_a_newer_version_is_listed_with_that_version() {
    let mut env = env(50).await;
    env.engine().await;
    env.register(BOOM).await;
    env.start("boom", "i-again", json!({ "who": "x" })).await;
    let deadline = tokio::time::Instant::now() + T;
    while engine::status(&env.client, TENANT, "i-again").await["status"] != "failed" {
        assert!(tokio::time::Instant::now() < deadline, "never failed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    env.register(
        &BOOM
            .replace("version: 1", "version: 2")
            .replace("test.fail", "test.echo"),
    )
    .await;
    let rerun = switchyard_proto::RerunWorkflow {
        tenant: TENANT.into(),
        instance_id: "i-again".into(),
        run: 1,
        version: 2,
        requested_by: "test".into(),
        ..Default::default()
    };
    env.publish(
        &subject::rerun(TENANT, "i-again"),
        Some("rerun-i-again-1"),
        None,
        encode_proto(&rerun),
    )
    .await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let list = env.ask("instances", TENANT, json!({})).await.unwrap();
        let row = list["instances"][0].clone();
        if row["run"] == 1 && row["status"] == "completed" {
            assert_eq!(row["version"], 2, "{row:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A start with `not_before` shows as `scheduled` in the list and the stats until it runs; a
/// cancel before then finishes it.
#[tokio::test]
async fn a_scheduled_start_is_listed_and_counted_as_scheduled() {
    let mut env = env(50).await;
    env.engine().await;
    env.register(OK).await;
    let start = switchyard_proto::StartWorkflow {
        tenant: TENANT.into(),
        workflow: "ok".into(),
        instance_id: "i-later".into(),
        not_before_ms: switchyard_proto::now_ms() + 3_600_000,
        labels: [("team".to_owned(), "night".to_owned())].into(),
        ..Default::default()
    };
    env.publish(
        &subject::start(TENANT, "ok"),
        Some("i-later"),
        None,
        encode_proto(&start),
    )
    .await;
    let status_of = |list: &Value| {
        list["instances"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["instance_id"] == "i-later"))
            .map(|i| (i["status"].clone(), i["labels"].clone()))
    };
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let list = env
            .ask("instances", TENANT, json!({ "status": "scheduled" }))
            .await
            .unwrap();
        if let Some((status, labels)) = status_of(&list) {
            assert_eq!(status, "scheduled");
            assert_eq!(labels, json!({ "team": "night" }));
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let all = env.ask("instances", TENANT, json!({})).await.unwrap();
            let state = engine::status(&env.client, TENANT, "i-later").await;
            panic!("not listed as scheduled: {all:#} {state:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = env.ask("stats", TENANT, json!({})).await.unwrap();
    assert_eq!(stats["workflows"][0]["counts"]["scheduled"], 1, "{stats:#}");
    assert_eq!(stats["workflows"][0]["counts"]["running"], 0, "{stats:#}");

    let cancel = switchyard_proto::CancelWorkflow {
        reason: "not tonight".into(),
        requested_by: "test".into(),
        ..Default::default()
    };
    env.publish(
        &subject::cancel(TENANT, "i-later"),
        Some("cancel-i-later"),
        None,
        encode_proto(&cancel),
    )
    .await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let list = env.ask("instances", TENANT, json!({})).await.unwrap();
        if status_of(&list).is_some_and(|(s, _)| s == "cancelled") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_database_error_hands_the_batch_back_and_nothing_is_lost() {
    let env = env(10).await;
    let pool = &env.db.pool;
    // The rollup table gone for a while: every batch fails (and rolls back) until it is back.
    sqlx::query("ALTER TABLE ledger.usage_daily RENAME TO usage_daily_away")
        .execute(pool)
        .await
        .unwrap();
    for i in 0..5 {
        let e = usage(i, "tokens", 1.0, DAY1, "");
        env.publish(
            &subject::usage(TENANT, "tokens"),
            None,
            None,
            encode_proto(&e),
        )
        .await;
    }
    // Wait until the ledger has tried and handed the batch back (the messages come round
    // again), so "nothing written" below is about a write that was attempted.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = env
            .js
            .get_stream(stream::USAGE)
            .await
            .unwrap()
            .get_consumer(stream::LEDGER_USAGE)
            .await
            .unwrap();
        if consumer.info().await.unwrap().num_redelivered > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger never handed a batch back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = |pool: PgPool| async move {
        sqlx::query("SELECT count(*) FROM ledger.usage_events")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    assert_eq!(count(pool.clone()).await, 0, "nothing half-written");
    sqlx::query("ALTER TABLE ledger.usage_daily_away RENAME TO usage_daily")
        .execute(pool)
        .await
        .unwrap();
    env.caught_up().await;
    assert_eq!(
        count(pool.clone()).await,
        5,
        "every event stored once it could be"
    );
    let rolled: i64 = sqlx::query("SELECT sum(events)::int8 FROM ledger.usage_daily")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rolled, 5);
    let dlq = env
        .js
        .get_stream(stream::DLQ)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(dlq, 0, "a database outage is not the messages' fault");
}
