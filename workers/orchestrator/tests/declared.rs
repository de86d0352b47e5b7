//! Operations declared at run time (docs/worker-protocol.md), against a real server with
//! authentication on: a worker written in plain nats-py from the protocol page alone serves a
//! step of a type-checked workflow; a changed schema under a stored version is refused; the
//! engine enforces declared schemas itself; a kind's credentials declare only that kind.

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use serde_json::{Value, json};
use switchyard_proto::orchestrator::declare_subject;
use switchyard_test_harness::{BusRole, engine};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const REPORT: &str = r#"
name: text_report
version: 1
input:
  text: { type: string }
steps:
  - id: stats
    operation: textstats.count
    input: { text: "{{ input.text }}" }
  - id: report
    operation: test.echo
    needs: [stats]
    input:
      line: "{{ steps.stats.output.words }} words; most frequent: {{ steps.stats.output.top | join(', ') }}"
output:
  words: "{{ steps.stats.output.words }}"
  line: "{{ steps.report.output.line }}"
"#;

/// A client connected as `role`.
async fn connect_as(env: &Env, role: &BusRole) -> async_nats::Client {
    let creds = env
        .server
        .credentials(role)
        .expect("the bus asks for credentials");
    async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .expect("read the credentials")
        .connect(env.server.url())
        .await
        .expect("connect")
}

/// Starts `examples/python/plain_worker.py` as `worker-textstats` and waits until it has
/// declared its operation.
async fn plain_worker(env: &Env) -> tokio::process::Child {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/plain_worker.py"
    );
    let creds = env
        .server
        .credentials(&BusRole::Worker("textstats".into()))
        .expect("the bus asks for credentials");
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .args(["--nats", &env.server.url(), "--worker-id", "py-1"])
        .arg("--creds")
        .arg(creds)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python worker");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let declared = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the worker declares within 30 s")
        .expect("read its output")
        .expect("a line");
    assert!(declared.starts_with("declared: "), "{declared}");
    let reply: Value = serde_json::from_str(&declared["declared: ".len()..]).unwrap();
    assert_eq!(reply["stream"], "JOBS_TEXTSTATS", "{reply}");
    child
}

