//! The Bedrock Converse client against a loopback server: SigV4 signatures are recomputed
//! by the server from what it received, and ConverseStream answers in AWS event-stream
//! frames.

mod common;

use std::{sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use common::*;
use serde_json::{Value, json};
use switchyard_ai::{
    Error,
    provider::{
        ChatRequest, Message,
        bedrock::{AwsKeys, Bedrock},
        eventstream::encode,
    },
};
use switchyard_runtime::JobFailure;

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn client(server: &Server) -> switchyard_ai::client::Provider {
    let api = Bedrock::new(
        "bedrock",
        &server.url,
        "eu-west-1",
        AwsKeys {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: Some("session-token-1".into()),
        },
        reqwest::Client::new(),
    );
    provider("bedrock", "bedrock", MODEL, Arc::new(api))
}

fn request(stream: bool) -> ChatRequest {
    ChatRequest {
        model: MODEL.into(),
        system: Some("Be brief.".into()),
        messages: vec![Message::user("Say hello")],
        temperature: Some(0.3),
        max_tokens: 200,
        stop: vec!["STOP".into()],
        json: None,
        stream,
        timeout: Duration::from_secs(10),
    }
}

fn converse(text: &str) -> Value {
    json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": text }] } },
        "stopReason": "end_turn",
        "usage": { "inputTokens": 30, "outputTokens": 7, "totalTokens": 37 },
        "metrics": { "latencyMs": 120 }
    })
}

/// Checks the Authorization header's shape, then signs the received request again with the
/// same key and time and compares.
fn assert_signed(server: &Server, seen: &Seen) {
    let auth = seen.header("authorization");
    let amz_date = seen.header("x-amz-date");
    assert_eq!(amz_date.len(), 16, "x-amz-date {amz_date:?}");
    let expected_prefix = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/eu-west-1/bedrock/aws4_request, SignedHeaders=",
        &amz_date[..8]
    );
    assert!(auth.starts_with(&expected_prefix), "{auth}");
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .split(';')
        .collect();
    for h in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
        assert!(signed.contains(&h), "{h} not signed: {auth}");
    }
    let signature = auth.rsplit("Signature=").next().unwrap();
    assert_eq!(signature.len(), 64);
    assert!(signature.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(seen.header("x-amz-security-token"), "session-token-1");

    let (date, clock) = amz_date.split_once('T').unwrap();
    let date = time::Date::from_calendar_date(
        date[0..4].parse().unwrap(),
        time::Month::try_from(date[4..6].parse::<u8>().unwrap()).unwrap(),
        date[6..8].parse().unwrap(),
    )
    .unwrap();
    let at = date
        .with_hms(
            clock[0..2].parse().unwrap(),
            clock[2..4].parse().unwrap(),
            clock[4..6].parse().unwrap(),
        )
        .unwrap()
        .assume_utc();
    let identity = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some("session-token-1".into()),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("bedrock")
        .time(std::time::SystemTime::from(at))
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = seen.header("host").to_owned();
    let url = format!("{}{}", server.url, seen.path);
    let headers = [
        ("host", host.as_str()),
        ("content-type", seen.header("content-type")),
    ];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(&seen.body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let recomputed = instructions
        .headers()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned())
        .unwrap();
    assert_eq!(
        auth, recomputed,
        "the signature matches the request as received"
    );
}

#[tokio::test]
async fn a_converse_reply_is_read_and_the_request_is_signed_with_sigv4() {
    let server = Server::start().await;
    server.reply(Reply::json(200, converse("Hello!")));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "Hello!");
    assert_eq!((reply.input_tokens, reply.output_tokens), (30, 7));
    let seen = &server.seen()[0];
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    assert_signed(&server, seen);
    let body = seen.json();
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": [{ "text": "Say hello" }] }])
    );
    assert_eq!(body["system"], json!([{ "text": "Be brief." }]));
    assert_eq!(
        body["inferenceConfig"],
        json!({ "maxTokens": 200, "temperature": 0.3, "stopSequences": ["STOP"] })
    );
}

fn frames(parts: &[&str]) -> Vec<u8> {
    let event = |kind: &str, payload: Value| {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().as_bytes(),
        )
    };
    let mut out = event("messageStart", json!({ "role": "assistant" }));
    for p in parts {
        out.extend(event(
            "contentBlockDelta",
            json!({ "contentBlockIndex": 0, "delta": { "text": p } }),
        ));
    }
    out.extend(event("contentBlockStop", json!({ "contentBlockIndex": 0 })));
    out.extend(event("messageStop", json!({ "stopReason": "end_turn" })));
    out.extend(event("metadata", json!({ "usage": { "inputTokens": 11, "outputTokens": 6, "totalTokens": 17 }, "metrics": { "latencyMs": 80 } })));
    out
}

