//! The integration worker in the real worker loop on a real nats-server: a 429 with
//! `Retry-After` becomes a delayed retry, a redelivered job does not call the API again, and
//! the shipped `meeting_to_tasks` runs end to end with the real AI worker. The research
//! workflows run with the real research worker in that crate's tests.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_integration::{IntegrationWorker, op};
use switchyard_proto::{Job, JobStatus, RetryPolicy, encode_proto, subject};
use switchyard_runtime::{Config, Handler, config::IntegrationSettings};
use switchyard_test_harness::{
    Bus, Components, TENANT, TestDatabase, bus, engine, jobs::next_result, metrics,
    orchestrator_options, worker_config,
};

struct Env {
    bus: Bus,
    components: Components,
    _db: Option<TestDatabase>,
}

impl std::ops::Deref for Env {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
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
        worker_config(self.bus.url(), id)
    }

    async fn run<H: Handler>(&mut self, id: &str, handler: H) -> Registry {
        let registry = Registry::new();
        let config = self.config(id);
        self.components
            .worker(&self.bus, &config, handler, &registry)
            .await;
        registry
    }

    /// An integration worker on its own migrated database; returns the worker loop's registry
    /// (the handler's `cross_system_*` metrics are in it too).
    async fn integration(&mut self, settings: &IntegrationSettings) -> Registry {
        let db = switchyard_test_harness::database().await;
        switchyard_integration::effects::migrate(&db.pool)
            .await
            .expect("migrate");
        let registry = Registry::new();
        let handler =
            IntegrationWorker::build(settings, db.pool.clone(), &registry).expect("handler");
        let config = self.config("integration-1");
        self.components
            .worker(&self.bus, &config, handler, &registry)
            .await;
        self._db = Some(db);
        registry
    }

    async fn orchestrator(&mut self) {
        self.components
            .orchestrator(&self.bus, orchestrator_options("o1"))
            .await;
    }

    async fn publish(&self, subject_name: String, msg_id: &str, payload: Vec<u8>) {
        self.bus.publish(&subject_name, msg_id, payload).await;
    }

    /// Starts a workflow and polls its status until it is no longer running.
    async fn run_workflow(&self, workflow: &str, input: Value) -> Value {
        engine::run_workflow(&self.bus, TENANT, workflow, input, Duration::from_secs(30)).await
    }
}

fn slack_job(instance: &str, channel: &str) -> Job {
    let mut job = job(
        &format!("{instance}-post-1"),
        op::SLACK_POST_MESSAGE,
        json!({ "channel": channel, "markdown": "**Hello** from the loop" }),
    );
    job.instance_id = instance.into();
    job.retry = Some(RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: 100,
        max_delay_ms: 1_000,
        multiplier: 2.0,
    });
    job
}

fn jobs_total(registry: &Registry, outcome: &str) -> f64 {
    metrics::counter(
        std::slice::from_ref(registry),
        "switchyard_jobs_total",
        &[("outcome", outcome)],
    )
}

