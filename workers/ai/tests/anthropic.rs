//! The Anthropic Messages client against a loopback server speaking its wire format.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use serde_json::{Value, json};
use switchyard_ai::{
    Error, Ops,
    breaker::Breaker,
    client::{Provider, Providers, RetryPolicy},
    metrics::Metrics,
    provider::{ChatRequest, Message, anthropic::Anthropic},
};
use switchyard_runtime::JobFailure;

fn api(server: &Server) -> Arc<Anthropic> {
    Arc::new(Anthropic::new(
        "claude",
        &server.url,
        "sk-ant-test",
        "2023-06-01",
        reqwest::Client::new(),
    ))
}

fn client(server: &Server) -> Provider {
    provider("claude", "anthropic", "claude-test", api(server))
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "claude-test".into(),
        system: Some("Be brief.".into()),
        messages: vec![Message::user("Say hello")],
        temperature: Some(0.5),
        max_tokens: 100,
        stop: vec!["\n\nHuman:".into()],
        json: None,
        stream,
        timeout: Duration::from_secs(10),
    }
}

fn message(content: Value) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-20250101",
        "content": content, "stop_reason": "end_turn", "stop_sequence": null,
        "usage": { "input_tokens": 21, "output_tokens": 5 }
    })
}

fn stream_of(parts: &[&str]) -> Vec<u8> {
    let mut events = vec![
        (Some("message_start"), json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-20250101", "content": [], "usage": { "input_tokens": 25, "output_tokens": 1 } } }).to_string()),
        (Some("content_block_start"), json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }).to_string()),
        (Some("ping"), json!({ "type": "ping" }).to_string()),
    ];
    for p in parts {
        events.push((Some("content_block_delta"), json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": p } }).to_string()));
    }
    events.push((
        Some("content_block_stop"),
        json!({ "type": "content_block_stop", "index": 0 }).to_string(),
    ));
    events.push((Some("message_delta"), json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 15 } }).to_string()));
    events.push((
        Some("message_stop"),
        json!({ "type": "message_stop" }).to_string(),
    ));
    sse(&events)
}

#[tokio::test]
async fn a_reply_is_read_and_the_request_carries_key_version_and_system() {
    let server = Server::start().await;
    server.reply(Reply::json(
        200,
        message(json!([{ "type": "text", "text": "Hello!" }])),
    ));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "Hello!");
    assert_eq!(reply.model, "claude-test-20250101");
    assert_eq!((reply.input_tokens, reply.output_tokens), (21, 5));
    let seen = &server.seen()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), "sk-ant-test");
    assert_eq!(seen.header("anthropic-version"), "2023-06-01");
    assert_eq!(seen.header("authorization"), "", "no bearer token");
    let body = seen.json();
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": "Say hello" }])
    );
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(body["stream"], false);
}

#[tokio::test]
async fn streamed_events_are_reassembled_whatever_the_chunking() {
    let server = Server::start().await;
    server.reply(Reply::Chunks {
        content_type: "text/event-stream",
        chunks: ragged(&stream_of(&["Bon", "jour ", "à tous"])),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reply = client(&server)
        .chat(&request(true), Some(&tx), &Default::default())
        .await
        .expect("reply");
    drop(tx);
    assert_eq!(reply.text, "Bonjour à tous");
    assert_eq!((reply.input_tokens, reply.output_tokens), (25, 15));
    assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
    let mut deltas = String::new();
    while let Some(d) = rx.recv().await {
        deltas.push_str(&d);
    }
    assert_eq!(deltas, "Bonjour à tous");
    assert_eq!(server.seen()[0].json()["stream"], true);
}

#[tokio::test]
async fn a_429_then_an_overloaded_529_are_retried_then_succeed() {
    let server = Server::start().await;
    server
        .reply(Reply::status(
            429,
            vec![("retry-after", "0".into())],
            "{\"type\":\"error\"}",
        ))
        .reply(Reply::status(
            529,
            vec![],
            "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}",
        ))
        .reply(Reply::json(
            200,
            message(json!([{ "type": "text", "text": "third time" }])),
        ));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "third time");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    let server = Server::start().await;
    server
        .reply(Reply::status(500, vec![], "internal"))
        .reply(Reply::json(
            200,
            message(json!([{ "type": "text", "text": "fine" }])),
        ));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "fine");
}

