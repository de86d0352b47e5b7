//! The gateway's outer layer as a user sees it: requests in flight on `/metrics`, and the
//! correlation id and W3C trace context a request brings travelling on to the bus.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::*;
use futures::StreamExt as _;
use serde_json::json;
use switchyard_gateway::Role;
use switchyard_proto::header;

const SLOW: &str =
    "name: slow\nversion: 1\nsteps:\n  - { id: a, operation: test.sleep, input: { ms: 1500 } }\n";
const EXECUTE_IN_FLIGHT: &str =
    "switchyard_http_requests_in_flight{route=\"/api/v1/workflows/execute\"}";

async fn in_flight(env: &Env) -> Option<i64> {
    let reply = env.call(Method::GET, "/metrics", None, None).await;
    reply
        .text
        .lines()
        .find_map(|l| l.strip_prefix(EXECUTE_IN_FLIGHT))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_request_waiting_for_its_workflow_is_in_flight_until_answered() {
    let env = env().await;
    env.register(SLOW).await;
    let op = env.token(TENANT, Role::Operator);
    let execute = env.call(
        Method::POST,
        "/api/v1/workflows/execute",
        Some(&op),
        Some(json!({ "workflow_type": "slow", "wait": 30 })),
    );
    let watch = async {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if in_flight(&env).await == Some(1) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (reply, seen) = tokio::join!(execute, watch);
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["status"], "completed");
    assert!(seen, "the waiting request was never counted in flight");
    assert_eq!(in_flight(&env).await, Some(0));
}

#[tokio::test]
async fn the_callers_correlation_id_and_trace_context_travel_with_the_start_and_its_jobs() {
    let env = env().await;
    env.register(SLOW).await;
    // A connection of its own, used for nothing else: what it subscribes to it sees.
    let watcher = env.connect().await;
    let mut starts = watcher.subscribe("wf.start.>").await.unwrap();
    let mut jobs = watcher.subscribe("jobs.test.>").await.unwrap();
    switchyard_test_harness::round_trip(&watcher).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let op = env.token(TENANT, Role::Operator);
    let reply = env
        .send(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", "corr-observe-1"),
                ("traceparent", &traceparent),
                ("tracestate", "vendor=1"),
            ],
            Some(json!({ "workflow_name": "slow" }).to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let status_url = reply.body["status_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (what, sub) in [("start", &mut starts), ("job", &mut jobs)] {
        let Ok(Some(msg)) = tokio::time::timeout(T, sub.next()).await else {
            let status = env.call(Method::GET, &status_url, Some(&op), None).await;
            panic!(
                "no {what} message within {T:?} (watcher {:?}); the instance: {status:#?}",
                watcher.connection_state()
            );
        };
        let headers = msg.headers.expect("headers");
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            get(header::CORRELATION_ID).as_deref(),
            Some("corr-observe-1"),
            "{what}"
        );
        // No OpenTelemetry layer in this process: the caller's context goes on unchanged.
        assert_eq!(
            get(header::TRACEPARENT),
            Some(traceparent.clone()),
            "{what}"
        );
        assert_eq!(
            get(header::TRACESTATE).as_deref(),
            Some("vendor=1"),
            "{what}"
        );
    }
}
