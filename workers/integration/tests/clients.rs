//! Each client against a loopback server that speaks the provider's wire format and asserts
//! what it receives, with the effect records in a real Postgres database.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use serde_json::{Value, json};
use switchyard_integration::{Error, op};
use switchyard_runtime::JobFailure;

/// Every rich-text item anywhere in `blocks`, recursively.
fn rich_texts(blocks: &[Value], out: &mut Vec<Value>) {
    for block in blocks {
        let ty = block["type"].as_str().expect("a block type");
        let body = &block[ty];
        if let Some(items) = body["rich_text"].as_array() {
            out.extend(items.iter().cloned());
        }
        if let Some(children) = body["children"].as_array() {
            rich_texts(children, out);
        }
    }
}

fn types(blocks: &[Value], out: &mut Vec<String>) {
    for block in blocks {
        let ty = block["type"].as_str().unwrap().to_owned();
        if let Some(children) = block[&ty]["children"].as_array() {
            types(children, out);
        }
        out.push(ty);
    }
}

/// Answers like Notion; with `fail_second_append`, the second append (the request at index 2)
/// is rate limited.
fn notion_server(fail_second_append: bool) -> impl Fn(&Call, usize) -> Answer + Send + Sync {
    move |call, index| {
        match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/v1/pages") => Answer::json(
            200,
            json!({ "object": "page", "id": "page-1", "url": "https://www.notion.so/page-1" }),
        ),
        ("PATCH", "/v1/blocks/page-1/children") if fail_second_append && index == 2 => {
            Answer::json(
                429,
                json!({ "object": "error", "status": 429, "code": "rate_limited", "message": "slow down" }),
            )
            .with_header("retry-after", "1")
        }
        ("PATCH", "/v1/blocks/page-1/children") => {
            Answer::json(200, json!({ "object": "list", "results": [] }))
        }
        _ => Answer::json(
            404,
            json!({ "object": "error", "status": 404, "code": "object_not_found", "message": "no such route" }),
        ),
    }
    }
}

/// A long document with every element type: 1 + 20 × 12 blocks + a 5,000-character paragraph.
fn long_document() -> (String, String) {
    let long = "Lorem ipsum dolor sit amet, ".repeat(179); // 5,012 characters
    let mut md = String::from("# Findings\n\n");
    md.push_str(&long);
    md.push_str("\n\n");
    for i in 1..=20 {
        md.push_str(&format!(
            "## Section {i}\n\n\
             Plain, **bold {i}**, *italic*, `code()` and a [link](https://example.com/{i}).\n\n\
             - bullet a\n- bullet b\n\n\
             1. first\n2. second\n\n\
             - [ ] open task\n- [x] done task\n\n\
             ```{lang}\nprint({i})\n```\n\n\
             > a quote\n\n\
             ---\n\n\
             ### Sub {i}\n\n",
            lang = if i % 2 == 0 { "rust" } else { "python" }
        ));
    }
    (md, long)
}

