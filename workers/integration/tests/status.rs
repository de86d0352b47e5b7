//! `integration.status` against loopback Notion, Slack and ClickUp servers: what it reports,
//! that it records no effect, that it reuses a report instead of asking again, and that no
//! secret reaches the answer.

mod common;

use common::*;
use serde_json::{Value, json};
use switchyard_catalog::Catalog;
use switchyard_integration::op;
use switchyard_runtime::config::Secret;

/// Answers the three credential checks like the providers do when the token is good.
fn providers(call: &Call, _: usize) -> Answer {
    match call.path.as_str() {
        "/v1/users/me" => Answer::json(
            200,
            json!({"object": "user", "id": "u1", "type": "bot", "name": "Switchyard",
                   "bot": {"workspace_name": "Acme"}}),
        ),
        "/api/auth.test" => Answer::json(
            200,
            json!({"ok": true, "team": "Acme", "user": "switchyard-bot", "team_id": "T1"}),
        ),
        "/api/v2/user" => Answer::json(
            200,
            json!({"user": {"id": 42, "username": "ada", "email": "ada@example.com"}}),
        ),
        other => Answer::json(404, json!({"err": format!("no route {other}")})),
    }
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["integrations"]
        .as_array()
        .expect("integrations")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

#[tokio::test]
async fn configured_integrations_are_checked_read_only_and_the_report_is_reused() {
    let server = Loopback::start(providers).await;
    let out = tempfile::tempdir().expect("tempdir");
    let settings = settings(&server.url(), out.path().join("sink"));
    let (worker, db, _registry) = worker(&settings).await;

    let report = worker
        .run_job("w1", &job("status-1", op::STATUS, json!({})))
        .await
        .expect("status");
    Catalog::builtin()
        .get(op::STATUS)
        .expect("declared")
        .output
        .validate(&report)
        .expect("the report matches the declared output");
    let names: Vec<&str> = report["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notion", "slack", "clickup", "webhook", "markdown"]);
    for name in names {
        let e = entry(&report, name);
        assert_eq!(
            (&e["configured"], &e["ok"]),
            (&json!(true), &json!(true)),
            "{e}"
        );
    }
    assert_eq!(
        entry(&report, "notion")["detail"],
        "authenticated as Switchyard in Acme"
    );
    assert_eq!(entry(&report, "clickup")["detail"], "authenticated as ada");
    assert!(out.path().join("sink").is_dir(), "the sink root is created");

    let mut paths: Vec<String> = server.calls().iter().map(|c| c.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/api/auth.test", "/api/v2/user", "/v1/users/me"]);
    let clickup = server
        .calls()
        .into_iter()
        .find(|c| c.path == "/api/v2/user")
        .unwrap();
    assert_eq!(clickup.method, "GET");
    assert_eq!(clickup.header("authorization"), "pk_test_token");

    // No effect record: the operation changes nothing, so there is nothing to deduplicate.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM integration.effects")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);

    // Asked again at once: the same report, no second round of calls.
    let again = worker
        .run_job("w1", &job("status-2", op::STATUS, json!({})))
        .await
        .expect("status");
    assert_eq!(again, report);
    assert_eq!(server.count(), 3);

    let refused = worker
        .run_job("w1", &job("status-3", op::STATUS, json!({"verbose": true})))
        .await
        .expect_err("unknown input field");
    assert!(refused.to_string().contains("verbose"), "{refused}");
}

#[tokio::test]
async fn refused_and_missing_credentials_are_reported_without_the_secrets() {
    let server = Loopback::start(|call, _| match call.path.as_str() {
        "/api/v2/user" => Answer::json(401, json!({"err": "Token invalid", "ECODE": "OAUTH_025"})),
        _ => Answer::json(500, json!({"err": "unexpected call"})),
    })
    .await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(&server.url(), out.path().to_path_buf());
    settings.notion.token = None;
    settings.slack.bot_token = None;
    settings.slack.webhook_url = Some(Secret::new("https://hooks.slack.invalid/T1/B1/s3cr3t"));
    settings.webhook.signing_secret = None;
    settings.clickup.token = Some(Secret::new("pk_revoked_token"));
    let (worker, _db, _registry) = worker(&settings).await;

    let report = worker
        .run_job("w1", &job("status-bad", op::STATUS, json!({})))
        .await
        .expect("status");
    let clickup = entry(&report, "clickup");
    assert_eq!(
        (&clickup["configured"], &clickup["ok"]),
        (&json!(true), &json!(false))
    );
    let detail = clickup["detail"].as_str().unwrap();
    assert!(detail.contains("Token invalid (OAUTH_025)"), "{detail}");
    let notion = entry(&report, "notion");
    assert_eq!(
        (&notion["configured"], &notion["ok"]),
        (&json!(false), &json!(false))
    );
    assert!(
        notion["detail"]
            .as_str()
            .unwrap()
            .contains("integration.notion.token")
    );
    let slack = entry(&report, "slack");
    assert_eq!(
        (&slack["configured"], &slack["ok"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(entry(&report, "webhook")["configured"], false);
    assert_eq!(entry(&report, "markdown")["ok"], true);

    let text = report.to_string();
    for secret in ["pk_revoked_token", "s3cr3t", "hooks.slack.invalid"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    // Only ClickUp was called: nothing is tried without credentials.
    assert_eq!(server.count(), 1);
}