#[tokio::test]
async fn a_converse_stream_is_decoded_from_event_stream_frames() {
    let server = Server::start().await;
    server.reply(Reply::Chunks {
        content_type: "application/vnd.amazon.eventstream",
        chunks: ragged(&frames(&["Ola", " from ", "Bedrock"])),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reply = client(&server)
        .chat(&request(true), Some(&tx), &Default::default())
        .await
        .expect("reply");
    drop(tx);
    assert_eq!(reply.text, "Ola from Bedrock");
    assert_eq!((reply.input_tokens, reply.output_tokens), (11, 6));
    let mut deltas = Vec::new();
    while let Some(d) = rx.recv().await {
        deltas.push(d);
    }
    assert_eq!(deltas, ["Ola", " from ", "Bedrock"]);
    let seen = &server.seen()[0];
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    );
    assert_signed(&server, seen);
}

#[tokio::test]
async fn throttling_then_a_server_error_are_retried_then_succeed() {
    let server = Server::start().await;
    server
        .reply(Reply::status(
            429,
            vec![("retry-after", "0".into())],
            "{\"message\":\"ThrottlingException\"}",
        ))
        .reply(Reply::status(
            500,
            vec![],
            "{\"message\":\"InternalServerException\"}",
        ))
        .reply(Reply::json(200, converse("ok")));
    let reply = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect("reply");
    assert_eq!(reply.text, "ok");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    // Every attempt is signed afresh.
    assert_signed(&server, &seen[2]);
}

#[tokio::test]
async fn a_malformed_body_and_a_corrupt_frame_are_permanent_errors() {
    let server = Server::start().await;
    server.reply(Reply::json(200, json!({ "output": {} })));
    let err = client(&server)
        .chat(&request(false), None, &Default::default())
        .await
        .expect_err("malformed");
    assert!(
        err.to_string()
            .contains("not a Converse response (missing field `message`"),
        "{err}"
    );
    assert!(matches!(err.into_failure(), JobFailure::Permanent { .. }));

    let mut bad = frames(&["x"]);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    server.reply(Reply::Chunks {
        content_type: "application/vnd.amazon.eventstream",
        chunks: vec![bad],
    });
    let err = client(&server)
        .chat(&request(true), None, &Default::default())
        .await
        .expect_err("corrupt");
    assert!(
        err.to_string()
            .contains("event-stream message checksum mismatch"),
        "{err}"
    );
}

#[tokio::test]
async fn a_throttling_exception_inside_the_stream_is_retryable() {
    let server = Server::start().await;
    let mut body = encode(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        b"{\"role\":\"assistant\"}",
    );
    body.extend(encode(
        &[
            (":exception-type", "throttlingException"),
            (":message-type", "exception"),
        ],
        b"{\"message\":\"Too many tokens\"}",
    ));
    for _ in 0..3 {
        server.reply(Reply::Chunks {
            content_type: "application/vnd.amazon.eventstream",
            chunks: vec![body.clone()],
        });
    }
    let err = client(&server)
        .chat(&request(true), None, &Default::default())
        .await
        .expect_err("throttled");
    assert!(matches!(err, Error::RateLimited { .. }), "{err}");
    assert_eq!(server.seen().len(), 3, "retried twice in-call");
    assert!(matches!(err.into_failure(), JobFailure::Retryable { .. }));
}

#[tokio::test]
async fn cancelling_mid_stream_closes_the_connection() {
    let server = Server::start().await;
    let all = frames(&["partial"]);
    // messageStart and the first delta, then pings until the client leaves.
    let first = encode(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        b"{\"role\":\"assistant\"}",
    )
    .into_iter()
    .chain(encode(
        &[
            (":event-type", "contentBlockDelta"),
            (":message-type", "event"),
        ],
        b"{\"delta\":{\"text\":\"partial\"}}",
    ))
    .collect::<Vec<u8>>();
    assert!(all.len() > first.len());
    server.reply(Reply::Hang {
        content_type: "application/vnd.amazon.eventstream",
        first: vec![first],
        keepalive: encode(
            &[(":event-type", "ping"), (":message-type", "event")],
            b"{}",
        ),
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
