//! The ledger's routes end to end: a real nats-server with an orchestrator and a `test` worker
//! (see `common`), the ledger on its own Postgres database in this process, the gateway's
//! router in front. Usage grouped three ways, the instance list paged with no gaps or repeats,
//! stats, the audit log for admins only, nothing of another tenant, and 400/422 naming the
//! parameter.

mod common;

use std::{collections::BTreeSet, time::Duration};

use async_nats::HeaderMap;
use axum::http::{Method, StatusCode};
use common::*;
use prometheus::Registry;
use serde_json::json;
use switchyard_gateway::Role;
use switchyard_ledger::{Ledger, Source};
use switchyard_proto::{UsageEvent, encode_proto, subject};
use switchyard_runtime::config::LedgerSettings;
use switchyard_test_support::TestDatabase;
use tokio_util::sync::CancellationToken;

/// 2026-01-15T12:00:00Z in ms.
const DAY1: i64 = 1_768_478_400_000;
const DAY2: i64 = DAY1 + 86_400_000;

struct LedgerEnv {
    env: Env,
    _db: TestDatabase,
}

async fn ledger_env() -> LedgerEnv {
    let mut env = env().await;
    let db = switchyard_test_support::database().await;
    switchyard_ledger::store::migrate(&db.pool)
        .await
        .expect("migrate");
    let settings = LedgerSettings {
        batch_size: 100,
        batch_wait: Duration::from_millis(20),
        ..LedgerSettings::default()
    };
    let ledger = Ledger::build(db.pool.clone(), &settings, "l1", &Registry::new()).expect("ledger");
    let stop = CancellationToken::new();
    tokio::spawn(
        ledger.run(
            env.bus
                .connect_as(&switchyard_test_support::Role::Ledger)
                .await,
            stop.clone(),
        ),
    );
    env.components.stop_on_drop(stop);
    env.wait_ok("/api/v1/workflows/stats", Role::Viewer, "the ledger")
        .await;
    LedgerEnv { env, _db: db }
}

impl LedgerEnv {
    async fn get(&self, uri: &str, tenant: &str, role: Role) -> Reply {
        let token = self.env.token(tenant, role);
        self.env.call(Method::GET, uri, Some(&token), None).await
    }

    async fn publish_usage(&self, e: &UsageEvent) {
        let mut headers = HeaderMap::new();
        headers.insert(switchyard_proto::header::MSG_ID, e.event_id.as_str());
        self.env
            .js
            .publish_with_headers(
                subject::usage(&e.tenant, &e.meter),
                headers,
                encode_proto(e).into(),
            )
            .await
            .expect("publish")
            .await
            .expect("puback");
    }

    /// Waits until the ledger's consumers have nothing pending or unacked.
    async fn caught_up(&self) {
        let consumers: Vec<(&str, &str)> = Source::ALL
            .iter()
            .map(|s| (s.stream(), s.consumer()))
            .collect();
        self.env.bus.wait_idle(&consumers, T).await;
    }
}

fn usage(
    tenant: &str,
    n: usize,
    meter: &str,
    quantity: f64,
    at_ms: i64,
    instance: &str,
) -> UsageEvent {
    UsageEvent {
        event_id: format!("{tenant}-{n}-{meter}"),
        tenant: tenant.into(),
        meter: meter.into(),
        quantity,
        unit: "token".into(),
        instance_id: instance.into(),
        step_id: "greet".into(),
        operation: "test.echo".into(),
        at_ms,
        attributes: Default::default(),
    }
}

const ECHO: &str = r#"
name: echo_once
version: 1
steps:
  - id: greet
    operation: test.echo
    input: { text: "hi" }
"#;

const FAIL: &str = r#"
name: fail_once
version: 1
steps:
  - id: explode
    operation: test.fail
    input: { mode: permanent }
"#;

