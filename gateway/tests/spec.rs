//! The OpenAPI document against the router, rate limits and the request timeout.

mod common;

use std::{collections::BTreeSet, time::Duration};

use axum::http::{Method, StatusCode};
use common::*;
use futures::StreamExt as _;
use serde_json::json;
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_gateway::Role;
use switchyard_proto::orchestrator::{endpoint, request_subject};
use switchyard_runtime::config::{RateLimit, RatePeriod};
use switchyard_test_support::NatsServer;

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let env = env().await;
    let reply = env.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    let spec = &reply.body;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));

    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = switchyard_gateway::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not routed"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not documented"
    );

    // Every route in the table is really served: none answers 404 or 405.
    for (method, path) in &routed {
        let uri = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "x");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let reply = env.call(method.clone(), &uri, None, None).await;
        // A 404 of the route itself, not of a thing it names (a tenant without webhooks).
        let no_route = reply.status == StatusCode::NOT_FOUND
            && reply.body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("no-route"));
        assert!(
            !no_route && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {reply:#?}"
        );
        assert!(
            reply.status != StatusCode::NOT_FOUND || path.starts_with("/api/v1/hooks/"),
            "{method} {uri}: {reply:#?}"
        );
    }

    // Authenticated routes declare the bearer scheme; errors are problem+json.
    let trigger = &spec["paths"]["/api/v1/workflows/trigger"]["post"];
    assert_eq!(trigger["security"][0]["bearer"], json!([]));
    assert!(
        trigger["responses"]["422"]["content"]["application/problem+json"].is_object(),
        "{trigger:#}"
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let env = env_with(|c| {
        c.gateway.rate_limits.start = RateLimit::per(2, RatePeriod::Minute);
    })
    .await;
    let op = env.token(TENANT, Role::Operator);
    let body = json!({ "workflow_name": "nope", "input": {} });
    for _ in 0..2 {
        // Within the rate; the unknown workflow is a 404 after the limit was counted.
        env.call(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            Some(body.clone()),
        )
        .await
        .problem(404);
    }
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/trigger",
            Some(&op),
            Some(body.clone()),
        )
        .await;
    reply.problem(429);
    let retry: u64 = reply.header("retry-after").parse().expect("Retry-After");
    // 2 a minute refills one every 30 s; the burst was spent a moment ago.
    assert!((20..=30).contains(&retry), "{reply:#?}");

    // Another tenant, and another route group of the same tenant, are unaffected.
    let other = env.token(OTHER_TENANT, Role::Operator);
    env.call(
        Method::POST,
        "/api/v1/workflows/trigger",
        Some(&other),
        Some(body),
    )
    .await
    .problem(404);
    let reply = env
        .call(
            Method::GET,
            "/api/v1/workflows/definitions",
            Some(&op),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .text
            .contains(r#"switchyard_rate_limited_total{group="start"} 1"#),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_408_as_a_problem() {
    let server = NatsServer::start().await;
    let client = server.client().await;
    apply(
        &async_nats::jetstream::new(client.clone()),
        &BusConfig::default(),
        ApplyOptions::default(),
    )
    .await
    .expect("bus apply");
    // A workflow engine that takes every query and never answers.
    let mut swallowed = client
        .subscribe(request_subject(endpoint::INSTANCE_GET))
        .await
        .unwrap();
    switchyard_test_harness::round_trip(&client).await;
    let mut config = config(server.url());
    config.gateway.request_timeout = Duration::from_millis(300);
    let app = gateway(&server, &config).await;
    let token = switchyard_gateway::auth::issue_token(
        &config.gateway.auth,
        TENANT,
        &[Role::Viewer],
        "tester",
        Duration::from_secs(60),
    )
    .unwrap();

    let started = std::time::Instant::now();
    let reply = send(
        &app,
        Method::GET,
        "/api/v1/workflows/instances/abc",
        Some(&token),
        &[],
        None,
    )
    .await;
    reply.problem(408);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        swallowed.next().await.is_some(),
        "the query reached the bus"
    );
}

