//! `GET /api/v1/workflows/instances/{id}/events`: Server-Sent Events against a real bus,
//! orchestrator and `test` worker.

mod common;

use std::time::Duration;

use axum::{
    body::{Body, BodyDataStream},
    http::{Method, Request, StatusCode},
};
use common::*;
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_gateway::{CONSUMER_PREFIX, Role};
use switchyard_proto::stream;
use tower::ServiceExt as _;

const APPROVAL: &str = r#"
name: approval
version: 1
steps:
  - id: first
    operation: test.echo
    input: { n: 1 }
  - id: approve
    needs: [first]
    wait_for_signal: { name: approval }
  - id: after
    operation: test.echo
    needs: [approve]
    input: { by: "{{ steps.approve.output.by }}" }
output:
  by: "{{ steps.after.output.by }}"
"#;

const SLEEPY: &str = r#"
name: sleepy
version: 1
steps:
  - { id: slow, operation: test.sleep, input: { ms: 20000 } }
"#;

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct Sse {
    id: u64,
    event: String,
    data: Value,
}

/// Reads SSE frames off a response body.
struct SseReader {
    body: BodyDataStream,
    buffer: String,
}

impl SseReader {
    /// The next event, skipping keep-alive comments; `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Some(Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).expect("JSON data"),
                    });
                }
                continue;
            }
            let chunk = tokio::time::timeout(T, self.body.next())
                .await
                .expect("an event within the time limit")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.expect("body chunk")).expect("UTF-8"));
        }
    }

    async fn until(&mut self, event: &str) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let done = e.event == event;
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("the stream ended before {event}: {out:#?}");
    }

    async fn rest(mut self) -> Vec<Sse> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

async fn open(env: &Env, instance: &str, last_event_id: Option<u64>) -> SseReader {
    let token = env.token(TENANT, Role::Viewer);
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("/api/v1/workflows/instances/{instance}/events"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let response = env
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    SseReader {
        body: response.into_body().into_data_stream(),
        buffer: String::new(),
    }
}

/// The event types of the instance as stored on `WF_EVENTS`, in stream order.
async fn stored_events(env: &Env, instance: &str) -> Vec<(u64, String)> {
    let events = env.js.get_stream(stream::WF_EVENTS).await.unwrap();
    let consumer = events
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("wf.events.{TENANT}.{instance}.>"),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(msg)) = batch.next().await {
        let seq = msg.info().unwrap().stream_sequence;
        let ty = msg.subject.rsplit('.').next().unwrap().to_owned();
        out.push((seq, ty));
    }
    out
}

async fn sse_consumers(env: &Env) -> usize {
    let events = env.js.get_stream(stream::WF_EVENTS).await.unwrap();
    let names: Vec<String> = events
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    names
        .iter()
        .filter(|n| n.starts_with(CONSUMER_PREFIX))
        .count()
}

#[tokio::test]
async fn events_arrive_live_in_order_and_resume_after_the_last_event_id() {
    let env = env().await;
    env.register(APPROVAL).await;
    let instance = env.trigger("approval", json!({})).await;

    // Opened while the instance runs: history first, then live events as they happen.
    let mut live = open(&env, &instance, None).await;
    let before = live.until("step_waiting").await;
    assert_eq!(before[0].event, "started", "{before:#?}");
    let op = env.token(TENANT, Role::Operator);
    let reply = env
        .call(
            Method::POST,
            &format!("/api/v1/workflows/instances/{instance}/signal/approval"),
            Some(&op),
            Some(json!({ "by": "ops" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let after = live.rest().await;
    let all: Vec<Sse> = before.into_iter().chain(after).collect();
    assert_eq!(all.last().unwrap().event, "completed", "{all:#?}");
    assert_eq!(all.last().unwrap().data["data"]["output"]["by"], "ops");

    // Every stored event, in stream order, nothing twice, nothing missing.
    let stored = stored_events(&env, &instance).await;
    let seen: Vec<(u64, String)> = all.iter().map(|e| (e.id, e.event.clone())).collect();
    assert_eq!(seen, stored);
    for e in &all {
        assert_eq!(e.data["type"], e.event.as_str());
        assert_eq!(e.data["instance_id"], instance.as_str());
    }
    let types: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    for expected in ["step_signalled", "step_completed"] {
        assert!(types.contains(&expected), "{types:?}");
    }

    // Reconnecting with the third event's id gives exactly the events after it, then ends.
    let resumed = open(&env, &instance, Some(all[2].id)).await.rest().await;
    let resumed: Vec<(u64, String)> = resumed.iter().map(|e| (e.id, e.event.clone())).collect();
    assert_eq!(resumed, seen[3..].to_vec());

    // A finished instance replays its history and the stream ends.
    let replay = open(&env, &instance, None).await.rest().await;
    assert_eq!(replay.len(), all.len());

    // Another tenant's instance does not exist; a bad Last-Event-ID is named.
    let other = env.token(OTHER_TENANT, Role::Admin);
    env.call(
        Method::GET,
        &format!("/api/v1/workflows/instances/{instance}/events"),
        Some(&other),
        None,
    )
    .await
    .problem(404);
    let reply = env
        .send(
            Method::GET,
            &format!("/api/v1/workflows/instances/{instance}/events"),
            Some(&op),
            &[("last-event-id", "yesterday")],
            None,
        )
        .await;
    assert_eq!(reply.problem(400)["field"], "Last-Event-ID");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_leaves_nothing_behind() {
    let env = env().await;
    env.register(SLEEPY).await;
    let instance = env.trigger("sleepy", json!({})).await;
    assert_eq!(sse_consumers(&env).await, 0);

    let mut reader = open(&env, &instance, None).await;
    let first = reader.next().await.expect("an event");
    assert_eq!(first.event, "started");
    assert_eq!(sse_consumers(&env).await, 1);
    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics.text.contains("switchyard_event_streams 1"),
        "{}",
        metrics.text
    );

    drop(reader);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sse_consumers(&env).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's consumer outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = env.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics.text.contains("switchyard_event_streams 0"),
        "{}",
        metrics.text
    );

    // The instance itself is untouched by the client leaving.
    let status = env.status(&instance).await;
    assert_eq!(status.body["status"], "running", "{status:#?}");
    cancel(&env, &instance).await;
}

#[tokio::test]
async fn open_event_streams_are_capped_and_a_closed_one_frees_its_slot() {
    let env = env_with(|c| c.gateway.event_streams_per_tenant = 1).await;
    env.register(SLEEPY).await;
    let instance = env.trigger("sleepy", json!({})).await;

    let first = open(&env, &instance, None).await;
    let token = env.token(TENANT, Role::Viewer);
    let uri = format!("/api/v1/workflows/instances/{instance}/events");
    let over = env.call(Method::GET, &uri, Some(&token), None).await;
    assert_eq!(
        over.problem(429)["type"],
        "urn:switchyard:problem:too-many-streams",
        "{over:#?}"
    );
    assert_eq!(
        sse_consumers(&env).await,
        1,
        "the refused stream opened nothing"
    );

    drop(first);
    let mut again = open(&env, &instance, None).await;
    assert_eq!(again.next().await.expect("an event").event, "started");

    cancel(&env, &instance).await;
}

/// Cancels `instance` as an operator of [`TENANT`], so a test leaves no sleeping job behind.
async fn cancel(env: &Env, instance: &str) {
    let op = env.token(TENANT, Role::Operator);
    let uri = format!("/api/v1/workflows/instances/{instance}/cancel");
    let reply = env.call(Method::POST, &uri, Some(&op), None).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
}