#[tokio::test]
async fn notion_gets_annotated_blocks_in_chunks_of_at_most_100_and_resumes_after_a_429() {
    let server = Loopback::start(notion_server(true)).await;
    let out = tempfile::tempdir().unwrap();
    let (worker, _db, registry) = worker(&settings(&server.url(), out.path().into())).await;
    let (markdown, long) = long_document();
    let input =
        json!({ "parent_id": "parent-123", "title": "Research: Rust", "markdown": markdown });
    let job = job("notion-1", op::NOTION_CREATE_PAGE, input);

    // The third chunk is rate limited once.
    let err = worker.run_job("w1", &job).await.expect_err("rate limited");
    assert_eq!(
        err.failure(),
        JobFailure::Retryable {
            message: "Notion rate limited the call (retry after 1s)".into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    );
    let output = worker.run_job("w1", &job).await.expect("second attempt");
    assert_eq!(
        output,
        json!({ "page_id": "page-1", "url": "https://www.notion.so/page-1" })
    );

    let calls = server.calls();
    let shape: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.method.to_string(), c.path.clone()))
        .collect();
    // One page creation only; the retry resumed with the chunk that failed.
    assert_eq!(shape[0], ("POST".into(), "/v1/pages".into()));
    assert_eq!(
        shape.iter().filter(|(m, _)| m == "POST").count(),
        1,
        "{shape:?}"
    );
    assert_eq!(calls.len(), 4, "{shape:?}");
    for call in &calls {
        assert_eq!(call.header("authorization"), "Bearer ntn_test_token");
        assert_eq!(call.header("notion-version"), "2022-06-28");
        assert_eq!(call.header("content-type"), "application/json");
    }
    let create = calls[0].json();
    assert_eq!(create["parent"], json!({ "page_id": "parent-123" }));
    assert_eq!(
        create["properties"]["title"]["title"][0]["text"]["content"],
        "Research: Rust"
    );

    // The chunks that went in (the rate-limited one is sent again, not twice).
    let delivered: Vec<Vec<Value>> = [&calls[0], &calls[1], &calls[3]]
        .iter()
        .map(|c| c.json()["children"].as_array().unwrap().clone())
        .collect();
    assert_eq!(calls[2].json(), calls[3].json());
    let sizes: Vec<usize> = delivered.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 42], "1 + 1 + 20 × 12 top-level blocks");
    let blocks: Vec<Value> = delivered.concat();

    let mut all_types = Vec::new();
    types(&blocks, &mut all_types);
    let kinds: BTreeSet<&str> = all_types.iter().map(String::as_str).collect();
    for ty in [
        "heading_1",
        "heading_2",
        "heading_3",
        "paragraph",
        "bulleted_list_item",
        "numbered_list_item",
        "to_do",
        "code",
        "quote",
        "divider",
    ] {
        assert!(kinds.contains(ty), "{ty} missing from {kinds:?}");
    }
    assert_eq!(all_types.iter().filter(|t| *t == "to_do").count(), 40);
    let todos: Vec<bool> = blocks
        .iter()
        .filter(|b| b["type"] == "to_do")
        .map(|b| b["to_do"]["checked"].as_bool().unwrap())
        .collect();
    assert_eq!(&todos[..2], [false, true]);
    let languages: BTreeSet<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "code")
        .map(|b| b["code"]["language"].as_str().unwrap())
        .collect();
    assert_eq!(languages, BTreeSet::from(["python", "rust"]));

    let mut items = Vec::new();
    rich_texts(&blocks, &mut items);
    for item in &items {
        let content = item["text"]["content"].as_str().unwrap();
        assert!(
            content.encode_utf16().count() <= 2000,
            "{} characters",
            content.len()
        );
    }
    let annotated = |key: &str, content: &str| {
        items
            .iter()
            .any(|i| i["annotations"][key] == true && i["text"]["content"] == content)
    };
    assert!(annotated("bold", "bold 7"));
    assert!(annotated("italic", "italic"));
    assert!(annotated("code", "code()"));
    assert!(
        items.iter().any(|i| i["text"]["content"] == "link"
            && i["text"]["link"]["url"] == "https://example.com/3")
    );
    // The long paragraph: split into 2,000-character items that add up to the original.
    let long_block = &blocks[1]["paragraph"]["rich_text"];
    let parts: Vec<&str> = long_block
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [2000, 2000, 1011]
    );
    assert_eq!(parts.concat(), long.trim_end());

    assert_eq!(calls_metric(&registry, "notion", "ok"), 3.0);
    assert_eq!(calls_metric(&registry, "notion", "rate_limited"), 1.0);
}

fn slack_server() -> impl Fn(&Call, usize) -> Answer + Send + Sync {
    |call, _| {
        if call.path.starts_with("/hooks/") {
            return Answer::text(200, "ok");
        }
        assert_eq!(call.path, "/api/chat.postMessage");
        match call.json()["channel"].as_str().unwrap() {
            "#missing" => Answer::json(200, json!({ "ok": false, "error": "channel_not_found" })),
            "#badauth" => Answer::json(200, json!({ "ok": false, "error": "invalid_auth" })),
            "#busy" => Answer::json(429, json!({ "ok": false, "error": "ratelimited" }))
                .with_header("retry-after", "3"),
            "#down" => Answer::text(503, "upstream unavailable"),
            _ => Answer::json(
                200,
                json!({ "ok": true, "channel": "C0123", "ts": "1712345678.000100", "message": {} }),
            ),
        }
    }
}