#[tokio::test]
async fn a_plain_nats_py_worker_serves_a_type_checked_step() {
    let env = env().await;
    let mut worker = plain_worker(&env).await;
    env.register(REPORT).await;

    let (instance, _events) = env
        .start(
            "text_report",
            json!({ "text": "The bus is the boundary. The bus carries jobs. Jobs carry text." }),
        )
        .await;
    let status = env.finished(&instance, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"]["words"], 12, "{status:#}");
    assert_eq!(
        status["output"]["line"], "12 words; most frequent: the, bus, jobs",
        "{status:#}"
    );
    let stats = step(&status, "stats");
    assert_eq!(stats["worker_id"], "py-1", "{stats:#}");

    // The engine checks references against the declared output fields.
    let wrong = REPORT
        .replace("name: text_report", "name: text_report_typo")
        .replace(
            "steps.stats.output.words }}\"\n  line",
            "steps.stats.output.wordz }}\"\n  line",
        );
    let refused = engine::try_query(
        &env.client,
        "definitions.put",
        &json!({ "tenant": TENANT, "source": wrong }),
    )
    .await
    .expect_err("a reference to an undeclared field is refused");
    let message = refused.to_string();
    assert!(
        message.contains("wordz") && message.contains("words") && message.contains("top"),
        "names the field and the declared ones: {refused:#}"
    );

    worker.start_kill().unwrap();
}

fn liar(version: u32, words_type: &str) -> Value {
    json!({
        "protocol": 1,
        "kind": "liar",
        "operations": [{
            "name": "liar.count",
            "version": version,
            "input": { "type": "object", "required": ["text"],
                       "properties": { "text": { "type": "string" } } },
            "output": { "type": "object", "required": ["words"],
                        "properties": { "words": { "type": words_type } } },
        }]
    })
}

#[tokio::test]
async fn a_changed_schema_needs_a_new_version() {
    let env = env().await;
    let first = engine::try_query(&env.client, "operations.declare.liar", &liar(1, "integer"))
        .await
        .expect("the first declaration is stored");
    assert_eq!(first["operations"][0]["created"], true, "{first}");
    let again = engine::try_query(&env.client, "operations.declare.liar", &liar(1, "integer"))
        .await
        .expect("the same declaration again is accepted");
    assert_eq!(again["operations"][0]["created"], false, "{again}");

    let changed = engine::try_query(&env.client, "operations.declare.liar", &liar(1, "string"))
        .await
        .expect_err("a changed schema under version 1 is refused");
    assert_eq!(changed["error"]["code"], "conflict", "{changed}");
    assert!(
        changed.to_string().contains("as version 2"),
        "says what to do: {changed}"
    );
    let newer = engine::try_query(&env.client, "operations.declare.liar", &liar(2, "string"))
        .await
        .expect("a new version is accepted");
    assert_eq!(newer["operations"][0]["version"], 2, "{newer}");

    let mut misnamed = liar(3, "integer");
    misnamed["operations"][0]["name"] = json!("research.count");
    let bad = engine::try_query(&env.client, "operations.declare.liar", &misnamed)
        .await
        .expect_err("an operation of another kind is refused");
    assert_eq!(
        bad["error"]["problems"][0]["path"], "operations[0].name",
        "{bad}"
    );

    // A body that is not a declaration is refused naming where it went wrong, and stores
    // nothing.
    let mut unknown_field = liar(4, "integer");
    unknown_field["operations"][0]["timeout"] = json!("1s");
    let refused = engine::try_query(&env.client, "operations.declare.liar", &unknown_field)
        .await
        .expect_err("an unknown field is refused");
    assert_eq!(refused["error"]["code"], "bad_request", "{refused}");
    assert!(refused.to_string().contains("operations[0]"), "{refused}");
    let js = async_nats::jetstream::new(env.client.clone());
    let kv = js.get_key_value("WF_OPERATIONS").await.unwrap();
    assert!(kv.get("liar.count.v4").await.unwrap().is_none());
    assert!(kv.get("liar.count.v2").await.unwrap().is_some());
}

/// The engine checks a declared operation's output itself: a worker that answers outside its
/// schema fails the step, naming the field.
#[tokio::test]
async fn an_output_outside_the_declared_schema_fails_the_step() {
    let env = env().await;
    engine::try_query(&env.client, "operations.declare.liar", &liar(1, "integer"))
        .await
        .expect("declared");
    env.register(
        r#"
name: lies
version: 1
steps:
  - id: count
    operation: liar.count
    input: { text: "one two" }
"#,
    )
    .await;
    let (instance, _events) = env.start("lies", json!({})).await;

    // Act as the liar's replica: pull the job (JSON, since the kind was declared), answer a
    // string where the schema says integer.
    let js = async_nats::jetstream::new(env.client.clone());
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("JOBS_LIAR")
        .await
        .expect("the declaration created the stream")
        .get_consumer("worker-liar")
        .await
        .expect("and the consumer");
    // A pull that waits for the job: the engine may not have published it yet.
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .unwrap();
    let msg = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut batch),
    )
    .await
    .expect("a job within 10 s")
    .expect("a message")
    .expect("no error");
    let content_type = msg.headers.as_ref().and_then(|h| h.get("Content-Type"));
    assert_eq!(content_type.map(|v| v.as_str()), Some("application/json"));
    let job: Value = serde_json::from_slice(&msg.payload).expect("a JSON job");
    assert_eq!(job["input"], json!({ "text": "one two" }), "{job}");
    let result = json!({
        "job_id": job["job_id"], "tenant": job["tenant"], "instance_id": job["instance_id"],
        "step_id": job["step_id"], "operation": job["operation"], "status": "succeeded",
        "output": { "words": "two" }, "attempts": 1, "worker_id": "liar-1",
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    js.publish_with_headers(
        format!("wf.result.{}", job["instance_id"].as_str().unwrap()),
        headers,
        serde_json::to_vec(&result).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    msg.ack().await.unwrap();

    let status = env.finished(&instance, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    let error = &step(&status, "count")["error"];
    assert_eq!(error["code"], "invalid_output", "{status:#}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("liar.count version 1") && message.contains("words"),
        "{message}"
    );
}

#[tokio::test]
async fn a_kinds_credentials_declare_only_that_kind() {
    let env = env().await;
    let worker = connect_as(&env, &BusRole::Worker("liar".into())).await;
    let body: bytes::Bytes = serde_json::to_vec(&liar(1, "integer")).unwrap().into();
    let own = tokio::time::timeout(
        Duration::from_secs(10),
        worker.request(declare_subject("liar"), body.clone()),
    )
    .await
    .expect("answered in time")
    .expect("its own kind");
    assert!(
        own.headers
            .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none())
    );

    let mut other = liar(1, "integer");
    other["kind"] = json!("other");
    other["operations"][0]["name"] = json!("other.count");
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        worker.request(
            declare_subject("other"),
            serde_json::to_vec(&other).unwrap().into(),
        ),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "the broker must not deliver another kind's declaration"
    );
}

/// Starts `examples/ai_tutor/tutor.py` as `worker-tutor`, replica `tutor-1`.
fn tutor(env: &Env) -> tokio::process::Child {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/ai_tutor/tutor.py"
    );
    let creds = env
        .server
        .credentials(&BusRole::Worker("tutor".into()))
        .expect("the bus asks for credentials");
    tokio::process::Command::new(python())
        .arg(script)
        .args(["--nats", &env.server.url(), "--worker-id", "tutor-1"])
        .arg("--creds")
        .arg(creds)
        .kill_on_drop(true)
        .spawn()
        .expect("start the tutor")
}

/// The product spec's AI Tutor as an outside service (`examples/ai_tutor`, Python, on the
/// worker SDK): its shipped workflow registers against the tutor's declarations, runs, and
/// the knowledge graph's output feeds the next step's template.
#[tokio::test]
async fn the_ai_tutor_maps_a_topic_and_its_graph_feeds_the_recap() {
    let env = env().await;
    let _tutor = tutor(&env);
    let source = include_str!("../../../examples/ai_tutor/study_notes.yaml");
    // The definition checks once the tutor has declared its operations.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let put = engine::try_query(
            &env.client,
            "definitions.put",
            &json!({ "tenant": TENANT, "source": source }),
        )
        .await;
        match put {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("study_notes does not register: {e:#}"),
        }
    }

    let (instance, _events) = env
        .start(
            "study_notes",
            json!({ "topic": "Ada Lovelace and the Analytical Engine" }),
        )
        .await;
    let status = env.finished(&instance, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let output = &status["output"];
    assert_eq!(output["sources"][0], "The Analytical Engine", "{output:#}");
    let concepts: Vec<&str> = output["concepts"]
        .as_array()
        .expect("concepts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(concepts.contains(&"Analytical Engine"), "{output:#}");
    assert!(
        output["relations"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{output:#}"
    );
    // The recap read the graph: its text names the concepts the graph found.
    let recap_input = &step(&status, "recap");
    assert_eq!(recap_input["worker_id"], "tutor-1", "{status:#}");
    let recap = output["recap"].as_str().unwrap();
    assert!(recap.contains("key concepts are"), "{recap}");
    assert!(recap.contains(concepts[0]), "{recap}");
}

/// The registry as the engine sees it.
async fn registry(env: &Env) -> Value {
    engine::query(&env.client, "registry", json!({})).await
}

/// The live replicas the registry lists for `kind`.
async fn live_replicas(env: &Env, kind: &str) -> usize {
    registry(env).await["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == kind)
        .map_or(0, |k| k["replicas"].as_array().map_or(0, Vec::len))
}

/// Waits until the registry lists `count` live replicas of `kind`.
async fn until_replicas(env: &Env, kind: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while live_replicas(env, kind).await != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registry never listed {count} replicas of {kind}: {:#}",
            registry(env).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the shipped `research_brief` and returns the status of its one step.
async fn research_brief(env: &Env, topic: &str) -> Value {
    let (instance, _events) = env.start("research_brief", json!({ "topic": topic })).await;
    let status = env.finished(&instance, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert!(
        status["output"]["sources"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{status:#}"
    );
    step(&status, "research").clone()
}

/// A step naming the capability `research` runs on the AI Tutor while it runs, and on the
/// built-in research worker once it has stopped (SIGTERM); the status names which ran.
#[tokio::test]
async fn a_capability_runs_on_the_tutor_while_it_runs_and_on_the_built_in_kind_after() {
    let mut env = env().await;
    let mut config = switchyard_test_harness::worker_config(env.url(), "research-1");
    config.research.corpus_dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../research/corpus");
    let registry_metrics = prometheus::Registry::new();
    let research = switchyard_research::ResearchWorker::build(&config, &registry_metrics)
        .await
        .expect("research worker");
    env.components
        .worker(&env.bus, &config, research, &registry_metrics)
        .await;
    until_replicas(&env, "research", 1).await;

    let mut tutor = tutor(&env);
    until_replicas(&env, "tutor", 1).await;
    let capability = registry(&env).await["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "research")
        .cloned()
        .unwrap();
    assert_eq!(capability["contract"], "research.topic", "{capability:#}");
    assert_eq!(
        capability["providers"],
        json!(["research.topic", "tutor.research"]),
        "{capability:#}"
    );
    for _ in 0..2 {
        let ran = research_brief(&env, "Ada Lovelace and the Analytical Engine").await;
        assert_eq!(
            (&ran["operation"], &ran["version"], &ran["capability"]),
            (&json!("tutor.research"), &json!(1), &json!("research")),
            "{ran:#}"
        );
        assert_eq!(ran["worker_id"], "tutor-1", "{ran:#}");
    }

    let pid = tutor.id().expect("the tutor runs").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), tutor.wait())
        .await
        .expect("the tutor stops within 30 s of SIGTERM")
        .expect("wait");
    assert!(exited.success(), "the tutor stops cleanly: {exited:?}");
    until_replicas(&env, "tutor", 0).await;
    for _ in 0..2 {
        // The built-in worker's corpus (workers/research/corpus) is about other things.
        let ran = research_brief(&env, "exponential backoff with jitter").await;
        assert_eq!(
            (&ran["operation"], &ran["version"]),
            (&json!("research.topic"), &json!(1)),
            "{ran:#}"
        );
        assert_eq!(ran["worker_id"], "research-1", "{ran:#}");
    }
}

/// A tutor's declarations stay while definitions use them: retiring the kind is refused,
/// naming the definition, until it is deleted; then the operations leave the catalog.
#[tokio::test]
async fn a_kind_is_retired_only_when_no_definition_uses_it() {
    let env = env().await;
    let mut tutor = tutor(&env);
    until_replicas(&env, "tutor", 1).await;
    let source = include_str!("../../../examples/ai_tutor/study_notes.yaml");
    let put = engine::query(
        &env.client,
        "definitions.put",
        json!({ "tenant": TENANT, "source": source }),
    )
    .await;
    assert!(
        put.get("warnings").is_none(),
        "the tutor is running: {put:#}"
    );

    let refused = engine::try_query(
        &env.client,
        "operations.retire",
        &json!({ "kind": "tutor" }),
    )
    .await
    .expect_err("study_notes uses the tutor");
    assert!(
        refused.to_string().contains("study_notes v1"),
        "names the definition: {refused:#}"
    );
    let builtin = engine::try_query(
        &env.client,
        "operations.retire",
        &json!({ "kind": "research" }),
    )
    .await
    .expect_err("a built-in kind cannot be retired");
    assert!(builtin.to_string().contains("built-in"), "{builtin:#}");
    let unknown = engine::try_query(
        &env.client,
        "operations.retire",
        &json!({ "kind": "nobody" }),
    )
    .await
    .expect_err("nothing to retire");
    assert!(
        unknown.to_string().contains("no operations of kind"),
        "{unknown:#}"
    );

    tutor.start_kill().unwrap();
    let _ = tutor.wait().await;
    engine::query(
        &env.client,
        "definitions.delete",
        json!({ "tenant": TENANT, "name": "study_notes" }),
    )
    .await;
    let retired = engine::query(&env.client, "operations.retire", json!({ "kind": "tutor" })).await;
    let names: Vec<&str> = retired["retired"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["tutor.knowledge_graph", "tutor.research", "tutor.summarize"],
        "{retired:#}"
    );
    // The catalog no longer has them: the definition no longer registers.
    let again = engine::try_query(
        &env.client,
        "definitions.put",
        &json!({ "tenant": TENANT, "source": source.replace("version: 1", "version: 2") }),
    )
    .await
    .expect_err("the tutor's operations are retired");
    assert!(again.to_string().contains("tutor.research"), "{again:#}");
    assert!(
        registry(&env).await["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kind"] != "tutor"),
        "the registry no longer lists the kind"
    );
}

const NAP: &str = r#"
name: nap
version: 1
steps:
  - id: nap
    operation: napper.nap
    input: { seconds: 1.5 }
"#;

/// Starts `tests/fixtures/napper.py` (the Python SDK) as replica `id`, its output piped.
fn napper(env: &Env, id: &str) -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/napper.py");
    let creds = env
        .server
        .credentials(&BusRole::Worker("napper".into()))
        .expect("the bus asks for credentials");
    tokio::process::Command::new(python())
        .arg(script)
        .args(["--nats", &env.server.url(), "--worker-id", id])
        .arg("--creds")
        .arg(creds)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the napper")
}

/// A Python replica killed with SIGKILL in the middle of a job: the job comes back, once
/// its ack wait is over, to another Python replica, which completes the step.
#[tokio::test]
async fn a_python_replica_killed_mid_job_has_its_job_finished_by_another() {
    let env = env().await;
    let mut first = napper(&env, "py-a");
    until_replicas(&env, "napper", 1).await;
    env.bus
        .set_worker_ack_wait("napper", Duration::from_secs(3))
        .await;
    env.register(NAP).await;

    let (instance, _events) = env.start("nap", json!({})).await;
    let mut lines = BufReader::new(first.stdout.take().expect("stdout")).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the job starts within 30 s")
        .expect("read its output")
        .expect("a line");
    assert!(started.starts_with("started "), "{started}");
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;

    let _second = napper(&env, "py-b");
    let status = env.finished(&instance, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    let nap = step(&status, "nap");
    assert_eq!(nap["output"]["worker_id"], "py-b", "{status:#}");
    assert_eq!(nap["worker_id"], "py-b", "{status:#}");
    assert_eq!(
        nap["attempts"], 2,
        "delivered to each replica once: {status:#}"
    );
}

/// A built-in kind declares itself like any other: its declaration is stored with its
/// version, and when `bus.toml` left the kind out (its stream is missing), declaring creates
/// the stream and the worker serves.
#[tokio::test]
async fn a_built_in_kind_declares_itself_and_gets_its_stream_if_it_has_none() {
    let mut env = common::bus(Duration::from_secs(30)).await;
    env.js
        .delete_stream("JOBS_TEST")
        .await
        .expect("delete JOBS_TEST");
    env.orchestrator("o1").await;
    env.worker("w1").await;
    env.register(
        "name: hello\nversion: 1\nsteps:\n  - id: echo\n    operation: test.echo\n    input: { n: 1 }\noutput: \"{{ steps.echo.output.n }}\"\n",
    )
    .await;
    let (instance, _events) = env.start("hello", json!({})).await;
    let status = env.finished(&instance, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["output"], 1, "{status:#}");
    let operations = env
        .js
        .get_key_value(switchyard_proto::stream::OPERATIONS_BUCKET)
        .await
        .expect("bucket");
    let stored = operations
        .get("test.echo.v1")
        .await
        .expect("read")
        .expect("the test kind's declaration is stored");
    let record: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(record["kind"], "test", "{record:#}");
    // Its jobs stay protobuf: the Rust worker above ran them.
    assert_eq!(step(&status, "echo")["worker_id"], "w1", "{status:#}");
}

/// A Python handler whose output breaks its declared schema fails the step, naming the field:
/// the engine checks, since a worker in another language cannot be trusted to.
#[tokio::test]
async fn a_python_handler_breaking_its_output_schema_fails_the_step_naming_the_field() {
    let env = env().await;
    let _napper = napper(&env, "py-a");
    until_replicas(&env, "napper", 1).await;
    env.register("name: lie\nversion: 1\nsteps:\n  - id: lie\n    operation: napper.lie\n")
        .await;
    let (instance, _events) = env.start("lie", json!({})).await;
    let status = env.finished(&instance, Duration::from_secs(30)).await;
    assert_eq!(status["status"], "failed", "{status:#}");
    let error = &step(&status, "lie")["error"];
    assert_eq!(error["code"], "invalid_output", "{status:#}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("worker_id") && message.contains("napper.lie version 1"),
        "{message}"
    );
}

/// The tutor's contract holds: a reference to a field its knowledge graph does not declare is
/// refused naming the declared ones, and the same version with another schema is refused. A
/// definition registered while the tutor is down gets a warning, and its instances wait for
/// a tutor replica instead of failing.
#[tokio::test]
async fn the_tutors_contract_holds_and_its_workflows_wait_while_it_is_down() {
    let env = env().await;
    let mut first = tutor(&env);
    until_replicas(&env, "tutor", 1).await;

    let source = include_str!("../../../examples/ai_tutor/study_notes.yaml");
    let typo = source.replacen(
        "steps.kg.output.nodes | map(attribute='label') | join(', ')",
        "steps.kg.output.nodez | map(attribute='label') | join(', ')",
        1,
    );
    assert_ne!(typo, source);
    let refused = engine::try_query(
        &env.client,
        "definitions.put",
        &json!({ "tenant": TENANT, "source": typo }),
    )
    .await
    .expect_err("nodez is not declared");
    let message = refused.to_string();
    assert!(
        message.contains("nodez") && message.contains("nodes") && message.contains("edges"),
        "names the declared fields: {message}"
    );

    let kv = env
        .js
        .get_key_value(switchyard_proto::stream::OPERATIONS_BUCKET)
        .await
        .unwrap();
    let stored: Value =
        serde_json::from_slice(&kv.get("tutor.knowledge_graph.v1").await.unwrap().unwrap())
            .unwrap();
    let mut changed = stored["operation"].clone();
    changed["output"]["required"] = json!(["nodes"]);
    let changed = json!({ "protocol": 1, "kind": "tutor", "operations": [changed] });
    let conflict = engine::try_query(&env.client, "operations.declare.tutor", &changed)
        .await
        .expect_err("a changed schema under version 1 is refused");
    assert!(
        conflict
            .to_string()
            .contains("declare the change as version 2"),
        "{conflict}"
    );

    first.start_kill().unwrap();
    let _ = first.wait().await;
    until_replicas(&env, "tutor", 0).await;
    let put = engine::query(
        &env.client,
        "definitions.put",
        json!({ "tenant": TENANT, "source": source }),
    )
    .await;
    let warnings = put["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("\"tutor\""))),
        "{put:#}"
    );
    let (instance, _events) = env
        .start(
            "study_notes",
            json!({ "topic": "Ada Lovelace and the Analytical Engine" }),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = env.status(&instance).await;
        // Until the start is applied the engine answers "not found".
        if status.get("status").is_some() {
            assert_eq!(status["status"], "running", "it waits: {status:#}");
            if step(&status, "research")["status"] == "scheduled" {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = tutor(&env);
    let status = env.finished(&instance, Duration::from_secs(60)).await;
    assert_eq!(status["status"], "completed", "{status:#}");
}
