//! The `switchyard` command against a real nats-server, as a user runs it.

use std::process::{Command, Output, Stdio};

use switchyard_proto::stream;
use switchyard_test_support::{NatsServer, Role};

fn switchyard(server: &NatsServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .envs(server.env_for(&Role::Operator))
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn bus_apply_is_idempotent_and_status_shows_every_object() {
    let server = NatsServer::start().await;

    let first = switchyard(&server, &["bus", "apply"]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("created") && text(&first).ends_with("changes applied\n"),
        "{}",
        text(&first)
    );

    let second = switchyard(&server, &["bus", "apply"]);
    assert!(second.status.success(), "{}", text(&second));
    let second = text(&second);
    assert!(second.ends_with("no changes\n"), "{second}");
    assert!(
        !second.contains("created") && !second.contains("updated"),
        "{second}"
    );

    let status = switchyard(&server, &["bus", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    let status = text(&status);
    let mut expected = vec![
        stream::WF_INBOX.to_owned(),
        stream::WF_EVENTS.into(),
        stream::USAGE.into(),
        stream::DLQ.into(),
        stream::AUDIT.into(),
        stream::WF_SCHEDULES.into(),
        format!(
            "{}/{}",
            stream::WF_SCHEDULES,
            stream::ORCHESTRATOR_SCHEDULES
        ),
        stream::WF_TRIGGERS.into(),
        format!("{}/{}", stream::WF_TRIGGERS, stream::ORCHESTRATOR_TRIGGERS),
    ];
    for kind in &switchyard_bus_config::BusConfig::default().jobs.kinds {
        expected.push(stream::jobs(kind));
        expected.push(format!(
            "{}/{}",
            stream::jobs(kind),
            stream::worker_consumer(kind)
        ));
    }
    for consumer in [
        stream::ORCHESTRATOR_COMMANDS,
        stream::ORCHESTRATOR_RESULTS,
        stream::ORCHESTRATOR_TIMERS,
    ] {
        expected.push(format!("{}/{consumer}", stream::WF_INBOX));
    }
    expected.push(format!("{}/{}", stream::USAGE, stream::LEDGER_USAGE));
    expected.push(format!("{}/{}", stream::WF_EVENTS, stream::LEDGER_EVENTS));
    expected.push(format!("{}/{}", stream::AUDIT, stream::LEDGER_AUDIT));
    expected.push(stream::WF_STATE_BUCKET.into());
    expected.push(stream::WF_DEFINITIONS_BUCKET.into());
    for name in expected {
        assert!(status.contains(&name), "status lacks {name}:\n{status}");
    }
    assert!(!status.contains("missing"), "{status}");
}

#[tokio::test]
async fn the_demo_runs_against_worker_processes_and_reports_every_outcome() {
    let server = NatsServer::start().await;
    assert!(switchyard(&server, &["bus", "apply"]).status.success());
    let worker = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["worker", "test"])
        .env_clear()
        .envs(server.env_for(&Role::Worker("test".into())))
        .env("SWITCHYARD_WORKER__WORKER_ID", "demo-replica")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker");

    let demo = switchyard(&server, &["demo", "--jobs", "5", "--timeout", "30"]);
    let report = text(&demo);
    assert!(demo.status.success(), "{report}");
    assert!(report.contains("9/9 jobs ended as expected"), "{report}");
    assert!(
        report.contains("dead-lettered (decode)") && report.contains("dead-lettered (permanent)"),
        "{report}"
    );
    assert!(report.contains("succeeded after 3 attempt(s)"), "{report}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(worker.id().to_string())
        .status();
    let out = worker.wait_with_output().expect("worker exit");
    assert!(out.status.success());
}

fn spawn(server: &NatsServer, role: &Role, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .envs(server.env_for(role))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchyard")
}

fn stop(child: std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success(), "{:?}", out.status);
}

#[tokio::test]
async fn a_workflow_is_validated_registered_run_and_followed_from_the_command_line() {
    let server = NatsServer::start().await;
    assert!(switchyard(&server, &["bus", "apply"]).status.success());
    let worker = spawn(&server, &Role::Worker("test".into()), &["worker", "test"]);
    let orchestrator = spawn(&server, &Role::Orchestrator, &["orchestrator"]);
    let hello = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../workflows/examples/hello.yaml"
    );

    let broken = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        broken.path(),
        "name: broken\nversion: 1\nsteps:\n  - id: a\n    operation: test.echo\n    input: { x: 1 }\n  - id: b\n    operation: test.sleep\n    needs: [a]\n    input:\n      ms: \"{{ steps.a.output.x }}\"\n  - id: c\n    operation: test.echo\n    needs: [b, aa]\n    input: { slept: \"{{ steps.b.output.slep_ms }}\" }\n",
    )
    .unwrap();
    let path = broken.path().to_str().unwrap();
    let invalid = switchyard(&server, &["workflow", "validate", path]);
    let report = text(&invalid);
    assert_eq!(invalid.status.code(), Some(1), "{report}");
    assert!(report.contains("steps[2].needs[1]"), "{report}");
    assert!(report.contains("\"aa\""), "{report}");
    assert!(report.contains("slep_ms"), "{report}");

    let valid = switchyard(&server, &["workflow", "validate", hello]);
    assert!(valid.status.success(), "{}", text(&valid));
    let registered = switchyard(&server, &["workflow", "register", hello]);
    assert!(
        text(&registered).contains("hello version 1: registered"),
        "{}",
        text(&registered)
    );
    let list = text(&switchyard(&server, &["workflow", "list"]));
    assert!(
        list.contains("hello") && list.contains("research_pipeline"),
        "{list}"
    );

    let run = switchyard(
        &server,
        &[
            "workflow",
            "run",
            "hello",
            "--input",
            r#"{"name": "Ada"}"#,
            "--timeout",
            "30",
        ],
    );
    let out = text(&run);
    assert!(run.status.success(), "{out}");
    assert!(out.contains("step_retrying"), "{out}");
    assert!(
        out.contains("HELLO, ADA! (3 words; flaky took 3 attempts"),
        "{out}"
    );
    assert!(out.contains("(hello v1): completed"), "{out}");

    let missing = switchyard(&server, &["workflow", "run", "nope", "--timeout", "30"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("unknown_workflow"),
        "{}",
        text(&missing)
    );

    stop(orchestrator);
    stop(worker);
}

#[tokio::test]
async fn a_failed_instance_is_recovered_from_the_command_line_through_its_dead_letter() {
    let server = NatsServer::start().await;
    assert!(switchyard(&server, &["bus", "apply"]).status.success());
    let worker = spawn(&server, &Role::Worker("test".into()), &["worker", "test"]);
    let orchestrator = spawn(&server, &Role::Orchestrator, &["orchestrator"]);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        file.path(),
        "name: mend\nversion: 1\nsteps:\n  - { id: prep, operation: test.echo, input: { v: 1 } }\n  - { id: call, operation: test.fail, needs: [prep], input: { mode: permanent, runs: 1 } }\n",
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    assert!(
        switchyard(&server, &["workflow", "register", path])
            .status
            .success()
    );
    let run = switchyard(&server, &["workflow", "run", "mend", "--timeout", "30"]);
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}");
    let instance = out
        .lines()
        .find_map(|l| l.strip_prefix("instance "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the instance id")
        .to_owned();

    // The letter is listed (the worker stores it a moment after the result).
    let mut listed = String::new();
    for _ in 0..100 {
        listed = text(&switchyard(
            &server,
            &[
                "dlq",
                "list",
                "--tenant",
                "demo",
                "--instance",
                &instance,
                "--json",
            ],
        ));
        if listed.contains("test.fail") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let page: serde_json::Value = serde_json::from_str(&listed).expect(&listed);
    let seq = page["letters"][0]["seq"]
        .as_u64()
        .expect(&listed)
        .to_string();
    let table = text(&switchyard(
        &server,
        &["dlq", "list", "--reason", "permanent"],
    ));
    assert!(
        table.contains("test.fail") && table.contains("no"),
        "{table}"
    );
    let shown = text(&switchyard(&server, &["dlq", "show", &seq]));
    assert!(shown.contains("\"step_id\": \"call\""), "{shown}");

    // Replayed: the instance re-runs from the step and completes; once only.
    let replayed = switchyard(&server, &["dlq", "replay", &seq]);
    assert!(replayed.status.success(), "{}", text(&replayed));
    assert!(
        text(&replayed).contains("re-runs (run 1)"),
        "{}",
        text(&replayed)
    );
    let mut status = String::new();
    for _ in 0..100 {
        status = text(&switchyard(&server, &["workflow", "status", &instance]));
        if status.contains("): completed") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(status.contains("): completed"), "{status}");
    let again = switchyard(&server, &["dlq", "replay", &seq]);
    assert_ne!(again.status.code(), Some(0));
    assert!(
        text(&again).contains("already replayed"),
        "{}",
        text(&again)
    );

    // A completed instance re-runs from a named step only.
    let refused = switchyard(&server, &["workflow", "rerun", &instance]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(text(&refused).contains("from_step"), "{}", text(&refused));
    let rerun = switchyard(
        &server,
        &["workflow", "rerun", &instance, "--from-step", "call"],
    );
    assert!(
        text(&rerun).contains("run 2 (version 1) re-runs call; keeps prep"),
        "{}",
        text(&rerun)
    );

    let purged = text(&switchyard(&server, &["dlq", "purge"]));
    assert!(purged.contains("purged 1 letters"), "{purged}");

    stop(orchestrator);
    stop(worker);
}

/// Polls `switchyard args…` until its output contains `want`; returns the last output.
fn until_output(server: &NatsServer, args: &[&str], want: &str) -> String {
    let mut out = String::new();
    for _ in 0..150 {
        out = text(&switchyard(server, args));
        if out.contains(want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    out
}

#[tokio::test]
async fn bulk_rerun_and_bulk_cancel_act_on_what_the_ledger_lists() {
    let server = NatsServer::start().await;
    let db = switchyard_test_support::database().await;
    assert!(switchyard(&server, &["bus", "apply"]).status.success());
    let worker = spawn(&server, &Role::Worker("test".into()), &["worker", "test"]);
    let orchestrator = spawn(&server, &Role::Orchestrator, &["orchestrator"]);
    let ledger = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("ledger")
        .env_clear()
        .envs(server.env_for(&Role::Ledger))
        .env("DATABASE_URL", &db.url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the ledger");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        file.path(),
        "name: batchy\nversion: 1\nsteps:\n  - { id: call, operation: test.fail, input: { mode: permanent, runs: 1 } }\n",
    )
    .unwrap();
    let nap = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        nap.path(),
        "name: nap\nversion: 1\nsteps:\n  - { id: sleep, operation: test.sleep, input: { ms: 120000 } }\n",
    )
    .unwrap();
    for f in [&file, &nap] {
        let path = f.path().to_str().unwrap();
        assert!(
            switchyard(&server, &["workflow", "register", path])
                .status
                .success()
        );
    }
    for _ in 0..2 {
        let run = switchyard(&server, &["workflow", "run", "batchy", "--timeout", "30"]);
        assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    }
    let refused = switchyard(&server, &["workflow", "bulk-rerun"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused).contains("never selects every instance"),
        "{}",
        text(&refused)
    );
    // Once the ledger lists both failed, both re-run.
    let out = until_output(
        &server,
        &["workflow", "bulk-rerun", "--workflow", "batchy"],
        "2 re-run, 0 refused",
    );
    assert!(out.contains("2 re-run, 0 refused"), "{out}");
    // Then the ledger lists them completed, none failed.
    let out = until_output(
        &server,
        &["workflow", "bulk-rerun", "--workflow", "batchy"],
        "0 re-run, 0 refused",
    );
    assert!(out.contains("0 re-run, 0 refused"), "{out}");

    // A running instance, cancelled in bulk.
    let waited = switchyard(&server, &["workflow", "run", "nap", "--timeout", "1"]);
    assert_ne!(waited.status.code(), Some(0));
    let out = until_output(
        &server,
        &[
            "workflow",
            "bulk-cancel",
            "--workflow",
            "nap",
            "--since",
            "1h",
        ],
        "cancel sent for 1 instances",
    );
    assert!(out.contains("cancel sent for 1 instances"), "{out}");

    stop(ledger);
    stop(orchestrator);
    stop(worker);
}

#[test]
fn bad_configuration_is_reported_in_full_with_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("config")
        .env_clear()
        .env("SWITCHYARD_NATS_URL", "nats//x")
        .env("SWITCHYARD_WORKER__CONCURRENCY", "0")
        .output()
        .expect("run switchyard");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SWITCHYARD_NATS_URL: not a URL (\"nats//x\"); expected nats://host:port"),
        "{err}"
    );
    assert!(
        err.contains("SWITCHYARD_WORKER__CONCURRENCY: 0 is out of range"),
        "{err}"
    );
}

/// Each process reads only its own configuration sections: an AI provider whose key file is
/// missing stops the AI worker, naming the file, and is no concern of the gateway's.
#[tokio::test]
async fn a_missing_ai_key_file_stops_the_ai_worker_and_not_the_gateway() {
    let server = NatsServer::start().await;
    let applied = switchyard(&server, &["bus", "apply"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-key");
    let ai_env = [
        (
            "SWITCHYARD_AI__PROVIDERS__CLAUDE__KIND",
            "anthropic".to_owned(),
        ),
        (
            "SWITCHYARD_AI__PROVIDERS__CLAUDE__MODEL",
            "claude-x".to_owned(),
        ),
        (
            "SWITCHYARD_AI__PROVIDERS__CLAUDE__API_KEY_FILE",
            missing.display().to_string(),
        ),
    ];
    let command = |role: Role, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args)
            .env_clear()
            .envs(server.env_for(&role))
            .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
            .env("SWITCHYARD_METRICS_ADDR", "127.0.0.1:0")
            .envs(ai_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        cmd
    };

    let ai = command(Role::Worker("ai".into()), &["worker", "ai"])
        .output()
        .expect("run the AI worker");
    assert_eq!(ai.status.code(), Some(2), "{}", text(&ai));
    assert!(
        text(&ai).contains(&missing.display().to_string()),
        "names the file: {}",
        text(&ai)
    );

    let port = switchyard_test_support::free_port();
    let mut gateway = command(Role::Gateway, &["gateway"])
        .env("SWITCHYARD_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "SWITCHYARD_GATEWAY__AUTH__SECRET",
            "0123456789abcdef0123456789abcdef",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let served = loop {
        if let Ok(reply) = reqwest::get(&health).await {
            break reply.status();
        }
        if let Ok(Some(status)) = gateway.try_wait() {
            let out = gateway.wait_with_output().unwrap();
            panic!(
                "the gateway exited ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never served /health"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert_eq!(served, reqwest::StatusCode::OK);
}

/// A process refuses a server that admits anyone, unless told it is for development; wrong
/// credentials fail at once, naming the setting.
#[tokio::test]
async fn a_process_refuses_an_open_server_and_wrong_credentials() {
    let open = NatsServer::start_with(switchyard_test_support::NatsOptions {
        auth: false,
        ..Default::default()
    })
    .await;
    let refused = switchyard(&open, &["bus", "apply"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("accepts clients without credentials"),
        "{}",
        text(&refused)
    );
    let allowed = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "apply"])
        .env_clear()
        .envs(open.env_for(&Role::Operator))
        .env("SWITCHYARD_NATS__ALLOW_UNAUTHENTICATED", "true")
        .output()
        .expect("run switchyard");
    assert!(allowed.status.success(), "{}", text(&allowed));

    let secured = NatsServer::start().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "credentials", "operator", "--dir"])
        .arg(elsewhere.path())
        .arg("--out")
        .arg(elsewhere.path().join("operator.creds"))
        .env_clear()
        .output()
        .expect("run switchyard");
    assert!(foreign.status.success(), "{}", text(&foreign));
    let started = std::time::Instant::now();
    let wrong = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "status"])
        .env_clear()
        .env("SWITCHYARD_NATS_URL", secured.url())
        .env(
            "SWITCHYARD_NATS__CREDENTIALS",
            elsewhere.path().join("operator.creds"),
        )
        .output()
        .expect("run switchyard");
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("refused this process's credentials"),
        "{}",
        text(&wrong)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "refused credentials are not retried for the whole connect timeout"
    );
}

/// `switchyard bus tenant-credentials` signs a publisher the running server admits, confined
/// to its tenant, without any change to the server.
#[tokio::test]
async fn tenant_credentials_from_the_command_start_only_that_tenants_workflows() {
    let server = NatsServer::start().await;
    assert!(switchyard(&server, &["bus", "apply"]).status.success());
    let keys = server.auth().expect("keys").path().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bus",
            "tenant-credentials",
            "acme",
            "--expires",
            "1h",
            "--dir",
        ])
        .arg(&keys)
        .env_clear()
        .output()
        .expect("run switchyard");
    assert!(out.status.success(), "{}", text(&out));
    let creds = String::from_utf8(out.stdout).expect("utf-8");
    let jwt = creds.lines().nth(1).expect("the JWT line");
    let claims = switchyard_bus_auth::claims(jwt).expect("claims");
    assert_eq!(claims["name"], "tenant-acme");
    assert!(claims["exp"].as_u64().is_some(), "{claims}");

    let client = async_nats::ConnectOptions::with_credentials(&creds)
        .expect("creds")
        .custom_inbox_prefix("_INBOX_acme")
        .connect(server.url())
        .await
        .expect("the server admits the tenant");
    let js = async_nats::jetstream::new(client);
    js.publish("wf.start.acme.hello", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("its own start is stored");
    let other = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        js.publish("wf.start.globex.hello", "{}".into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(other, Ok(Ok(_))),
        "another tenant's start must not be stored: {other:?}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "tenant-credentials", "acme.>", "--dir"])
        .arg(&keys)
        .env_clear()
        .output()
        .expect("run switchyard");
    assert!(!bad.status.success());
    assert!(text(&bad).contains("acme.>"), "{}", text(&bad));
}

/// TLS to the bus with configurable certificates: a process trusting the server's CA
/// (`nats.tls_ca`) connects; one that does not refuses the server's certificate.
#[tokio::test]
async fn a_process_connects_over_tls_only_to_a_server_whose_ca_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    // A CA, and a certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(path("server-key.pem"), server_key.serialize_pem()).unwrap();

    // A server as the shipped configs describe it: the bus's keys, and TLS for clients.
    let keys = switchyard_bus_auth::AuthDir::open(&path("bus")).unwrap();
    keys.init(&[switchyard_bus_auth::Role::Operator]).unwrap();
    let port = switchyard_test_support::free_port();
    std::fs::write(
        path("nats.conf"),
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {store:?} }}\n\
             tls {{ cert_file: {cert:?}, key_file: {key:?} }}\n{auth}\n",
            store = path("store").display().to_string(),
            cert = path("server.pem").display().to_string(),
            key = path("server-key.pem").display().to_string(),
            auth = keys.server_config().unwrap(),
        ),
    )
    .unwrap();
    let mut server = Command::new(switchyard_test_support::nats_server_binary())
        .arg("-c")
        .arg(path("nats.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nats-server did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let status = |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["bus", "status"])
            .env_clear()
            .env("SWITCHYARD_NATS_URL", format!("tls://127.0.0.1:{port}"))
            .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "3s")
            .env(
                "SWITCHYARD_NATS__CREDENTIALS",
                keys.creds_path(&switchyard_bus_auth::Role::Operator),
            );
        if let Some(ca) = ca {
            cmd.env("SWITCHYARD_NATS__TLS_CA", ca);
        }
        cmd.output().expect("run switchyard")
    };
    // Connected: the bus is not applied yet, so `status` reports every object missing (3).
    let trusted = status(Some(&path("ca.pem")));
    assert_eq!(trusted.status.code(), Some(3), "{}", text(&trusted));
    assert!(text(&trusted).contains("missing"), "{}", text(&trusted));
    let untrusted = status(None);
    assert_eq!(untrusted.status.code(), Some(1), "{}", text(&untrusted));
    assert!(
        text(&untrusted).contains("cannot connect to NATS"),
        "{}",
        text(&untrusted)
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A credentials file that is not there stops the process at once, naming the setting.
#[test]
fn a_missing_credentials_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "status"])
        .env_clear()
        .env("SWITCHYARD_NATS_URL", "nats://127.0.0.1:9")
        .env(
            "SWITCHYARD_NATS__CREDENTIALS",
            "/nonexistent/operator.creds",
        )
        .output()
        .expect("run switchyard");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nats.credentials /nonexistent/operator.creds"),
        "{}",
        text(&out)
    );
}

