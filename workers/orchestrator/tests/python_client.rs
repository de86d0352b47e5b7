//! The documented way to start a workflow from another language, run with a client we did
//! not write: `examples/python/start_workflow.py` (nats-py, JSON only) against a real server,
//! the engine and a `test` worker.

mod common;

use std::process::Command;

use common::*;

#[tokio::test]
async fn the_python_example_starts_a_workflow_and_follows_it_to_completion() {
    let python = python();
    let env = env().await;
    env.register(include_str!("../../../workflows/examples/hello.yaml"))
        .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/start_workflow.py"
    );
    let url = env.server.url();
    let creds = env
        .server
        .credentials(&switchyard_test_harness::BusRole::Operator)
        .expect("the bus asks for credentials");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--nats", &url, "--tenant", TENANT, "--workflow", "hello"])
            .arg("--creds")
            .arg(creds)
            .args([
                "--input",
                r#"{"name": "Python", "words": ["a", "b"]}"#,
                "--timeout",
                "30",
            ])
            .output()
            .expect("run the example")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("event started") && stdout.contains("event completed"),
        "{stdout}"
    );
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON summary");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"]["words"], serde_json::json!(["A", "B"]));
    assert!(
        last["output"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("HELLO, PYTHON!"),
        "{last}"
    );
}
