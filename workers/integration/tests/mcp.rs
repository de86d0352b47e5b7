//! The `mcp` worker kind against MCP servers no one here wrote: small servers on the official
//! Python SDK (PyPI `mcp`, pinned in deploy/local/env.sh; tests/fixtures/mcp_server.py), over
//! Streamable HTTP and stdio, with the real engine, worker loop, bus and Postgres.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_integration::mcp::McpWorker;
use switchyard_proto::{
    ContentType, Job, JobStatus, UsageEvent, decode, encode_proto, orchestrator::endpoint, subject,
};
use switchyard_runtime::config::{McpServer, McpSettings, Secret};
use switchyard_test_harness::{
    Bus, Components, TENANT, TestDatabase, bus, engine, free_port, jobs::next_result, metrics,
    orchestrator_options, worker_config,
};

const TOKEN: &str = "fixture-token-0123456789";
const OTHER_TENANT: &str = "globex";

/// One fixture server process and the log of the tool calls it ran.
struct Fixture {
    child: tokio::process::Child,
    url: String,
}

impl Fixture {
    /// Starts the fixture over Streamable HTTP on a free port; waits until it answers.
    async fn http(log: &Path, token: Option<&str>) -> Fixture {
        let port = free_port();
        let mut command = tokio::process::Command::new(python());
        command
            .arg(script())
            .arg("http")
            .arg(port.to_string())
            .arg(log)
            .args(token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().expect("start the fixture server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the fixture never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Fixture {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    async fn kill(&mut self) {
        self.child.kill().await.expect("kill the fixture");
    }
}

fn python() -> PathBuf {
    switchyard_test_harness::python_with("mcp")
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp_server.py")
}

/// The tool calls a log holds, as `(tool, where)`.
fn calls(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a log line");
            (
                v["tool"].as_str().unwrap_or_default().to_owned(),
                v["at"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

struct Env {
    bus: Bus,
    components: Components,
    registry: Registry,
    _db: TestDatabase,
}

/// A bus with the engine and one `mcp` replica over `servers`.
async fn env(servers: Vec<(&str, McpServer)>, adjust: impl FnOnce(&mut McpSettings)) -> Env {
    let bus = bus().await;
    let mut components = Components::default();
    components
        .orchestrator(&bus, orchestrator_options("o1"))
        .await;
    engine::wait_for_engine(&bus.client, Duration::from_secs(20)).await;
    let db = switchyard_test_harness::database().await;
    switchyard_integration::effects::migrate(&db.pool)
        .await
        .expect("migrate");
    let mut settings = McpSettings {
        servers: servers
            .into_iter()
            .map(|(name, server)| (name.to_owned(), server))
            .collect(),
        connect_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(10),
        ..McpSettings::default()
    };
    adjust(&mut settings);
    let registry = Registry::new();
    let (worker, announcements) =
        McpWorker::build(&settings, db.pool.clone(), &registry).expect("the mcp worker");
    worker.discover().await;
    tokio::spawn(worker.clone().follow(
        announcements,
        settings.health_interval,
        tokio_util::sync::CancellationToken::new(),
    ));
    let config = worker_config(bus.url(), "mcp-1");
    components.worker(&bus, &config, worker, &registry).await;
    Env {
        bus,
        components,
        registry,
        _db: db,
    }
}

fn http_server(urls: &[&str], token: Option<&str>) -> McpServer {
    McpServer {
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        bearer_token: token.map(Secret::new),
        ..McpServer::default()
    }
}

impl Env {
    /// Registers `yaml` once the engine accepts it (the tools it uses may still be being
    /// declared); panics with the last refusal after 15 s.
    async fn register(&self, yaml: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.try_register(yaml).await {
                Ok(_) => return,
                Err(refusal) if Instant::now() > deadline => {
                    panic!("registration refused: {refusal:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn try_register(&self, yaml: &str) -> Result<Value, Value> {
        engine::try_query(
            &self.bus.client,
            endpoint::DEFINITIONS_PUT,
            &json!({ "tenant": TENANT, "source": yaml }),
        )
        .await
    }

    async fn run(&self, workflow: &str, input: Value) -> Value {
        engine::run_workflow(&self.bus, TENANT, workflow, input, Duration::from_secs(60)).await
    }

    fn gauge(&self, name: &str, server: &str) -> Option<f64> {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "server" && l.value() == server)
            })
            .map(|m| m.get_gauge().get_value())
    }
}

fn one_step(name: &str, operation: &str, input: Value, retry: &str) -> String {
    format!(
        "name: {name}\nversion: 1\nsteps:\n  - id: call\n    operation: {operation}\n    input: {input}\n{retry}"
    )
}

const RETRY_3: &str = "    retry: { max_attempts: 3, initial_delay: 100ms, max_delay: 200ms }\n";
const RETRY_2: &str = "    retry: { max_attempts: 2, initial_delay: 100ms, max_delay: 200ms }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_declared_type_checked_and_run_as_steps() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let server = Fixture::http(&log, Some(TOKEN)).await;
    let mut calc = http_server(&[&server.url], Some(TOKEN));
    calc.tenants = vec![TENANT.to_owned()];
    let env = env(vec![("calc", calc)], |_| {}).await;

    let mut usage = env
        .bus
        .client
        .subscribe(subject::usage(TENANT, "*"))
        .await
        .unwrap();
    env.bus.client.flush().await.unwrap();

    // Discovered and declared: a definition that uses the tool registers and runs, its output
    // the tool's structured content.
    env.register(&one_step(
        "adds",
        "mcp.calc.add",
        json!({"a": 2, "b": 3}),
        "",
    ))
    .await;
    let done = env.run("adds", json!({})).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(engine::step(&done, "call")["output"], json!({"result": 5}));
    // Billed per call, by server and tool: one call and its duration.
    let mut meters = Vec::new();
    while meters.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), usage.next())
            .await
            .expect("usage in time")
            .expect("subscribed");
        let event: UsageEvent = decode(ContentType::Protobuf, &msg.payload).expect("a usage event");
        assert_eq!(event.attributes["server"], "calc");
        assert_eq!(event.attributes["tool"], "add");
        meters.push((event.meter, event.unit, event.quantity));
    }
    meters.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(meters[0].0, "mcp_call_seconds");
    assert!(meters[0].2 > 0.0 && meters[0].2 < 10.0, "{meters:?}");
    assert_eq!((meters[1].0.as_str(), meters[1].2), ("mcp_calls", 1.0));

    // The registry lists the declared tools under the kind, and who uses them.
    let registry = engine::query(&env.bus.client, endpoint::REGISTRY, json!({})).await;
    let kind = registry["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == "mcp")
        .unwrap_or_else(|| panic!("no mcp kind: {registry:#}"));
    let names: Vec<&str> = kind["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for op in [
        "mcp.call",
        "mcp.list_tools",
        "mcp.calc.add",
        "mcp.calc.flaky",
    ] {
        assert!(names.contains(&op), "{op} not in {names:?}");
    }
    assert!(
        !names.contains(&"mcp.calc.mul"),
        "mul is not there before it is enabled"
    );
    assert_eq!(kind["used_by"][0]["name"], "adds", "{kind:#}");

    // A wrong argument name is refused at registration, naming the tool's parameters.
    let refusal = env
        .try_register(&one_step(
            "bad_adds",
            "mcp.calc.add",
            json!({"a": 2, "c": 3}),
            "",
        ))
        .await
        .expect_err("an unknown argument is refused");
    let text = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(
            "steps[0].input.c: mcp.calc.add does not take this field; expected one of: a, b"
        ),
        "{refusal:#}"
    );

    // Any tool through mcp.call, with the content shape; and the server's tool list.
    env.register(&one_step(
        "records",
        "mcp.call",
        json!({"server": "calc", "tool": "record", "arguments": {"key": "k1"}}),
        "",
    ))
    .await;
    let done = env.run("records", json!({})).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(engine::step(&done, "call")["output"]["text"], "recorded k1");
    env.register(&one_step(
        "lists",
        "mcp.list_tools",
        json!({"server": "calc"}),
        "",
    ))
    .await;
    let done = env.run("lists", json!({})).await;
    let listed = &engine::step(&done, "call")["output"];
    assert_eq!(listed["protocol_version"], "2025-11-25", "{listed:#}");
    assert!(
        listed["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|t| t["name"] == "add" && t["operation"] == "mcp.calc.add"),
        "{listed:#}"
    );

    // A tool that fails twice (isError) completes on the third attempt.
    env.register(&one_step(
        "flakes",
        "mcp.calc.flaky",
        json!({"key": "f1", "failures_first": 2}),
        RETRY_3,
    ))
    .await;
    let done = env.run("flakes", json!({})).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        engine::step(&done, "call")["output"],
        json!({"result": "ok after 2 failures"})
    );
    let flaky = calls(&log).iter().filter(|(t, _)| t == "flaky").count();
    assert_eq!(flaky, 3);
    // And one that keeps failing fails the step with the tool's text.
    env.register(&one_step(
        "fails",
        "mcp.calc.flaky",
        json!({"key": "f2", "failures_first": 5}),
        RETRY_2,
    ))
    .await;
    let done = env.run("fails", json!({})).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("failure 2 of 5 for f2"), "{done:#}");

