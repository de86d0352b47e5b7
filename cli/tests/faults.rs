//! The fault suite: a whole system started the way a user starts it (every process its own
//! `switchyard` binary, authentication on the bus) under a steady load of workflow starts,
//! through the gateway and straight onto the bus, while one fault at a time hits it. Each
//! workflow sleeps in a `test` worker, then posts a signed webhook to a receiver in this test,
//! which counts the effects.
//!
//! It prints one table, every row from this run: fault × accepted × completed × failed × lost
//! × duplicated effects × usage units the ledger counted (against one per completed workflow)
//! × the most deliveries of one job × recovery (from the fault to the first effect of a start
//! accepted after it), and holds every row to 0 failed, 0 lost, 0 duplicated, exact usage and
//! no job delivered more than twice.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, routing::post};
use common::{Process, Run};
use serde_json::{Value, json};
use switchyard_proto::{DeadLetter, stream, subject};
use switchyard_test_support::{NatsCluster, NatsServer, Role, database, free_port};

const TENANT: &str = "faults";
const WORKFLOW: &str = "fault_probe";
/// Each row's load runs [`FAULT_AFTER`] before its fault, through it, and
/// [`LOAD_AFTER_FAULT`] after it is over.
const FAULT_AFTER: Duration = Duration::from_secs(2);
const LOAD_AFTER_FAULT: Duration = Duration::from_secs(6);
/// Starts per second through the gateway and on the bus.
const HTTP_RATE: u32 = 10;
const BUS_RATE: u32 = 5;
/// How long a row's accepted workflows may take to finish once the load stops.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

const DEFINITION: &str = r#"
name: fault_probe
version: 1
description: >-
  Sleeps in a worker, reporting one usage unit, then posts a signed webhook; the fault suite
  counts the posts, the units and the deliveries.
input:
  n: { type: string, required: true }
  url: { type: string, required: true }
steps:
  - id: work
    operation: test.sleep
    input: { ms: 300, units: 1 }
  - id: notify
    operation: integration.webhook.post
    needs: [work]
    input:
      url: "{{ input.url }}"
      payload: { n: "{{ input.n }}" }
"#;

/// The processes of the system, by name, and how each is started.
const PROCESSES: &[(&str, &[&str])] = &[
    ("gateway", &["gateway"]),
    ("orchestrator", &["orchestrator"]),
    ("test", &["worker", "test"]),
    ("integration", &["worker", "integration"]),
    ("ledger", &["ledger"]),
];

/// What the webhook receiver saw: per workflow (`n`), when each post came and its
/// `Idempotency-Key`. A receiver that honours the key does an effect once per key, so two
/// keys for one workflow are a duplicated effect; a repeated key is not.
#[derive(Default)]
struct Effects {
    posts: Mutex<BTreeMap<String, Vec<(Instant, String)>>>,
}

async fn receive(
    State(effects): State<Arc<Effects>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> &'static str {
    if let Some(n) = body["n"].as_str() {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut posts = effects.posts.lock().unwrap();
        posts
            .entry(n.to_owned())
            .or_default()
            .push((Instant::now(), key));
    }
    "ok"
}

/// A workflow start this suite sent and the bus or the gateway accepted, and when.
#[derive(Debug, Clone)]
struct Accepted {
    n: String,
    instance_id: String,
    at: Instant,
}

/// Where the load goes: the gateway and the webhook receiver.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    gateway: String,
    token: String,
    webhook_url: String,
}

/// The bus: one server, or a 3-node cluster with every stream replicated three times.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// What a process needs to reach the bus: every node's URL and the credentials directory.
    fn process_env(&mut self) -> Vec<(String, String)> {
        match self {
            Nats::Single(server) => server.process_env(),
            Nats::Cluster(cluster) => {
                let urls = cluster.urls().join(",");
                let mut env = cluster.node(0).process_env();
                for (key, value) in &mut env {
                    if key == "SWITCHYARD_NATS_URL" {
                        value.clone_from(&urls);
                    }
                }
                env
            }
        }
    }

    async fn connect_as(&self, role: &Role) -> async_nats::Client {
        match self {
            Nats::Single(server) => server.connect_as(role).await,
            Nats::Cluster(cluster) => cluster.connect_as(role).await.expect("a cluster client"),
        }
    }
}