/// `SWITCHYARD_NATS_URL` may list a cluster's nodes; a process starts while some are down.
#[tokio::test]
async fn a_list_of_server_urls_connects_while_the_first_is_down() {
    let server = NatsServer::start().await;
    // Ports nothing listens on, from the allocator every test shares.
    let dead = || format!("nats://127.0.0.1:{}", switchyard_test_support::free_port());
    let urls = format!("{}, {},{}", dead(), server.url(), dead());
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bus", "apply"])
        .env_clear()
        .envs(server.env_for(&Role::Operator))
        .env("SWITCHYARD_NATS_URL", &urls)
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "10s")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard");
    assert!(out.status.success(), "{urls}: {}", text(&out));
    assert!(text(&out).contains("changes applied"), "{}", text(&out));
}

/// A stream that exists with a setting `bus apply` cannot change in place (its retention) is
/// left alone and reported, and the command exits 3 so a deploy script notices.
#[tokio::test]
async fn bus_apply_exits_3_on_drift_it_cannot_fix() {
    let server = NatsServer::start().await;
    let js = async_nats::jetstream::new(server.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream::WF_INBOX.into(),
        subjects: vec!["wf.start.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::Limits,
        ..Default::default()
    })
    .await
    .expect("a stream made by hand");
    let out = switchyard(&server, &["bus", "apply"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("retention"), "{}", text(&out));
    let info = js
        .get_stream(stream::WF_INBOX)
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        info.config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits,
        "left as it was"
    );

    // Everything else was applied: status finds nothing missing.
    let status = switchyard(&server, &["bus", "status"]);
    assert!(status.status.success(), "{}", text(&status));
}

