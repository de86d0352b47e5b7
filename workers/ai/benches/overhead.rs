//! Worker overhead per AI job, provider time excluded: a loopback OpenAI-compatible server
//! answers at once, a timing wrapper measures each provider call, and the overhead is the
//! job's time minus its provider time. Two views, one job at a time:
//!
//! - `in-process`: the operation as the handler runs it (input, prompt, streaming, deltas,
//!   validation, usage), without the bus;
//! - `via-bus`: a job published to `JOBS_AI` until its result arrives, through a real
//!   nats-server and the worker loop (decode, schema check, events, usage, result PubAck,
//!   ack), with the server's default fsync and with `sync_interval: always`.
//!
//! Run: `cargo bench -p switchyard-ai --bench overhead` (needs a nats-server as for the tests).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::post};
use futures::{StreamExt as _, future::BoxFuture};
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_ai::{
    AiWorker, Error, JobEnv, Ops,
    breaker::Breaker,
    client::{Provider, Providers, RetryPolicy},
    metrics::Metrics,
    provider::{ChatApi, ChatRequest, ChatResponse, Deltas, openai::OpenAi},
};
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_proto::{Job, encode_proto, header, subject};
use switchyard_runtime::{Config, Worker, config::WorkerSettings};
use switchyard_test_support::{NatsOptions, NatsServer};
use tokio_util::sync::CancellationToken;

/// Measured jobs and warm-up jobs per path. `cargo bench` passes `--bench`; without it (the
/// test run builds and runs every bench target) a short smoke run checks the bench still works.
fn sizes() -> (usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (2000, 200)
    } else {
        (20, 2)
    }
}

/// Records how long each provider call took.
#[derive(Debug)]
struct Timed {
    inner: OpenAi,
    calls: Arc<Mutex<Vec<Duration>>>,
}

impl ChatApi for Timed {
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<&'a Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.chat(request, deltas).await;
            self.calls.lock().unwrap().push(started.elapsed());
            result
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

async fn instant_provider() -> String {
    let reply = json!({
        "model": "bench", "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"summary\":\"s\",\"key_points\":[\"k\"]}" }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5 }
    });
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(body): Json<Value>| {
            let reply = reply.clone();
            async move {
                if body["stream"] == true {
                    let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"}}]}\n\n\
                               data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"world\"}}]}\n\n\
                               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2}}\n\n\
                               data: [DONE]\n\n";
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(axum::body::Body::from(sse))
                        .unwrap()
                } else {
                    axum::response::Response::builder()
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(reply.to_string()))
                        .unwrap()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn ops(url: &str, calls: Arc<Mutex<Vec<Duration>>>) -> Ops {
    let api = Timed {
        inner: OpenAi::new("bench", url, None, reqwest::Client::new()),
        calls,
    };
    let provider = Provider::new(
        "bench",
        "openai",
        "bench",
        Duration::from_secs(10),
        RetryPolicy {
            max_retries: 0,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
        },
        Breaker::new(5, Duration::from_secs(30)),
        Metrics::unregistered().unwrap(),
        Arc::new(api),
    );
    let mut providers = Providers::default();
    providers.insert(provider);
    Ops::new(providers, "bench")
}

/// A job environment that publishes nowhere.
struct Discard(CancellationToken);

impl JobEnv for Discard {
    fn cancel(&self) -> &CancellationToken {
        &self.0
    }
    async fn event(&self, _: &str, _: Value) {}
    async fn usage(
        &self,
        _: &str,
        _: f64,
        _: &str,
        _: HashMap<String, String>,
    ) -> Result<(), Error> {
        Ok(())
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

fn report(name: &str, totals: &[Duration], provider: &[Duration]) {
    let overhead: Vec<Duration> = totals
        .iter()
        .zip(provider)
        .map(|(t, p)| t.saturating_sub(*p))
        .collect();
    let (t50, t99) = percentiles(totals.to_vec());
    let (p50, p99) = percentiles(provider.to_vec());
    let (o50, o99) = percentiles(overhead);
    println!(
        "{name:<32} jobs={:<5} total p50={t50:.3}ms p99={t99:.3}ms | provider p50={p50:.3}ms p99={p99:.3}ms | overhead p50={o50:.3}ms p99={o99:.3}ms",
        totals.len()
    );
}

async fn in_process(url: &str, operation: &str, input: Value) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let ops = ops(url, calls.clone());
    let env = Discard(CancellationToken::new());
    let (jobs, warmup) = sizes();
    let mut totals = Vec::with_capacity(jobs);
    for i in 0..warmup + jobs {
        let started = Instant::now();
        ops.run(&env, operation, input.clone()).await.expect("job");
        if i >= warmup {
            totals.push(started.elapsed());
        }
    }
    let provider = calls.lock().unwrap()[warmup..].to_vec();
    report(&format!("in-process {operation}"), &totals, &provider);
}

async fn via_bus(url: &str, sync_always: bool) {
    let server = NatsServer::start_with(NatsOptions {
        sync_always,
        ..NatsOptions::default()
    })
    .await;
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    apply(&js, &BusConfig::default(), ApplyOptions::default())
        .await
        .expect("bus apply");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let config = Config {
        nats_url: server.url(),
        worker: WorkerSettings {
            pull_expiry: Duration::from_millis(500),
            ..WorkerSettings::default()
        },
        ..Config::default()
    };
    let registry = Registry::new();
    let worker = Worker::new(
        server.client().await,
        &config,
        AiWorker::from_ops(ops(url, calls.clone())),
        &registry,
    )
    .expect("worker");
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));

    let mut results = client.subscribe("wf.result.bench-instance").await.unwrap();
    client.flush().await.unwrap();
    let input = json!({ "prompt": "Say hello", "stream": true });
    let (jobs, warmup) = sizes();
    let mut totals = Vec::with_capacity(jobs);
    for i in 0..warmup + jobs {
        let job = Job {
            job_id: format!("bench-{i}"),
            tenant: "bench".into(),
            instance_id: "bench-instance".into(),
            step_id: "generate".into(),
            operation: "ai.generate".into(),
            input: serde_json::to_vec(&input).unwrap(),
            created_at_ms: switchyard_proto::now_ms(),
            ..Job::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(header::MSG_ID, job.job_id.as_str());
        let started = Instant::now();
        js.publish_with_headers(
            subject::job("ai.generate"),
            headers,
            encode_proto(&job).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        results.next().await.expect("a result");
        if i >= warmup {
            totals.push(started.elapsed());
        }
    }
    stop.cancel();
    let provider = calls.lock().unwrap()[warmup..].to_vec();
    let fsync = if sync_always { "always" } else { "default" };
    report(
        &format!("via-bus ai.generate fsync={fsync}"),
        &totals,
        &provider,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = instant_provider().await;
        in_process(
            &url,
            "ai.summarize",
            json!({ "text": "A text to summarize.", "max_sentences": 2 }),
        )
        .await;
        in_process(
            &url,
            "ai.generate",
            json!({ "prompt": "Say hello", "stream": true }),
        )
        .await;
        via_bus(&url, false).await;
        via_bus(&url, true).await;
    });
}