fn slack_ok() -> Answer {
    Answer::json(
        200,
        json!({ "ok": true, "channel": "C0123", "ts": "1712345678.000200" }),
    )
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_delay_then_succeeds() {
    let slack = Loopback::start(|_, index| {
        if index == 0 {
            Answer::json(429, json!({ "ok": false, "error": "ratelimited" }))
                .with_header("retry-after", "2")
        } else {
            slack_ok()
        }
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let mut env = env().await;
    let registry = env
        .integration(&settings(&slack.url(), out.path().into()))
        .await;
    let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
    let mut results = env
        .client
        .subscribe(subject::result(&instance))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let job = slack_job(&instance, "#research");
    env.publish(
        subject::job(&job.operation),
        &job.job_id,
        encode_proto(&job),
    )
    .await;

    let result = next_result(&mut results, Duration::from_secs(20)).await;
    assert_eq!(
        JobStatus::try_from(result.status),
        Ok(JobStatus::Succeeded),
        "{result:?}"
    );
    assert_eq!(result.attempts, 2);
    let output: Value = serde_json::from_slice(&result.output).unwrap();
    assert_eq!(
        output,
        json!({ "channel": "C0123", "ts": "1712345678.000200" })
    );
    let calls = slack.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    eprintln!("retry came {gap:?} after the 429 with Retry-After: 2");
    // The worker's own backoff would have retried after ~100-200 ms.
    assert!(gap >= Duration::from_millis(1950), "retried after {gap:?}");
    assert_eq!(calls_metric(&registry, "slack", "rate_limited"), 1.0);
    assert_eq!(calls_metric(&registry, "slack", "ok"), 1.0);
    assert_eq!(jobs_total(&registry, "retried"), 1.0);
}

#[tokio::test]
async fn a_redelivered_job_returns_the_recorded_result_without_calling_again() {
    let slack = Loopback::start(|_, _| slack_ok()).await;
    let out = tempfile::tempdir().unwrap();
    let mut env = env().await;
    let registry = env
        .integration(&settings(&slack.url(), out.path().into()))
        .await;
    let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
    let mut results = env
        .client
        .subscribe(subject::result(&instance))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let job = slack_job(&instance, "#research");
    env.publish(
        subject::job(&job.operation),
        "delivery-1",
        encode_proto(&job),
    )
    .await;
    let first = next_result(&mut results, Duration::from_secs(20)).await;
    assert_eq!(JobStatus::try_from(first.status), Ok(JobStatus::Succeeded));

    // The same job again, as a replica that crashed before its ack would see it.
    env.publish(
        subject::job(&job.operation),
        "delivery-2",
        encode_proto(&job),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while jobs_total(&registry, "succeeded") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the second delivery was not handled"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(slack.count(), 1, "the API was called again");
    assert_eq!(calls_metric(&registry, "slack", "ok"), 1.0);
}

/// The shipped `meeting_to_tasks` with the real `ai` worker on its `local` provider and this
/// worker: first with neither a ClickUp list nor a Slack channel (the notes alone), then with
/// both, against the loopback ClickUp and Slack.
#[tokio::test]
async fn meeting_to_tasks_runs_end_to_end_with_the_local_ai_provider() {
    let api = Loopback::start(|call, n| {
        if call.path.contains("/list/") {
            Answer::json(
                200,
                json!({ "id": format!("t{n}"), "url": format!("https://app.clickup.com/t/t{n}") }),
            )
        } else {
            slack_ok()
        }
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let root = out.path().join("sink");
    let mut env = env().await;
    env.integration(&settings(&api.url(), root.clone())).await;
    let ai = switchyard_ai::AiWorker::new(
        &switchyard_runtime::config::AiSettings::default(),
        &Registry::new(),
    )
    .expect("the local provider needs no configuration");
    env.run("ai-1", ai).await;
    env.orchestrator().await;
    let transcript = include_str!("../../ai/samples/meetings/product_sync.vtt");

    let status = env
        .run_workflow(
            "meeting_to_tasks",
            json!({
                "transcript": transcript,
                "meeting_title": "Product sync",
                "meeting_date": "2025-03-12",
            }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let output = &status["output"];
    assert_eq!(
        output["speakers"],
        json!(["Priya Shah", "Tom Becker", "Maria Lopez"])
    );
    assert_eq!(output["tasks"].as_array().unwrap().len(), 6, "{output:#}");
    assert_eq!(output["task_ids"], json!([]));
    assert_eq!(output["notes"], "meetings/2025-03-12 Product sync.md");
    let skipped: Vec<&str> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "skipped")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["create_tasks", "post_summary"]);
    assert_eq!(
        api.count(),
        0,
        "no ClickUp or Slack call without a list or channel"
    );
    let notes = std::fs::read_to_string(
        root.join(TENANT)
            .join("meetings/2025-03-12 Product sync.md"),
    )
    .unwrap();
    assert!(
        notes.starts_with("# Product sync (2025-03-12)\n"),
        "{notes}"
    );
    for needle in [
        "## Action items",
        "- [ ] **Update the onboarding copy** — Tom Becker, due 2025-03-14",
        "- [ ] **Fix the payment retry bug** — Maria Lopez (urgent)",
        "## Speakers",
        "- Priya Shah: 4 turns, ",
    ] {
        assert!(notes.contains(needle), "no {needle:?} in\n{notes}");
    }
    // Talk times come from the VTT's timings (26.5 s for Priya Shah).
    assert!(
        notes.contains("- Priya Shah: 4 turns, 26 s")
            || notes.contains("- Priya Shah: 4 turns, 27 s"),
        "{notes}"
    );

    // With a list and a channel: one task per action item, and the summary on Slack.
    let status = env
        .run_workflow(
            "meeting_to_tasks",
            json!({
                "transcript": transcript,
                "meeting_title": "Product sync",
                "meeting_date": "2025-03-12",
                "clickup_list_id": "901",
                "channel": "#launch",
            }),
        )
        .await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(
        status["output"]["task_ids"].as_array().unwrap().len(),
        6,
        "{status:#}"
    );
    let calls = api.calls();
    let tasks: Vec<Value> = calls
        .iter()
        .filter(|c| c.path == "/api/v2/list/901/task")
        .map(|c| c.json())
        .collect();
    assert_eq!(tasks.len(), 6);
    assert!(
        tasks
            .iter()
            .any(|t| t["name"] == "Fix the payment retry bug" && t["priority"] == 1),
        "{tasks:#?}"
    );
    let posts: Vec<Value> = calls
        .iter()
        .filter(|c| c.path.ends_with("chat.postMessage"))
        .map(|c| c.json())
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["channel"], "#launch");
    let text =
        posts[0]["text"].as_str().unwrap_or_default().to_owned() + &posts[0]["blocks"].to_string();
    assert!(text.contains("Product sync"), "{:#}", posts[0]);
}
