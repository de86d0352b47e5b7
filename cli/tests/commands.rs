//! The `switchyard` command against a real nats-server, as a user runs it.

use std::process::{Command, Output, Stdio};

use switchyard_proto::stream;
use switchyard_test_support::NatsServer;

fn switchyard(server: &NatsServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .env("SWITCHYARD_NATS_URL", server.url())
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
    ];
    for kind in switchyard_proto::WORKER_KINDS {
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
        .env("SWITCHYARD_NATS_URL", server.url())
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

fn spawn(server: &NatsServer, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .env("SWITCHYARD_NATS_URL", server.url())
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
    let worker = spawn(&server, &["worker", "test"]);
    let orchestrator = spawn(&server, &["orchestrator"]);
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
    let command = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args)
            .env_clear()
            .env("SWITCHYARD_NATS_URL", server.url())
            .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
            .env("SWITCHYARD_METRICS_ADDR", "127.0.0.1:0")
            .envs(ai_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        cmd
    };

    let ai = command(&["worker", "ai"])
        .output()
        .expect("run the AI worker");
    assert_eq!(ai.status.code(), Some(2), "{}", text(&ai));
    assert!(
        text(&ai).contains(&missing.display().to_string()),
        "names the file: {}",
        text(&ai)
    );

    let port = switchyard_test_support::free_port();
    let mut gateway = command(&["gateway"])
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
