//! The gateway's HTTP API against a real bus, orchestrator and `test` worker.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_gateway::Role;
use switchyard_proto::stream;

const GREET: &str = r#"
name: greet
version: 1
input:
  topic: { type: string, required: true }
  count: { type: integer, default: 1 }
steps:
  - id: echo
    operation: test.echo
    input: { topic: "{{ input.topic }}", count: "{{ input.count }}" }
output:
  topic: "{{ steps.echo.output.topic }}"
  count: "{{ steps.echo.output.count }}"
"#;

const CARDS: &str = r#"
name: cards_post
version: 1
input:
  card_ids: { type: array, items: { type: string }, required: true }
  additional_context: { type: string, default: "" }
steps:
  - id: echo
    operation: test.echo
    input: { card_ids: "{{ input.card_ids }}", context: "{{ input.additional_context }}" }
output:
  card_ids: "{{ steps.echo.output.card_ids }}"
  context: "{{ steps.echo.output.context }}"
"#;

const SLEEPY: &str = r#"
name: sleepy
version: 1
steps:
  - { id: slow, operation: test.sleep, input: { ms: 20000 } }
"#;

const APPROVAL: &str = r#"
name: approval
version: 1
steps:
  - id: approve
    wait_for_signal: { name: approval }
  - id: after
    operation: test.echo
    needs: [approve]
    input: { by: "{{ steps.approve.output.by }}" }
output:
  by: "{{ steps.after.output.by }}"
"#;

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_and_counted() {
    let env = env().await;
    let trigger = "/api/v1/workflows/trigger";
    let body = json!({ "workflow_name": "greet", "input": { "topic": "x" } });

    let none = env
        .send(
            Method::POST,
            trigger,
            None,
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", "req-42.a_b"),
            ],
            Some(body.to_string()),
        )
        .await;
    none.problem(401);
    assert!(
        none.header("www-authenticate").starts_with("Bearer"),
        "{none:#?}"
    );
    assert_eq!(none.header("x-correlation-id"), "req-42.a_b");

    let mut expired = claims(TENANT, &[Role::Admin]);
    expired.exp = jsonwebtoken_now() - 3600;
    let reply = env
        .call(
            Method::POST,
            trigger,
            Some(&sign(&expired)),
            Some(body.clone()),
        )
        .await;
    reply.problem(401);
    assert!(reply.header("www-authenticate").contains("invalid_token"));

    let mut audience = claims(TENANT, &[Role::Admin]);
    audience.aud = "someone-else".into();
    env.call(
        Method::POST,
        trigger,
        Some(&sign(&audience)),
        Some(body.clone()),
    )
    .await
    .problem(401);

    let viewer = env.token(TENANT, Role::Viewer);
    let reply = env
        .call(Method::POST, trigger, Some(&viewer), Some(body))
        .await;
    assert!(
        reply.problem(403)["detail"]
            .as_str()
            .unwrap()
            .contains("workflows:run"),
        "{reply:#?}"
    );

    // A bad correlation id is replaced, not echoed.
    let reply = env
        .send(
            Method::GET,
            "/api/v1/registry",
            None,
            &[("x-correlation-id", "a b")],
            None,
        )
        .await;
    reply.problem(401);
    assert_ne!(reply.header("x-correlation-id"), "a b");

    // The operational routes need no token.
    assert_eq!(
        env.call(Method::GET, "/health", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.call(Method::GET, "/ready", None, None).await.status,
        StatusCode::OK
    );
    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for needle in [
        r#"switchyard_auth_failures_total{reason="missing"} 2"#,
        r#"switchyard_auth_failures_total{reason="expired"} 1"#,
        r#"switchyard_auth_failures_total{reason="wrong_audience"} 1"#,
        r#"switchyard_auth_failures_total{reason="forbidden"} 1"#,
        r#"switchyard_http_requests_total{method="POST",route="/api/v1/workflows/trigger",status="401"} 3"#,
        "switchyard_http_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.text.contains(needle),
            "no {needle} in\n{}",
            metrics.text
        );
    }
}