#[tokio::test]
async fn slack_posts_mrkdwn_with_the_bot_token_and_maps_ok_false() {
    let server = Loopback::start(slack_server()).await;
    let out = tempfile::tempdir().unwrap();
    let (worker, _db, registry) = worker(&settings(&server.url(), out.path().into())).await;
    let post = |id: &str, channel: &str| {
        job(
            id,
            op::SLACK_POST_MESSAGE,
            json!({ "channel": channel, "markdown": "## Done\n\n**Bold** and *soft* [docs](https://x.test/d)\n\n- a\n- b" }),
        )
    };
    let output = worker
        .run_job("w1", &post("s-ok", "#research"))
        .await
        .expect("posted");
    assert_eq!(
        output,
        json!({ "channel": "C0123", "ts": "1712345678.000100" })
    );
    let call = &server.calls()[0];
    assert_eq!(call.header("authorization"), "Bearer xoxb-test-token");
    assert_eq!(
        call.header("content-type"),
        "application/json; charset=utf-8"
    );
    let body = call.json();
    assert_eq!(body["channel"], "#research");
    assert_eq!(
        body["text"],
        "*Done*\n\n*Bold* and _soft_ <https://x.test/d|docs>\n\n• a\n• b"
    );
    assert_eq!(body["mrkdwn"], true);

    // A redelivery of the job returns the recorded result without posting again.
    let again = worker
        .run_job("w2", &post("s-ok", "#research"))
        .await
        .expect("recorded");
    assert_eq!(again, output);
    assert_eq!(server.count(), 1);

    for (channel, code) in [
        ("#missing", "channel_not_found"),
        ("#badauth", "invalid_auth"),
    ] {
        let err = worker
            .run_job("w1", &post(&format!("s-{code}"), channel))
            .await
            .expect_err(code);
        assert_eq!(
            err.failure(),
            JobFailure::permanent(format!("Slack refused the call (200): {code}")),
            "{err:?}"
        );
    }
    let err = worker
        .run_job("w1", &post("s-busy", "#busy"))
        .await
        .expect_err("busy");
    assert_eq!(
        err.failure(),
        JobFailure::Retryable {
            message: "Slack rate limited the call (retry after 3s)".into(),
            retry_after: Some(Duration::from_secs(3)),
        }
    );
    let err = worker
        .run_job("w1", &post("s-down", "#down"))
        .await
        .expect_err("down");
    assert!(
        matches!(err.failure(), JobFailure::Retryable { retry_after: None, ref message } if message.contains("503")),
        "{err:?}"
    );
    // A failed job that is retried calls again (nothing was recorded as done).
    let before = server.count();
    worker
        .run_job("w1", &post("s-missing", "#missing"))
        .await
        .expect_err("again");
    assert_eq!(server.count(), before + 1);

    let empty = job(
        "s-empty",
        op::SLACK_POST_MESSAGE,
        json!({ "channel": "#x" }),
    );
    let err = worker.run_job("w1", &empty).await.expect_err("empty");
    assert!(
        matches!(err, Error::InvalidInput { ref field, .. } if field == "markdown"),
        "{err:?}"
    );

    assert_eq!(calls_metric(&registry, "slack", "ok"), 1.0);
    assert_eq!(calls_metric(&registry, "slack", "rejected"), 3.0);
    assert_eq!(calls_metric(&registry, "slack", "rate_limited"), 1.0);
}