    // A tool added at run time is announced, listed and declared.
    env.register(&one_step(
        "enables",
        "mcp.call",
        json!({"server": "calc", "tool": "enable_mul", "arguments": {}}),
        "",
    ))
    .await;
    assert_eq!(env.run("enables", json!({})).await["status"], "completed");
    env.register(&one_step(
        "muls",
        "mcp.calc.mul",
        json!({"a": 6, "b": 7}),
        "",
    ))
    .await;
    let done = env.run("muls", json!({})).await;
    assert_eq!(engine::step(&done, "call")["output"], json!({"result": 42}));

    // A server configured for one tenant is not found by another: no call is made.
    let before = calls(&log).len();
    let yaml = one_step(
        "theirs",
        "mcp.call",
        json!({"server": "calc", "tool": "record", "arguments": {"key": "stolen"}}),
        "",
    );
    engine::register(&env.bus.client, OTHER_TENANT, &yaml).await;
    let done = engine::run_workflow(
        &env.bus,
        OTHER_TENANT,
        "theirs",
        json!({}),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["error"]["code"], "not_found", "{done:#}");
    assert!(
        done["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MCP server \"calc\" not found")),
        "{done:#}"
    );
    assert_eq!(
        calls(&log).len(),
        before,
        "the other tenant's call reached the server"
    );

    // Metered by server.
    let ok = metrics::counter(
        std::slice::from_ref(&env.registry),
        "cross_system_calls_total",
        &[("system", "mcp"), ("server", "calc"), ("outcome", "ok")],
    );
    assert_eq!(ok, 5.0, "add, record, flaky, enable_mul and mul");
    let failed = metrics::counter(
        std::slice::from_ref(&env.registry),
        "cross_system_calls_total",
        &[("server", "calc"), ("outcome", "tool_error")],
    );
    assert_eq!(failed, 4.0);
    assert_eq!(env.gauge("mcp_circuit_breaker_state", "calc"), Some(0.0));
    drop(env.components);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_fails_over_to_the_next_url_and_the_breaker_opens_when_both_are_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let mut first = Fixture::http(&log, None).await;
    let mut second = Fixture::http(&log, None).await;
    let env = env(
        vec![("pair", http_server(&[&first.url, &second.url], None))],
        |s| {
            s.retries = 2;
            s.breaker_failures = 3;
            s.breaker_cooldown = Duration::from_secs(60);
            s.health_interval = Duration::from_secs(3600);
        },
    )
    .await;
    env.register(&one_step(
        "naps",
        "mcp.pair.slow",
        json!({"seconds": 2}),
        "",
    ))
    .await;

    // The first server dies in the middle of the call: the call goes to the second.
    let (instance, _events) = engine::start(&env.bus, TENANT, "naps", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !calls(&log).iter().any(|(t, _)| t == "slow") {
        assert!(Instant::now() < deadline, "the call never reached a server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, at) = calls(&log)[0].clone();
    assert!(first.url.contains(at.trim_start_matches("port ")), "{at}");
    first.kill().await;
    let done = engine::finished(&env.bus.client, TENANT, &instance, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let served = engine::step(&done, "call")["output"]["result"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        second
            .url
            .contains(served.trim_start_matches("slept on port ")),
        "{done:#}"
    );

    // Both down: the breaker opens and the step fails fast, saying so.
    second.kill().await;
    env.register(&one_step(
        "adds",
        "mcp.pair.add",
        json!({"a": 1, "b": 2}),
        RETRY_2,
    ))
    .await;
    let started = Instant::now();
    let done = env.run("adds", json!({})).await;
    let took = started.elapsed();
    assert_eq!(done["status"], "failed", "{done:#}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("MCP server pair is failing (circuit breaker open"),
        "{done:#}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(env.gauge("mcp_circuit_breaker_state", "pair"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_call_over_stdio_does_not_call_the_tool_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let stdio = McpServer {
        command: vec![
            python().display().to_string(),
            script().to_owned(),
            "stdio".to_owned(),
            log.display().to_string(),
        ],
        ..McpServer::default()
    };
    let env = env(vec![("local", stdio)], |_| {}).await;
    let instance = engine::new_instance();
    let mut results = env
        .bus
        .client
        .subscribe(subject::result(&instance))
        .await
        .unwrap();
    env.bus.client.flush().await.unwrap();
    let job = Job {
        job_id: format!("{instance}-call-1"),
        tenant: TENANT.into(),
        instance_id: instance.clone(),
        step_id: "call".into(),
        operation: "mcp.call".into(),
        input: serde_json::to_vec(
            &json!({"server": "local", "tool": "record", "arguments": {"key": "once"}}),
        )
        .unwrap(),
        correlation_id: "corr".into(),
        created_at_ms: switchyard_proto::now_ms(),
        ..Job::default()
    };
    for delivery in ["delivery-1", "delivery-2"] {
        env.bus
            .publish(&subject::job(&job.operation), delivery, encode_proto(&job))
            .await;
        let result = next_result(&mut results, Duration::from_secs(30)).await;
        assert_eq!(
            JobStatus::try_from(result.status),
            Ok(JobStatus::Succeeded),
            "{result:?}"
        );
        let output: Value = serde_json::from_slice(&result.output).expect("JSON output");
        assert_eq!(output["text"], "recorded once");
    }
    let recorded = calls(&log)
        .iter()
        .filter(|(t, at)| t == "record" && at == "stdio")
        .count();
    assert_eq!(recorded, 1, "the tool ran again");
}

/// The shipped example: the AI Tutor's notes server (examples/ai_tutor/mcp_server.py) over
/// stdio runs workflows/examples/tutor_notes.yaml, whose steps are its declared tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_tutor_notes_workflow_runs_on_the_tutors_mcp_server() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let tutor = McpServer {
        command: vec![
            python().display().to_string(),
            format!("{root}/examples/ai_tutor/mcp_server.py"),
        ],
        ..McpServer::default()
    };
    let env = env(vec![("tutor", tutor)], |_| {}).await;
    env.register(include_str!("../../../workflows/examples/tutor_notes.yaml"))
        .await;
    let done = env
        .run("tutor_notes", json!({"topic": "the Analytical Engine"}))
        .await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        done["output"]["sources"][0], "analytical-engine.md",
        "{done:#}"
    );
    assert!(
        done["output"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("Engine")),
        "{done:#}"
    );
    // A query with nothing to search is the tool's error, with its text, and fails the step.
    let failed = env.run("tutor_notes", json!({"topic": "the of and"})).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the query has no searchable words")),
        "{failed:#}"
    );
}
