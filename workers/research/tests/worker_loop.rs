//! The research worker in the real worker loop on a real nats-server: the shipped
//! `research_to_docs`, `research_to_slack` and `research_pipeline` workflows run end to end
//! (orchestrator → research → the AI worker's local provider → integration, on Postgres, with
//! loopback Notion and Slack), and `research.topic` answers on its service endpoint with a
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
use switchyard_runtime::{
    Config,
    config::{IntegrationSettings, Secret},
};
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
        self.integration_with(out, None).await;
    }

    /// The integration worker, with Notion and Slack at `api` (a loopback) when given.
    async fn integration_with(&mut self, out: PathBuf, api: Option<&str>) {
        let db = switchyard_test_harness::database().await;
        switchyard_integration::effects::migrate(&db.pool)
            .await
            .expect("migrate");
        let mut settings = IntegrationSettings::default();
        settings.markdown.output_dir = out;
        if let Some(api) = api {
            settings.notion.token = Some(Secret::new("ntn_test_token"));
            settings.notion.base_url = api.into();
            settings.slack.bot_token = Some(Secret::new("xoxb-test-token"));
            settings.slack.base_url = api.into();
            settings.shared_credentials = true;
        }
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

/// What the loopback Notion and Slack received: method, path and JSON body of each request.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>;

/// A loopback server that answers like Notion (`POST /v1/pages`, `PATCH
/// /v1/blocks/{id}/children`) and Slack (`POST /api/chat.postMessage`) and keeps every request.
async fn notion_and_slack() -> (String, Calls) {
    let calls = Calls::default();
    let seen = calls.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = uri.path().to_owned();
                seen.lock()
                    .unwrap()
                    .push((method.to_string(), path.clone(), json));
                let answer = match (method.as_str(), path.as_str()) {
                    ("POST", "/v1/pages") => json!({
                        "object": "page", "id": "page-1", "url": "https://www.notion.so/page-1"
                    }),
                    ("PATCH", "/v1/blocks/page-1/children") => {
                        json!({ "object": "list", "results": [] })
                    }
                    ("POST", "/api/chat.postMessage") => {
                        json!({ "ok": true, "channel": "C0123", "ts": "1712345678.000200" })
                    }
                    _ => return (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({}))),
                };
                (axum::http::StatusCode::OK, axum::Json(answer))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

#[tokio::test]
async fn research_to_slack_posts_what_the_research_found() {
    let (api, calls) = notion_and_slack().await;
    let out = tempfile::tempdir().unwrap();
    let mut env = env().await;
    env.integration_with(out.path().into(), Some(&api)).await;
    env.research(env.config("research-1")).await;
    env.orchestrator().await;

    let topic = "retries with exponential backoff and jitter";
    let status = env
        .run_workflow(
            "research_to_slack",
            json!({ "topic": topic, "channel": "#eng" }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"]["ts"], "1712345678.000200");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let (method, path, body) = &calls[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/api/chat.postMessage")
    );
    assert_eq!(body["channel"], "#eng");
    let text = body["text"].as_str().unwrap();
    let summary = status["output"]["summary"].as_str().unwrap();
    assert!(summary.to_lowercase().contains("backoff"), "{summary}");
    assert!(text.starts_with(&format!("*Research: {topic}*")), "{text}");
    assert!(text.contains(summary.lines().next().unwrap()), "{text}");
    assert!(
        text.contains("1. Retries with exponential backoff ("),
        "the corpus document, as a source: {text}"
    );
}

/// The shipped `research_pipeline`: research over the corpus, analysis by the AI worker's
/// local provider, then the page in Notion and the announcement in Slack, both from the
/// analysis.
#[tokio::test]
async fn research_pipeline_publishes_the_analysis_to_notion_and_slack() {
    let (api, calls) = notion_and_slack().await;
    let out = tempfile::tempdir().unwrap();
    let mut env = env().await;
    env.integration_with(out.path().into(), Some(&api)).await;
    env.research(env.config("research-1")).await;
    let ai = switchyard_ai::AiWorker::new(
        &switchyard_runtime::config::AiSettings::default(),
        &Registry::new(),
    )
    .expect("the local provider needs no configuration");
    let config = env.config("ai-1");
    env.components
        .worker(&env.bus, &config, ai, &Registry::new())
        .await;
    env.orchestrator().await;

    let topic = "Postgres MVCC and vacuum";
    let status = env
        .run_workflow(
            "research_pipeline",
            json!({ "topic": topic, "notion_parent_id": "parent-9", "channel": "#research" }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let analysis = status["output"]["analysis"].as_str().unwrap();
    assert!(!analysis.trim().is_empty(), "{status:#}");
    assert_eq!(
        status["output"]["notion_url"],
        "https://www.notion.so/page-1"
    );
    assert_eq!(status["output"]["slack_ts"], "1712345678.000200");

    let calls = calls.lock().unwrap().clone();
    let page = calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/v1/pages")
        .map(|(_, _, body)| body)
        .unwrap_or_else(|| panic!("no Notion page: {calls:#?}"));
    assert_eq!(page["parent"]["page_id"], "parent-9", "{page:#}");
    assert_eq!(
        page["properties"]["title"]["title"][0]["text"]["content"],
        format!("Analysis: {topic}")
    );
    let posted = calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p == "/api/chat.postMessage")
        .map(|(_, _, body)| body)
        .unwrap_or_else(|| panic!("no Slack post: {calls:#?}"));
    assert_eq!(posted["channel"], "#research");
    let text = posted["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("*Analysis: {topic}*")), "{text}");
    let first_line = analysis.lines().find(|l| !l.trim().is_empty()).unwrap();
    let words: Vec<&str> = first_line.split_whitespace().take(3).collect();
    assert!(
        text.contains(words[words.len() - 1]),
        "the analysis in the post: {text}"
    );
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