/// `switchyard ledger rebuild` empties the ledger and replays the streams into it, counting
/// each usage event once however often the stream holds it.
#[tokio::test]
async fn ledger_rebuild_replays_the_streams_into_postgres() {
    let server = NatsServer::start().await;
    let db = switchyard_test_support::database().await;
    let applied = switchyard(&server, &["bus", "apply"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let js = async_nats::jetstream::new(server.client().await);
    let event = |id: &str, quantity: f64| switchyard_proto::UsageEvent {
        event_id: id.into(),
        tenant: "acme".into(),
        meter: "tokens".into(),
        quantity,
        unit: "token".into(),
        instance_id: "i-1".into(),
        step_id: "s".into(),
        operation: "ai.generate".into(),
        at_ms: 1_767_225_600_000,
        ..Default::default()
    };
    // The second copy of u-1 is what a publisher retrying past the duplicate window leaves.
    for e in [event("u-1", 5.0), event("u-2", 7.0), event("u-1", 5.0)] {
        js.publish(
            switchyard_proto::subject::usage("acme", "tokens"),
            switchyard_proto::encode_proto(&e).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["ledger", "rebuild"])
        .env_clear()
        .envs(server.env_for(&Role::Operator))
        .env("DATABASE_URL", &db.url)
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard");
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    let usage_line = report
        .lines()
        .find(|l| l.starts_with(stream::USAGE))
        .unwrap_or_else(|| panic!("no USAGE line: {report}"));
    let figures: Vec<&str> = usage_line.split_whitespace().collect();
    assert_eq!(
        &figures[1..4],
        ["3", "2", "1"],
        "read, stored, duplicate: {report}"
    );
    let total: f64 = sqlx::query_scalar(
        "SELECT sum(quantity)::float8 FROM ledger.usage_events WHERE tenant = 'acme'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(total, 12.0);
}
