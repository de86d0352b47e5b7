//! The gateway's audit events on the `AUDIT` stream: refused credentials (401 and 403),
//! definition changes, cancellations and signals, each with its tenant, actor and target.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use axum::http::{Method, StatusCode};
use common::*;
use futures::StreamExt as _;
use serde_json::json;
use switchyard_gateway::Role;
use switchyard_proto::{AuditEvent, ContentType, audit, decode, stream, subject};

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
"#;

/// Every audit event stored so far, waiting until there are at least `n`.
async fn audit_events(env: &Env, n: usize) -> Vec<(String, AuditEvent)> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let consumer = env
            .js
            .get_stream(stream::AUDIT)
            .await
            .expect("AUDIT stream")
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject::ALL_AUDIT.into(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let pending = consumer.cached_info().num_pending as usize;
        if pending >= n || tokio::time::Instant::now() > deadline {
            let mut messages = consumer.messages().await.expect("messages");
            let mut out = Vec::new();
            while out.len() < pending {
                let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
                    .await
                    .expect("a stored event")
                    .expect("some")
                    .expect("message");
                let event: AuditEvent = decode(ContentType::Protobuf, &m.payload).expect("decodes");
                out.push((m.subject.to_string(), event));
            }
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refusals_definition_changes_cancels_and_signals_are_audited() {
    let env = env().await;
    let admin = env.token(TENANT, Role::Admin);
    let viewer = env.token(TENANT, Role::Viewer);

    // 401: no token, then a token signed with another key.
    env.call(Method::GET, "/api/v1/workflows/definitions", None, None)
        .await
        .problem(401);
    // 403: a viewer may not register definitions.
    env.send(
        Method::PUT,
        "/api/v1/workflows/definitions/sleepy",
        Some(&viewer),
        &[("content-type", "application/yaml")],
        Some(SLEEPY.into()),
    )
    .await
    .problem(403);

    env.register(SLEEPY).await;
    env.register(APPROVAL).await;

    let id = env.trigger("sleepy", json!({})).await;
    // A cancel needs the instance to exist; the orchestrator creates it from the start.
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
            Some(&admin),
            Some(json!({ "reason": "audit me" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");

    let waiting = env.trigger("approval", json!({})).await;
    env.wait_for(&waiting, "waits for its signal", |s| {
        s["steps"][0]["status"] == "waiting"
    })
    .await;
    let reply = env
        .call(
            Method::POST,
            &format!("/api/v1/workflows/instances/{waiting}/signal/approval"),
            Some(&admin),
            Some(json!({ "by": "ops" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");

    let reply = env
        .call(
            Method::DELETE,
            "/api/v1/workflows/definitions/sleepy?version=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");

    let events = audit_events(&env, 7).await;
    let find = |action: &str| {
        events
            .iter()
            .filter(|(_, e)| e.action == action)
            .collect::<Vec<_>>()
    };

    let refused = find(audit::AUTH_FAILED);
    assert_eq!(refused.len(), 2, "{events:#?}");
    let (subject_401, missing) = refused
        .iter()
        .find(|(_, e)| e.tenant == audit::ANONYMOUS_TENANT)
        .expect("the 401");
    assert_eq!(
        subject_401,
        &subject::audit(audit::ANONYMOUS_TENANT, audit::AUTH_FAILED)
    );
    assert_eq!(missing.outcome, "missing");
    assert_eq!(missing.target, "/api/v1/workflows/definitions");
    assert!(!missing.correlation_id.is_empty());
    let (_, forbidden) = refused
        .iter()
        .find(|(_, e)| e.tenant == TENANT)
        .expect("the 403");
    assert_eq!(forbidden.outcome, "forbidden");
    assert_eq!(forbidden.actor, "tester");

    let puts = find(audit::DEFINITION_PUT);
    assert_eq!(puts.len(), 2, "{events:#?}");
    assert!(puts.iter().any(|(_, e)| e.target == "sleepy"));
    assert!(puts.iter().all(
        |(s, e)| e.outcome == audit::OK && s == &subject::audit(TENANT, audit::DEFINITION_PUT)
    ));

    let (_, cancel) = find(audit::INSTANCE_CANCEL)[0];
    assert_eq!(cancel.target, id);
    assert_eq!(cancel.tenant, TENANT);
    assert_eq!(cancel.actor, "tester");
    assert_eq!(cancel.attributes["reason"], "audit me");

    let (_, signal) = find(audit::INSTANCE_SIGNAL)[0];
    assert_eq!(signal.target, waiting);
    assert_eq!(signal.attributes["signal"], "approval");

    let (_, delete) = find(audit::DEFINITION_DELETE)[0];
    assert_eq!(delete.target, "sleepy");
    assert_eq!(delete.attributes["version"], "1");
    assert_eq!(events.len(), 7, "{events:#?}");
}

#[tokio::test]
async fn a_flood_of_refused_credentials_adds_a_bounded_number_of_audit_entries() {
    let env = env().await;
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        env.call(Method::GET, "/api/v1/workflows/definitions", None, None)
            .await
            .problem(401);
    }
    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics.text.contains(&format!(
            "switchyard_auth_failures_total{{reason=\"missing\"}} {FLOOD}"
        )),
        "every refusal is counted: {}",
        metrics.text
    );
    // Whatever reached the stream by now; a sampled flood leaves one entry per window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = audit_events(&env, 1).await;
    assert!(
        (1..=2).contains(&events.len()),
        "{} audit entries for {FLOOD} refusals",
        events.len()
    );
    let (_, first) = &events[0];
    assert_eq!(first.outcome, "missing");
    assert_eq!(first.attributes["refusals"], "1");
}
