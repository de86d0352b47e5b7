//! `POST /api/v1/research` end to end: the gateway calls a real research worker (on the
//! shipped corpus) over its service endpoint on a real nats-server.

mod common;

use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use common::*;
use prometheus::Registry;
use serde_json::json;
use switchyard_gateway::Role;
use switchyard_research::ResearchWorker;
use switchyard_runtime::config::{RateLimit, RatePeriod};

/// The gateway with research limited to `per_hour` requests per user, and a research worker.
async fn env(per_hour: u32) -> Env {
    let mut env = env_with(|c| {
        c.gateway.rate_limits.research = RateLimit::per(per_hour, RatePeriod::Hour);
        c.research.corpus_dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../workers/research/corpus");
    })
    .await;
    let registry = Registry::new();
    let handler = ResearchWorker::build(&env.config, &registry)
        .await
        .expect("research worker");
    let config = env.config.clone();
    env.components
        .worker(&env.bus, &config, handler, &registry)
        .await;
    // Ready once the registry lists the operation (asking the route would spend the limit).
    let viewer = env.token(TENANT, Role::Viewer);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = env
            .call(Method::GET, "/api/v1/registry", Some(&viewer), None)
            .await;
        if reply.text.contains("research.topic") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the research worker never registered: {reply:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    env
}

#[tokio::test]
async fn a_topic_is_researched_over_the_corpus_and_bad_input_names_the_field() {
    let env = Box::pin(env(10)).await;
    let token = env.token(TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/research",
            Some(&token),
            Some(json!({ "topic": "exponential backoff with jitter", "difficulty": "beginner", "max_sources": 3 })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    let body = &reply.body;
    assert_eq!(body["found"], true, "{body:#}");
    assert!(!body["summary"].as_str().unwrap().is_empty());
    let sources = body["sources"].as_array().unwrap();
    assert!(!sources.is_empty() && sources.len() <= 3, "{body:#}");
    assert!(
        sources[0]["location"]
            .as_str()
            .unwrap()
            .ends_with("retries-backoff.md"),
        "{body:#}"
    );

    let bad = env
        .call(
            Method::POST,
            "/api/v1/research",
            Some(&token),
            Some(json!({ "difficulty": "expert" })),
        )
        .await;
    bad.problem(422);
    assert!(bad.text.contains("topic"), "{}", bad.text);

    // A viewer may read but not run research.
    let viewer = env.token(TENANT, Role::Viewer);
    env.call(
        Method::POST,
        "/api/v1/research",
        Some(&viewer),
        Some(json!({ "topic": "raft" })),
    )
    .await
    .problem(403);
}

#[tokio::test]
async fn research_is_limited_per_user() {
    let env = Box::pin(env(1)).await;
    let token = env.token(TENANT, Role::Operator);
    let body = json!({ "topic": "Raft leader election" });
    let first = env
        .call(
            Method::POST,
            "/api/v1/research",
            Some(&token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:#?}");
    let second = env
        .call(Method::POST, "/api/v1/research", Some(&token), Some(body))
        .await;
    second.problem(429);
    assert!(!second.header("retry-after").is_empty(), "{second:#?}");
}