#[tokio::test]
async fn the_ledger_routes_answer_per_tenant_with_pages_groups_stats_and_audit() {
    let l = Box::pin(ledger_env()).await;
    l.env.register(ECHO).await;
    l.env.register(FAIL).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(l.env.trigger("echo_once", json!({})).await);
    }
    let failed = l.env.trigger("fail_once", json!({})).await;
    for id in ids.iter().chain([&failed]) {
        l.env.finished(id).await;
    }
    // Usage: two meters over two days, one instance's tokens tied to its workflow, and a
    // direct call's usage with no instance; another tenant's usage beside it.
    l.publish_usage(&usage(TENANT, 1, "tokens", 10.0, DAY1, &ids[0]))
        .await;
    l.publish_usage(&usage(TENANT, 2, "tokens", 5.0, DAY2, &ids[1]))
        .await;
    l.publish_usage(&usage(TENANT, 3, "cards_fetched", 2.0, DAY2, ""))
        .await;
    l.publish_usage(&usage(OTHER_TENANT, 1, "tokens", 99.0, DAY1, ""))
        .await;
    l.caught_up().await;

    // ---- usage, three ways ----
    let range = "from=2026-01-01&to=2026-01-31";
    let reply = l
        .get(&format!("/api/v1/usage?{range}"), TENANT, Role::Viewer)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(
        reply.body["usage"],
        json!([
            { "meter": "cards_fetched", "unit": "token", "quantity": 2.0, "events": 1 },
            { "meter": "tokens", "unit": "token", "quantity": 15.0, "events": 2 },
        ]),
        "{:#}",
        reply.body
    );
    assert_eq!(reply.body["tenant"], TENANT);
    let by_day = l
        .get(
            &format!("/api/v1/usage?{range}&group_by=day"),
            TENANT,
            Role::Viewer,
        )
        .await;
    let days: Vec<(String, String, f64)> = by_day.body["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_owned(),
                r["meter"].as_str().unwrap().to_owned(),
                r["quantity"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-01-15".into(), "tokens".into(), 10.0),
            ("2026-01-16".into(), "cards_fetched".into(), 2.0),
            ("2026-01-16".into(), "tokens".into(), 5.0),
        ]
    );
    let by_workflow = l
        .get(
            &format!("/api/v1/usage?{range}&group_by=workflow"),
            TENANT,
            Role::Viewer,
        )
        .await;
    assert_eq!(
        by_workflow.body["usage"],
        json!([
            { "workflow": null, "meter": "cards_fetched", "unit": "token", "quantity": 2.0, "events": 1 },
            { "workflow": "echo_once", "meter": "tokens", "unit": "token", "quantity": 15.0, "events": 2 },
        ]),
        "{:#}",
        by_workflow.body
    );
    // Another tenant sees only its own; naming a tenant needs an admin.
    let other = l
        .get(
            &format!("/api/v1/usage?{range}"),
            OTHER_TENANT,
            Role::Viewer,
        )
        .await;
    assert_eq!(other.body["usage"][0]["quantity"], 99.0);
    assert_eq!(other.body["usage"].as_array().unwrap().len(), 1);
    l.get(
        &format!("/api/v1/usage?{range}&tenant={TENANT}"),
        OTHER_TENANT,
        Role::Operator,
    )
    .await
    .problem(403);
    // A tenant's admin is still that tenant's: another tenant's usage is the deployment's.
    l.get(
        &format!("/api/v1/usage?{range}&tenant={OTHER_TENANT}"),
        TENANT,
        Role::Admin,
    )
    .await
    .problem(403);
    let admin_view = l
        .get(
            &format!("/api/v1/usage?{range}&tenant={OTHER_TENANT}"),
            TENANT,
            Role::Platform,
        )
        .await;
    assert_eq!(admin_view.body["tenant"], OTHER_TENANT, "{admin_view:#?}");
    assert_eq!(admin_view.body["usage"][0]["quantity"], 99.0);

    // ---- instances, paged ----
    let mut seen = Vec::new();
    let mut uri = "/api/v1/workflows/instances?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = l.get(&uri, TENANT, Role::Viewer).await;
        assert_eq!(page.status, StatusCode::OK, "{page:#?}");
        let list = page.body["instances"].as_array().unwrap();
        assert!(list.len() <= 3);
        seen.extend(list.iter().cloned());
        pages += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/workflows/instances?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let listed: Vec<&str> = seen
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "no repeats: {listed:?}");
    let expected: BTreeSet<&str> = ids.iter().chain([&failed]).map(String::as_str).collect();
    assert_eq!(unique, expected, "no gaps");
    let times: Vec<i64> = seen
        .iter()
        .map(|i| i["created_at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let only_failed = l
        .get(
            "/api/v1/workflows/instances?status=failed&workflow=fail_once",
            TENANT,
            Role::Viewer,
        )
        .await;
    let list = only_failed.body["instances"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{:#}", only_failed.body);
    assert_eq!(list[0]["instance_id"], failed.as_str());
    assert_eq!(list[0]["error_code"], "permanent");
    assert_eq!(list[0]["failed_step"], "explode");
    let nobody = l
        .get("/api/v1/workflows/instances", OTHER_TENANT, Role::Viewer)
        .await;
    assert_eq!(
        nobody.body["instances"],
        json!([]),
        "another tenant's instances are invisible"
    );

    // ---- stats ----
    let stats = l.get("/api/v1/workflows/stats", TENANT, Role::Viewer).await;
    assert_eq!(stats.status, StatusCode::OK, "{stats:#?}");
    let workflows = stats.body["workflows"].as_array().unwrap();
    let echo = workflows
        .iter()
        .find(|w| w["workflow"] == "echo_once")
        .unwrap();
    assert_eq!(echo["counts"]["completed"], 7);
    assert_eq!(echo["total"], 7);
    let p50 = echo["duration_ms"]["p50"].as_f64().unwrap();
    let p99 = echo["duration_ms"]["p99"].as_f64().unwrap();
    assert!(p50 >= 0.0 && p99 >= p50, "{echo:#}");
    let fail = workflows
        .iter()
        .find(|w| w["workflow"] == "fail_once")
        .unwrap();
    assert_eq!(fail["counts"]["failed"], 1);
    let other_stats = l
        .get("/api/v1/workflows/stats", OTHER_TENANT, Role::Viewer)
        .await;
    assert_eq!(other_stats.body["workflows"], json!([]));

    // ---- audit: admins only ----
    l.get("/api/v1/audit", TENANT, Role::Operator)
        .await
        .problem(403);
    let audit = l.get("/api/v1/audit", TENANT, Role::Admin).await;
    assert_eq!(audit.status, StatusCode::OK, "{audit:#?}");
    assert_eq!(audit.body["tenant"], TENANT);
    let puts: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "definition.put")
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        puts,
        ["fail_once", "echo_once"],
        "newest first: {:#}",
        audit.body
    );
    let first = l
        .get(
            "/api/v1/audit?action=definition.put&limit=1",
            TENANT,
            Role::Admin,
        )
        .await;
    let cursor = first.body["next_cursor"].as_str().expect("a second page");
    let second = l
        .get(
            &format!("/api/v1/audit?action=definition.put&limit=1&cursor={cursor}"),
            TENANT,
            Role::Admin,
        )
        .await;
    assert_eq!(
        second.body["entries"][0]["target"], "echo_once",
        "{second:#?}"
    );
    assert_eq!(second.body["next_cursor"], json!(null));

    // ---- bad parameters name themselves ----
    for (uri, field) in [
        ("/api/v1/usage?group_by=hour", "group_by"),
        ("/api/v1/usage?from=2026-02-30", "from"),
        ("/api/v1/usage?colour=red", "query"),
        ("/api/v1/workflows/instances?limit=0", "limit"),
        ("/api/v1/workflows/instances?status=done", "status"),
        ("/api/v1/workflows/instances?from=last%20week", "from"),
        ("/api/v1/workflows/instances?workflow=a.b", "workflow"),
        ("/api/v1/workflows/stats?to=soon", "to"),
    ] {
        let reply = l.get(uri, TENANT, Role::Admin).await;
        let problem = reply.problem(400);
        assert_eq!(problem["field"], field, "{uri}: {problem:#}");
    }
    // A range that ends before it starts is empty, not an error; times take any offset.
    for uri in [
        "/api/v1/usage?from=2026-02-02&to=2026-02-01",
        "/api/v1/workflows/instances?from=2026-02-02&to=2026-02-01",
        "/api/v1/workflows/stats?from=2026-01-01T00:00:00%2B05:00&to=0001-01-01",
    ] {
        let reply = l.get(uri, TENANT, Role::Admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {reply:#?}");
        let rows = reply
            .body
            .get("usage")
            .or(reply.body.get("instances"))
            .or(reply.body.get("workflows"));
        assert_eq!(rows, Some(&json!([])), "{uri}: {reply:#?}");
    }
    let reply = l
        .get(
            "/api/v1/workflows/instances?cursor=zz",
            TENANT,
            Role::Viewer,
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "cursor", "{reply:#?}");
    // Without a range: this month so far, which holds none of January's usage.
    let default_range = l.get("/api/v1/usage", TENANT, Role::Viewer).await;
    assert_eq!(default_range.status, StatusCode::OK, "{default_range:#?}");
    assert!(
        default_range.body["from"]
            .as_str()
            .unwrap()
            .ends_with("-01")
    );
    let anonymous = l.env.call(Method::GET, "/api/v1/usage", None, None).await;
    anonymous.problem(401);
    // Refused credentials are logged under `_anonymous`, which only the deployment's operator
    // may read.
    l.get(
        "/api/v1/audit?tenant=_anonymous&action=auth.failed",
        TENANT,
        Role::Admin,
    )
    .await
    .problem(403);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let refused = l
            .get(
                "/api/v1/audit?tenant=_anonymous&action=auth.failed",
                TENANT,
                Role::Platform,
            )
            .await;
        assert_eq!(refused.status, StatusCode::OK, "{refused:#?}");
        if refused.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"] == "/api/v1/usage")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{refused:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_a_ledger_running_the_routes_answer_503() {
    let env = env().await;
    let token = env.token(TENANT, Role::Viewer);
    let reply = env
        .call(
            Method::GET,
            "/api/v1/workflows/instances",
            Some(&token),
            None,
        )
        .await;
    let problem = reply.problem(503);
    assert!(
        problem["detail"].as_str().unwrap().contains("ledger"),
        "{problem:#}"
    );
}

/// Labels given at the start are kept with the instance and find it in the list; bad ones
/// are refused naming the field.
#[tokio::test]
async fn instances_are_found_by_the_labels_their_start_carried() {
    let l = Box::pin(ledger_env()).await;
    let env = &l.env;
    env.register("name: tagged\nversion: 1\nsteps:\n  - { id: a, operation: test.echo }\n")
        .await;
    let operator = env.token(TENANT, Role::Operator);
    let mut started = Vec::new();
    for (batch, how) in [("a", "trigger"), ("a", "execute"), ("b", "trigger")] {
        let (uri, body) = if how == "trigger" {
            (
                "/api/v1/workflows/trigger",
                json!({"workflow_name": "tagged", "labels": {"batch": batch, "team": "growth"}}),
            )
        } else {
            (
                "/api/v1/workflows/execute",
                json!({"workflow_type": "tagged", "labels": {"batch": batch}}),
            )
        };
        let reply = env
            .call(Method::POST, uri, Some(&operator), Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
        started.push(reply.body["instance_id"].as_str().unwrap().to_owned());
    }
    for id in &started {
        env.finished(id).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let reply = l
            .get(
                "/api/v1/workflows/instances?label=batch%3Da",
                TENANT,
                Role::Viewer,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
        let rows = reply.body["instances"].as_array().unwrap().clone();
        if rows.len() == 2 && rows.iter().all(|r| r["status"] == "completed") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|r| r["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, started[..2].iter().map(String::as_str).collect());
    assert_eq!(
        listed
            .iter()
            .filter(|r| r["labels"]["team"] == "growth")
            .count(),
        1
    );
    // The engine's view carries them too.
    assert_eq!(env.status(&started[2]).await.body["labels"]["batch"], "b");

    let bad = l
        .get(
            "/api/v1/workflows/instances?label=batch",
            TENANT,
            Role::Viewer,
        )
        .await;
    assert_eq!(bad.problem(400)["field"], "label", "{bad:#?}");
    let bad = env
        .call(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&operator),
            Some(json!({"workflow_name": "tagged", "labels": {"no spaces": "x"}})),
        )
        .await;
    assert_eq!(bad.problem(400)["field"], "labels.no spaces", "{bad:#?}");
    let bad = env
        .call(
            Method::POST,
            "/api/v1/workflows/execute",
            Some(&operator),
            Some(json!({"workflow_type": "tagged", "labels": ["x"]})),
        )
        .await;
    assert_eq!(bad.problem(400)["field"], "labels", "{bad:#?}");
}

/// A bulk cancel by label cancels exactly the running instances with that label, as the
/// ledger lists them, and leaves the others running.
#[tokio::test]
async fn a_bulk_cancel_by_label_cancels_exactly_those_instances() {
    let l = Box::pin(ledger_env()).await;
    let env = &l.env;
    env.register(
        "name: sleepy\nversion: 1\nsteps:\n  - { id: nap, operation: test.sleep, input: { ms: 120000 } }\n",
    )
    .await;
    let operator = env.token(TENANT, Role::Operator);
    let start = |batch: &'static str| {
        let operator = operator.clone();
        async move {
            let reply = env
                .call(
                    Method::POST,
                    "/api/v1/workflows/trigger",
                    Some(&operator),
                    Some(json!({"workflow_name": "sleepy", "labels": {"batch": batch}})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
            reply.body["instance_id"].as_str().unwrap().to_owned()
        }
    };
    let mut doomed = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for i in 0..220 {
        if i % 11 == 10 {
            kept.insert(start("keep").await);
        } else {
            doomed.insert(start("drop").await);
        }
    }
    assert_eq!((doomed.len(), kept.len()), (200, 20));
    // The ledger lists them all as running before the cancel selects by its list.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = l
            .get(
                "/api/v1/workflows/instances?label=batch%3Ddrop&status=running&limit=500",
                TENANT,
                Role::Viewer,
            )
            .await;
        if reply.body["instances"].as_array().map(Vec::len) == Some(200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A viewer may not; a filter that selects everything is refused.
    let viewer = env.token(TENANT, Role::Viewer);
    let refused = env
        .call(
            Method::POST,
            "/api/v1/workflows/bulk/cancel",
            Some(&viewer),
            Some(json!({"label": "batch=drop"})),
        )
        .await;
    refused.problem(403);
    let refused = env
        .call(
            Method::POST,
            "/api/v1/workflows/bulk/cancel",
            Some(&operator),
            Some(json!({"reason": "everything"})),
        )
        .await;
    assert_eq!(refused.problem(400)["field"], "workflow", "{refused:#?}");

    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/bulk/cancel",
            Some(&operator),
            Some(json!({"label": "batch=drop", "reason": "wrong batch"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["cancelled"], 200, "{reply:#?}");
    assert_eq!(reply.body["more"], false);
    let cancelled: BTreeSet<String> = reply.body["instance_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cancelled, doomed);
    for id in &doomed {
        let status = env.finished(id).await;
        assert_eq!(status["status"], "cancelled", "{status:#}");
        assert_eq!(status["error"]["message"], "wrong batch");
    }
    for id in &kept {
        assert_eq!(env.status(id).await.body["status"], "running", "{id}");
    }
    // Another tenant's bulk cancel of the same label touches none of them.
    let other = env.token(OTHER_TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/bulk/cancel",
            Some(&other),
            Some(json!({"label": "batch=keep"})),
        )
        .await;
    assert_eq!(reply.body["cancelled"], 0, "{reply:#?}");
    for id in &kept {
        assert_eq!(env.status(id).await.body["status"], "running", "{id}");
    }
}

impl LedgerEnv {
    async fn post(&self, uri: &str, tenant: &str, role: Role, body: serde_json::Value) -> Reply {
        let token = self.env.token(tenant, role);
        self.env
            .call(Method::POST, uri, Some(&token), Some(body))
            .await
    }

    /// Polls `GET uri` (as an admin of [`TENANT`]) until `done` holds of its body.
    async fn get_until(
        &self,
        uri: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(uri, TENANT, Role::Admin).await;
            if reply.status == StatusCode::OK && done(&reply.body) {
                return reply.body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {reply:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Steps 1 and 3 echo; step 2 fails permanently in the instance's first run only.
const RECOVER: &str = "name: recover\nversion: 1\nsteps:\n  - { id: fetch, operation: test.echo, input: { v: 1 } }\n  - { id: flaky, operation: test.fail, needs: [fetch], input: { mode: permanent, runs: 1 } }\n  - { id: report, operation: test.echo, needs: [flaky], input: { v: \"{{ steps.fetch.output.v }}\" } }\noutput: \"{{ steps.report.output }}\"\n";

/// `POST /instances/{id}/rerun`: its refusals, then a re-run that completes, counted by the
/// ledger's read model and stats and written to the audit log; then a bulk re-run by label.
#[tokio::test]
async fn a_failed_instance_reruns_over_http_and_the_ledger_counts_it() {
    let l = Box::pin(ledger_env()).await;
    let env = &l.env;
    env.register(RECOVER).await;
    env.register(
        "name: sleepy\nversion: 1\nsteps:\n  - { id: nap, operation: test.sleep, input: { ms: 120000 } }\n",
    )
    .await;
    let failed = env.trigger("recover", json!({})).await;
    assert_eq!(env.finished(&failed).await["status"], "failed");
    let rerun = |id: &str| format!("/api/v1/workflows/instances/{id}/rerun");

    // Refusals, each as problem+json.
    l.post(&rerun(&failed), TENANT, Role::Viewer, json!({}))
        .await
        .problem(403);
    l.post(
        &rerun("no-such-instance"),
        TENANT,
        Role::Operator,
        json!({}),
    )
    .await
    .problem(404);
    l.post(&rerun(&failed), OTHER_TENANT, Role::Operator, json!({}))
        .await
        .problem(404);
    let bad = l
        .post(
            &rerun(&failed),
            TENANT,
            Role::Operator,
            json!({ "from_step": "nope" }),
        )
        .await;
    assert_eq!(bad.problem(400)["field"], "from_step", "{bad:#?}");
    // A body read by position is no body of named fields.
    let bad = l
        .post(&rerun(&failed), TENANT, Role::Operator, json!(["flaky", 1]))
        .await;
    bad.problem(400);
    for version in [0, 7] {
        let bad = l
            .post(
                &rerun(&failed),
                TENANT,
                Role::Operator,
                json!({ "version": version }),
            )
            .await;
        assert_eq!(bad.problem(400)["field"], "version", "{bad:#?}");
    }
    let running = env.trigger("sleepy", json!({})).await;
    env.wait_for(&running, "scheduled", |s| {
        s["steps"][0]["status"] == "scheduled"
    })
    .await;
    l.post(&rerun(&running), TENANT, Role::Operator, json!({}))
        .await
        .problem(409);

    // The re-run: only the failed step and what follows it run again.
    let reply = l
        .post(
            &rerun(&failed),
            TENANT,
            Role::Operator,
            json!({ "reason": "fixed" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    assert_eq!(reply.body["run"], 1);
    assert_eq!(reply.body["steps"], json!(["flaky", "report"]));
    assert_eq!(reply.body["kept"], json!(["fetch"]));
    let done = env
        .wait_for(&failed, "completed", |s| s["status"] == "completed")
        .await;
    assert_eq!(
        (done["run"].clone(), done["output"].clone()),
        (json!(1), json!({ "v": 1 }))
    );
    // A completed instance re-runs only from a named step.
    l.post(&rerun(&failed), TENANT, Role::Operator, json!({}))
        .await
        .problem(409);

    // The read model follows the latest run; stats count re-runs; the audit log says who.
    l.get_until(
        "/api/v1/workflows/instances?workflow=recover",
        "the ledger shows the re-run completed",
        |b| b["instances"][0]["status"] == "completed" && b["instances"][0]["run"] == 1,
    )
    .await;
    let stats = l
        .get(
            "/api/v1/workflows/stats?workflow=recover",
            TENANT,
            Role::Viewer,
        )
        .await;
    assert_eq!(
        stats.body["workflows"][0]["reruns"],
        json!({ "instances": 1, "total": 1 }),
        "{stats:#?}"
    );
    let audit = l
        .get_until(
            "/api/v1/audit?action=instance.rerun",
            "the re-run audited",
            |b| b["entries"].as_array().is_some_and(|e| !e.is_empty()),
        )
        .await;
    assert_eq!(audit["entries"][0]["actor"], "tester");
    assert_eq!(audit["entries"][0]["target"], failed.as_str());

    // A bulk re-run by label: exactly the failed instances with that label.
    let operator = env.token(TENANT, Role::Operator);
    let mut batch = BTreeSet::new();
    for _ in 0..3 {
        let reply = env
            .call(
                Method::POST,
                "/api/v1/workflows/trigger",
                Some(&operator),
                Some(json!({"workflow_name": "recover", "labels": {"batch": "b1"}})),
            )
            .await;
        batch.insert(reply.body["instance_id"].as_str().unwrap().to_owned());
    }
    for id in &batch {
        assert_eq!(env.finished(id).await["status"], "failed");
    }
    l.get_until(
        "/api/v1/workflows/instances?label=batch%3Db1&status=failed",
        "the ledger lists the batch failed",
        |b| b["instances"].as_array().is_some_and(|i| i.len() == 3),
    )
    .await;
    l.post(
        "/api/v1/workflows/bulk/rerun",
        TENANT,
        Role::Viewer,
        json!({ "label": "batch=b1" }),
    )
    .await
    .problem(403);
    let none = l
        .post(
            "/api/v1/workflows/bulk/rerun",
            TENANT,
            Role::Operator,
            json!({}),
        )
        .await;
    assert_eq!(none.problem(400)["field"], "workflow");
    let bulk = l
        .post(
            "/api/v1/workflows/bulk/rerun",
            TENANT,
            Role::Operator,
            json!({ "label": "batch=b1" }),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::OK, "{bulk:#?}");
    assert_eq!(bulk.body["rerun"], 3, "{bulk:#?}");
    let rerun_ids: BTreeSet<String> = bulk.body["instance_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rerun_ids, batch);
    for id in &batch {
        env.wait_for(id, "completed", |s| s["status"] == "completed")
            .await;
    }
}

/// `/api/v1/dlq…` over HTTP: a step's dead letter listed, shown and replayed into a re-run of
/// its instance, once; nothing of another tenant; refusals as problem+json; purge; audit.
#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_and_purged_over_http() {
    let l = Box::pin(ledger_env()).await;
    let env = &l.env;
    env.register(
        "name: lettered\nversion: 1\nsteps:\n  - { id: call, operation: test.fail, input: { mode: permanent, runs: 1 } }\n",
    )
    .await;
    let instance = env.trigger("lettered", json!({})).await;
    assert_eq!(env.finished(&instance).await["status"], "failed");
    let listed = l
        .get_until(
            &format!("/api/v1/dlq?instance_id={instance}"),
            "the letter is listed",
            |b| b["letters"].as_array().is_some_and(|l| l.len() == 1),
        )
        .await;
    let letter = &listed["letters"][0];
    assert_eq!(letter["reason"], "permanent");
    assert_eq!(letter["tenant"], TENANT);
    let seq = letter["seq"].as_u64().unwrap();

    l.get("/api/v1/dlq", TENANT, Role::Viewer)
        .await
        .problem(403);
    let theirs = l.get("/api/v1/dlq", OTHER_TENANT, Role::Operator).await;
    assert_eq!(theirs.body["letters"], json!([]), "{theirs:#?}");
    l.get(&format!("/api/v1/dlq/{seq}"), OTHER_TENANT, Role::Operator)
        .await
        .problem(404);
    let bad = l.get("/api/v1/dlq/abc", TENANT, Role::Operator).await;
    assert_eq!(bad.problem(400)["field"], "seq");
    let bad = l
        .get("/api/v1/dlq?reason=sad", TENANT, Role::Operator)
        .await;
    assert_eq!(bad.problem(400)["field"], "reason");
    let bad = l
        .post("/api/v1/dlq/replay", TENANT, Role::Operator, json!({}))
        .await;
    assert_eq!(bad.problem(400)["field"], "kind");

    let shown = l
        .get(&format!("/api/v1/dlq/{seq}"), TENANT, Role::Operator)
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{shown:#?}");
    assert_eq!(shown.body["payload"]["step_id"], "call");
    assert_eq!(shown.body["payload"]["tenant"], TENANT);
    assert!(shown.body["headers"].is_object());

    let replay = format!("/api/v1/dlq/{seq}/replay");
    l.post(&replay, OTHER_TENANT, Role::Operator, json!({}))
        .await
        .problem(404);
    l.post(&replay, TENANT, Role::Viewer, json!({}))
        .await
        .problem(403);
    let reply = l.post(&replay, TENANT, Role::Operator, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["replayed"][0]["action"], "rerun");
    env.wait_for(&instance, "completed", |s| s["status"] == "completed")
        .await;
    l.post(&replay, TENANT, Role::Operator, json!({}))
        .await
        .problem(409);

    let purged = l
        .post("/api/v1/dlq/purge", TENANT, Role::Operator, json!({}))
        .await;
    assert_eq!(purged.body["purged"], 1, "{purged:#?}");
    l.get(&format!("/api/v1/dlq/{seq}"), TENANT, Role::Operator)
        .await
        .problem(404);
    let audit = l
        .get_until(
            "/api/v1/audit?action=dlq.replay",
            "the replay audited",
            |b| b["entries"].as_array().is_some_and(|e| !e.is_empty()),
        )
        .await;
    assert_eq!(audit["entries"][0]["actor"], "tester");
    l.get_until("/api/v1/audit?action=dlq.purge", "the purge audited", |b| {
        b["entries"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
}
