//! The research worker in the real worker loop on a real nats-server: the shipped
//! `research_to_docs` workflow runs end to end (orchestrator → research → integration's
//! Markdown sink on Postgres), and `research.topic` answers on its service endpoint with a
//! result that says when nothing was found and an error naming the URL when every source
//! failed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_integration::IntegrationWorker;
use switchyard_orchestrator::{
    Options, Orchestrator,
    service::{self, endpoint},
};
use switchyard_proto::{
    ContentType, ErrorCode, Job, JobResult, JobStatus, StartWorkflow, decode, encode_proto, header,
    subject,
};
use switchyard_research::ResearchWorker;
use switchyard_runtime::{
    Config, Worker,
    config::{IntegrationSettings, WorkerSettings},
};
use switchyard_test_support::{NatsServer, TestDatabase};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "acme";

struct Env {
    server: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    stops: Vec<CancellationToken>,
    _db: Option<TestDatabase>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

async fn bus() -> Env {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    apply(&js, &BusConfig::default(), ApplyOptions::default())
        .await
        .expect("bus apply");
    Env {
        server,
        client,
        js,
        stops: Vec::new(),
        _db: None,
    }
}

impl Env {
    fn config(&self, id: &str) -> Config {
        let mut config = Config {
            nats_url: self.server.url(),
            worker: WorkerSettings {
                concurrency: 8,
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                pull_expiry: Duration::from_millis(500),
                worker_id: Some(id.to_owned()),
                ..WorkerSettings::default()
            },
            ..Config::default()
        };
        config.research.corpus_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
        config.research.fetch_timeout = Duration::from_secs(2);
        config
    }

    async fn research(&mut self, config: Config) {
        let registry = Registry::new();
        let handler = ResearchWorker::build(&config, &registry)
            .await
            .expect("research worker");
        let worker =
            Worker::new(self.server.client().await, &config, handler, &registry).expect("worker");
        let stop = CancellationToken::new();
        tokio::spawn(worker.run(stop.clone()));
        self.stops.push(stop);
    }

    async fn integration(&mut self, out: PathBuf) {
        let db = switchyard_test_support::database().await;
        switchyard_integration::effects::migrate(&db.pool)
            .await
            .expect("migrate");
        let mut settings = IntegrationSettings::default();
        settings.markdown.output_dir = out;
        let registry = Registry::new();
        let handler =
            IntegrationWorker::build(&settings, db.pool.clone(), &registry).expect("handler");
        let worker = Worker::new(
            self.server.client().await,
            &self.config("integration-1"),
            handler,
            &registry,
        )
        .expect("worker");
        let stop = CancellationToken::new();
        tokio::spawn(worker.run(stop.clone()));
        self.stops.push(stop);
        self._db = Some(db);
    }