/// A TCP proxy in front of Postgres, so that the test can take "Postgres" away: every
/// connection is cut and new ones are closed at once, as when the server is stopped.
struct PgProxy {
    addr: std::net::SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl PgProxy {
    async fn start(upstream: String) -> PgProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Postgres proxy");
        let proxy = PgProxy {
            addr: listener.local_addr().expect("proxy address"),
            down: Arc::default(),
            links: Arc::default(),
        };
        let (down, links) = (proxy.down.clone(), proxy.links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = links.lock().unwrap();
                links.retain(|l| !l.is_finished());
                links.push(link.abort_handle());
            }
        });
        proxy
    }

    /// Cuts every connection and refuses new ones until [`PgProxy::up`].
    fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The system under test.
struct System {
    run: Run,
    nats: Nats,
    postgres: PgProxy,
    /// The database, direct (not through the proxy); dropping it drops the database.
    db: switchyard_test_support::TestDatabase,
    processes: BTreeMap<&'static str, Process>,
    /// The gateway's address, the same across restarts.
    gateway_addr: String,
    target: Target,
    effects: Arc<Effects>,
}

/// What a row does to the system.
enum Fault {
    None,
    /// kill -9 of one process, started again a second later.
    Kill(&'static str),
    /// kill -9 of nats-server, started again 3 s later (same store).
    NatsRestart,
    /// SIGTERM of each process in turn, each started again once it has exited.
    RollingTerm,
    /// kill -9 of the node leading `WF_INBOX`, back 5 s later; `times` times.
    KillStreamLeader {
        times: usize,
    },
    /// Postgres gone (connections cut, new ones closed) for this long.
    PostgresDown(Duration),
    /// A message as large as the server takes, and not a message of any kind, on each subject.
    Poison(Vec<String>),
}

impl System {
    async fn start(mut nats: Nats) -> System {
        let db = database().await;
        let mut database_url = reqwest::Url::parse(&db.url).expect("a database URL");
        let upstream = format!(
            "{}:{}",
            database_url.host_str().unwrap_or("127.0.0.1"),
            database_url.port().unwrap_or(5432)
        );
        let postgres = PgProxy::start(upstream).await;
        database_url
            .set_port(Some(postgres.addr.port()))
            .expect("a port");
        let dir = tempfile::tempdir().expect("temp dir");
        let gateway_port = free_port();
        let run = Run {
            env: [
                nats.process_env(),
                vec![
                    ("SWITCHYARD_NATS_CONNECT_TIMEOUT".into(), "30s".into()),
                    ("DATABASE_URL".into(), database_url.to_string()),
                    (
                        "SWITCHYARD_GATEWAY__AUTH__SECRET".into(),
                        "fault-suite-secret-0123456789abcdef".into(),
                    ),
                    ("SWITCHYARD_SHUTDOWN_GRACE".into(), "5s".into()),
                    (
                        "SWITCHYARD_INTEGRATION__TENANTS__FAULTS__WEBHOOK__SIGNING_SECRET".into(),
                        "fault-suite-webhook-secret-0123456789".into(),
                    ),
                    (
                        "SWITCHYARD_INTEGRATION__WEBHOOK__ALLOW_PRIVATE_ADDRESSES".into(),
                        "true".into(),
                    ),
                    (
                        "SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR".into(),
                        dir.path().join("out").display().to_string(),
                    ),
                    ("SWITCHYARD_LOG_LEVEL".into(), "info".into()),
                ],
            ]
            .concat(),
            dir,
        };
        let replicas = match nats {
            Nats::Single(_) => "1",
            Nats::Cluster(_) => "3",
        };
        run.run(&["bus", "apply", "--replicas", replicas]);
        let definition = run.dir.path().join("fault_probe.yaml");
        std::fs::write(&definition, DEFINITION).expect("write the definition");
        let token = String::from_utf8(
            run.run(&["token", "--tenant", TENANT, "--role", "admin"])
                .stdout,
        )
        .expect("utf-8 token")
        .trim()
        .to_owned();

        let effects = Arc::new(Effects::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let webhook_url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(effects.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut system = System {
            run,
            nats,
            postgres,
            db,
            processes: BTreeMap::new(),
            gateway_addr: format!("127.0.0.1:{gateway_port}"),
            target: Target {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(40))
                    .build()
                    .expect("http client"),
                gateway: format!("http://127.0.0.1:{gateway_port}"),
                token,
                webhook_url,
            },
            effects,
        };
        for (name, _) in PROCESSES {
            system.spawn(name);
        }
        system.ready().await;
        system.run.run(&[
            "workflow",
            "register",
            "--tenant",
            TENANT,
            definition.to_str().unwrap(),
        ]);
        system
    }

    fn spawn(&mut self, name: &'static str) {
        let args = PROCESSES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .expect("a known process");
        let extra = match name {
            "gateway" => vec![("SWITCHYARD_HTTP_ADDR", self.gateway_addr.clone())],
            _ => vec![],
        };
        let process = self.run.spawn(name, args, &extra);
        self.processes.insert(name, process);
    }

    /// Waits until the gateway answers `/ready` (the bus connected, the streams there).
    async fn ready(&mut self) {
        let started = Instant::now();
        loop {
            let ready = self
                .target
                .http
                .get(format!("{}/ready", self.target.gateway))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            for process in self.processes.values_mut() {
                if let Ok(Some(status)) = process.child.try_wait() {
                    panic!("{} exited ({status}):\n{}", process.name, process.log());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the gateway is not ready:\n{}",
                self.processes["gateway"].log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, name: &str, signal: &str) {
        let pid = self.processes[name].child.id();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {name}");
    }

    /// Waits for a process to exit (after a signal); returns whether it exited cleanly.
    async fn exited(&mut self, name: &str) -> bool {
        let process = self.processes.get_mut(name).expect("a running process");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                return status.success();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} did not exit:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index (0 for `n1`) of the node leading `stream_name`.
    async fn stream_leader(&self, stream_name: &str) -> usize {
        let js = async_nats::jetstream::new(self.nats.connect_as(&Role::Operator).await);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = js.get_stream(stream_name).await
                && let Ok(info) = s.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                && let Some(i) = leader
                    .strip_prefix('n')
                    .and_then(|n| n.parse::<usize>().ok())
            {
                return i - 1;
            }
            assert!(Instant::now() < deadline, "{stream_name} has no leader");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The instance's status answer from the gateway.
    async fn status_reply(&self, instance_id: &str) -> reqwest::Result<reqwest::Response> {
        self.target
            .http
            .get(format!(
                "{}/api/v1/workflows/status/{instance_id}",
                self.target.gateway
            ))
            .bearer_auth(&self.target.token)
            .send()
            .await
    }

    /// The instance's status as the gateway reports it, `None` while it has none.
    async fn status(&self, instance_id: &str) -> Option<Value> {
        let response = self.status_reply(instance_id).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The usage units the ledger holds for each of `instances` (the `work` step's).
    async fn usage(&self, instances: &[String]) -> BTreeMap<String, f64> {
        sqlx::query_as::<_, (String, f64)>(
            "SELECT instance_id, sum(quantity)::float8 FROM ledger.usage_events
             WHERE tenant = $1 AND meter = $2 AND instance_id = ANY($3)
             GROUP BY instance_id",
        )
        .bind(TENANT)
        .bind(switchyard_test_worker::TEST_UNITS)
        .bind(instances)
        .fetch_all(&self.db.pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .collect()
    }

    /// The instance's whole status answer, for a report.
    async fn status_body(&self, instance_id: &str) -> String {
        match self.status_reply(instance_id).await {
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        }
    }

    async fn inject(&mut self, fault: &Fault) {
        match fault {
            Fault::None => {}
            Fault::Kill(name) => {
                self.signal(name, "KILL");
                let _ = self.exited(name).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.spawn(name);
            }
            Fault::NatsRestart => {
                let Nats::Single(server) = &mut self.nats else {
                    panic!("a restart is of a single server");
                };
                server.kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                server.restart().await;
            }
            Fault::KillStreamLeader { times } => {
                for _ in 0..*times {
                    let leader = self.stream_leader(stream::WF_INBOX).await;
                    let Nats::Cluster(cluster) = &mut self.nats else {
                        panic!("a stream leader is a cluster's");
                    };
                    let node = cluster.node(leader);
                    node.kill();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    node.restart().await;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
            Fault::PostgresDown(how_long) => {
                self.postgres.down();
                tokio::time::sleep(*how_long).await;
                self.postgres.up();
            }
            Fault::RollingTerm => {
                for (name, _) in PROCESSES {
                    self.signal(name, "TERM");
                    assert!(
                        self.exited(name).await,
                        "{name} did not stop cleanly:\n{}",
                        self.processes[name].log()
                    );
                    self.spawn(name);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Fault::Poison(subjects) => {
                let client = self.nats.connect_as(&Role::Operator).await;
                let js = async_nats::jetstream::new(client.clone());
                let garbage = vec![0xff_u8; client.server_info().max_payload - 4096];
                for subject_name in subjects {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(
                        switchyard_proto::header::MSG_ID,
                        format!("poison-{subject_name}").as_str(),
                    );
                    js.publish_with_headers(subject_name.clone(), headers, garbage.clone().into())
                        .await
                        .expect("publish poison")
                        .await
                        .expect("the stream stores poison");
                }
            }
        }
    }
}

/// Sends starts until `stop`: through the gateway (with an `Idempotency-Key`, or, when
/// `keyless`, without one and retried by the documented rule) and on the bus.
async fn load(
    target: Target,
    row: String,
    keyless: bool,
    bus: async_nats::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (usize, Vec<Accepted>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / (HTTP_RATE + BUS_RATE));
    let mut i = 0u32;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tick.tick().await;
        i += 1;
        let n = format!("{row}-{i}");
        let accepted = accepted.clone();
        let input = json!({ "n": n, "url": target.webhook_url });
        if i % (HTTP_RATE + BUS_RATE) < HTTP_RATE {
            let http = target.http.clone();
            let url = format!("{}/api/v1/workflows/trigger", target.gateway);
            let token = target.token.clone();
            let body = json!({ "workflow_name": WORKFLOW, "input": input });
            let key = (!keyless).then(|| format!("fault-suite-{n}"));
            tasks.push(tokio::spawn(async move {
                if let Some(instance_id) = trigger(&http, &url, &token, &body, key).await {
                    accepted.lock().unwrap().push(Accepted {
                        n,
                        instance_id,
                        at: Instant::now(),
                    });
                }
            }));
        } else {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                let instance_id = format!("bus-{n}");
                let start = json!({
                    "tenant": TENANT, "workflow": WORKFLOW,
                    "instance_id": instance_id, "input": input,
                });
                if publish_start(&bus, &instance_id, &start).await {
                    accepted.lock().unwrap().push(Accepted {
                        n,
                        instance_id,
                        at: Instant::now(),
                    });
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    (i as usize, accepted)
}

/// Triggers a workflow, retrying for up to a minute by the gateway's rule: the same body with
/// the same `Idempotency-Key`, or with the one a `5xx` or `408` carries. The instance id of the
/// `202`, or `None` when it never came.
async fn trigger(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    mut key: Option<String>,
) -> Option<String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        let mut request = http.post(url).bearer_auth(token).json(body);
        if let Some(key) = &key {
            request = request.header("idempotency-key", key);
        }
        match request.send().await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                let body: Value = response.json().await.ok()?;
                return body["instance_id"].as_str().map(str::to_owned);
            }
            Ok(response) => {
                let status = response.status();
                if !(status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT) {
                    eprintln!(
                        "a start was refused: {status} {}",
                        response.text().await.unwrap_or_default()
                    );
                    return None;
                }
                if key.is_none() {
                    key = response
                        .headers()
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if key.is_none() {
                        eprintln!("a {status} without a key to retry with");
                        return None;
                    }
                }
            }
            // Not connected: nothing reached the gateway (or its answer was lost, which a
            // keyed request survives); a keyless one cannot be retried safely.
            Err(_) if key.is_none() => return None,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Publishes a JSON start with its instance id as message id until the stream stores it.
async fn publish_start(bus: &async_nats::Client, instance_id: &str, start: &Value) -> bool {
    let js = async_nats::jetstream::new(bus.clone());
    let give_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < give_up {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(switchyard_proto::header::MSG_ID, instance_id);
        headers.insert(switchyard_proto::header::CONTENT_TYPE, "application/json");
        let stored = async {
            js.publish_with_headers(
                subject::start(TENANT, WORKFLOW),
                headers,
                serde_json::to_vec(start).unwrap().into(),
            )
            .await?
            .await
        }
        .await;
        if stored.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// One row of the table.
#[derive(Debug, Default)]
struct Row {
    fault: String,
    /// Starts sent; with a key each is retried until accepted, so all must be.
    sent: usize,
    keyless: bool,
    accepted: usize,
    completed: usize,
    failed: usize,
    lost: usize,
    duplicated: usize,
    /// Usage units the ledger counted for the row's completed workflows (one each is exact).
    usage: f64,
    /// The most deliveries one job took: the `test` job's own count, or the webhook posts of
    /// one workflow (a lower bound for the `integration` job).
    most_deliveries: u32,
    /// How many deliveries the fault may cost a job in flight: one per hit of a process or
    /// the server (a hand-back), two per node killed in a cluster (a hand-back while the
    /// stream it writes to elects a leader, and a redelivery when the node also led the
    /// job's consumer).
    hits: u32,
    recovery: Option<Duration>,
}

impl Row {
    fn holds(&self) -> bool {
        let all_taken = self.keyless || self.accepted == self.sent;
        all_taken
            && self.failed == 0
            && self.lost == 0
            && self.duplicated == 0
            && self.accepted > 0
            && self.usage_exact()
            && self.most_deliveries <= 1 + self.hits.max(1)
    }

    fn usage_exact(&self) -> bool {
        (self.usage - self.completed as f64).abs() < 1e-9
    }
}

/// Runs the load with `fault` after [`FAULT_AFTER`], waits for what was accepted to finish,
/// and counts.
async fn row(system: &mut System, name: &str, keyless: bool, fault: Fault) -> Row {
    let bus = system.nats.connect_as(&Role::Tenant(TENANT.into())).await;
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(load(
        system.target.clone(),
        slug.clone(),
        keyless,
        bus,
        stop.clone(),
    ));
    tokio::time::sleep(FAULT_AFTER).await;
    let fault_at = Instant::now();
    system.inject(&fault).await;
    tokio::time::sleep(LOAD_AFTER_FAULT).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, accepted) = load.await.expect("the load");

    let mut report = Row {
        fault: name.to_owned(),
        sent,
        keyless,
        accepted: accepted.len(),
        hits: match &fault {
            Fault::KillStreamLeader { times } => 2 * u32::try_from(*times).unwrap_or(u32::MAX),
            _ => 1,
        },
        ..Row::default()
    };
    let deadline = Instant::now() + DRAIN_WITHIN;
    let mut pending: BTreeMap<&str, &Accepted> = accepted
        .iter()
        .map(|a| (a.instance_id.as_str(), a))
        .collect();
    let mut completed = Vec::new();
    let mut completed_ids = Vec::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut finished = Vec::new();
        for (id, a) in &pending {
            let status = system.status(id).await;
            match status.as_ref().and_then(|s| s["status"].as_str()) {
                Some("completed") => {
                    let work = status.as_ref().and_then(|s| {
                        s["steps"]
                            .as_array()?
                            .iter()
                            .find(|step| step["id"] == "work")?["output"]["delivery"]
                            .as_u64()
                    });
                    report.most_deliveries = report
                        .most_deliveries
                        .max(work.map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX)));
                    completed.push(a.n.clone());
                    completed_ids.push(id.to_string());
                    finished.push(*id);
                }
                Some("failed" | "cancelled") => {
                    if report.failed == 0 {
                        eprintln!("{name}: {id} failed: {}", system.status_body(id).await);
                    }
                    report.failed += 1;
                    finished.push(*id);
                }
                _ => {}
            }
        }
        for id in finished {
            pending.remove(id);
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    report.completed = completed.len();
    // A step is recorded after its webhook answered: its post is in.
    let posts = system.effects.posts.lock().unwrap().clone();
    let without_effect = completed.iter().filter(|n| !posts.contains_key(*n)).count();
    report.lost = pending.len() + without_effect;
    if let Some((id, _)) = pending.iter().next() {
        eprintln!(
            "{name}: {} never finished, e.g. {id}: {:?}",
            pending.len(),
            system.status_body(id).await
        );
    }
    let prefix = format!("{slug}-");
    let most_posts = posts
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(_, seen)| u32::try_from(seen.len()).unwrap_or(u32::MAX))
        .max()
        .unwrap_or(0);
    report.most_deliveries = report.most_deliveries.max(most_posts);
    // The ledger takes usage in batches: wait for it to count every completed workflow (or
    // stop changing) before comparing.
    let usage_deadline = Instant::now() + Duration::from_secs(60);
    let mut usage = system.usage(&completed_ids).await;
    while usage.len() < completed_ids.len() && Instant::now() < usage_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        usage = system.usage(&completed_ids).await;
    }
    report.usage = usage.values().sum();
    if let Some((id, units)) = usage.iter().find(|(_, u)| (**u - 1.0).abs() > 1e-9) {
        eprintln!("{name}: {id} was counted {units} usage units, not 1");
    }
    report.duplicated = posts
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .map(|(_, seen)| {
            let keys: BTreeSet<&str> = seen.iter().map(|(_, key)| key.as_str()).collect();
            keys.len().saturating_sub(1)
        })
        .sum();
    report.recovery = accepted
        .iter()
        .filter(|a| a.at > fault_at)
        .filter_map(|a| posts.get(&a.n).and_then(|seen| seen.first()))
        .map(|(at, _)| *at)
        .min()
        .map(|first| first.duration_since(fault_at));
    report
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | sent | accepted | completed | failed | lost | duplicated effects | usage units | most deliveries of a job | recovery |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.fault,
            r.sent,
            r.accepted,
            r.completed,
            r.failed,
            r.lost,
            r.duplicated,
            r.usage,
            r.most_deliveries,
            r.recovery
                .map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
    }
    out
}

/// Every dead letter in the DLQ stream, by the subject the original came on.
async fn dead_letters(nats: &Nats) -> Vec<DeadLetter> {
    let client = nats.connect_as(&Role::Operator).await;
    switchyard_test_support::dlq::dead_letters(&async_nats::jetstream::new(client)).await
}

/// `SWITCHYARD_FAULT_ROWS=<text>` runs only the rows whose name contains it (for working on
/// one fault); the suite as CI runs it has every row.
fn wanted(name: &str) -> bool {
    std::env::var("SWITCHYARD_FAULT_ROWS").map_or(true, |only| name.contains(only.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_suite_loses_fails_and_repeats_nothing() {
    let mut system = System::start(Nats::Single(NatsServer::start().await)).await;
    let mut faults = vec![("none (baseline)".to_owned(), false, Fault::None)];
    for (kind, _) in PROCESSES {
        faults.push((format!("kill -9 {kind}"), false, Fault::Kill(kind)));
    }
    faults.push((
        "nats-server restart, keyless starts retried by the rule".to_owned(),
        true,
        Fault::NatsRestart,
    ));
    faults.push((
        "rolling SIGTERM of every kind".to_owned(),
        false,
        Fault::RollingTerm,
    ));
    // Poison on every subject the system consumes; each must reach the DLQ with a reason
    // while the load goes on.
    let poisoned = vec![
        subject::job("test.sleep"),
        subject::job("integration.webhook.post"),
        subject::start(TENANT, WORKFLOW),
        subject::result("poisoned-instance"),
        subject::usage(TENANT, "tokens"),
        subject::event(TENANT, "poisoned-instance", "started"),
        subject::audit(TENANT, "poisoned"),
    ];
    faults.push((
        "Postgres gone for 90 s".to_owned(),
        false,
        Fault::PostgresDown(Duration::from_secs(90)),
    ));
    let poison_row = "poison on every consumed subject";
    faults.push((
        poison_row.to_owned(),
        false,
        Fault::Poison(poisoned.clone()),
    ));

    let before = dead_letters(&system.nats).await.len();
    let mut rows = Vec::new();
    for (name, keyless, fault) in faults {
        if wanted(&name) {
            rows.push(row(&mut system, &name, keyless, fault).await);
        }
    }
    let poison_dead = if wanted(poison_row) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let dead = loop {
            let letters = dead_letters(&system.nats).await;
            let dead: BTreeSet<String> = letters[before..]
                .iter()
                .filter(|l| l.payload_truncated && !l.error.is_empty())
                .map(|l| l.subject.clone())
                .collect();
            if dead.len() >= poisoned.len() || Instant::now() > deadline {
                break dead;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Some(dead)
    } else {
        None
    };
    drop(system);

    let cluster_row = "3-node cluster, WF_INBOX's leader killed twice";
    if wanted(cluster_row) {
        let mut system = System::start(Nats::Cluster(NatsCluster::start().await)).await;
        rows.push(
            row(
                &mut system,
                cluster_row,
                false,
                Fault::KillStreamLeader { times: 2 },
            )
            .await,
        );
    }

    let printed = table(&rows);
    println!("{printed}");
    if let Some(dead) = poison_dead {
        for subject_name in &poisoned {
            assert!(
                dead.contains(subject_name),
                "no dead letter for the poison on {subject_name}: {dead:?}\n{printed}"
            );
        }
    }
    for r in &rows {
        assert!(r.holds(), "{} does not hold:\n{printed}", r.fault);
    }
}
