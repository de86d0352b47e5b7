//! The research worker in the real worker loop on a real nats-server: the shipped
//! `research_to_docs` workflow runs end to end (orchestrator → research → integration's
//! Markdown sink on Postgres), and `research.topic` answers on its service endpoint with a
//! result that says when nothing was found and an error naming the URL when every source
//! failed.

use std::{path::PathBuf, time::Duration};

use async_nats::HeaderMap;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_integration::IntegrationWorker;
use switchyard_proto::{
    ContentType, ErrorCode, Job, JobResult, JobStatus, decode, encode_proto, header, subject,
};
use switchyard_research::ResearchWorker;
use switchyard_runtime::{Config, config::IntegrationSettings};
use switchyard_test_harness::{
    Bus, Components, TENANT, TestDatabase, bus, engine, orchestrator_options, worker_config,
};

struct Env {
    bus: Bus,
    components: Components,
    _db: Option<TestDatabase>,
}

async fn env() -> Env {
    Env {
        bus: bus().await,
        components: Components::default(),
        _db: None,
    }
}

impl Env {
    fn config(&self, id: &str) -> Config {
        let mut config = worker_config(self.bus.url(), id);
        config.research.corpus_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
        config.research.fetch_timeout = Duration::from_secs(2);
        config
    }

    async fn research(&mut self, config: Config) {
        let registry = Registry::new();
        let handler = ResearchWorker::build(&config, &registry)
            .await
            .expect("research worker");
        self.components
            .worker(&self.bus, &config, handler, &registry)
            .await;
    }

    async fn integration(&mut self, out: PathBuf) {
        let db = switchyard_test_harness::database().await;
        switchyard_integration::effects::migrate(&db.pool)
            .await
            .expect("migrate");
        let mut settings = IntegrationSettings::default();
        settings.markdown.output_dir = out;
        let registry = Registry::new();
        let handler =
            IntegrationWorker::build(&settings, db.pool.clone(), &registry).expect("handler");
        let config = self.config("integration-1");
        self.components
            .worker(&self.bus, &config, handler, &registry)
            .await;
        self._db = Some(db);
    }

    async fn orchestrator(&mut self) {
        self.components
            .orchestrator(&self.bus, orchestrator_options("o1"))
            .await;
    }

    async fn run_workflow(&self, workflow: &str, input: Value) -> Value {
        engine::run_workflow(&self.bus, TENANT, workflow, input, Duration::from_secs(60)).await
    }

    /// Asks the research worker's service endpoint, as the gateway does.
    async fn ask(&self, input: Value) -> JobResult {
        self.ask_as(TENANT, input).await
    }

    /// Asks for `tenant`.
    async fn ask_as(&self, tenant: &str, input: Value) -> JobResult {
        let job = Job {
            job_id: format!("q-{}", uuid::Uuid::now_v7().simple()),
            tenant: tenant.into(),
            operation: "research.topic".into(),
            input: serde_json::to_vec(&input).unwrap(),
            created_at_ms: switchyard_proto::now_ms(),
            ..Job::default()
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header::PROTOBUF);
        headers.insert(header::TENANT, tenant);
        let subject = format!("{}.topic", subject::service_group("research"));
        let mut reply = None;
        for _ in 0..100 {
            let request = async_nats::Request::new()
                .payload(encode_proto(&job).into())
                .headers(headers.clone())
                .timeout(Some(Duration::from_secs(20)));
            match self.bus.client.send_request(subject.clone(), request).await {
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
    let mut env = env().await;
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
    let text = std::fs::read_to_string(root.join(TENANT).join(&path)).unwrap();
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
    let mut env = env().await;
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
    let mut env = env().await;
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

#[tokio::test]
async fn with_allow_unread_every_source_failing_is_an_answer_and_a_non_url_is_refused() {
    let mut env = env().await;
    env.research(env.config("research-1")).await;
    let result = env
        .ask(json!({
            "topic": "cloud metadata",
            "corpus": false,
            "allow_unread": true,
            "sources": ["http://169.254.169.254/latest/meta-data/"]
        }))
        .await;
    assert_eq!(
        JobStatus::try_from(result.status),
        Ok(JobStatus::Succeeded),
        "{result:?}"
    );
    let output: serde_json::Value = serde_json::from_slice(&result.output).unwrap();
    assert_eq!(output["found"], false, "{output:#}");
    assert_eq!(
        output["skipped"][0]["location"], "http://169.254.169.254/latest/meta-data/",
        "{output:#}"
    );

    // Something that is no http(s) URL is the caller's mistake, named before any fetch.
    for source in ["00", "ftp://example.com/a", "http://"] {
        let result = env
            .ask(json!({ "topic": "x", "corpus": false, "sources": ["https://example.com", source] }))
            .await;
        let error = result.error.unwrap_or_default();
        assert_eq!(
            ErrorCode::try_from(error.code),
            Ok(ErrorCode::InvalidInput),
            "{source}: {error:?}"
        );
        assert_eq!(error.field, "sources[1]", "{source}: {error:?}");
    }
}

/// A SearXNG that answers no results and counts the queries it was asked.
async fn searxng() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let app = axum::Router::new().route(
        "/search",
        axum::routing::get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!({ "results": [] })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

#[tokio::test]
async fn each_tenant_searches_with_its_own_search_service_and_the_shared_one_only_when_shared() {
    use std::sync::atomic::Ordering::SeqCst;
    let (own_url, own) = searxng().await;
    let (shared_url, shared) = searxng().await;
    let mut env = env().await;
    let mut config = env.config("research-1");
    config.research.searxng_url = Some(shared_url);
    config.research.tenants.insert(
        TENANT.into(),
        switchyard_runtime::config::TenantResearch {
            searxng_url: Some(own_url),
        },
    );
    env.research(config).await;
    let topic = json!({ "topic": "token buckets", "corpus": false, "allow_unread": true });

    // Each ask succeeds (nothing found); the counts say which service was searched.
    for (tenant, searched, why) in [
        (TENANT, (1, 0), "the tenant's own service"),
        // No section, and the deployment's service is not shared with it.
        ("globex", (1, 0), "nobody searched for globex"),
    ] {
        let reply = env.ask_as(tenant, topic.clone()).await;
        assert_eq!(
            JobStatus::try_from(reply.status),
            Ok(JobStatus::Succeeded),
            "{reply:?}"
        );
        assert_eq!((own.load(SeqCst), shared.load(SeqCst)), searched, "{why}");
    }
}
