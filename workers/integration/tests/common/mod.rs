//! Shared set-up for the integration worker's tests: a loopback HTTP server that records what
//! it receives and answers like the provider, a migrated test database, and the worker built
//! on both.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
    response::{IntoResponse, Response},
};
use prometheus::Registry;
use serde_json::Value;
use switchyard_integration::{IntegrationWorker, effects};
use switchyard_proto::Job;
use switchyard_runtime::config::{IntegrationSettings, Secret};
use switchyard_test_support::TestDatabase;

/// One request the loopback server received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Call {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// What the server answers: status, extra headers, JSON or text body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(status: u16, body: Value) -> Self {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: vec![("content-type", "text/plain".into())],
            body: body.into(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Responder = dyn Fn(&Call, usize) -> Answer + Send + Sync;

/// A loopback HTTP server on 127.0.0.1:0 that records every request and answers with
/// `respond(call, index of the call)`.
#[derive(Clone)]
pub struct Loopback {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<Call>>>,
}

impl Loopback {
    pub async fn start(respond: impl Fn(&Call, usize) -> Answer + Send + Sync + 'static) -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let app = Router::new().fallback({
            let calls = calls.clone();
            move |request: Request<Body>| {
                let calls = calls.clone();
                let respond = respond.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 10 << 20).await.expect("body");
                    let call = Call {
                        method: parts.method,
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default(),
                        headers: parts.headers,
                        body: body.to_vec(),
                        at: Instant::now(),
                    };
                    let index = {
                        let mut calls = calls.lock().unwrap();
                        calls.push(call.clone());
                        calls.len() - 1
                    };
                    let answer = respond(&call, index);
                    let mut response: Response = (answer.status, answer.body).into_response();
                    for (name, value) in answer.headers {
                        response
                            .headers_mut()
                            .insert(name, value.parse().expect("header value"));
                    }
                    response
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Loopback { addr, calls }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// Settings pointing every provider at `base`, with test credentials, loopback webhooks
/// allowed and the sink in `out`.
pub fn settings(base: &str, out: PathBuf) -> IntegrationSettings {
    let mut s = IntegrationSettings::default();
    s.markdown.output_dir = out;
    s.notion.token = Some(Secret::new("ntn_test_token"));
    s.notion.base_url = base.into();
    s.slack.bot_token = Some(Secret::new("xoxb-test-token"));
    s.slack.base_url = base.into();
    s.clickup.token = Some(Secret::new("pk_test_token"));
    s.clickup.base_url = base.into();
    s.webhook.signing_secret = Some(Secret::new(WEBHOOK_SECRET));
    s.webhook.allow_private_addresses = true;
    s.request_timeout = std::time::Duration::from_secs(10);
    // One tenant, `acme`, in most tests: the deployment-wide credentials serve it.
    s.shared_credentials = true;
    s
}

pub const WEBHOOK_SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";

/// A migrated database of its own and the worker built on it.
pub async fn worker(settings: &IntegrationSettings) -> (IntegrationWorker, TestDatabase, Registry) {
    let db = switchyard_test_support::database().await;
    effects::migrate(&db.pool).await.expect("migrate");
    let registry = Registry::new();
    let worker = IntegrationWorker::build(settings, db.pool.clone(), &registry).expect("build");
    (worker, db, registry)
}

pub fn job(id: &str, operation: &str, input: Value) -> Job {
    Job {
        job_id: id.into(),
        tenant: "acme".into(),
        instance_id: format!("i-{id}"),
        step_id: "step".into(),
        operation: operation.into(),
        input: serde_json::to_vec(&input).expect("json"),
        correlation_id: format!("corr-{id}"),
        created_at_ms: switchyard_proto::now_ms(),
        ..Job::default()
    }
}

/// The value of `cross_system_calls_total{system, outcome}`.
pub fn calls_metric(registry: &Registry, system: &str, outcome: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "cross_system_calls_total")
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            labels.contains(&("system", system)) && labels.contains(&("outcome", outcome))
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}