#[tokio::test]
async fn bad_requests_get_problem_details_naming_what_is_wrong() {
    let env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let trigger = "/api/v1/workflows/trigger";

    let reply = env
        .send(
            Method::POST,
            trigger,
            Some(&op),
            &[("content-type", "application/json")],
            Some("{\n  \"workflow_name\": \"greet\",\n  oops\n}".into()),
        )
        .await;
    let body = reply.problem(400);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("line 3, column 3"), "{reply:#?}");

    let reply = env
        .call(
            Method::POST,
            trigger,
            Some(&op),
            Some(json!({ "workflow_name": "greet", "imput": {} })),
        )
        .await;
    assert!(
        reply.problem(400)["detail"]
            .as_str()
            .unwrap()
            .contains("imput"),
        "{reply:#?}"
    );

    let big = json!({ "workflow_name": "greet", "input": { "topic": "x".repeat(BODY_LIMIT) } });
    env.call(Method::POST, trigger, Some(&op), Some(big))
        .await
        .problem(413);

    let reply = env
        .call(
            Method::POST,
            trigger,
            Some(&op),
            Some(json!({ "workflow_name": "nope", "input": {} })),
        )
        .await;
    assert!(
        reply.problem(404)["detail"]
            .as_str()
            .unwrap()
            .contains("\"nope\""),
        "{reply:#?}"
    );

    let reply = env
        .call(
            Method::POST,
            trigger,
            Some(&op),
            Some(json!({ "workflow_name": "greet", "input": { "count": "three" } })),
        )
        .await;
    let body = reply.problem(422);
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"input.topic") && paths.contains(&"input.count"),
        "{body:#}"
    );
    // Nothing was started.
    assert_eq!(env.state_keys().await, 0);

    let reply = env
        .call(Method::GET, "/api/v1/no/such/route", Some(&op), None)
        .await;
    reply.problem(404);
    let reply = env
        .call(Method::DELETE, "/api/v1/workflows/trigger", Some(&op), None)
        .await;
    reply.problem(405);
}

#[tokio::test]
async fn a_triggered_workflow_runs_to_its_output_and_other_tenants_cannot_see_it() {
    let env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let reply = env
        .send(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", "corr-trigger-1"),
            ],
            Some(json!({ "workflow_name": "greet", "input": { "topic": "rust" } }).to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let id = reply.body["instance_id"].as_str().unwrap().to_owned();
    let url = format!("/api/v1/workflows/status/{id}");
    assert_eq!(reply.body["status_url"], url);
    assert_eq!(reply.header("location"), url);

    let status = env.finished(&id).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], json!({ "topic": "rust", "count": 1 }));
    assert_eq!(status["correlation_id"], "corr-trigger-1");

    let viewer = env.token(TENANT, Role::Viewer);
    let reply = env.call(Method::GET, &url, Some(&viewer), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["instance_id"], id.as_str());

    let stranger = env.token(OTHER_TENANT, Role::Admin);
    env.call(Method::GET, &url, Some(&stranger), None)
        .await
        .problem(404);
    env.call(
        Method::POST,
        &format!("/api/v1/workflows/instances/{id}/cancel"),
        Some(&stranger),
        None,
    )
    .await
    .problem(404);
    // Another tenant cannot start this tenant's workflow either.
    env.call(
        Method::POST,
        "/api/v1/workflows/trigger",
        Some(&stranger),
        Some(json!({ "workflow_name": "greet", "input": { "topic": "x" } })),
    )
    .await
    .problem(404);
}

