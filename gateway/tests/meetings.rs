//! The meeting, task and integration-status routes end to end: a real nats-server with an
//! orchestrator and a `test` worker (see `common`), the integration worker running in this
//! process on its own Postgres database, and a loopback server answering like ClickUp,
//! Notion and Slack.
//!
//! The AI worker is not run here: the meeting test registers a tenant definition named
//! `meeting_to_tasks` built on `test.echo` steps with the shipped workflow's step ids, which
//! the tenant's starts use instead of the shipped one.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
    response::{IntoResponse, Response},
};
use common::*;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_gateway::Role;
use switchyard_integration::IntegrationWorker;
use switchyard_runtime::config::{IntegrationSettings, Secret};
use switchyard_test_support::TestDatabase;

// ---- a loopback ClickUp / Notion / Slack ----

/// One request the loopback server received: method, path and JSON body.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    authorization: String,
    body: Value,
}

type Responder = dyn Fn(&Call) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync;

/// Records every request and answers with `respond(call)`: status, headers, JSON body.
#[derive(Clone)]
struct Loopback {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Loopback {
    async fn start(
        respond: impl Fn(&Call) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync + 'static,
    ) -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let app = Router::new().fallback({
            let calls = calls.clone();
            move |request: Request<Body>| {
                let calls = calls.clone();
                let respond = respond.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
                    let call = Call {
                        method: parts.method,
                        path: parts.uri.path().to_owned(),
                        authorization: parts
                            .headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    };
                    calls.lock().unwrap().push(call.clone());
                    let (status, headers, body) = respond(&call);
                    let mut response: Response = (
                        StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body.to_string(),
                    )
                        .into_response();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
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

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self, method: Method, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method && c.path == path)
            .cloned()
            .collect()
    }
}

/// Answers like ClickUp: list `refused` does not exist, list `busy` is rate limited, any
/// other list gets task `t-<n>`; status updates echo the status; `GET /api/v2/user` accepts
/// only `pk_good`.
fn clickup(call: &Call) -> (u16, Vec<(&'static str, String)>, Value) {
    let segments: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
    match (call.method.as_str(), segments.as_slice()) {
        ("POST", ["api", "v2", "list", "refused", "task"]) => (
            404,
            vec![],
            json!({"err": "List not found", "ECODE": "ITEM_013"}),
        ),
        ("POST", ["api", "v2", "list", "busy", "task"]) => (
            429,
            vec![("retry-after", "7".into())],
            json!({"err": "Rate limit reached", "ECODE": "APP_002"}),
        ),
        ("POST", ["api", "v2", "list", _, "task"]) => {
            let id = format!("t-{}", call.body["name"].as_str().unwrap_or_default());
            (
                200,
                vec![],
                json!({"id": id, "url": format!("https://app.clickup.com/t/{id}")}),
            )
        }
        ("PUT", ["api", "v2", "task", id]) => (
            200,
            vec![],
            json!({"id": id, "status": {"status": call.body["status"]}}),
        ),
        ("GET", ["api", "v2", "user"]) if call.authorization == "pk_good" => {
            (200, vec![], json!({"user": {"id": 7, "username": "ada"}}))
        }
        ("GET", ["api", "v2", "user"]) => (
            401,
            vec![],
            json!({"err": "Token invalid", "ECODE": "OAUTH_025"}),
        ),
        _ => (
            404,
            vec![],
            json!({"err": "no such route", "ECODE": "TEST"}),
        ),
    }
}

// ---- the integration worker in this process ----

/// What an integration worker run by [`run_integration`] keeps until the test ends.
struct IntegrationRunning {
    _db: TestDatabase,
    _out: tempfile::TempDir,
}

/// ClickUp pointed at `loopback` with `clickup_token`; Notion and Slack not configured.
fn integration_settings(loopback: &Loopback, clickup_token: &str) -> IntegrationSettings {
    let mut s = IntegrationSettings::default();
    s.clickup.token = Some(Secret::new(clickup_token));
    s.clickup.base_url = loopback.url();
    s.request_timeout = Duration::from_secs(5);
    // The deployment's ClickUp token serves every tenant here; the tasks are still bound to
    // the tenant that created them.
    s.shared_credentials = true;
    s
}

/// Runs an integration worker against `env`'s bus on a migrated database of its own, and
/// waits until its service endpoints answer.
async fn run_integration(env: &mut Env, mut settings: IntegrationSettings) -> IntegrationRunning {
    let db = switchyard_test_support::database().await;
    switchyard_integration::effects::migrate(&db.pool)
        .await
        .expect("migrate");
    let out = tempfile::tempdir().expect("tempdir");
    settings.markdown.output_dir = out.path().to_path_buf();
    let registry = Registry::new();
    let handler = IntegrationWorker::build(&settings, db.pool.clone(), &registry).expect("build");
    let mut config = env.config.clone();
    config.worker.worker_id = Some("integration-1".into());
    env.components
        .worker(&env.bus, &config, handler, &registry)
        .await;
    env.wait_ok(
        "/api/v1/integrations/status",
        Role::Viewer,
        "the integration worker",
    )
    .await;
    IntegrationRunning { _db: db, _out: out }
}

async fn create(env: &Env, token: &str, key: Option<&str>, body: Value) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    env.send(
        Method::POST,
        "/api/v1/tasks",
        Some(token),
        &headers,
        Some(body.to_string()),
    )
    .await
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["integrations"]
        .as_array()
        .expect("integrations")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

// ---- tasks ----

#[tokio::test]
async fn tasks_are_created_once_per_idempotency_key_and_failures_are_problems() {
    let mut env = env().await;
    let loopback = Loopback::start(clickup).await;
    let op = env.token(TENANT, Role::Operator);
    let task = json!({"list_id": "L1", "name": "ship", "priority": 2, "tags": ["meeting"]});

    // No integration worker yet: nothing serves the operation.
    let reply = create(&env, &op, Some("k-1"), task.clone()).await;
    assert_eq!(
        reply.problem(503)["detail"],
        "the integration worker is not running"
    );

    let _worker = run_integration(&mut env, integration_settings(&loopback, "pk_good")).await;

    let first = create(&env, &op, Some("k-1"), task.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:#?}");
    assert_eq!(first.body["task_id"], "t-ship");
    assert_eq!(first.body["url"], "https://app.clickup.com/t/t-ship");
    let again = create(&env, &op, Some("k-1"), task.clone()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:#?}");
    assert_eq!(again.body, first.body);
    let posts = loopback.calls(Method::POST, "/api/v2/list/L1/task");
    assert_eq!(posts.len(), 1, "one task for one key: {posts:#?}");
    assert_eq!(posts[0].body["priority"], 2);
    assert_eq!(posts[0].authorization, "pk_good");
    // Another key (or none) is another task: the key is what makes a retry safe.
    let other = create(&env, &op, None, task.clone()).await;
    assert_eq!(other.status, StatusCode::CREATED, "{other:#?}");
    assert_eq!(
        loopback.calls(Method::POST, "/api/v2/list/L1/task").len(),
        2
    );

    let reply = env
        .call(
            Method::PUT,
            "/api/v1/tasks/t-ship/status",
            Some(&op),
            Some(json!({"status": "in progress"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    assert_eq!(
        reply.body,
        json!({"task_id": "t-ship", "status": "in progress"})
    );
    let puts = loopback.calls(Method::PUT, "/api/v2/task/t-ship");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].body, json!({"status": "in progress"}));

    // Another tenant's operator cannot move it: its id reads as not found there.
    let stranger = env.token(OTHER_TENANT, Role::Operator);
    let reply = env
        .call(
            Method::PUT,
            "/api/v1/tasks/t-ship/status",
            Some(&stranger),
            Some(json!({"status": "done"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:#?}");
    assert_eq!(loopback.calls(Method::PUT, "/api/v2/task/t-ship").len(), 1);

    // Bodies that do not fit the operation never reach ClickUp, and name the field.
    let before = loopback.calls.lock().unwrap().len();
    for (body, field) in [
        (json!({"name": "x"}), "list_id"),
        (
            json!({"list_id": "L1", "name": "x", "priority": 9}),
            "priority",
        ),
        (
            json!({"list_id": "L1", "name": "x", "colour": "red"}),
            "colour",
        ),
        // Checked by the worker, past the schema: assignees are ClickUp user ids.
        (
            json!({"list_id": "L1", "name": "x", "assignees": ["ada"]}),
            "assignees",
        ),
    ] {
        let reply = create(&env, &op, None, body.clone()).await;
        assert_eq!(reply.problem(422)["field"], field, "{body}: {reply:#?}");
    }
    let reply = env
        .call(
            Method::PUT,
            "/api/v1/tasks/t-ship/status",
            Some(&op),
            Some(json!({})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "status");
    let reply = env
        .call(
            Method::PUT,
            "/api/v1/tasks/..%2Fx/status",
            Some(&op),
            Some(json!({"status": "done"})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "id", "{reply:#?}");
    let reply = env
        .send(
            Method::POST,
            "/api/v1/tasks",
            Some(&op),
            &[("content-type", "application/json")],
            Some("{\"list_id\": ".into()),
        )
        .await;
    reply.problem(400);
    assert_eq!(loopback.calls.lock().unwrap().len(), before);

    // ClickUp's refusal is a 502 with its reason; its rate limit a 503 with its delay.
    let reply = create(&env, &op, None, json!({"list_id": "refused", "name": "x"})).await;
    let detail = reply.problem(502)["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("List not found (ITEM_013)"), "{detail}");
    let reply = create(&env, &op, None, json!({"list_id": "busy", "name": "x"})).await;
    reply.problem(503);
    assert_eq!(reply.header("retry-after"), "7", "{reply:#?}");

    // Creating is running something: a viewer may not.
    let viewer = env.token(TENANT, Role::Viewer);
    create(&env, &viewer, None, task).await.problem(403);
}

// ---- integrations status ----

#[tokio::test]
async fn the_status_reports_what_is_configured_and_whether_it_works() {
    let mut env = env().await;
    let loopback = Loopback::start(clickup).await;
    let _worker = run_integration(&mut env, integration_settings(&loopback, "pk_good")).await;
    let viewer = env.token(TENANT, Role::Viewer);
    let reply = env
        .call(
            Method::GET,
            "/api/v1/integrations/status",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    let clickup = entry(&reply.body, "clickup");
    assert_eq!(
        (&clickup["configured"], &clickup["ok"]),
        (&json!(true), &json!(true)),
        "{clickup}"
    );
    assert_eq!(clickup["detail"], "authenticated as ada");
    let notion = entry(&reply.body, "notion");
    assert_eq!(
        (&notion["configured"], &notion["ok"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(entry(&reply.body, "markdown")["ok"], true);
    assert!(!reply.text.contains("pk_good"), "{}", reply.text);
    // The check is one read-only call; nothing was created.
    assert_eq!(loopback.calls(Method::GET, "/api/v2/user").len(), 1);
    assert_eq!(loopback.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_clickup_token_is_reported_with_the_api_reason() {
    let mut env = env().await;
    let loopback = Loopback::start(clickup).await;
    let _worker = run_integration(&mut env, integration_settings(&loopback, "pk_revoked")).await;
    let viewer = env.token(TENANT, Role::Viewer);
    let reply = env
        .call(
            Method::GET,
            "/api/v1/integrations/status",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:#?}");
    let clickup = entry(&reply.body, "clickup");
    assert_eq!(
        (&clickup["configured"], &clickup["ok"]),
        (&json!(true), &json!(false)),
        "{clickup}"
    );
    let detail = clickup["detail"].as_str().unwrap();
    assert!(detail.contains("Token invalid (OAUTH_025)"), "{detail}");
    assert!(!reply.text.contains("pk_revoked"), "{}", reply.text);
}

// ---- meetings ----

/// `meeting_to_tasks` for the tenant, on `test.echo` steps with the shipped step ids.
const MEETING_WORKFLOW: &str = r#"name: meeting_to_tasks
version: 1
input:
  transcript: { type: string }
  audio_url: { type: string }
  format: { type: string }
  language: { type: string }
  meeting_title: { type: string, required: true }
  meeting_date: { type: string }
  clickup_list_id: { type: string, required: true }
  channel: { type: string }
steps:
  - id: speakers
    operation: test.echo
    input:
      speakers:
        - { name: Ann, turns: 2, talk_time_seconds: 30 }
      transcript: "{{ input.transcript }}"
  - id: summarize
    operation: test.echo
    needs: [speakers]
    input:
      summary: "{{ input.meeting_title }}: ship on Friday"
      key_points: ["ship on Friday"]
  - id: extract
    operation: test.echo
    needs: [speakers]
    input:
      tasks:
        - { title: "Ship it", assignee: Ann, priority: high, source_quote: "{{ input.transcript }}" }
  - id: post_summary
    needs: [summarize, extract]
    wait_for_signal: { name: posted }
output:
  summary: "{{ steps.summarize.output.summary }}"
  key_points: "{{ steps.summarize.output.key_points }}"
  speakers: "{{ steps.speakers.output.speakers }}"
  tasks: "{{ steps.extract.output.tasks }}"
  posted_by: "{{ steps.post_summary.output.by }}"
"#;

#[tokio::test]
async fn a_meeting_is_processed_once_and_its_context_is_the_tenants_own() {
    let env = env().await;
    env.register(MEETING_WORKFLOW).await;
    let op = env.token(TENANT, Role::Operator);
    let body = json!({
        "meeting_id": "weekly-2025-03-14",
        "title": "Weekly",
        "date": "2025-03-14",
        "transcript": "Ann: we ship on Friday",
        "list_id": "L1",
    });
    let first = env
        .call(
            Method::POST,
            "/api/v1/meetings/process",
            Some(&op),
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:#?}");
    assert_eq!(first.body["meeting_id"], "weekly-2025-03-14");
    let instance = first.body["instance_id"].as_str().unwrap().to_owned();
    let context_url = "/api/v1/meetings/weekly-2025-03-14/context";
    assert_eq!(first.body["context_url"], context_url);
    assert_eq!(first.header("location"), context_url);
    assert_eq!(
        first.body["status_url"],
        format!("/api/v1/workflows/status/{instance}")
    );

    let again = env
        .call(
            Method::POST,
            "/api/v1/meetings/process",
            Some(&op),
            Some(body.clone()),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{again:#?}");
    assert_eq!(again.body["instance_id"], instance.as_str());

    // While the last step waits, the context is the declared output rendered so far.
    env.wait_for(&instance, "waited for its signal", |s| {
        s["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|step| step["id"] == "post_summary" && step["status"] == "waiting")
        })
    })
    .await;
    let viewer = env.token(TENANT, Role::Viewer);
    let running = env
        .call(Method::GET, context_url, Some(&viewer), None)
        .await;
    assert_eq!(running.status, StatusCode::OK, "{running:#?}");
    assert_eq!(running.body["status"], "running", "{running:#?}");
    assert_eq!(running.body["summary"], "Weekly: ship on Friday");
    assert_eq!(running.body["tasks"][0]["title"], "Ship it");
    assert_eq!(running.body["posted_by"], Value::Null);
    assert_eq!(running.body["output"], Value::Null);
    let signal = format!("/api/v1/workflows/instances/{instance}/signal/posted");
    let reply = env
        .call(
            Method::POST,
            &signal,
            Some(&op),
            Some(json!({"by": "slack"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");

    let status = env.finished(&instance).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["workflow"], "meeting_to_tasks");

    let context = env
        .call(Method::GET, context_url, Some(&viewer), None)
        .await;
    assert_eq!(context.status, StatusCode::OK, "{context:#?}");
    let c = &context.body;
    assert_eq!(c["status"], "completed");
    assert_eq!(c["posted_by"], "slack");
    assert_eq!(c["output"]["posted_by"], "slack");
    assert_eq!(c["instance_id"], instance.as_str());
    assert_eq!(c["title"], "Weekly");
    assert_eq!(c["date"], "2025-03-14");
    assert_eq!(c["summary"], "Weekly: ship on Friday");
    assert_eq!(c["key_points"], json!(["ship on Friday"]));
    assert_eq!(c["speakers"][0]["name"], "Ann");
    assert_eq!(c["tasks"][0]["title"], "Ship it");
    assert_eq!(c["tasks"][0]["source_quote"], "Ann: we ship on Friday");

    // Another tenant sees no such meeting, and its own meeting of that id is another instance.
    let stranger = env.token(OTHER_TENANT, Role::Admin);
    env.call(Method::GET, context_url, Some(&stranger), None)
        .await
        .problem(404);
    env.call(
        Method::GET,
        "/api/v1/meetings/never-processed/context",
        Some(&viewer),
        None,
    )
    .await
    .problem(404);

    // Without a meeting id, the Idempotency-Key makes one, so a retry is the same meeting.
    let no_id = json!({"title": "Standup", "transcript": "Bo: done", "list_id": "L1"});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = env
            .send(
                Method::POST,
                "/api/v1/meetings/process",
                Some(&op),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "standup-1"),
                ],
                Some(no_id.to_string()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
        ids.push((
            reply.body["meeting_id"].clone(),
            reply.body["instance_id"].clone(),
        ));
    }
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0].1, json!(instance));

    // Bad bodies name the field as the client wrote it.
    for (body, status, field) in [
        (json!({"transcript": "x", "list_id": "L1"}), 400, "title"),
        (json!({"title": "t", "list_id": "L1"}), 400, "transcript"),
        (
            json!({"title": "t", "transcript": "x", "list_id": "L1", "colour": 1}),
            400,
            "colour",
        ),
        // Required by the workflow's input schema, checked before anything is published.
        (json!({"title": "t", "transcript": "x"}), 422, "list_id"),
    ] {
        let reply = env
            .call(
                Method::POST,
                "/api/v1/meetings/process",
                Some(&op),
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.problem(status)["field"], field, "{body}: {reply:#?}");
    }
}

#[test]
fn the_documented_bodies_of_these_routes_resolve_in_the_openapi_document() {
    let doc = switchyard_gateway::openapi::document();
    let schemas = &doc["components"]["schemas"];
    for (path, method) in [
        ("/api/v1/meetings/process", "post"),
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks/{id}/status", "put"),
    ] {
        let body =
            &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
        // A component by reference, or inline (a catalog operation's input schema).
        let schema = match body["$ref"].as_str() {
            Some(r) => &schemas[r.strip_prefix("#/components/schemas/").unwrap()],
            None => body,
        };
        assert!(
            schema["properties"].is_object(),
            "{method} {path} has no body schema: {body:#}"
        );
    }
    // The catalog-checked bodies are documented by the catalog's schema, less what the
    // gateway fills in.
    let status = &doc["paths"]["/api/v1/tasks/{id}/status"]["put"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        status["required"],
        serde_json::json!(["status"]),
        "{status:#}"
    );
    assert_eq!(status["properties"]["status"]["minLength"], 1, "{status:#}");
    assert_eq!(status["additionalProperties"], false, "{status:#}");
    let accepted = &doc["paths"]["/api/v1/meetings/process"]["post"]["responses"]["202"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(accepted, "#/components/schemas/MeetingAccepted");
    assert!(schemas["MeetingAccepted"]["properties"]["context_url"].is_object());
}

/// A transcript over the inline limit is stored once in the object store; the start carries a
/// reference, and a worker given that reference reads the whole transcript back.
#[tokio::test]
async fn a_long_transcript_is_passed_by_reference() {
    let env = env_with(|c| c.gateway.body_limit = 1 << 20).await;
    env.register(MEETING_WORKFLOW).await;
    let op = env.token(TENANT, Role::Operator);
    let transcript = "Ann: we ship on Friday and not a day later.\n".repeat(2000);
    assert!(transcript.len() > switchyard_runtime::objects::INLINE_LIMIT);
    let reply = env
        .call(
            Method::POST,
            "/api/v1/meetings/process",
            Some(&op),
            Some(json!({ "title": "Long", "transcript": transcript, "list_id": "L1" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:#?}");
    let instance = reply.body["instance_id"].as_str().unwrap().to_owned();
    let speakers_done = |status: &Value| {
        status["steps"].as_array().and_then(|steps| {
            steps
                .iter()
                .find(|s| s["id"] == "speakers" && s["status"] == "completed")
                .cloned()
        })
    };
    let status = env
        .wait_for(&instance, "ran its speakers step", |s| {
            speakers_done(s).is_some()
        })
        .await;
    let speakers = speakers_done(&status).expect("speakers step");
    // The echo worker was given the reference and saw the transcript itself.
    assert_eq!(speakers["output"]["transcript"], transcript.as_str());
    let state = env
        .js
        .get_key_value(switchyard_proto::stream::WF_STATE_BUCKET)
        .await
        .unwrap()
        .get(&instance)
        .await
        .unwrap()
        .expect("state");
    let state: Value = serde_json::from_slice(&state).unwrap();
    let input = state["input"]["transcript"].as_str().unwrap_or_default();
    assert!(
        input.starts_with(switchyard_proto::stream::OBJECT_REF_PREFIX),
        "the start carried the transcript itself: {:.120}",
        input
    );
}
