//! The observability set in `deploy/` checked against the real processes: promtool accepts
//! the alert rules (and their unit tests) and the scrape config; every process started as a
//! user starts it serves `/metrics` that `promtool check metrics` accepts; the Grafana
//! dashboard and the alert rules name only metrics some process serves after a run of real
//! workflows; and the compose file scrapes each process on the port it listens on.
//!
//! promtool comes from `$SWITCHYARD_PROMTOOL` (set by `deploy/local/test.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value as Json, json};
use serde_yaml_ng::Value as Yaml;
use switchyard_test_support::{NatsServer, database, promtool_binary};

mod common;
use common::{Run, root, text};

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(promtool_binary())
        .args(args)
        .current_dir(deploy("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut pipe = child.stdin.take().expect("piped stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to promtool");
    drop(pipe);
    child.wait_with_output().expect("promtool exit")
}

fn read_yaml(path: &Path) -> Yaml {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut value: Yaml = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("merge keys of {}: {e}", path.display()));
    value
}

fn alert_rules() -> Vec<(String, String)> {
    let rules = read_yaml(&deploy("prometheus/alerts.yml"));
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("expr");
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn the_alert_rules_and_scrape_config_pass_promtool_and_every_alert_has_a_unit_test() {
    let rules = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(rules.status.success(), "{}", text(&rules));
    let config = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(config.status.success(), "{}", text(&config));
    let tests = promtool(&["test", "rules", "alerts.test.yml"], None);
    assert!(tests.status.success(), "{}", text(&tests));

    // Each alert has a unit test that expects it to fire; a rule nobody tested could never fire.
    let unit_tests = read_yaml(&deploy("prometheus/alerts.test.yml"));
    let fired: BTreeSet<&str> = unit_tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str())
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{rules:?}");
    for (name, _) in &rules {
        assert!(
            fired.contains(name.as_str()),
            "alerts.test.yml never fires {name}"
        );
    }
    // Each rule waits before firing and says how bad it is and what to do.
    let doc = read_yaml(&deploy("prometheus/alerts.yml"));
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().unwrap_or_default();
            assert!(rule["for"].as_str().is_some(), "{name} has no `for:`");
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("page" | "ticket")),
                "{name}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} has no {key}"
                );
            }
        }
    }
}

/// The processes of a Switchyard deployment: the name of their compose service and scrape
/// job, and the `switchyard` arguments that start one.
const PROCESSES: &[(&str, &[&str])] = &[
    ("gateway", &["gateway"]),
    ("orchestrator", &["orchestrator"]),
    ("research", &["worker", "research"]),
    ("ai", &["worker", "ai"]),
    ("cards", &["worker", "cards"]),
    ("integration", &["worker", "integration"]),
    ("ledger", &["ledger"]),
    ("mcp", &["worker", "mcp"]),
    // The test worker kind runs in tests and benchmarks, not in the compose set.
    ("test", &["worker", "test"]),
];