#[tokio::test]
async fn an_event_stream_without_a_workflow_engine_is_a_503_not_a_hang() {
    let server = NatsServer::start().await;
    apply(
        &async_nats::jetstream::new(server.client().await),
        &BusConfig::default(),
        ApplyOptions::default(),
    )
    .await
    .expect("bus apply");
    let config = config(server.url());
    let app = gateway(&server, &config).await;
    let token = switchyard_gateway::auth::issue_token(
        &config.gateway.auth,
        TENANT,
        &[Role::Viewer],
        "tester",
        Duration::from_secs(60),
    )
    .unwrap();
    let reply = send(
        &app,
        Method::GET,
        "/api/v1/workflows/instances/abc/events",
        Some(&token),
        &[],
        None,
    )
    .await;
    let body = reply.problem(503);
    // Server-side failures say only that the request failed.
    assert!(
        !body["detail"].as_str().unwrap().contains("no responders"),
        "{body:#}"
    );
}

/// Marks every object schema of the document closed, so a field the wire carries but the
/// document does not declare fails validation instead of passing unnoticed.
fn close_objects(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.contains_key("properties") {
                map.insert("additionalProperties".into(), json!(false));
            }
            for v in map.values_mut() {
                close_objects(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

#[tokio::test]
async fn the_instance_status_the_engine_sends_validates_against_the_documented_schema() {
    const TWO_STEPS: &str = r#"
name: spec_check
version: 1
input:
  topic: { type: string, required: true }
steps:
  - id: echo
    operation: test.echo
    input: { topic: "{{ input.topic }}" }
  - id: approve
    needs: [echo]
    wait_for_signal: { name: approval, sla: 1h }
"#;
    let env = env().await;
    env.register(TWO_STEPS).await;
    // Labels are given by a start published on the bus; the HTTP trigger sets none.
    let instance = uuid::Uuid::now_v7().to_string();
    let start = switchyard_proto::StartWorkflow {
        tenant: TENANT.to_owned(),
        workflow: "spec_check".into(),
        instance_id: instance.clone(),
        input: serde_json::to_vec(&json!({ "topic": "drift" })).unwrap(),
        correlation_id: "spec-check".into(),
        labels: [("team".to_owned(), "billing".to_owned())].into(),
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(switchyard_proto::header::MSG_ID, instance.as_str());
    env.js
        .publish_with_headers(
            switchyard_proto::subject::start(TENANT, "spec_check"),
            headers,
            switchyard_proto::encode_proto(&start).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    env.wait_for(&instance, "waited for its signal", |s| {
        s["steps"][1]["status"] == "waiting"
    })
    .await;

    // What the engine sends on the wire, asked for as any service would.
    let reply = env
        .client
        .request(
            request_subject(endpoint::INSTANCE_GET),
            serde_json::to_vec(&json!({ "tenant": TENANT, "instance_id": instance }))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let wire: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(wire["labels"], json!({ "team": "billing" }), "{wire:#}");
    assert_eq!(wire["steps"][0]["output"]["topic"], "drift", "{wire:#}");
    assert_eq!(wire["steps"][1]["signal"]["name"], "approval", "{wire:#}");

    let doc = env
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .body;
    for route in [
        "/api/v1/workflows/status/{id}",
        "/api/v1/workflows/instances/{id}",
    ] {
        let schema_of_route = &doc["paths"][route]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert!(schema_of_route.is_object(), "{route} documents no schema");
        // The document itself is the schema's root, so `#/components/...` references resolve.
        let mut schema = doc.clone();
        close_objects(&mut schema);
        let schema = schema.as_object_mut().unwrap();
        schema.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        schema.insert("$ref".into(), schema_of_route["$ref"].clone());
        let validator = jsonschema::validator_for(&serde_json::Value::Object(schema.clone()))
            .expect("the document is a valid JSON Schema");
        let errors: Vec<String> = validator
            .iter_errors(&wire)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{route}: {errors:#?}\n{wire:#}");

        // And the check has teeth: a field the document does not declare is refused.
        let mut drifted = wire.clone();
        drifted["undeclared"] = json!(1);
        assert!(
            !validator.is_valid(&drifted),
            "{route} accepts undeclared fields"
        );
    }
}