/// `not_before`: the instance is `scheduled` until then, then runs; a value that is not a
/// time is a 400 naming the field.
#[tokio::test]
async fn a_trigger_with_not_before_runs_at_that_time() {
    let env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let at = switchyard_proto::now_ms() + 1_500;
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            Some(json!({
                "workflow_name": "greet",
                "input": { "topic": "later" },
                "not_before": at,
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let id = reply.body["instance_id"].as_str().unwrap().to_owned();
    let status = env
        .wait_for(&id, "stored", |s| s["status"].is_string())
        .await;
    assert_eq!(status["status"], "scheduled", "{status:#}");
    assert_eq!(status["not_before_ms"], at, "{status:#}");
    let status = env.finished(&id).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert!(
        status["started_at_ms"].as_i64().unwrap() >= at,
        "{status:#}"
    );

    // RFC 3339 in the past starts at once.
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            Some(json!({
                "workflow_name": "greet",
                "input": { "topic": "now" },
                "not_before": "2020-01-01T00:00:00Z",
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let status = env
        .finished(reply.body["instance_id"].as_str().unwrap())
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");

    for bad in [json!("tomorrow"), json!(-5), json!(true)] {
        let reply = env
            .call(
                Method::POST,
                "/api/v1/workflows/trigger",
                Some(&op),
                Some(json!({
                    "workflow_name": "greet",
                    "input": { "topic": "x" },
                    "not_before": bad,
                })),
            )
            .await;
        assert_eq!(reply.problem(400)["field"], "not_before", "{reply:#?}");
    }
}

const HOOK_SECRET: &str = "0123456789abcdef0123456789abcdef-hooks";

/// A signed webhook becomes the tenant's event `hook.<source>` and starts the workflow whose
/// trigger names it, once per delivery; a bad signature, an old timestamp, a tenant without a
/// secret and a body that is not JSON are refused.
#[tokio::test]
async fn a_signed_webhook_starts_the_workflow_that_names_it_once_per_delivery() {
    use switchyard_runtime::signature::sign;
    let env = env_with(|c| {
        c.gateway.webhook_secrets = [(
            TENANT.to_owned(),
            switchyard_runtime::config::Secret::new(HOOK_SECRET),
        )]
        .into();
    })
    .await;
    env.register(&format!(
        "{GREET}triggers:\n  - subject: hook.github\n    input: {{ topic: \"{{{{ event.repository.name }}}}\" }}\n"
    ))
    .await;
    let mut started = env
        .client
        .subscribe(format!("wf.events.{TENANT}.*.started"))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let url = format!("/api/v1/hooks/{TENANT}/github");
    let body = json!({ "repository": { "name": "switchyard" } }).to_string();
    let now = u64::try_from(switchyard_proto::now_ms() / 1000).unwrap();
    let post =
        |url: String, body: String, timestamp: u64, signature: String, delivery: &'static str| {
            let env = &env;
            async move {
                let ts = timestamp.to_string();
                let mut headers = vec![
                    ("content-type", "application/json"),
                    ("x-switchyard-timestamp", ts.as_str()),
                    ("x-switchyard-signature", signature.as_str()),
                ];
                if !delivery.is_empty() {
                    headers.push(("x-switchyard-delivery", delivery));
                }
                env.send(Method::POST, &url, None, &headers, Some(body))
                    .await
            }
        };
    let signed = sign(HOOK_SECRET.as_bytes(), now, body.as_bytes());
    let first = post(url.clone(), body.clone(), now, signed.clone(), "d-1").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:#?}");
    assert_eq!(first.body["subject"], "hook.github");
    assert_eq!(first.body["duplicate"], false);
    let again = post(url.clone(), body.clone(), now, signed.clone(), "d-1").await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{again:#?}");
    assert_eq!(again.body["duplicate"], true, "{again:#?}");

    let mut ids = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, started.next()).await {
        ids.insert(msg.subject.split('.').nth(3).unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one instance for one delivery: {ids:?}");
    let id = ids.first().unwrap();
    let status = env.finished(id).await;
    assert_eq!(status["output"]["topic"], "switchyard", "{status:#}");
    assert_eq!(status["labels"]["trigger"], "hook.github", "{status:#}");

    // Refusals.
    let tampered = post(
        url.clone(),
        body.replace("switchyard", "other"),
        now,
        signed.clone(),
        "d-2",
    )
    .await;
    assert_eq!(tampered.problem(401)["status"], 401);
    let old = now - 3_600;
    let stale = post(
        url.clone(),
        body.clone(),
        old,
        sign(HOOK_SECRET.as_bytes(), old, body.as_bytes()),
        "d-3",
    )
    .await;
    stale.problem(401);
    let unsigned = env
        .send(
            Method::POST,
            &url,
            None,
            &[("content-type", "application/json")],
            Some(body.clone()),
        )
        .await;
    unsigned.problem(401);
    let elsewhere = post(
        format!("/api/v1/hooks/{OTHER_TENANT}/github"),
        body.clone(),
        now,
        signed.clone(),
        "d-4",
    )
    .await;
    elsewhere.problem(404);
    let text = "not json";
    let not_json = post(
        url.clone(),
        text.to_owned(),
        now,
        sign(HOOK_SECRET.as_bytes(), now, text.as_bytes()),
        "d-5",
    )
    .await;
    assert_eq!(not_json.problem(400)["field"], "body");
}

#[tokio::test]
async fn the_same_idempotency_key_starts_one_instance() {
    let env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let trigger = |token: String| {
        let env = &env;
        async move {
            env.send(
                Method::POST,
                "/api/v1/workflows/trigger",
                Some(&token),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "order-7"),
                ],
                Some(json!({ "workflow_name": "greet", "input": { "topic": "once" } }).to_string()),
            )
            .await
        }
    };
    let first = trigger(op.clone()).await;
    let second = trigger(op).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:#?}");
    assert_eq!(second.status, StatusCode::ACCEPTED, "{second:#?}");
    assert_eq!(first.body["instance_id"], second.body["instance_id"]);
    let id = first.body["instance_id"].as_str().unwrap();
    assert_eq!(env.finished(id).await["status"], "completed");
    // Every start the bus stored has been taken by the engine: none is still to come.
    env.wait_idle(&[(stream::WF_INBOX, stream::ORCHESTRATOR_COMMANDS)], T)
        .await;
    assert_eq!(env.state_keys().await, 1, "only one instance ran");

    // The key is the tenant's own: the same key in another tenant is another instance.
    let globex = env.token(OTHER_TENANT, Role::Admin);
    let reply = env
        .send(
            Method::PUT,
            "/api/v1/workflows/definitions/greet",
            Some(&globex),
            &[("content-type", "text/plain")],
            Some(GREET.into()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:#?}");
    let other = trigger(globex).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{other:#?}");
    assert_ne!(other.body["instance_id"], first.body["instance_id"]);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_request_is_a_422_and_a_refused_first_use_frees_it() {
    let env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let trigger = |key: &'static str, body: Value| {
        let env = &env;
        let op = op.clone();
        async move {
            env.send(
                Method::POST,
                "/api/v1/workflows/trigger",
                Some(&op),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                Some(body.to_string()),
            )
            .await
        }
    };
    let body = json!({ "workflow_name": "greet", "input": { "topic": "one" } });
    let first = trigger("order-8", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:#?}");
    // A retry, spelled differently: the same request, the same instance.
    let retry = trigger(
        "order-8",
        json!({ "input": { "topic": "one" }, "workflow_name": "greet" }),
    )
    .await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:#?}");
    assert_eq!(retry.body["instance_id"], first.body["instance_id"]);
    // Another request under the same key is refused, not answered with the first's result.
    let other = trigger(
        "order-8",
        json!({ "workflow_name": "greet", "input": { "topic": "two" } }),
    )
    .await;
    let problem = other.problem(422);
    assert_eq!(problem["field"], "Idempotency-Key", "{problem:#}");
    assert_eq!(
        problem["type"], "urn:switchyard:problem:idempotency-key-reused",
        "{problem:#}"
    );

    // A first use that is refused leaves the key free for the corrected request.
    let refused = trigger(
        "order-9",
        json!({ "workflow_name": "greet", "input": { "topic": 7 } }),
    )
    .await;
    refused.problem(422);
    let corrected = trigger(
        "order-9",
        json!({ "workflow_name": "greet", "input": { "topic": "fixed" } }),
    )
    .await;
    assert_eq!(corrected.status, StatusCode::ACCEPTED, "{corrected:#?}");
}

#[tokio::test]
async fn execute_waits_for_the_result_and_merges_extra_fields_into_the_input() {
    let env = env().await;
    env.register(GREET).await;
    env.register(CARDS).await;
    let op = env.token(TENANT, Role::Operator);
    let execute = "/api/v1/workflows/execute";

    let reply = env
        .call(
            Method::POST,
            execute,
            Some(&op),
            Some(json!({ "workflow_type": "greet", "input": { "topic": "now" }, "wait": 10 })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["status"], "completed");
    assert_eq!(reply.body["output"]["topic"], "now");

    let reply = env
        .call(
            Method::POST,
            execute,
            Some(&op),
            Some(json!({
                "workflow_type": "cards_post",
                "card_ids": ["c1", "c2"],
                "additional_context": "launch week",
                "wait": 10
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(
        reply.body["output"],
        json!({ "card_ids": ["c1", "c2"], "context": "launch week" })
    );

    // Without wait it answers like trigger.
    let reply = env
        .call(
            Method::POST,
            execute,
            Some(&op),
            Some(json!({ "workflow_type": "greet", "topic": "later" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let id = reply.body["instance_id"].as_str().unwrap();
    assert_eq!(env.finished(id).await["input"]["topic"], "later");

    let reply = env
        .call(
            Method::POST,
            execute,
            Some(&op),
            Some(json!({ "workflow_type": "greet", "topic": "a", "input": { "topic": "b" } })),
        )
        .await;
    assert_eq!(reply.problem(400)["field"], "topic");
}

#[tokio::test]
async fn a_running_instance_is_cancelled_and_a_waiting_step_is_signalled() {
    let env = env().await;
    env.register(SLEEPY).await;
    env.register(APPROVAL).await;
    let op = env.token(TENANT, Role::Operator);

    let id = env.trigger("sleepy", json!({})).await;
    env.wait_for(&id, "started its step", |s| {
        s["steps"][0]["status"]
            .as_str()
            .is_some_and(|st| st != "pending")
    })
    .await;
    let reply = env
        .call(
            Method::POST,
            &format!("/api/v1/workflows/instances/{id}/cancel"),
            Some(&op),
            Some(json!({ "reason": "changed my mind" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let status = env.finished(&id).await;
    assert_eq!(status["status"], "cancelled", "{status:#}");
    // Cancelling it again is a conflict.
    env.call(
        Method::POST,
        &format!("/api/v1/workflows/instances/{id}/cancel"),
        Some(&op),
        None,
    )
    .await
    .problem(409);

    let id = env.trigger("approval", json!({})).await;
    env.wait_for(&id, "waited for its signal", |s| {
        s["steps"][0]["status"] == "waiting"
    })
    .await;
    env.call(
        Method::POST,
        &format!("/api/v1/workflows/instances/{id}/signal/not.a.token"),
        Some(&op),
        Some(json!({})),
    )
    .await
    .problem(400);
    let reply = env
        .call(
            Method::POST,
            &format!("/api/v1/workflows/instances/{id}/signal/approval"),
            Some(&op),
            Some(json!({ "by": "ann" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let status = env.finished(&id).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], json!({ "by": "ann" }));
}

#[tokio::test]
async fn definitions_are_registered_read_validated_and_deleted() {
    let env = env().await;
    let admin = env.token(TENANT, Role::Admin);
    let viewer = env.token(TENANT, Role::Viewer);
    let url = "/api/v1/workflows/definitions/greet";
    let yaml = [("content-type", "application/yaml")];

    let broken = GREET
        .replace("operation: test.echo", "operation: test.nope")
        .replace("{{ input.count }}", "{{ input.cuont }}");
    let reply = env
        .send(Method::PUT, url, Some(&admin), &yaml, Some(broken.clone()))
        .await;
    let body = reply.problem(400);
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"steps[0].operation"), "{body:#}");
    assert!(
        paths.iter().any(|p| p.starts_with("steps[0].input")),
        "{body:#}"
    );

    env.send(Method::PUT, url, Some(&viewer), &yaml, Some(GREET.into()))
        .await
        .problem(403);
    env.send(
        Method::PUT,
        "/api/v1/workflows/definitions/other",
        Some(&admin),
        &yaml,
        Some(GREET.into()),
    )
    .await
    .problem(400);

    let reply = env
        .send(Method::PUT, url, Some(&admin), &yaml, Some(GREET.into()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:#?}");
    assert_eq!(reply.body["version"], 1);
    // As JSON `{source}`, the same text again changes nothing.
    let reply = env
        .call(
            Method::PUT,
            url,
            Some(&admin),
            Some(json!({ "source": GREET })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");

    let reply = env.call(Method::GET, url, Some(&viewer), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["source"], GREET);
    let reply = env
        .call(
            Method::GET,
            "/api/v1/workflows/definitions",
            Some(&viewer),
            None,
        )
        .await;
    assert!(
        reply.body["definitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "greet"),
        "{reply:#?}"
    );

    let validate = "/api/v1/workflows/definitions/validate";
    let reply = env
        .send(Method::POST, validate, Some(&viewer), &yaml, Some(broken))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["valid"], false);
    assert!(!reply.body["problems"].as_array().unwrap().is_empty());
    let reply = env
        .send(
            Method::POST,
            validate,
            Some(&viewer),
            &yaml,
            Some(GREET.into()),
        )
        .await;
    assert_eq!(
        (reply.body["valid"].clone(), reply.body["problems"].clone()),
        (json!(true), json!([]))
    );
    let reply = env.call(Method::DELETE, url, Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    env.call(Method::GET, url, Some(&viewer), None)
        .await
        .problem(404);
}

#[tokio::test]
async fn a_definition_request_without_a_definition_is_a_400() {
    // More requests than the definitions group's rate allows in a second.
    let env = env_with(|c| {
        c.gateway.rate_limits.definitions = switchyard_runtime::config::RateLimit::Off;
    })
    .await;
    let viewer = env.token(TENANT, Role::Viewer);
    let admin = env.token(TENANT, Role::Admin);
    let yaml = [("content-type", "application/yaml")];
    let validate = "/api/v1/workflows/definitions/validate";
    // No definition at all is a bad request, not a verdict on a definition: nothing, or YAML
    // that is not a mapping (a scalar, a list, also one that does not parse).
    let all: &[&str] = &[
        "",
        "  \n",
        r#"{"source": " "}"#,
        "just text\n",
        "- name: greet\n",
        "# a list\n- 1\n- 99999999999999999999999999999999999999999\n",
        r#"{"source": "[1, 2]"}"#,
    ];
    for (method, path, who, bodies) in [
        (Method::POST, validate, &viewer, all),
        (
            Method::PUT,
            "/api/v1/workflows/definitions/greet",
            &admin,
            all,
        ),
    ] {
        for &body in bodies {
            let (headers, field): (&[(&str, &str)], _) = if body.starts_with('{') {
                (&[("content-type", "application/json")], "source")
            } else {
                (&yaml, "body")
            };
            let reply = env
                .send(method.clone(), path, Some(who), headers, Some(body.into()))
                .await;
            assert_eq!(
                reply.problem(400)["field"],
                field,
                "{path} {body:?}: {reply:#?}"
            );
        }
    }
}

#[tokio::test]
async fn an_address_that_keeps_sending_bad_tokens_is_answered_429_before_any_token_is_checked() {
    use switchyard_runtime::config::{RateLimit, RatePeriod};
    let env =
        env_with(|c| c.gateway.rate_limits.refused = RateLimit::per(5, RatePeriod::Minute)).await;
    let uri = "/api/v1/workflows/definitions";
    let good = env.token(TENANT, Role::Viewer);
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let reply = get_from(&env.app, "192.0.2.7", uri, "not-a-token").await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even a good token from that address waits; another address is heard.
    let blocked = get_from(&env.app, "192.0.2.7", uri, &good).await;
    assert!(
        blocked
            .header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s >= 1)
    );
    assert_eq!(
        blocked.problem(429)["type"],
        "urn:switchyard:problem:rate-limited"
    );
    let other = get_from(&env.app, "192.0.2.8", uri, &good).await;
    assert_eq!(other.status, StatusCode::OK, "{other:#?}");
    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    // The five answered 401 and the one that took the address over its rate.
    assert!(
        metrics
            .text
            .contains("switchyard_auth_failures_total{reason=\"malformed\"} 6"),
        "only the requests heard had their token checked: {}",
        metrics.text
    );
}

#[tokio::test]
async fn the_registry_lists_the_test_worker_with_its_operations() {
    let env = env().await;
    // Two tenants' definitions use the test kind: each sees only its own under `used_by`.
    env.register(GREET).await;
    let other = switchyard_test_harness::engine::query(
        &env.bus.client,
        "definitions.put",
        json!({ "tenant": "other-tenant", "source": GREET.replace("name: greet", "name: secret_plan") }),
    )
    .await;
    assert_eq!(other["created"], true, "{other}");
    let viewer = env.token(TENANT, Role::Viewer);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let reply = env
            .call(Method::GET, "/api/v1/registry", Some(&viewer), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
        let services = reply.body["services"].as_array().unwrap();
        let test = services.iter().find(|s| s["name"] == "switchyard-test");
        let orchestrator = services
            .iter()
            .any(|s| s["name"] == "switchyard-orchestrator");
        if let Some(test) = test
            && orchestrator
        {
            assert_eq!(test["metadata"]["kind"], "test");
            assert_eq!(test["metadata"]["worker_id"], "w1");
            let ops = test["metadata"]["operations"].as_str().unwrap();
            assert!(
                ops.contains("test.echo") && ops.contains("test.sleep"),
                "{test:#}"
            );
            assert!(!test["endpoints"].as_array().unwrap().is_empty());
            // The engine's view: the kind, its operations' versions and its live replica.
            let kinds = reply.body["kinds"].as_array().unwrap();
            let kind = kinds.iter().find(|k| k["kind"] == "test").unwrap();
            if kind["replicas"].as_array().unwrap().is_empty() {
                continue;
            }
            assert_eq!(kind["builtin"], true, "{kind:#}");
            assert_eq!(kind["replicas"][0]["worker_id"], "w1", "{kind:#}");
            assert!(kind["heartbeat_age_ms"].as_i64().unwrap() >= 0, "{kind:#}");
            assert_eq!(kind["pending"], 0, "{kind:#}");
            let used_by = kind["used_by"].to_string();
            assert!(used_by.contains("greet"), "{used_by}");
            assert!(
                !used_by.contains("secret_plan") && !used_by.contains("other-tenant"),
                "another tenant's definitions stay hidden: {used_by}"
            );
            let echo = kind["operations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == "test.echo")
                .unwrap();
            assert_eq!(
                (echo["version"].clone(), echo["versions"].clone()),
                (json!(1), json!([1]))
            );
            let research = reply.body["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "research")
                .unwrap();
            assert_eq!(research["contract"], "research.topic", "{research:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:#?}");
    }
}

#[tokio::test]
async fn ready_needs_the_inbox_stream() {
    let server = switchyard_test_support::NatsServer::start().await;
    let config = config(server.url());
    let app = gateway(&server, &config).await;
    let reply = send(&app, Method::GET, "/ready", None, &[], None).await;
    assert!(
        reply.problem(503)["detail"]
            .as_str()
            .unwrap()
            .contains("WF_INBOX"),
        "{reply:#?}"
    );
    let reply = send(&app, Method::GET, "/health", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// A start during a NATS restart is published again with the same message id until the bus
/// stores it: the client gets its 202 (not a 503 for a start that may have been stored), and
/// exactly one instance runs.
#[tokio::test]
async fn a_start_answered_503_carries_a_key_whose_retry_runs_it_once() {
    let mut env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    let body = json!({ "workflow_name": "greet", "input": { "topic": "long outage" } }).to_string();
    let json = ("content-type", "application/json");
    // Down for longer than the gateway's patience: the start may or may not have been stored.
    env.bus.server.kill();
    let reply = send(
        &env.app,
        Method::POST,
        "/api/v1/workflows/trigger",
        Some(&op),
        &[json],
        Some(body.clone()),
    )
    .await;
    let problem = reply.problem(503);
    assert_eq!(problem["may_have_been_stored"], true, "{reply:#?}");
    let unconfirmed = problem["instance_id"].as_str().unwrap().to_owned();
    assert!(
        problem["detail"].as_str().unwrap().contains(&unconfirmed),
        "{reply:#?}"
    );
    let key = reply.header("idempotency-key").to_owned();
    assert!(key.starts_with("sy-retry-"), "{reply:#?}");
    env.bus.server.restart().await;

    // The documented rule: repeat the request with the key the 503 carried, as often as needed.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let retry = send(
            &env.app,
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            &[json, ("idempotency-key", key.as_str())],
            Some(body.clone()),
        )
        .await;
        assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:#?}");
        assert!(retry.headers.get("idempotency-key").is_none());
        ids.push(retry.body["instance_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        ids[0], unconfirmed,
        "the retry starts the instance the 503 named"
    );
    assert_eq!(env.finished(&ids[0]).await["status"], "completed");
    // Every start the bus stored has been taken by the engine: none is still to come.
    env.wait_idle(&[(stream::WF_INBOX, stream::ORCHESTRATOR_COMMANDS)], T)
        .await;
    assert_eq!(
        env.state_keys().await,
        1,
        "one instance for the start and its retries"
    );
}

#[tokio::test]
async fn a_start_during_a_nats_restart_is_stored_once_and_answered_202() {
    let mut env = env().await;
    env.register(GREET).await;
    let op = env.token(TENANT, Role::Operator);
    env.bus.server.kill();
    let app = env.app.clone();
    let trigger = tokio::spawn(async move {
        send(
            &app,
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            &[("content-type", "application/json")],
            Some(json!({ "workflow_name": "greet", "input": { "topic": "outage" } }).to_string()),
        )
        .await
    });
    // Down for longer than one PubAck wait (5 s), well inside the gateway's patience.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    env.bus.server.restart().await;
    let reply = trigger.await.unwrap();
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let id = reply.body["instance_id"].as_str().unwrap();
    assert_eq!(env.finished(id).await["status"], "completed");
    // Every start the bus stored has been taken by the engine: none is still to come.
    env.wait_idle(&[(stream::WF_INBOX, stream::ORCHESTRATOR_COMMANDS)], T)
        .await;
    assert_eq!(
        env.state_keys().await,
        1,
        "one instance, however often it was published"
    );
}