#[test]
fn the_compose_set_scrapes_every_process_on_the_port_it_serves_metrics_on() {
    let compose_dir = deploy("compose");
    let compose = read_yaml(&compose_dir.join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let scrape = read_yaml(&deploy("prometheus/prometheus.yml"));

    let mut scraped = BTreeMap::new();
    for job in scrape["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let name = job["job_name"].as_str().expect("job_name");
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port = sd["port"].as_u64().expect("dns_sd port");
            for host in sd["names"].as_sequence().expect("names") {
                let host = host.as_str().expect("name");
                assert_eq!(host, name, "job {name} scrapes service {host}");
                scraped.insert(host.to_owned(), port);
            }
        }
    }

    let app: BTreeSet<String> = PROCESSES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != "test")
        .map(str::to_owned)
        .collect();
    let mut seen = BTreeSet::new();
    for (name, service) in services {
        let name = name.as_str().expect("service name");
        let env = &service["environment"];
        let listens = env["SWITCHYARD_METRICS_ADDR"]
            .as_str()
            .or_else(|| env["SWITCHYARD_HTTP_ADDR"].as_str());
        // The one-shot set-up services serve nothing.
        if service["image"].as_str() == Some("switchyard:local")
            && !["bus-apply", "bus-auth"].contains(&name)
        {
            seen.insert(name.to_owned());
            let listens = listens.unwrap_or_else(|| panic!("{name} sets no metrics address"));
            assert!(
                listens.starts_with("0.0.0.0:"),
                "{name} listens on {listens}"
            );
            let port: u64 = listens.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(
                scraped.get(name),
                Some(&port),
                "{name} serves /metrics on {port}; prometheus.yml scrapes {:?}",
                scraped.get(name)
            );
            let command: Vec<&str> = service["command"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str())
                .collect();
            match PROCESSES.iter().find(|(p, _)| *p == name) {
                Some((_, args)) => {
                    assert_eq!(&command, args, "{name} runs another command than the tests");
                }
                None => panic!("{name} is not a process the tests start"),
            }
            assert!(
                env["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str() == Some("http://jaeger:4318"),
                "{name} does not export traces to Jaeger"
            );
        }
        // Every file the compose set mounts or builds from exists.
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    compose_dir.join(source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
        if let Some(build) = service["build"].as_mapping() {
            let context = compose_dir.join(build["context"].as_str().expect("context"));
            let dockerfile = context.join(build["dockerfile"].as_str().expect("dockerfile"));
            assert!(dockerfile.is_file(), "{}", dockerfile.display());
        }
    }
    assert_eq!(seen, app, "the compose set's Switchyard processes");
    let scraped_apps: BTreeSet<String> = scraped.keys().cloned().collect();
    assert_eq!(scraped_apps, app, "the scrape jobs");
    for infra in ["nats", "postgres", "prometheus", "grafana", "jaeger"] {
        assert!(services.contains_key(infra), "no {infra} service");
    }
    let jaeger_ports: Vec<&str> = compose["services"]["jaeger"]["ports"]
        .as_sequence()
        .expect("jaeger ports")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for port in [":4318:4318", ":16686:16686"] {
        assert!(
            jaeger_ports.iter().any(|p| p.ends_with(port)),
            "{jaeger_ports:?}"
        );
    }
}

/// The sample names (`foo_bucket`, `foo_count`, …) of a Prometheus text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    struct Names(BTreeSet<String>, Vec<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                match &vs.name {
                    Some(name) => {
                        self.0.insert(name.clone());
                    }
                    None => self.1.push(vs.to_string()),
                }
            }
            Ok(true)
        }
    }
    let parsed =
        promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("not PromQL: {expr}\n{e}"));
    let mut names = Names(BTreeSet::new(), Vec::new());
    let _ = walk_expr(&mut names, &parsed);
    assert!(
        names.1.is_empty(),
        "selectors without a metric name in {expr}: {:?}",
        names.1
    );
    names.0
}

/// Grafana's variables replaced by what Prometheus would receive: intervals by a duration,
/// anything else (`$tenant`) by a regex matching every value.
fn expand_grafana_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("unclosed ${");
            (braced[..end].split(':').next().unwrap(), &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(match name {
            "__rate_interval" | "__interval" | "__range" => "5m",
            _ => ".*",
        });
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Every PromQL expression of the dashboard, with where it is, plus the metrics its
/// variables query with `label_values(metric, label)`.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    fn panels(list: &Json, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {title:?} has a target without a PromQL expr")
                });
                out.push((format!("panel {title:?}"), expand_grafana_variables(expr)));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let metric = args.rsplit_once(',').map_or(args, |(m, _)| m).trim();
            out.push((format!("variable {}", var["name"]), metric.to_owned()));
        }
    }
    out
}

/// Series Prometheus makes itself rather than scraping them.
const SYNTHETIC: &[&str] = &["up"];

