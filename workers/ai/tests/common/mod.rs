//! A scripted loopback HTTP server that records what it receives and answers from a queue,
//! and a job environment that records events and usage.
#![allow(dead_code)]

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
};
use futures::stream;
use serde_json::Value;
use switchyard_ai::{
    JobEnv,
    breaker::Breaker,
    client::{Provider, RetryPolicy},
    metrics::Metrics,
    provider::ChatApi,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON request body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// What the server answers next.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole body.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A body sent in these chunks, with a short pause between them so they arrive apart.
    Chunks {
        content_type: &'static str,
        chunks: Vec<Vec<u8>>,
    },
    /// These chunks, then `keepalive` every 20 ms until the client goes away.
    Hang {
        content_type: &'static str,
        first: Vec<Vec<u8>>,
        keepalive: Vec<u8>,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::to_vec(&body).expect("json"),
        }
    }

    pub fn status(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> Reply {
        Reply::Full {
            status,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    replies: Mutex<VecDeque<Reply>>,
    disconnected: Notify,
}

/// A server on 127.0.0.1 with a free port.
#[derive(Clone)]
pub struct Server {
    pub url: String,
    shared: Arc<Shared>,
}

/// Fires `disconnected` when the response body is dropped, i.e. the client went away.
struct DropGuard(Arc<Shared>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.disconnected.notify_one();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = shared.replies.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        return Response::builder()
            .status(StatusCode::GONE)
            .body(Body::from("no reply scripted"))
            .unwrap();
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(Body::from(body)).unwrap()
        }
        Reply::Chunks {
            content_type,
            chunks,
        } => {
            let s = stream::unfold(chunks.into_iter(), |mut it| async move {
                let next = it.next()?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from(next)), it))
            });
            Response::builder()
                .header("content-type", content_type)
                .body(Body::from_stream(s))
                .unwrap()
        }
        Reply::Hang {
            content_type,
            first,
            keepalive,
        } => {
            let guard = DropGuard(shared.clone());
            let s = stream::unfold(
                (first.into_iter(), keepalive, guard),
                |(mut it, keepalive, guard)| async move {
                    let chunk = match it.next() {
                        Some(c) => c,
                        None => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            keepalive.clone()
                        }
                    };
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(chunk)),
                        (it, keepalive, guard),
                    ))
                },
            );
            Response::builder()
                .header("content-type", content_type)
                .body(Body::from_stream(s))
                .unwrap()
        }
    }
}

impl Server {
    pub async fn start() -> Server {
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { url, shared }
    }

    pub fn reply(&self, reply: Reply) -> &Self {
        self.shared.replies.lock().unwrap().push_back(reply);
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until a hanging response's client has gone away.
    pub async fn disconnected(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(10), self.shared.disconnected.notified())
            .await
            .is_ok()
    }
}

/// Retries quick enough for tests.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(3),
    }
}

pub fn provider(name: &str, kind: &'static str, model: &str, api: Arc<dyn ChatApi>) -> Provider {
    Provider::new(
        name,
        kind,
        model,
        Duration::from_secs(10),
        fast_retries(),
        Breaker::new(5, Duration::from_secs(30)),
        Metrics::unregistered().unwrap(),
        api,
    )
}

/// A usage event as published: meter, quantity, unit, attributes.
pub type Usage = (String, f64, String, HashMap<String, String>);

/// A job environment that records what the job published.
#[derive(Debug, Default)]
pub struct Recorder {
    pub cancel: CancellationToken,
    pub events: Mutex<Vec<(String, Value)>>,
    pub usage: Mutex<Vec<Usage>>,
}

impl Recorder {
    pub fn deltas(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == switchyard_ai::DELTA_EVENT)
            .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub fn meter(&self, meter: &str) -> f64 {
        self.usage
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.0 == meter)
            .map(|u| u.1)
            .sum()
    }
}

impl JobEnv for Recorder {
    fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    async fn event(&self, event_type: &str, data: Value) {
        self.events
            .lock()
            .unwrap()
            .push((event_type.to_owned(), data));
    }

    async fn usage(
        &self,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: HashMap<String, String>,
    ) -> Result<(), switchyard_ai::Error> {
        self.usage
            .lock()
            .unwrap()
            .push((meter.to_owned(), quantity, unit.to_owned(), attributes));
        Ok(())
    }
}

/// SSE bytes for `data:` payloads (and optional event names).
pub fn sse(events: &[(Option<&str>, String)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        if let Some(n) = name {
            out.push_str(&format!("event: {n}\n"));
        }
        out.push_str(&format!("data: {data}\n\n"));
    }
    out.into_bytes()
}

/// Splits bytes into uneven chunks, so parsers see events cut anywhere.
pub fn ragged(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut size = 1;
    while i < bytes.len() {
        let end = (i + size).min(bytes.len());
        out.push(bytes[i..end].to_vec());
        i = end;
        size = size % 17 + 3;
    }
    out
}
