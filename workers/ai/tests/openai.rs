//! The OpenAI-compatible client against a loopback server speaking the chat completions and
//! audio transcription wire formats.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use switchyard_ai::{
    Error, Ops,
    client::Providers,
    meter,
    provider::{ChatRequest, Message, openai::OpenAi},
};
use switchyard_runtime::{JobFailure, net::AddressGuard};

fn client(server: &Server) -> switchyard_ai::client::Provider {
    let api = OpenAi::new(
        "openai",
        format!("{}/v1", server.url),
        Some("sk-test".into()),
        reqwest::Client::new(),
    );
    provider("openai", "openai", "gpt-test", Arc::new(api))
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "gpt-test".into(),
        system: Some("Be brief.".into()),
        messages: vec![Message::user("Say hello")],
        temperature: Some(0.2),
        max_tokens: 64,
        stop: vec!["END".into()],
        json: None,
        stream,
        timeout: Duration::from_secs(10),
    }
}

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-2025",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15 }
    })
}

fn stream_of(parts: &[&str]) -> Vec<u8> {
    let mut events: Vec<(Option<&str>, String)> = parts
        .iter()
        .map(|p| {
            (None, json!({ "model": "gpt-test-2025", "choices": [{ "index": 0, "delta": { "content": p }, "finish_reason": null }] }).to_string())
        })
        .collect();
    events.push((None, json!({ "model": "gpt-test-2025", "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }).to_string()));
    events.push((None, json!({ "model": "gpt-test-2025", "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 4 } }).to_string()));
    events.push((None, "[DONE]".into()));
    sse(&events)
}

#[tokio::test]
async fn a_reply_is_read_and_the_request_is_what_the_api_documents() {
    let server = Server::start().await;
    server.reply(Reply::json(200, completion("Hello!")));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "Hello!");
    assert_eq!(reply.model, "gpt-test-2025");
    assert_eq!((reply.input_tokens, reply.output_tokens), (12, 3));

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].header("authorization"), "Bearer sk-test");
    let body = seen[0].json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(
        body["messages"],
        json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "Say hello" }])
    );
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stop"], json!(["END"]));
    assert_eq!(body["stream"], false);
}

#[tokio::test]
async fn a_stream_is_reassembled_whatever_the_chunking() {
    let server = Server::start().await;
    server.reply(Reply::Chunks {
        content_type: "text/event-stream",
        chunks: ragged(&stream_of(&["Hel", "lo, ", "wörld", "!"])),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reply = client(&server)
        .chat(&request(true), Some(&tx), &Default::default())
        .await
        .expect("reply");
    drop(tx);
    assert_eq!(reply.text, "Hello, wörld!");
    assert_eq!((reply.input_tokens, reply.output_tokens), (9, 4));
    let mut deltas = Vec::new();
    while let Some(d) = rx.recv().await {
        deltas.push(d);
    }
    assert_eq!(deltas, ["Hel", "lo, ", "wörld", "!"]);
    let body = server.seen()[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let server = Server::start().await;
    server
        .reply(Reply::status(
            429,
            vec![("retry-after", "1".into())],
            "slow down",
        ))
        .reply(Reply::json(200, completion("ok")));
    let started = Instant::now();
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply after retry");
    assert_eq!(reply.text, "ok");
    assert_eq!(server.seen().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
}

#[tokio::test]
async fn a_long_retry_after_hands_the_job_back_with_that_delay() {
    let server = Server::start().await;
    server.reply(Reply::status(429, vec![("retry-after", "120".into())], ""));
    let err = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect_err("not waited in-call");
    assert_eq!(server.seen().len(), 1);
    assert_eq!(
        err.into_failure(),
        JobFailure::Retryable {
            message: "provider openai: rate limited (HTTP 429)".into(),
            retry_after: Some(Duration::from_secs(120)),
        }
    );
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    let server = Server::start().await;
    server
        .reply(Reply::status(500, vec![], "boom"))
        .reply(Reply::json(200, completion("recovered")));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply after retry");
    assert_eq!(reply.text, "recovered");
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn a_malformed_body_is_a_permanent_error_that_says_why() {
    let server = Server::start().await;
    server.reply(Reply::json(
        200,
        json!({ "id": "x", "object": "chat.completion" }),
    ));
    let err = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect_err("malformed");
    assert_eq!(server.seen().len(), 1, "not retried");
    let text = err.to_string();
    assert!(
        text.contains("malformed response: not a chat completion (missing field `choices`"),
        "{text}"
    );
    assert!(matches!(err.into_failure(), JobFailure::Permanent { .. }));
}

#[tokio::test]
async fn cancelling_mid_stream_closes_the_connection() {
    let server = Server::start().await;
    server.reply(Reply::Hang {
        content_type: "text/event-stream",
        first: vec![sse(&[(
            None,
            json!({ "choices": [{ "index": 0, "delta": { "content": "partial" } }] }).to_string(),
        )])],
        keepalive: b": ping\n\n".to_vec(),
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
    assert!(
        server.disconnected().await,
        "the server saw the client go away"
    );
}

/// Operations on the loopback provider; `audio_url` may reach the loopback server (and
/// nothing else that is not public).
fn ops(server: &Server) -> Ops {
    let mut providers = Providers::default();
    providers.insert(client(server));
    let loopback = AddressGuard::parse_network("127.0.0.1").unwrap();
    Ops::with_guard(providers, "openai", AddressGuard::with_allowed([loopback]))
}

#[tokio::test]
async fn generate_streams_deltas_as_events_and_reports_usage_per_provider_and_model() {
    let server = Server::start().await;
    server.reply(Reply::Chunks {
        content_type: "text/event-stream",
        chunks: ragged(&stream_of(&["One ", "two ", "three."])),
    });
    let env = Recorder::default();
    let out = ops(&server)
        .run(
            &env,
            "ai.generate",
            json!({ "prompt": "Count", "context": { "n": 3 }, "max_tokens": 20, "stream": true }),
        )
        .await
        .expect("generated");
    assert_eq!(out["text"], "One two three.");
    assert_eq!(out["provider"], "openai");
    assert_eq!(env.deltas(), "One two three.");
    assert_eq!(env.meter(meter::INPUT_TOKENS), 9.0);
    assert_eq!(env.meter(meter::OUTPUT_TOKENS), 4.0);
    let usage = env.usage.lock().unwrap();
    assert_eq!(usage[0].3["provider"], "openai");
    assert_eq!(usage[0].3["model"], "gpt-test-2025");
    let body = server.seen()[0].json();
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("\"n\": 3"),
        "{body}"
    );
    assert_eq!(body["max_tokens"], 20);
}

#[tokio::test]
async fn structured_output_is_asked_for_validated_and_corrected_once() {
    let server = Server::start().await;
    server
        .reply(Reply::json(200, completion("{\"summary\": \"Short.\"}")))
        .reply(Reply::json(
            200,
            completion("{\"summary\": \"Short.\", \"key_points\": [\"One\"]}"),
        ));
    let env = Recorder::default();
    let out = ops(&server)
        .run(
            &env,
            "ai.summarize",
            json!({ "text": "Long text.", "max_sentences": 2 }),
        )
        .await
        .expect("summarized");
    assert_eq!(out, json!({ "summary": "Short.", "key_points": ["One"] }));
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let first = seen[0].json();
    assert_eq!(first["response_format"]["type"], "json_schema");
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["required"],
        json!(["summary", "key_points"])
    );
    let second = seen[1].json();
    let fix = second["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(fix.contains("key_points: missing required field"), "{fix}");
}

#[tokio::test]
async fn structured_output_that_stays_invalid_fails_permanently_with_the_raw_text() {
    let server = Server::start().await;
    server
        .reply(Reply::json(200, completion("I cannot summarize that.")))
        .reply(Reply::json(200, completion("Still no JSON, sorry.")));
    let err = ops(&server)
        .run(&Recorder::default(), "ai.summarize", json!({ "text": "x" }))
        .await
        .expect_err("invalid");
    let JobFailure::Permanent { message } = err.into_failure() else {
        panic!("not permanent")
    };
    assert!(
        message.contains("does not match the output schema"),
        "{message}"
    );
    assert!(
        message.contains("raw output: Still no JSON, sorry."),
        "{message}"
    );
}

#[tokio::test]
async fn audio_by_url_is_fetched_uploaded_as_multipart_and_metered_in_seconds() {
    let server = Server::start().await;
    server
        .reply(Reply::status(200, vec![("content-type", "audio/mpeg".into())], "ID3-fake-mp3-bytes"))
        .reply(Reply::json(200, json!({
            "task": "transcribe", "language": "english", "duration": 7.5, "text": "Hello there. General Kenobi.",
            "segments": [
                { "id": 0, "start": 0.0, "end": 3.0, "text": " Hello there." },
                { "id": 1, "start": 3.5, "end": 7.5, "text": " General Kenobi." }
            ]
        })));
    let env = Recorder::default();
    let out = ops(&server)
        .run(&env, "ai.transcribe", json!({ "audio_url": format!("{}/files/standup.mp3", server.url), "language": "en", "format": "auto" }))
        .await
        .expect("transcribed");
    assert_eq!(out["transcript"], "Hello there.\nGeneral Kenobi.\n");
    assert_eq!(out["duration_seconds"], 7.5);
    assert_eq!(out["segments"][1]["start_seconds"], 3.5);
    assert_eq!(env.meter(meter::AUDIO_SECONDS), 7.5);
    let seen = server.seen();
    assert_eq!(seen[1].path, "/v1/audio/transcriptions");
    assert!(
        seen[1]
            .header("content-type")
            .starts_with("multipart/form-data; boundary=")
    );
    let body = String::from_utf8_lossy(&seen[1].body);
    for part in [
        "name=\"file\"; filename=\"standup.mp3\"",
        "ID3-fake-mp3-bytes",
        "name=\"model\"",
        "whisper-1",
        "name=\"language\"",
        "verbose_json",
    ] {
        assert!(body.contains(part), "{part} missing from {body}");
    }
}

#[tokio::test]
async fn audio_urls_into_private_networks_are_refused_before_any_request() {
    let server = Server::start().await;
    let mut providers = Providers::default();
    providers.insert(client(&server));
    let strict = Ops::new(providers, "openai");
    for url in [
        format!("{}/files/standup.mp3", server.url),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.5/recording.mp3".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let err = strict
            .run(
                &Recorder::default(),
                "ai.transcribe",
                json!({ "audio_url": url, "format": "auto" }),
            )
            .await
            .expect_err(&url);
        assert!(
            matches!(err.clone().into_failure(), JobFailure::InvalidInput { ref field, .. } if field == "audio_url"),
            "{url}: {err:?}"
        );
    }
    assert!(server.seen().is_empty(), "no request went out");
}

#[tokio::test]
async fn a_redirect_of_an_audio_url_into_the_metadata_address_is_refused() {
    let server = Server::start().await;
    server.reply(Reply::status(
        302,
        vec![(
            "location",
            "http://169.254.169.254/latest/meta-data/".into(),
        )],
        "",
    ));
    let err = ops(&server)
        .run(
            &Recorder::default(),
            "ai.transcribe",
            json!({ "audio_url": format!("{}/files/standup.mp3", server.url), "format": "auto" }),
        )
        .await
        .expect_err("refused");
    let JobFailure::InvalidInput { field, message } = err.into_failure() else {
        panic!("not a permanent input error")
    };
    assert_eq!(field, "audio_url");
    assert!(message.contains("169.254.169.254"), "{message}");
    assert_eq!(server.seen().len(), 1, "only the first hop was requested");
}