#[tokio::test]
async fn slack_posts_through_the_configured_incoming_webhook_without_a_bot_token() {
    let server = Loopback::start(slack_server()).await;
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(&server.url(), out.path().into());
    s.slack.bot_token = None;
    s.slack.webhook_url = Some(switchyard_runtime::config::Secret::new(format!(
        "{}/hooks/T000/B000/secretpart",
        server.url()
    )));
    let (worker, _db, _) = worker(&s).await;
    let output = worker
        .run_job(
            "w1",
            &job(
                "hook-1",
                op::SLACK_POST_MESSAGE,
                json!({ "channel": "#general", "markdown": "hi <there> & **you**" }),
            ),
        )
        .await
        .expect("posted");
    assert_eq!(output, json!({ "channel": "#general", "ts": "" }));
    let call = &server.calls()[0];
    assert_eq!(call.path, "/hooks/T000/B000/secretpart");
    assert_eq!(
        call.json(),
        json!({ "text": "hi &lt;there&gt; &amp; *you*" })
    );
    assert!(call.headers.get("authorization").is_none());
}

#[tokio::test]
async fn clickup_fields_map_to_the_v2_api() {
    let server = Loopback::start(|call, _| match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/api/v2/list/901/task") => Answer::json(
            200,
            json!({ "id": "86abc", "name": "Ship it", "url": "https://app.clickup.com/t/86abc", "status": { "status": "to do" } }),
        ),
        ("PUT", "/api/v2/task/86abc") => Answer::json(
            200,
            json!({ "id": "86abc", "status": { "status": call.json()["status"].as_str().unwrap() } }),
        ),
        ("POST", "/api/v2/list/404/task") => {
            Answer::json(404, json!({ "err": "List not found", "ECODE": "ITEM_013" }))
        }
        _ => Answer::json(500, json!({ "err": "Internal error", "ECODE": "OAUTH_000" })),
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let (worker, _db, _) = worker(&settings(&server.url(), out.path().into())).await;

    let create = job(
        "cu-1",
        op::CLICKUP_CREATE_TASK,
        json!({
            "list_id": "901",
            "name": "Ship it",
            "description": "From **the meeting**",
            "assignees": ["123", "456"],
            "due_date": "2025-03-21",
            "priority": 2,
            "tags": ["meeting", "q1"],
        }),
    );
    let output = worker.run_job("w1", &create).await.expect("created");
    assert_eq!(
        output,
        json!({ "task_id": "86abc", "url": "https://app.clickup.com/t/86abc" })
    );
    let call = &server.calls()[0];
    assert_eq!(call.header("authorization"), "pk_test_token");
    assert_eq!(call.header("content-type"), "application/json");
    assert_eq!(
        call.json(),
        json!({
            "name": "Ship it",
            "markdown_content": "From **the meeting**",
            "assignees": [123, 456],
            "due_date": 1_742_515_200_000_i64,
            "due_date_time": false,
            "priority": 2,
            "tags": ["meeting", "q1"],
        })
    );

    let update = job(
        "cu-2",
        op::CLICKUP_UPDATE_STATUS,
        json!({ "task_id": "86abc", "status": "complete" }),
    );
    let output = worker.run_job("w1", &update).await.expect("updated");
    assert_eq!(output, json!({ "task_id": "86abc", "status": "complete" }));
    let call = &server.calls()[1];
    assert_eq!(call.method, "PUT");
    assert_eq!(call.json(), json!({ "status": "complete" }));

    let missing = job(
        "cu-3",
        op::CLICKUP_CREATE_TASK,
        json!({ "list_id": "404", "name": "x" }),
    );
    let err = worker.run_job("w1", &missing).await.expect_err("404");
    assert_eq!(
        err.failure(),
        JobFailure::permanent("ClickUp refused the call (404): List not found (ITEM_013)")
    );
    let broken = job(
        "cu-4",
        op::CLICKUP_CREATE_TASK,
        json!({ "list_id": "500", "name": "x" }),
    );
    let err = worker.run_job("w1", &broken).await.expect_err("500");
    assert!(
        matches!(err.failure(), JobFailure::Retryable { .. }),
        "{err:?}"
    );
    let traversal = job(
        "cu-5",
        op::CLICKUP_UPDATE_STATUS,
        json!({ "task_id": "../list/1", "status": "x" }),
    );
    let err = worker.run_job("w1", &traversal).await.expect_err("bad id");
    assert!(
        matches!(err, Error::InvalidInput { ref field, .. } if field == "task_id"),
        "{err:?}"
    );
    assert_eq!(server.count(), 4);
}