#[tokio::test]
async fn a_malformed_body_is_a_permanent_error_that_says_why() {
    let server = Server::start().await;
    server.reply(Reply::status(
        200,
        vec![("content-type", "application/json".into())],
        "<html>gateway</html>",
    ));
    let err = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect_err("malformed");
    let text = err.to_string();
    assert!(
        text.starts_with("provider claude: malformed response: not a message ("),
        "{text}"
    );
    assert!(text.contains("<html>gateway</html>"), "{text}");
    assert!(matches!(err.into_failure(), JobFailure::Permanent { .. }));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn cancelling_mid_stream_closes_the_connection() {
    let server = Server::start().await;
    let start = stream_of(&["partial"]);
    let cut = String::from_utf8(start).unwrap();
    let first_events: String = cut
        .split("event: content_block_stop")
        .next()
        .unwrap()
        .to_owned();
    server.reply(Reply::Hang {
        content_type: "text/event-stream",
        first: vec![first_events.into_bytes()],
        keepalive: b"event: ping\ndata: {\"type\":\"ping\"}\n\n".to_vec(),
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let c = client(&server);
    let req = request(true);
    let call = c.chat(&req, Some(&tx), &cancel);
    let watcher = async {
        assert_eq!(rx.recv().await.as_deref(), Some("partial"));
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(call, watcher);
    assert_eq!(result, Err(Error::Cancelled));
    assert!(server.disconnected().await);
}

#[tokio::test]
async fn structured_output_is_a_forced_tool_call() {
    let server = Server::start().await;
    server.reply(Reply::json(200, message(json!([
        { "type": "tool_use", "id": "toolu_1", "name": "ai_extract_tasks", "input": { "tasks": [
            { "title": "Send the deck", "assignee": "Ana", "priority": "high", "source_quote": "Ana: I'll send the deck." }
        ] } }
    ]))));
    let mut providers = Providers::default();
    providers.insert(client(&server));
    let out = Ops::new(providers, "local")
        .run(&Recorder::default(), "ai.extract_tasks", json!({ "transcript": "Ana: I'll send the deck.", "provider": "claude", "meeting_date": "2025-03-12" }))
        .await
        .expect("tasks");
    assert_eq!(out["tasks"][0]["assignee"], "Ana");
    let body = server.seen()[0].json();
    assert_eq!(
        body["tool_choice"],
        json!({ "type": "tool", "name": "ai_extract_tasks" })
    );
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["tasks"])
    );
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("meeting date 2025-03-12")
    );
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_faults_and_then_fails_fast() {
    let server = Server::start().await;
    for _ in 0..3 {
        server.reply(Reply::status(503, vec![], "down"));
    }
    let metrics = Metrics::unregistered().unwrap();
    let no_retries = RetryPolicy {
        max_retries: 0,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_secs(1),
    };
    let p = Provider::new(
        "claude",
        "anthropic",
        "claude-test",
        Duration::from_secs(5),
        no_retries,
        Breaker::new(3, Duration::from_secs(600)),
        metrics.clone(),
        api(&server),
    );
    for _ in 0..3 {
        let err = p
            .chat(&request(false), None, &Default::default())
            .await
            .expect_err("503");
        assert!(matches!(err, Error::Server { status: 503, .. }), "{err}");
    }
    let err = p
        .chat(&request(false), None, &Default::default())
        .await
        .expect_err("open");
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
    assert_eq!(server.seen().len(), 3, "the open breaker did not call");
    assert_eq!(
        metrics.breaker_state.with_label_values(&["claude"]).get(),
        1
    );
    let JobFailure::Retryable { retry_after, .. } = err.into_failure() else {
        panic!("not retryable")
    };
    assert!(retry_after.is_some_and(|d| d > Duration::from_secs(500)));
}
