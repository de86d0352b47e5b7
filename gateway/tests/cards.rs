//! The card and onboarding routes end to end: a real nats-server with an orchestrator (see
//! `common`), the cards worker on its own Postgres database and the AI worker (local provider)
//! running in this process, the gateway's router in front.
//!
//! Onboarding answers become four cards; `linkedin_post` runs through
//! `/api/v1/workflows/execute` on those card ids and writes a post from them; every card fetched
//! is one usage event on the `USAGE` stream and one count in the usage counters, and a
//! redelivered job counts nothing twice.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use axum::http::{Method, StatusCode};
use common::*;
use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_cards::CardsWorker;
use switchyard_gateway::Role;
use switchyard_proto::{
    ContentType, Job, JobResult, JobStatus, UsageEvent, decode, encode_proto, header, stream,
    subject,
};
use switchyard_runtime::config::AiSettings;
use switchyard_test_support::TestDatabase;

struct Cards {
    env: Env,
    registry: Registry,
    _db: TestDatabase,
}

/// The common environment plus a cards worker and an AI worker.
async fn cards_env() -> Cards {
    let mut env = env().await;
    let db = switchyard_test_support::database().await;
    switchyard_cards::store::migrate(&db.pool)
        .await
        .expect("migrate");
    let registry = Registry::new();
    let handler = CardsWorker::build(db.pool.clone(), &registry).expect("cards worker");
    let config = env.config.clone();
    env.components
        .worker(&env.bus, &config, handler, &registry)
        .await;
    let ai_registry = Registry::new();
    let ai = switchyard_ai::AiWorker::new(&AiSettings::default(), &ai_registry).expect("ai");
    env.components
        .worker(&env.bus, &config, ai, &ai_registry)
        .await;
    env.wait_ok("/api/v1/cards", Role::Viewer, "the cards worker")
        .await;
    Cards {
        env,
        registry,
        _db: db,
    }
}

fn answers() -> Value {
    json!({
        "answers": {
            "company_name": "Acme Freight",
            "company_description": "Acme Freight moves containers for 300 importers across Europe.",
            "industry": "logistics",
            "products": ["ocean freight", "customs brokerage"],
            "audience": "People who plan inbound freight at mid-size importers.",
            "audience_roles": ["logistics managers", "supply chain leads"],
            "pains": ["late containers"],
            "tone": "friendly and direct",
            "dos": ["use numbers"],
            "insight": "Late containers cost more than slow ones.",
            "evidence": "Customers forgive slow delivery. Late containers break warehouse schedules and cost importers twice the delay fees."
        }
    })
}

/// The sum of a counter family's samples whose labels include `labels`.
fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Every usage event of `meter` on the `USAGE` stream.
async fn usage_events(js: &jetstream::Context, tenant: &str, meter: &str) -> Vec<UsageEvent> {
    let usage = js.get_stream(stream::USAGE).await.expect("USAGE stream");
    let consumer = usage
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: subject::usage(tenant, meter),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let pending = consumer.cached_info().num_pending as usize;
    let mut out = Vec::new();
    if pending == 0 {
        return out;
    }
    let mut messages = consumer
        .fetch()
        .max_messages(pending)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    while let Some(Ok(msg)) = messages.next().await {
        out.push(decode(ContentType::Protobuf, &msg.payload).expect("a usage event"));
        if out.len() == pending {
            break;
        }
    }
    out
}