    async fn orchestrator(&mut self) {
        let options = Options {
            concurrency: 16,
            env: BTreeMap::new(),
            replica_id: "o1".into(),
            grace: Duration::from_secs(5),
        };
        let orchestrator = Orchestrator::new(self.server.client().await, options, &Registry::new())
            .await
            .expect("orchestrator");
        let stop = CancellationToken::new();
        tokio::spawn(orchestrator.run(stop.clone()));
        self.stops.push(stop);
        for _ in 0..100 {
            let asked = self
                .client
                .request(
                    service::request_subject(endpoint::DEFINITIONS_LIST),
                    json!({ "tenant": TENANT }).to_string().into(),
                )
                .await;
            if asked.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the orchestrator does not answer");
    }

    async fn run_workflow(&self, workflow: &str, input: Value) -> Value {
        let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
        let start = StartWorkflow {
            tenant: TENANT.into(),
            workflow: workflow.into(),
            instance_id: instance.clone(),
            input: serde_json::to_vec(&input).unwrap(),
            correlation_id: format!("corr-{instance}"),
            requested_at_ms: switchyard_proto::now_ms(),
            ..StartWorkflow::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, instance.as_str());
        self.js
            .publish_with_headers(
                subject::start(TENANT, workflow),
                headers,
                encode_proto(&start).into(),
            )
            .await
            .expect("publish")
            .await
            .expect("puback");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = self
                .client
                .request(
                    service::request_subject(endpoint::INSTANCE_GET),
                    json!({ "tenant": TENANT, "instance_id": instance })
                        .to_string()
                        .into(),
                )
                .await
                .expect("status");
            let status: Value = serde_json::from_slice(&reply.payload).unwrap();
            if status["status"].as_str().is_some_and(|s| s != "running") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running: {status:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the research worker's service endpoint, as the gateway does.
    async fn ask(&self, input: Value) -> JobResult {
        let job = Job {
            job_id: format!("q-{}", uuid::Uuid::now_v7().simple()),
            tenant: TENANT.into(),
            operation: "research.topic".into(),
            input: serde_json::to_vec(&input).unwrap(),
            created_at_ms: switchyard_proto::now_ms(),
            ..Job::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header::PROTOBUF);
        headers.insert(header::TENANT, TENANT);
        let subject = format!("{}.topic", subject::service_group("research"));
        let mut reply = None;
        for _ in 0..100 {
            let request = async_nats::Request::new()
                .payload(encode_proto(&job).into())
                .headers(headers.clone())
                .timeout(Some(Duration::from_secs(20)));
            match self.client.send_request(subject.clone(), request).await {
                Ok(r) => {
                    reply = Some(r);
                    break;
                }
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("request: {e}"),
            }
        }
        let reply = reply.expect("the research worker does not answer");
        decode(ContentType::Protobuf, &reply.payload).expect("job result")
    }
}

#[tokio::test]
async fn research_to_docs_writes_summary_key_points_and_sources() {
    let out = tempfile::tempdir().unwrap();
    let root = out.path().join("sink");
    let mut env = bus().await;
    env.integration(root.clone()).await;
    env.research(env.config("research-1")).await;
    env.orchestrator().await;

    let topic = "retries with exponential backoff and jitter";
    let status = env
        .run_workflow(
            "research_to_docs",
            json!({ "topic": topic, "difficulty": "beginner" }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let path = status["output"]["path"].as_str().unwrap().to_owned();
    assert_eq!(path, format!("research/{topic}.md"));
    let text = std::fs::read_to_string(root.join(&path)).unwrap();
    eprintln!("{text}");
    let summary = status["output"]["summary"].as_str().unwrap();
    assert!(!summary.is_empty());
    assert!(text.starts_with(&format!("# {topic}\n\n")), "{text}");
    assert!(text.contains(summary.lines().next().unwrap()), "{text}");
    assert!(summary.to_lowercase().contains("backoff"), "{summary}");
    let key_points = text
        .split("## Key points\n\n")
        .nth(1)
        .and_then(|rest| rest.split("## Sources").next())
        .unwrap();
    assert!(
        key_points.lines().filter(|l| l.starts_with("- ")).count() >= 3,
        "{text}"
    );
    assert!(
        text.contains("1. [Retries with exponential backoff]("),
        "the best source first: {text}"
    );
    assert!(text.contains("corpus/retries-backoff.md) — "), "{text}");
}

#[tokio::test]
async fn the_service_endpoint_answers_and_says_when_nothing_was_found() {
    let mut env = bus().await;
    env.research(env.config("research-1")).await;

    let found = env
        .ask(json!({ "topic": "Postgres MVCC vacuum", "difficulty": "advanced", "max_sources": 2 }))
        .await;
    assert_eq!(
        JobStatus::try_from(found.status),
        Ok(JobStatus::Succeeded),
        "{found:?}"
    );
    let output: Value = serde_json::from_slice(&found.output).unwrap();
    assert_eq!(output["found"], true, "{output:#}");
    let sources = output["sources"].as_array().unwrap();
    assert!(!sources.is_empty() && sources.len() <= 2, "{output:#}");
    assert!(
        sources[0]["location"]
            .as_str()
            .unwrap()
            .ends_with("postgres-mvcc.md")
    );
    assert_eq!(sources[0]["origin"], "corpus");

    let nothing = env
        .ask(json!({ "topic": "medieval pottery glazing techniques" }))
        .await;
    assert_eq!(
        JobStatus::try_from(nothing.status),
        Ok(JobStatus::Succeeded)
    );
    let output: Value = serde_json::from_slice(&nothing.output).unwrap();
    assert_eq!(output["found"], false, "{output:#}");
    assert_eq!(
        output["summary"],
        "Nothing was found about \"medieval pottery glazing techniques\" in the local corpus."
    );
    assert_eq!(output["sources"], json!([]));
    assert_eq!(output["key_points"], json!([]));
}

#[tokio::test]
async fn every_source_failing_is_an_error_naming_the_url() {
    let mut env = bus().await;
    env.research(env.config("research-1")).await;
    let result = env
        .ask(json!({
            "topic": "cloud metadata",
            "corpus": false,
            "sources": ["http://169.254.169.254/latest/meta-data/"]
        }))
        .await;
    assert_eq!(
        JobStatus::try_from(result.status),
        Ok(JobStatus::Failed),
        "{result:?}"
    );
    let error = result.error.unwrap();
    assert_eq!(
        ErrorCode::try_from(error.code),
        Ok(ErrorCode::Permanent),
        "{error:?}"
    );
    assert!(
        error.message.starts_with(
            "no source could be read: http://169.254.169.254/latest/meta-data/: refused"
        ),
        "{}",
        error.message
    );
}