async fn get(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

async fn execute(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Json,
) -> Json {
    let response = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status();
    let body: Json = response.json().await.expect("JSON answer");
    assert!(status.is_success(), "POST {path}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_promtool_accepts_and_the_dashboard_and_alerts_name_only_those()
 {
    let promtool_path = promtool_binary();
    let nats = NatsServer::start().await;
    let db = database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "observability-test-secret-0123456789abcdef".to_owned();
    let run = Run {
        env: [
            nats.process_env(),
            vec![
                ("SWITCHYARD_NATS_CONNECT_TIMEOUT".into(), "10s".into()),
                ("DATABASE_URL".into(), db.url.clone()),
                ("SWITCHYARD_GATEWAY__AUTH__SECRET".into(), secret),
                ("SWITCHYARD_SHUTDOWN_GRACE".into(), "2s".into()),
                (
                    "SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR".into(),
                    dir.path().join("out").display().to_string(),
                ),
            ],
        ]
        .concat(),
        dir,
    };
    run.run(&["bus", "apply"]);

    // A remote provider beside the local one, never called: it puts the circuit breaker's
    // gauge on the AI worker's /metrics, as any deployment with a real provider has it.
    let ai_config = run.dir.path().join("ai.toml");
    std::fs::write(
        &ai_config,
        "[ai.providers.remote]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"unused\"\n",
    )
    .expect("write ai config");

    // An MCP server that never answers: it puts its breaker's gauge on the mcp worker's
    // /metrics, as any deployment with a server configured has it.
    let mcp_config = run.dir.path().join("mcp.toml");
    std::fs::write(
        &mcp_config,
        "[mcp]\nretries = 0\n[mcp.servers.unreachable]\nurls = [\"http://127.0.0.1:9/mcp\"]\n",
    )
    .expect("write mcp config");
    // Its credentials: the test server issues them for the catalog's kinds up front, and for
    // others (this one runs no catalog operation) when first asked.
    nats.credentials(&switchyard_test_support::Role::Worker("mcp".into()));

    let mut processes = Vec::new();
    for (name, args) in PROCESSES {
        let extra = match *name {
            "ai" => vec![("SWITCHYARD_CONFIG", ai_config.display().to_string())],
            "mcp" => vec![("SWITCHYARD_CONFIG", mcp_config.display().to_string())],
            "test" => vec![("SWITCHYARD_WORKER__WORKER_ID", "observability".to_owned())],
            "gateway" => vec![(
                "SWITCHYARD_GATEWAY__RATE_LIMITS__RESEARCH",
                "1/h".to_owned(),
            )],
            _ => vec![],
        };
        processes.push(run.spawn(name, args, &extra));
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("http client");
    let started = Instant::now();
    for process in &mut processes {
        loop {
            if get(&client, &process.metrics_url).await.is_some() {
                break;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{} exited ({status}):\n{}", process.name, process.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} serves no /metrics at {}:\n{}",
                process.name,
                process.metrics_url,
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let gateway = processes
        .iter()
        .find(|p| p.name == "gateway")
        .expect("gateway");
    let base = gateway.metrics_url.trim_end_matches("/metrics").to_owned();
    while get(&client, &format!("{base}/ready")).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gateway not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Work that exercises every metric: retries, dead letters (decode and permanent), every
    // worker kind, cards fetched by a workflow, usage events, and an SLA breach.
    let demo = run.run(&["demo", "--jobs", "2", "--timeout", "60"]);
    assert!(text(&demo).contains("ended as expected"), "{}", text(&demo));
    let sla = run.dir.path().join("sla_watch.yaml");
    std::fs::write(
        &sla,
        "name: sla_watch\nversion: 1\nsteps:\n  - id: approve\n    wait_for_signal: { name: approval, sla: 1s }\n",
    )
    .expect("write workflow");
    run.run(&["workflow", "register", sla.to_str().unwrap()]);
    run.run(&["workflow", "register", "workflows/examples/hello.yaml"]);
    // One call to the unreachable remote provider: a provider error, a failed job.
    let probe = run.dir.path().join("ai_probe.yaml");
    std::fs::write(
        &probe,
        "name: ai_probe\nversion: 1\nsteps:\n  - id: ask\n    operation: ai.generate\n    input: { prompt: hello, provider: remote }\n    retry: { max_attempts: 1 }\n    on_error: continue\n",
    )
    .expect("write workflow");
    run.run(&["workflow", "register", probe.to_str().unwrap()]);
    let token = String::from_utf8(
        run.run(&["token", "--tenant", "demo", "--role", "admin"])
            .stdout,
    )
    .expect("utf-8 token")
    .trim()
    .to_owned();
    let waiting = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/trigger",
        json!({"workflow_name": "sla_watch", "input": {}}),
    )
    .await;
    assert!(waiting["instance_id"].is_string(), "{waiting}");

    let probe = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/execute",
        json!({"workflow_type": "ai_probe", "wait": 60}),
    )
    .await;
    assert_eq!(probe["status"], "completed", "{probe}");
    // A bad token (401) and a request over the research rate limit (429).
    let refused = client
        .get(format!("{base}/api/v1/registry"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("GET /api/v1/registry");
    assert_eq!(refused.status(), 401);
    for expected in [false, true] {
        let response = client
            .post(format!("{base}/api/v1/research"))
            .bearer_auth(&token)
            .json(&json!({"topic": "circuit breaker half-open state"}))
            .send()
            .await
            .expect("POST /api/v1/research");
        assert_eq!(response.status() == 429, expected, "{response:?}");
    }

    let hello = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/execute",
        json!({"workflow_type": "hello", "name": "metrics", "wait": 60}),
    )
    .await;
    assert_eq!(hello["status"], "completed", "{hello}");
    let transcript =
        std::fs::read_to_string(root().join("workers/ai/samples/meetings/product_sync.vtt"))
            .expect("sample transcript");
    let meeting = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/execute",
        json!({"workflow_type": "meeting_to_tasks", "wait": 60, "transcript": transcript,
               "meeting_title": "Product sync", "meeting_date": "2025-03-12"}),
    )
    .await;
    assert_eq!(meeting["status"], "completed", "{meeting}");
    let onboarding = execute(
        &client,
        &base,
        &token,
        "/api/v1/onboarding",
        json!({"answers": {"company_name": "Acme Freight",
            "company_description": "Acme Freight moves containers for 300 importers.",
            "industry": "logistics", "audience": "People who plan inbound freight.",
            "audience_roles": ["logistics managers"], "tone": "friendly and direct",
            "insight": "Late containers cost more than slow ones.",
            "evidence": "Late containers break warehouse schedules."}}),
    )
    .await;
    let cards = onboarding["card_ids"].clone();
    assert_eq!(cards.as_array().map(Vec::len), Some(4), "{onboarding}");
    let post = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/execute",
        json!({"workflow_type": "linkedin_post", "wait": 60, "card_ids": cards}),
    )
    .await;
    assert_eq!(post["status"], "completed", "{post}");
    let research = execute(
        &client,
        &base,
        &token,
        "/api/v1/workflows/execute",
        json!({"workflow_type": "research_to_docs", "wait": 60,
               "topic": "circuit breaker half-open state", "difficulty": "beginner"}),
    )
    .await;
    assert_eq!(research["status"], "completed", "{research}");

    // What the dashboard and the alert rules select.
    let dashboard_path = deploy("grafana/dashboards/switchyard.json");
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(&dashboard_path).expect("read the dashboard"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "switchyard-overview");
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 30, "{queries:?}");
    for (place, expr) in queries {
        for name in metric_names(&expr) {
            wanted.entry(name).or_default().insert(place.clone());
        }
    }
    for (alert, expr) in alert_rules() {
        for name in metric_names(&expr) {
            wanted
                .entry(name)
                .or_default()
                .insert(format!("alert {alert}"));
        }
    }
    for name in SYNTHETIC {
        wanted.remove(*name);
    }

    // Scrape until every wanted name is served (some are sampled on a timer or appear only
    // after the SLA passes), then judge the last scrape of each process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expositions = loop {
        let mut expositions = BTreeMap::new();
        for process in &processes {
            let body = get(&client, &process.metrics_url).await.unwrap_or_else(|| {
                panic!(
                    "{} stopped serving /metrics:\n{}",
                    process.name,
                    process.log()
                )
            });
            expositions.insert(process.name, body);
        }
        let served: BTreeSet<String> = expositions.values().flat_map(|e| sample_names(e)).collect();
        let missing: Vec<_> = wanted.keys().filter(|n| !served.contains(*n)).collect();
        if missing.is_empty() {
            break expositions;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for name in missing {
                report.push_str(&format!("  {name} (used by {:?})\n", wanted[name]));
            }
            panic!(
                "the dashboard or alert rules select metrics no process serves after the run:\n{report}\
                 served:\n{served:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    for (name, exposition) in &expositions {
        assert!(!exposition.trim().is_empty(), "{name} serves no samples");
        let check = promtool(&["check", "metrics"], Some(exposition));
        assert!(
            check.status.success() && text(&check).trim().is_empty(),
            "{} check metrics on {name}'s /metrics: {}\n{exposition}",
            promtool_path.display(),
            text(&check)
        );
    }
}
