//! The gateway's MCP endpoint, driven by a client no one here wrote: the official Python SDK
//! (PyPI `mcp`, pinned in deploy/local/env.sh) against a gateway on a real socket.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{OTHER_TENANT, TENANT, env_with};
use serde_json::Value;
use switchyard_gateway::Role;

const GREET: &str = "\
name: greet
version: 1
description: Greets someone by name
input:
  name: { type: string, required: true, minLength: 1, description: Who to greet }
steps:
  - id: greet
    operation: test.echo
    input: { greeting: \"Hello, {{ input.name }}!\" }
output:
  greeting: \"{{ steps.greet.output.greeting }}\"
";

/// Runs longer than the gateway's `mcp_wait` in this test.
const SLOW: &str = "\
name: slow
version: 1
description: Sleeps for a minute
steps:
  - id: nap
    operation: test.sleep
    input: { ms: 60000 }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_sees_runs_and_follows_the_tenants_workflows() {
    let python = switchyard_test_harness::python_with("mcp");
    let env = env_with(|c| c.gateway.mcp_wait = Duration::from_secs(5)).await;
    env.register(GREET).await;
    env.register(SLOW).await;
    env.register(include_str!("../../workflows/examples/hello.yaml"))
        .await;

    // The tools a client must see: the tenant's runnable workflows (its own and the shared
    // ones) and the two instance tools.
    let admin = env.token(TENANT, Role::Admin);
    let listed = env
        .call(
            axum::http::Method::GET,
            "/api/v1/workflows/definitions",
            Some(&admin),
            None,
        )
        .await;
    let mut expected: Vec<String> = listed.body["definitions"]
        .as_array()
        .expect("definitions")
        .iter()
        .map(|d| d["name"].as_str().expect("a name").to_owned())
        .collect();
    expected.extend([
        "switchyard.cancel_instance".to_owned(),
        "switchyard.instance_status".to_owned(),
    ]);
    expected.sort();
    expected.dedup();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = env
        .app
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp_client.py");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(python)
            .arg(script)
            .arg(format!("http://{address}/mcp"))
            .arg(env.token(TENANT, Role::Admin))
            .arg(env.token(OTHER_TENANT, Role::Admin))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client finished in time")
    .expect("the client ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed:\n{stderr}");

    // The README's example client, as run.sh runs it.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/mcp_client.py"
    );
    let ran = tokio::process::Command::new(switchyard_test_harness::python_with("mcp"))
        .arg(example)
        .arg(format!("http://{address}/mcp"))
        .arg(env.token(TENANT, Role::Operator))
        .arg("hello")
        .arg(r#"{"name": "Example"}"#)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the example ran");
    let printed = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(printed.contains("HELLO, EXAMPLE!"), "{printed}");
    assert!(
        printed.contains("progress 6/6: step summary completed"),
        "{printed}"
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    println!("{report:#}");

    // Negotiated: the current revision by default, the handshake for older clients.
    assert_eq!(report["modern_version"], "2026-07-28");
    assert_eq!(report["legacy_version"], "2025-11-25");
    assert_eq!(report["pinned"]["2025-06-18"], "2025-06-18");
    assert_eq!(report["pinned"]["2025-03-26"], "2025-03-26");

    // Exactly those, with the input schema of each definition.
    let tools = report["tools"].as_object().expect("tools");
    let mut names: Vec<String> = tools.keys().cloned().collect();
    names.sort();
    assert_eq!(names, expected);
    let greet = &tools["greet"];
    assert_eq!(greet["type"], "object");
    assert_eq!(greet["properties"]["name"]["type"], "string");
    assert_eq!(greet["required"], serde_json::json!(["name"]));

    // A call answers with the workflow's output.
    assert_eq!(report["greet"]["is_error"], false, "{report:#}");
    assert_eq!(
        report["greet"]["structured"]["greeting"], "Hello, Ada!",
        "{report:#}"
    );
    assert_eq!(
        report["legacy_greet"]["structured"]["greeting"],
        "Hello, Bo!"
    );
    let hello = &report["hello"];
    assert_eq!(hello["is_error"], false, "{report:#}");
    assert!(
        hello["structured"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("HELLO, ADA!")),
        "{report:#}"
    );
    // Progress came from the workflow's events, one per finished step.
    let progress = report["progress"].as_array().expect("progress");
    assert!(progress.len() >= 6, "{report:#}");
    assert!(
        progress
            .iter()
            .any(|p| p["message"] == "step summary completed"),
        "{report:#}"
    );
    assert!(progress.iter().all(|p| p["total"] == 6.0), "{report:#}");

    // Arguments that break the schema: a tool error naming the field.
    for case in ["bad_arguments", "missing_argument"] {
        let bad = &report[case];
        assert_eq!(bad["is_error"], true, "{case}: {report:#}");
        assert!(
            bad["text"].as_str().is_some_and(|t| t.contains("name")),
            "{case}: {report:#}"
        );
    }
    assert_eq!(report["unknown_tool"]["code"], -32602, "{report:#}");

    // Still running after the wait: the instance and where to follow it; then its status
    // and cancel through the instance tools.
    let slow = &report["slow"]["structured"];
    let instance = slow["instance_id"].as_str().expect("an instance id");
    assert_eq!(slow["status"], "running");
    assert_eq!(
        slow["status_url"],
        format!("/api/v1/workflows/status/{instance}")
    );
    assert_eq!(report["status"]["structured"]["instance_id"], instance);
    assert_eq!(report["status"]["structured"]["status"], "running");
    assert_eq!(report["cancel"]["is_error"], false, "{report:#}");
    let cancelled = env
        .wait_for(instance, "cancelled", |s| s["status"] == "cancelled")
        .await;
    assert_eq!(cancelled["workflow"], "slow");

    // Told of the changed definitions: on a 2026-07-28 subscription and on a session.
    assert_eq!(report["register_modern"], 201, "{report:#}");
    assert_eq!(report["modern_list_changed"], "ToolsListChanged");
    assert!(
        report["tools_after"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|t| t == "added_later")
    );
    assert_eq!(report["register_legacy"], 201, "{report:#}");
    assert_eq!(report["legacy_list_changed"], true, "{report:#}");

    // Another tenant sees none of this tenant's workflows and cannot run them.
    let other: Vec<&str> = report["other_tools"]
        .as_array()
        .expect("other tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for own in ["greet", "slow", "hello", "added_later"] {
        assert!(!other.contains(&own), "{own} leaked: {report:#}");
    }
    assert_eq!(report["other_greet"]["code"], -32602, "{report:#}");

    // No token: refused before MCP, as any API request.
    assert_eq!(report["no_token_status"], 401, "{report:#}");
    assert!(
        report["no_token_challenge"]
            .as_str()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{report:#}"
    );
    assert!(report["no_token"]["refused"].is_array(), "{report:#}");
}

/// A handshake-era session is its tenant's: another tenant's token on its `Mcp-Session-Id`
/// is refused, and sees none of its tools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_belongs_to_the_tenant_that_opened_it() {
    let env = common::env().await;
    env.register(GREET).await;
    let owner = env.token(TENANT, Role::Admin);
    let other = env.token(OTHER_TENANT, Role::Admin);
    let accept = ("accept", "application/json, text/event-stream");
    let json = ("content-type", "application/json");
    let host = ("host", "127.0.0.1");
    let init = env
        .send(
            axum::http::Method::POST,
            "/mcp",
            Some(&owner),
            &[accept, json, host],
            Some(
                serde_json::json!({
                    "jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "test", "version": "1"}
                    }
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(init.status, 200, "{init:#?}");
    assert!(
        init.text.contains(r#""protocolVersion":"2025-06-18""#),
        "{init:#?}"
    );
    let session = init.header("mcp-session-id").to_owned();
    assert!(!session.is_empty());
    let on_session = [
        accept,
        json,
        host,
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let initialized = env
        .send(
            axum::http::Method::POST,
            "/mcp",
            Some(&owner),
            &on_session,
            Some(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into()),
        )
        .await;
    assert_eq!(initialized.status, 202, "{initialized:#?}");
    let list = |token: String, id: u32| {
        let on_session = &on_session;
        let env = &env;
        async move {
            env.send(
                axum::http::Method::POST,
                "/mcp",
                Some(&token),
                on_session,
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#
                )),
            )
            .await
        }
    };
    let stolen = list(other, 2).await;
    assert!(
        stolen
            .text
            .contains("this MCP session belongs to another tenant"),
        "{stolen:#?}"
    );
    assert!(!stolen.text.contains("greet"), "{stolen:#?}");
    let own = list(owner, 3).await;
    assert!(own.text.contains(r#""name":"greet""#), "{own:#?}");
}