/// The README's Python snippet, exactly as documented.
fn readme_snippet() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```python\n")
        .expect("a python block in the README")
        + 10;
    let len = readme[start..].find("```").expect("the block ends");
    readme[start..start + len].to_owned()
}

#[tokio::test]
async fn webhook_signature_verifies_with_the_documented_snippet() {
    let server = Loopback::start(|_, _| Answer::text(202, "accepted")).await;
    let out = tempfile::tempdir().unwrap();
    let (worker, _db, _) = worker(&settings(&server.url(), out.path().into())).await;
    let payload = json!({ "event": "research.done", "topic": "Rust ✓", "n": [1, 2, 3] });
    let post = job(
        "hook-job-7",
        op::WEBHOOK_POST,
        json!({ "url": format!("{}/receiver?x=1", server.url()), "payload": payload }),
    );
    let output = worker.run_job("w1", &post).await.expect("delivered");
    assert_eq!(output, json!({ "status": 202 }));
    let call = &server.calls()[0];
    assert_eq!(call.path, "/receiver?x=1");
    assert_eq!(call.header("content-type"), "application/json");
    assert_eq!(call.header("x-switchyard-delivery"), "hook-job-7");
    assert_eq!(call.header("idempotency-key"), "hook-job-7");
    assert_eq!(
        serde_json::from_slice::<Value>(&call.body).unwrap(),
        payload
    );

    let headers = json!({
        "X-Switchyard-Timestamp": call.header("x-switchyard-timestamp"),
        "X-Switchyard-Signature": call.header("x-switchyard-signature"),
    });
    let driver = r#"
import json, sys
case = json.load(sys.stdin)
body = bytes.fromhex(case["body"])
secret = case["secret"].encode()
print(json.dumps([
    verify(secret, case["headers"], body),
    verify(secret, case["headers"], body + b" "),
    verify(b"wrong-secret", case["headers"], body),
]))
"#;
    let case =
        json!({ "secret": WEBHOOK_SECRET, "headers": headers, "body": hex_encode(&call.body) });
    // The snippet is Python, so only Python can check it: no stand-in when there is none.
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .arg("-c")
        .arg(format!("{}\n{driver}", readme_snippet()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}); run deploy/local/test.sh or set SWITCHYARD_PYTHON")
        });
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(case.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the snippet failed");
    let verdicts: Value = serde_json::from_slice(&out.stdout).expect("the driver's verdicts");
    assert_eq!(verdicts, json!([true, false, false]));
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_unless_allowed() {
    let server = Loopback::start(|_, _| Answer::text(200, "ok")).await;
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(&server.url(), out.path().into());
    s.webhook.allow_private_addresses = false;
    let (worker, _db, _) = worker(&s).await;
    for (i, url) in [
        format!("{}/hook", server.url()),
        format!("http://localhost:{}/hook", server.addr.port()),
        "file:///etc/passwd".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let post = job(
            &format!("pv-{i}"),
            op::WEBHOOK_POST,
            json!({ "url": url, "payload": {} }),
        );
        let err = worker.run_job("w1", &post).await.expect_err(url);
        assert!(
            matches!(err, Error::InvalidInput { ref field, .. } if field == "url"),
            "{url}: {err:?}"
        );
    }
    // A per-job Slack webhook URL is checked the same way.
    let slack = job(
        "pv-slack",
        op::SLACK_POST_MESSAGE,
        json!({ "webhook_url": format!("{}/hooks/x", server.url()), "markdown": "hi" }),
    );
    let err = worker.run_job("w1", &slack).await.expect_err("private");
    assert!(
        matches!(err, Error::InvalidInput { ref field, .. } if field == "webhook_url"),
        "{err:?}"
    );
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn the_markdown_sink_writes_once_and_refuses_traversal() {
    let out = tempfile::tempdir().unwrap();
    let root = out.path().join("sink");
    let (worker, db, registry) = worker(&settings("http://127.0.0.1:9", root.clone())).await;
    let write = job(
        "md-1",
        op::MARKDOWN_WRITE,
        json!({ "dir": "research", "filename": "Rust async", "title": "Rust async", "markdown": "Body." }),
    );
    let output = worker.run_job("w1", &write).await.expect("written");
    assert_eq!(
        output,
        json!({ "path": "research/Rust async.md", "bytes": 20 })
    );
    assert_eq!(
        std::fs::read_to_string(root.join("acme/research/Rust async.md")).unwrap(),
        "# Rust async\n\nBody.\n"
    );
    let state: (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM integration.effects WHERE job_id = 'md-1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, ("done".to_owned(), 1));

    for (i, (dir, filename, field)) in [
        (json!(null), "../../etc/evil", "filename"),
        (json!(null), "/tmp/evil", "filename"),
        (json!("../outside"), "evil", "dir"),
        (json!("/abs"), "evil", "dir"),
        (json!("ok/../../.."), "evil", "dir"),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = job(
            &format!("md-bad-{i}"),
            op::MARKDOWN_WRITE,
            json!({ "dir": dir, "filename": filename, "title": "t", "markdown": "x" }),
        );
        let err = worker.run_job("w1", &bad).await.expect_err(filename);
        assert!(
            matches!(err, Error::InvalidInput { field: ref f, .. } if f == field),
            "{filename}: {err:?}"
        );
    }
    assert!(!out.path().join("outside").exists() && !out.path().join("evil.md").exists());
    assert_eq!(calls_metric(&registry, "markdown", "ok"), 1.0);
    assert_eq!(calls_metric(&registry, "markdown", "invalid_input"), 5.0);
}

/// Each tenant's documents live under a directory of its own: another tenant's document with
/// the same title is another file, and neither replaces the other.
#[tokio::test]
async fn two_tenants_writing_the_same_title_get_two_documents() {
    let out = tempfile::tempdir().unwrap();
    let root = out.path().join("sink");
    let (worker, _db, _) = worker(&settings("http://127.0.0.1:9", root.clone())).await;
    for (id, tenant, body) in [("md-a", "acme", "Acme's."), ("md-b", "globex", "Globex's.")] {
        let mut write = job(
            id,
            op::MARKDOWN_WRITE,
            json!({ "dir": "research", "filename": "Plans", "title": "Plans", "markdown": body }),
        );
        write.tenant = tenant.into();
        let output = worker.run_job("w1", &write).await.expect("written");
        assert_eq!(output["path"], "research/Plans.md", "{output}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("acme/research/Plans.md")).unwrap(),
        "# Plans\n\nAcme's.\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("globex/research/Plans.md")).unwrap(),
        "# Plans\n\nGlobex's.\n"
    );
    assert!(
        !root.join("research").exists(),
        "nothing outside a tenant's directory"
    );
}

/// Each tenant calls with its own credentials and signs with its own key; another tenant's
/// task id reads as not found, and a tenant without credentials of its own gets none of the
/// deployment's unless the operator shares them.
#[tokio::test]
async fn each_tenant_acts_with_its_own_credentials_on_its_own_tasks_only() {
    let server = Loopback::start(|call, n| match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/api/v2/list/901/task") => Answer::json(
            200,
            json!({ "id": format!("task-{n}"), "url": format!("https://app.clickup.com/t/task-{n}") }),
        ),
        ("PUT", path) if path.starts_with("/api/v2/task/") => Answer::json(
            200,
            json!({ "id": path.trim_start_matches("/api/v2/task/"), "status": { "status": "done" } }),
        ),
        _ => Answer::text(202, "accepted"),
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(&server.url(), out.path().into());
    s.shared_credentials = false;
    for (tenant, token, key) in [
        ("acme", "pk_acme", "acme-signing-key-0123456789abcdef0123"),
        (
            "globex",
            "pk_globex",
            "globex-signing-key-0123456789abcdef01",
        ),
    ] {
        let mut t = switchyard_runtime::config::TenantIntegrations::default();
        t.clickup.token = Some(switchyard_runtime::config::Secret::new(token));
        t.clickup.base_url = server.url();
        t.webhook.signing_secret = Some(switchyard_runtime::config::Secret::new(key));
        s.tenants.insert(tenant.into(), t);
    }
    let (worker, _db, _) = worker(&s).await;
    let as_tenant = |id: &str, tenant: &str, operation: &str, input: Value| {
        let mut j = job(id, operation, input);
        j.tenant = tenant.into();
        j
    };
    let create = json!({ "list_id": "901", "name": "Ship it" });
    let acme_task = worker
        .run_job(
            "w1",
            &as_tenant("c-a", "acme", op::CLICKUP_CREATE_TASK, create.clone()),
        )
        .await
        .expect("acme creates")["task_id"]
        .clone();
    worker
        .run_job(
            "w1",
            &as_tenant("c-g", "globex", op::CLICKUP_CREATE_TASK, create.clone()),
        )
        .await
        .expect("globex creates");
    let tokens: Vec<String> = server
        .calls()
        .iter()
        .map(|c| c.header("authorization").to_owned())
        .collect();
    assert_eq!(tokens, ["pk_acme", "pk_globex"]);

    // Globex cannot move Acme's task: not found, and ClickUp is not called.
    let update = json!({ "task_id": acme_task, "status": "done" });
    let err = worker
        .run_job(
            "w1",
            &as_tenant("u-g", "globex", op::CLICKUP_UPDATE_STATUS, update.clone()),
        )
        .await
        .expect_err("another tenant's task");
    assert!(
        matches!(err.failure(), JobFailure::NotFound { .. }),
        "{err:?}"
    );
    assert_eq!(server.count(), 2);
    worker
        .run_job(
            "w1",
            &as_tenant("u-a", "acme", op::CLICKUP_UPDATE_STATUS, update),
        )
        .await
        .expect("acme moves its own task");
    assert_eq!(server.calls()[2].header("authorization"), "pk_acme");

    // Webhooks are signed with the sender's key.
    for (id, tenant, key) in [
        ("h-a", "acme", "acme-signing-key-0123456789abcdef0123"),
        ("h-g", "globex", "globex-signing-key-0123456789abcdef01"),
    ] {
        let post = json!({ "url": format!("{}/hook", server.url()), "payload": {"t": tenant} });
        worker
            .run_job("w1", &as_tenant(id, tenant, op::WEBHOOK_POST, post))
            .await
            .expect("delivered");
        let call = server.calls().last().cloned().unwrap();
        let ts: u64 = call.header("x-switchyard-timestamp").parse().unwrap();
        assert_eq!(
            call.header("x-switchyard-signature"),
            switchyard_integration::webhook::sign(key.as_bytes(), ts, &call.body),
            "{tenant}"
        );
    }

    // A tenant with no credentials of its own gets none of the deployment's.
    let before = server.count();
    let err = worker
        .run_job(
            "w1",
            &as_tenant("c-i", "initech", op::CLICKUP_CREATE_TASK, create),
        )
        .await
        .expect_err("not configured for initech");
    assert!(err.to_string().contains("not configured"), "{err}");
    assert_eq!(server.count(), before);
}

/// A job id is the tenant's own: a job of another tenant naming the same id (a bus publisher
/// may choose any) neither reads the first tenant's recorded result nor is answered with it.
#[tokio::test]
async fn a_recorded_effect_answers_only_its_own_tenant() {
    use switchyard_runtime::Handler as _;
    let server = Loopback::start(slack_server()).await;
    let out = tempfile::tempdir().unwrap();
    let (worker, _db, _registry) = worker(&settings(&server.url(), out.path().into())).await;
    let post = job(
        "s-shared-id",
        op::SLACK_POST_MESSAGE,
        json!({ "channel": "#research", "markdown": "only for acme" }),
    );
    let output = worker.run_job("w1", &post).await.expect("posted");
    assert_eq!(worker.recorded(&post).await, Some(output));

    let mut other = post.clone();
    other.tenant = "globex".into();
    other.instance_id = "i-globex".into();
    assert_eq!(
        worker.recorded(&other).await,
        None,
        "another tenant's record"
    );
    let err = worker.run_job("w1", &other).await.expect_err("foreign id");
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "job_id"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("acme"), "{err}");
    assert_eq!(server.count(), 1, "the API was called for the other tenant");
}
