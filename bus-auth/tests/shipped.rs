//! The server configs the project ships, run as shipped beside an `auth.conf` from
//! `AuthDir::init`: they admit the bus's users and nobody else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::ConnectOptions;
use switchyard_bus_auth::{AuthDir, Role, service_roles};
use switchyard_test_support::{free_port, nats_server_binary};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// A server process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `config` copied into `dir` beside the auth.conf of `keys`, started with its ports moved
/// to free ones (and its routes, for a cluster node).
fn start(dir: &Path, config: &str, env: (&str, &Path), args: &[String]) -> Running {
    let conf = dir.join(Path::new(config).file_name().expect("file name"));
    std::fs::copy(shipped(config), &conf).expect("copy the shipped config");
    let log = std::fs::File::create(conf.with_extension("log")).expect("log file");
    let child = Command::new(nats_server_binary())
        .arg("-c")
        .arg(&conf)
        .args(args)
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    Running(child)
}

/// Connects with `creds` once the server is up (or says why it could not).
async fn connect(
    url: &str,
    creds: Option<&str>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let options = match creds {
            Some(c) => ConnectOptions::with_credentials(c).expect("creds parse"),
            None => ConnectOptions::new(),
        };
        match options.connect(url).await {
            Err(e)
                if e.kind() == async_nats::ConnectErrorKind::Io
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

async fn assert_secured(url: &str, keys: &AuthDir) {
    let anonymous = connect(url, None)
        .await
        .expect_err("the shipped config must refuse an anonymous client");
    assert_eq!(
        anonymous.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{anonymous}"
    );
    let operator = keys.credentials(&Role::Operator, None).expect("creds");
    let client = connect(url, Some(&operator))
        .await
        .expect("the operator is admitted");
    assert!(client.server_info().auth_required);
    let reply = client
        .request("$JS.API.INFO", "".into())
        .await
        .expect("JetStream answers the operator");
    assert!(!String::from_utf8_lossy(&reply.payload).contains("\"error\""));
}

#[tokio::test]
async fn the_single_node_config_admits_only_the_bus_users() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = AuthDir::open(dir.path()).expect("keys");
    keys.init(&service_roles(&["test"])).expect("auth.conf");
    let store = dir.path().join("store");
    let port = free_port();
    let _server = start(
        dir.path(),
        "bus-config/nats/single.conf",
        ("SWITCHYARD_NATS_STORE", &store),
        &[
            "-p".into(),
            port.to_string(),
            "-m".into(),
            free_port().to_string(),
        ],
    );
    assert_secured(&format!("nats://127.0.0.1:{port}"), &keys).await;
}

#[tokio::test]
async fn the_cluster_configs_admit_only_the_bus_users() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = AuthDir::open(dir.path()).expect("keys");
    keys.init(&service_roles(&["test"])).expect("auth.conf");
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for (i, node) in ["a", "b", "c"].into_iter().enumerate() {
        let store = dir.path().join(format!("store-{node}"));
        let port = free_port();
        urls.push(format!("nats://127.0.0.1:{port}"));
        servers.push(start(
            dir.path(),
            &format!("bus-config/nats/cluster-{node}.conf"),
            (
                &format!("SWITCHYARD_NATS_STORE_{}", node.to_uppercase()),
                &store,
            ),
            &[
                "-p".into(),
                port.to_string(),
                "-m".into(),
                free_port().to_string(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]),
                "--routes".into(),
                routes.clone(),
            ],
        ));
    }
    for url in &urls {
        let anonymous = connect(url, None)
            .await
            .expect_err("every node must refuse an anonymous client");
        assert_eq!(
            anonymous.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{url}: {anonymous}"
        );
    }
    // JetStream needs the cluster's meta leader: the operator's request is retried until
    // the three nodes found each other.
    let operator = keys.credentials(&Role::Operator, None).expect("creds");
    let client = connect(&urls[0], Some(&operator))
        .await
        .expect("the operator is admitted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.request("$JS.API.INFO", "".into()).await;
        if let Ok(reply) = &reply
            && !String::from_utf8_lossy(&reply.payload).contains("\"error\"")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "JetStream did not answer on the cluster: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_compose_config_includes_the_auth_file_and_checks_with_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let conf = dir.path().join("nats.conf");
    std::fs::copy(shipped("deploy/compose/nats.conf"), &conf).expect("copy");
    let without = Command::new(nats_server_binary())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("nats-server -t");
    assert!(
        !without.status.success(),
        "the compose config must not start without auth.conf"
    );
    AuthDir::open(dir.path())
        .expect("keys")
        .init(&[])
        .expect("auth.conf");
    let with = Command::new(nats_server_binary())
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("nats-server -t");
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}
