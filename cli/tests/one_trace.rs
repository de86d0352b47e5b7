//! One workflow started over HTTP and followed across three processes started as a user starts
//! them (`switchyard gateway`, `switchyard orchestrator`, `switchyard worker test`):
//!
//! - with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP/HTTP receiver in this test, spans
//!   of all three services arrive under the one trace id the caller's `traceparent` named;
//! - without any exporter, every log line that concerns the instance carries its correlation
//!   id and that trace id.

mod common;

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use common::{Process, root, text};
use serde_json::{Value, json};
use switchyard_test_support::NatsServer;

const SECRET: &str = "one-trace-test-secret-0123456789abcdef";
const TENANT: &str = "demo";
const DEADLINE: Duration = Duration::from_secs(90);
/// The spans that do work for an instance; every line logged inside them must carry its ids.
const WORK_SPANS: [&str; 2] = ["inbox_message", "job"];

/// A random W3C trace context, as a caller of the API would send it.
fn traceparent() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

/// Three processes on one bus, and what they logged.
struct Run {
    _server: NatsServer,
    commands: common::Run,
    processes: Vec<Process>,
    base: String,
}

impl Run {
    async fn start(otlp: Option<&str>) -> Run {
        let server = NatsServer::start().await;
        let mut env = server.process_env();
        env.extend([
            ("SWITCHYARD_NATS_CONNECT_TIMEOUT".into(), "10s".into()),
            ("SWITCHYARD_GATEWAY__AUTH__SECRET".into(), SECRET.into()),
            ("SWITCHYARD_SHUTDOWN_GRACE".into(), "5s".into()),
            ("SWITCHYARD_LOG_FORMAT".into(), "json".into()),
            (
                "SWITCHYARD_LOG_LEVEL".into(),
                "info,switchyard_gateway=debug,switchyard_orchestrator=debug,switchyard_runtime=debug,switchyard_test_worker=debug".into(),
            ),
        ]);
        if let Some(endpoint) = otlp {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.to_owned()));
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/json".into()));
        }
        let commands = common::Run {
            env,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        commands.run(&["bus", "apply"]);
        let gateway = commands.spawn("gateway", &["gateway"], &[]);
        let base = gateway.metrics_url.trim_end_matches("/metrics").to_owned();
        let processes = vec![
            gateway,
            commands.spawn("orchestrator", &["orchestrator"], &[]),
            commands.spawn(
                "worker",
                &["worker", "test"],
                &[("SWITCHYARD_WORKER__WORKER_ID", "one-trace".into())],
            ),
        ];
        Run {
            _server: server,
            commands,
            processes,
            base,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.commands.command(args)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.commands.run(args)
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {}\n{}", p.name, p.full_log()))
            .collect()
    }

    /// Registers `hello` (retrying while the orchestrator starts) and runs it over HTTP with
    /// the given trace context and correlation id; returns the instance id once completed.
    async fn hello(&mut self, traceparent: &str, correlation: &str) -> String {
        let started = Instant::now();
        let hello = root().join("workflows/examples/hello.yaml");
        loop {
            let out = self
                .command(&["workflow", "register", hello.to_str().unwrap()])
                .output()
                .expect("run switchyard");
            if out.status.success() {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "cannot register: {}\n{}",
                text(&out),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let token = String::from_utf8(
            self.run(&["token", "--tenant", TENANT, "--role", "operator"])
                .stdout,
        )
        .expect("utf-8 token")
        .trim()
        .to_owned();
        let client = reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .expect("http client");
        loop {
            let ready = client.get(format!("{}/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            for p in &mut self.processes {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("{} exited ({status}):\n{}", p.name, p.log());
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "gateway not ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let response = client
            .post(format!("{}/api/v1/workflows/execute", self.base))
            .bearer_auth(&token)
            .header("traceparent", traceparent)
            .header("x-correlation-id", correlation)
            .json(&json!({"workflow_type": "hello", "name": "Trace", "wait": 60}))
            .send()
            .await
            .expect("execute");
        assert_eq!(
            response
                .headers()
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok()),
            Some(correlation)
        );
        let body: Value = response.json().await.expect("json body");
        assert_eq!(body["status"], "completed", "{body}\n{}", self.logs());
        body["instance_id"]
            .as_str()
            .expect("instance id")
            .to_owned()
    }

    /// SIGTERM to every process and their exit (which flushes their spans).
    async fn stop(&mut self) {
        for p in &self.processes {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.child.id().to_string())
                .status();
        }
        let started = Instant::now();
        for p in &mut self.processes {
            loop {
                match p.child.try_wait().expect("wait") {
                    Some(status) => {
                        assert!(status.success(), "{} exited {status}:\n{}", p.name, p.log());
                        break;
                    }
                    None if started.elapsed() > DEADLINE => {
                        let _ = p.child.kill();
                        panic!("{} did not stop:\n{}", p.name, p.log());
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

/// An OTLP/HTTP receiver: every JSON body posted to `/v1/traces`.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(store): State<Arc<Mutex<Vec<Value>>>>, body: axum::body::Bytes| async move {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => {
                            store.lock().unwrap().push(v);
                            (StatusCode::OK, [("content-type", "application/json")], "{}")
                        }
                        Err(_) => (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "application/json")],
                            "{}",
                        ),
                    }
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), received)
}

/// A received span: its service, name, trace id and parent span id.
#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    parent: String,
}

fn spans(bodies: &[Value]) -> Vec<Span> {
    let mut out = Vec::new();
    for body in bodies {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Span {
                        service: service.clone(),
                        name: span["name"].as_str().unwrap_or_default().to_owned(),
                        trace_id: span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        parent: span["parentSpanId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_lowercase(),
                    });
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workflow_is_one_trace_across_gateway_orchestrator_and_worker() {
    let (endpoint, received) = otlp_receiver().await;
    let mut run = Run::start(Some(&endpoint)).await;
    let (parent, trace_id, caller_span) = traceparent();
    let instance = run.hello(&parent, "one-trace-corr").await;
    run.stop().await;

    let bodies = received.lock().unwrap().clone();
    let spans = spans(&bodies);
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let summary = || {
        spans
            .iter()
            .map(|s| format!("{} {} {} <- {}", s.service, s.name, s.trace_id, s.parent))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (service, span_name) in [
        ("switchyard-gateway", "http_request"),
        ("switchyard-orchestrator", "inbox_message"),
        ("switchyard-test", "job"),
    ] {
        assert!(
            ours.iter()
                .any(|s| s.service == service && s.name == span_name),
            "no {span_name} span of {service} in trace {trace_id} (instance {instance}); received:\n{}",
            summary()
        );
    }
    // The gateway's request span is the child of the caller's span.
    assert!(
        ours.iter()
            .any(|s| s.name == "http_request" && s.parent == caller_span),
        "{}",
        summary()
    );
    // Every step of the engine and every job of this run belongs to the caller's trace:
    // nothing started a trace of its own on the way.
    let strays: Vec<&Span> = spans
        .iter()
        .filter(|s| WORK_SPANS.contains(&s.name.as_str()) && s.trace_id != trace_id)
        .collect();
    assert!(strays.is_empty(), "spans outside the trace: {strays:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_about_the_instance_carries_its_correlation_and_trace_ids() {
    // No exporter: trace ids must be on the lines all the same.
    let mut run = Run::start(None).await;
    let (parent, trace_id, _) = traceparent();
    let correlation = format!("corr-{}", uuid::Uuid::new_v4().simple());
    let instance = run.hello(&parent, &correlation).await;
    run.stop().await;

    // A line concerns the instance when it mentions the instance id, or is logged inside the
    // work spans of this run (every inbox message and job here is the instance's), or inside
    // the gateway's span of the request that started it.
    for p in &run.processes {
        let log = p.full_log();
        let mut concerned = 0;
        for raw in log.lines().filter(|l| !l.trim().is_empty()) {
            let line: Value = serde_json::from_str(raw)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {raw}", p.name));
            let span = line["span"]["name"].as_str().unwrap_or_default();
            let in_request =
                span == "http_request" && line["span"]["http.route"] == "/api/v1/workflows/execute";
            let concerns = raw.contains(&instance) || WORK_SPANS.contains(&span) || in_request;
            if !concerns {
                continue;
            }
            concerned += 1;
            assert_eq!(
                line["correlation_id"], correlation,
                "{}: line without the correlation id: {raw}",
                p.name
            );
            assert_eq!(
                line["trace_id"], trace_id,
                "{}: line without the trace id: {raw}",
                p.name
            );
        }
        eprintln!("{}: {concerned} lines concern the instance", p.name);
        assert!(
            concerned > 0,
            "{} logged nothing about instance {instance}:\n{log}",
            p.name
        );
    }
}