async fn onboard(env: &Env) -> Vec<String> {
    let token = env.token(TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/onboarding",
            Some(&token),
            Some(answers()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:#?}");
    let ids: Vec<String> = reply.body["card_ids"]
        .as_array()
        .expect("card ids")
        .iter()
        .map(|v| v.as_str().expect("an id").to_owned())
        .collect();
    let types: Vec<&str> = reply.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["company", "audience", "voice", "insight"]);
    assert_eq!(reply.body["cards"][0]["content"]["name"], "Acme Freight");
    assert_eq!(reply.body["cards"][0]["created_by"], "tester");
    ids
}

async fn execute(env: &Env, body: Value) -> Value {
    let token = env.token(TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/execute",
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    reply.body
}

#[tokio::test]
async fn onboarding_cards_drive_a_linkedin_post_and_each_fetched_card_is_counted_once() {
    let cards = Box::pin(cards_env()).await;
    let env = &cards.env;
    let ids = onboard(env).await;
    assert_eq!(ids.len(), 4);

    let status = execute(
        env,
        json!({
            "workflow_type": "linkedin_post",
            "card_ids": ids,
            "additional_context": "We publish our on-time rate every month.",
            "wait": 10
        }),
    )
    .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let post = status["output"]["post"].as_str().expect("a post");
    // The company's name, the audience's roles and the friendly voice are in the post.
    assert!(post.contains("Acme Freight"), "{post}");
    assert!(
        post.contains("logistics managers and supply chain leads"),
        "{post}"
    );
    assert!(
        post.contains("Here's what stood out:") && post.contains("A question for"),
        "a friendly voice writes casually: {post}"
    );
    assert!(
        post.contains("Late containers cost more than slow ones"),
        "{post}"
    );
    assert!(post.contains("We publish our on-time rate every month."));
    assert_eq!(status["output"]["partial_result"], false);
    assert_eq!(status["output"]["missing_ids"], json!([]));

    // One usage event per card the workflow fetched, with type and source.
    let events = usage_events(&env.js, TENANT, switchyard_cards::usage::METER).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let mut types: Vec<&str> = events
        .iter()
        .map(|e| e.attributes["card_type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["audience", "company", "insight", "voice"]);
    for e in &events {
        assert_eq!(e.tenant, TENANT);
        assert_eq!(e.attributes["source"], "workflow");
        assert_eq!(e.instance_id, status["instance_id"].as_str().unwrap());
        assert_eq!(e.quantity, 1.0);
    }
    let usage = |source: &str| {
        counter(
            &cards.registry,
            "cards_api_usage_total",
            &[("tenant_id", TENANT), ("source", source)],
        )
    };
    assert_eq!(usage("workflow"), 4.0);
    assert_eq!(
        counter(
            &cards.registry,
            "workflow_cards_fetched_total",
            &[("tenant_id", TENANT), ("workflow_type", "linkedin_post")]
        ),
        4.0
    );

    // A redelivered retrieve job (same job id, delivered twice) counts its cards once. Its
    // result comes back to an inbox: a worker may answer there, not on any subject.
    let reply = env.client.new_inbox();
    let mut results = env
        .client
        .subscribe(reply.clone())
        .await
        .expect("subscribe");
    env.client.flush().await.unwrap();
    let job = Job {
        job_id: "redelivered-job".into(),
        tenant: TENANT.into(),
        instance_id: "instance-x".into(),
        step_id: "cards".into(),
        operation: "cards.retrieve".into(),
        input: serde_json::to_vec(
            &json!({"card_ids": [ids[0], ids[1]], "workflow": "linkedin_post"}),
        )
        .unwrap(),
        reply_subject: reply.clone(),
        ..Job::default()
    };
    for delivery in ["d1", "d2"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, delivery);
        headers.insert(header::TENANT, TENANT);
        headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
        env.js
            .publish_with_headers(
                subject::job("cards.retrieve"),
                headers,
                encode_proto(&job).into(),
            )
            .await
            .unwrap()
            .await
            .expect("stored");
        let msg = tokio::time::timeout(T, results.next())
            .await
            .expect("a result in time")
            .expect("open");
        let result: JobResult = decode(ContentType::Protobuf, &msg.payload).unwrap();
        assert_eq!(result.status, JobStatus::Succeeded as i32, "{result:?}");
    }
    let events = usage_events(&env.js, TENANT, switchyard_cards::usage::METER).await;
    assert_eq!(events.len(), 6, "two more cards, once each");
    assert_eq!(usage("workflow"), 6.0);

    // An API read is one event with source `api`.
    let viewer = env.token(TENANT, Role::Viewer);
    let reply = env
        .call(
            Method::GET,
            &format!("/api/v1/cards/{}", ids[2]),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.header("etag"), "\"1\"");
    let events = usage_events(&env.js, TENANT, switchyard_cards::usage::METER).await;
    assert_eq!(events.len(), 7);
    assert_eq!(events[6].attributes["source"], "api");
    assert_eq!(events[6].attributes["card_type"], "voice");
    assert_eq!(usage("api"), 1.0);
}

#[tokio::test]
async fn missing_cards_fail_the_workflow_by_name_unless_partial_results_are_allowed() {
    let cards = Box::pin(cards_env()).await;
    let env = &cards.env;
    let ids = onboard(env).await;
    let gone = "0190aaaa-0000-7000-8000-000000000000";

    let status = execute(
        env,
        json!({"workflow_type": "linkedin_post", "card_ids": [ids[0], gone], "wait": 10}),
    )
    .await;
    assert_eq!(status["status"], "failed", "{status:#}");
    let error = status["error"].to_string();
    assert!(error.contains(gone), "the missing id is named: {error}");

    // Another tenant's card is missing too.
    let other = env.token(OTHER_TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/workflows/execute",
            Some(&other),
            Some(json!({"workflow_type": "linkedin_post", "card_ids": [ids[0]], "wait": 10})),
        )
        .await;
    assert_eq!(reply.body["status"], "failed", "{reply:#?}");
    assert!(reply.body["error"].to_string().contains(&ids[0]));

    let status = execute(
        env,
        json!({
            "workflow_type": "linkedin_post",
            "card_ids": [ids[0], gone, ids[1]],
            "allow_partial": true,
            "wait": 10
        }),
    )
    .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"]["partial_result"], true);
    assert_eq!(status["output"]["missing_ids"], json!([gone]));
    assert!(
        status["output"]["post"]
            .as_str()
            .unwrap()
            .contains("Acme Freight")
    );
    // Only cards that were used count: the failed runs fetched none, the partial run two.
    let fetched = counter(
        &cards.registry,
        "cards_api_usage_total",
        &[("tenant_id", TENANT)],
    );
    assert_eq!(fetched, 2.0, "the failed run fetched nothing it could use");
}

#[tokio::test]
async fn cards_are_managed_over_http_with_etags_problems_and_tenant_isolation() {
    let cards = Box::pin(cards_env()).await;
    let env = &cards.env;
    let op = env.token(TENANT, Role::Operator);
    let viewer = env.token(TENANT, Role::Viewer);
    let admin = env.token(TENANT, Role::Admin);

    // Create: 201 with Location and ETag.
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards",
            Some(&op),
            Some(json!({"type": "company", "title": "Acme", "content": {"name": "Acme"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:#?}");
    let id = reply.body["card"]["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("location"), format!("/api/v1/cards/{id}"));
    assert_eq!(reply.header("etag"), "\"1\"");

    // Content that fails its type's schema: 422 naming the field.
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards",
            Some(&op),
            Some(json!({"type": "company", "title": "Acme", "content": {"website": "x"}})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "content", "{reply:#?}");
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards",
            Some(&op),
            Some(json!({"type": "company", "title": "Acme", "content": "text"})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "content");
    // A viewer cannot write.
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards",
            Some(&viewer),
            Some(json!({"type": "company", "title": "A", "content": {"name": "A"}})),
        )
        .await;
    reply.problem(403);

    // Update with If-Match: the right version moves on, a stale one is 412.
    let patch = |etag: &'static str, name: &str| {
        let body = json!({"content": {"name": name}}).to_string();
        let uri = format!("/api/v1/cards/{id}");
        let op = op.clone();
        async move {
            env.send(
                Method::PATCH,
                &uri,
                Some(&op),
                &[("content-type", "application/json"), ("if-match", etag)],
                Some(body),
            )
            .await
        }
    };
    let reply = patch("\"1\"", "Acme Ltd").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.header("etag"), "\"2\"");
    let reply = patch("\"1\"", "Acme Stale").await;
    let problem = reply.problem(412);
    assert!(problem["detail"].as_str().unwrap().contains("version 2"));

    let reply = env
        .call(
            Method::GET,
            &format!("/api/v1/cards/{id}?version=1"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.body["card"]["content"]["name"], "Acme");
    let reply = env
        .call(
            Method::GET,
            &format!("/api/v1/cards/{id}/versions"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.body["versions"].as_array().unwrap().len(), 2);

    // Batch, list with a type filter and a cursor.
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards/batch",
            Some(&op),
            Some(json!({"cards": [
                {"type": "insight", "title": "One", "content": {"text": "one"}},
                {"type": "insight", "title": "Two", "content": {"text": "two"}},
                {"type": "insight", "title": "Three", "content": {"text": "three"}}
            ]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:#?}");
    let reply = env
        .call(
            Method::GET,
            "/api/v1/cards?type=insight&limit=2",
            Some(&viewer),
            None,
        )
        .await;
    let titles: Vec<&str> = reply.body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Three", "Two"]);
    let cursor = reply.body["next_cursor"].as_str().unwrap().to_owned();
    let reply = env
        .call(
            Method::GET,
            &format!("/api/v1/cards?type=insight&limit=2&cursor={cursor}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.body["cards"][0]["title"], "One");
    assert!(reply.body.get("next_cursor").is_none());
    let reply = env
        .call(Method::GET, "/api/v1/cards?limit=0", Some(&viewer), None)
        .await;
    assert_eq!(reply.problem(422)["field"], "limit");

    // Retrieve answers partially by default over HTTP.
    let missing = "0190aaaa-0000-7000-8000-000000000001";
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards/retrieve",
            Some(&viewer),
            Some(json!({"card_ids": [id, missing]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["partial_result"], true);
    assert_eq!(reply.body["missing_ids"], json!([missing]));

    // Another tenant sees nothing of it.
    let other = env.token(OTHER_TENANT, Role::Admin);
    let uri = format!("/api/v1/cards/{id}");
    env.call(Method::GET, &uri, Some(&other), None)
        .await
        .problem(404);
    let reply = env
        .send(
            Method::PATCH,
            &uri,
            Some(&other),
            &[("content-type", "application/json")],
            Some(json!({"title": "Hijacked"}).to_string()),
        )
        .await;
    reply.problem(404);
    env.call(Method::DELETE, &uri, Some(&other), None)
        .await
        .problem(404);
    let reply = env
        .call(Method::GET, "/api/v1/cards", Some(&other), None)
        .await;
    assert_eq!(reply.body["cards"], json!([]));
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards/retrieve",
            Some(&other),
            Some(json!({"card_ids": [id]})),
        )
        .await;
    assert_eq!(reply.body["missing_ids"], json!([id]));

    // A custom type: register its schema, then content is checked against it.
    let reply = env
        .call(
            Method::PUT,
            "/api/v1/cards/types/testimonial",
            Some(&admin),
            Some(json!({"type": "object", "required": ["quote"], "properties": {"quote": {"type": "string"}}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(reply.body["version"], 1);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/cards",
            Some(&op),
            Some(json!({"type": "testimonial", "title": "Ann", "content": {"quote": 5}})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "content.quote");
    let reply = env
        .call(
            Method::PUT,
            "/api/v1/cards/types/company",
            Some(&admin),
            Some(json!({"type": "object"})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "type");

    // Delete hides it; deleting again says so.
    let reply = env.call(Method::DELETE, &uri, Some(&op), None).await;
    assert_eq!(reply.body["deleted"], true, "{reply:#?}");
    env.call(Method::GET, &uri, Some(&viewer), None)
        .await
        .problem(404);
}
