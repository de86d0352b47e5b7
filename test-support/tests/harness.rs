//! The harness itself: real servers start, survive SIGKILL with their data, form a cluster,
//! and each test gets its own database.

use std::time::{Duration, Instant};
use switchyard_proto::server::MIN_SERVER_VERSION;

use async_nats::jetstream::{self, stream};
use switchyard_test_support::{
    NatsCluster, NatsOptions, NatsServer, database, nats_server_binary, nats_server_version,
    old_nats_server_binary, throwaway_database,
};

fn file_stream(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn port_is_closed(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Publishes until JetStream acknowledges, e.g. while a replicated stream elects a new leader.
async fn publish_until_acked(js: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    let started = Instant::now();
    loop {
        let attempt = async { js.publish(subject.to_owned(), payload.into()).await?.await };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(ack)) => return ack.sequence,
            Ok(Err(e)) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("publish not acknowledged yet: {e}");
            }
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("publish not acknowledged yet: timed out");
            }
            other => panic!("publish to {subject} never acknowledged: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn server_acknowledges_jetstream_publishes() {
    let server = NatsServer::start().await;
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    let js = jetstream::new(server.client().await);
    js.create_stream(file_stream("ORDERS", 1)).await.unwrap();

    let ack = js
        .publish("orders.created", "o-1".into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert_eq!(ack.stream, "ORDERS");
    assert_eq!(ack.sequence, 1);
    assert!(server.store_dir().join("jetstream").exists());
}

#[tokio::test]
async fn sync_always_server_acknowledges_publishes() {
    let server = NatsServer::start_with(NatsOptions {
        sync_always: true,
        ..NatsOptions::default()
    })
    .await;
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(config.contains("sync_interval: always"), "{config}");
    let js = jetstream::new(server.client().await);
    js.create_stream(file_stream("DURABLE", 1)).await.unwrap();

    let ack = js.publish("durable.x", "x".into()).await.unwrap().await;

    assert_eq!(ack.unwrap().sequence, 1);
}

#[tokio::test]
async fn killed_server_restarts_with_its_stored_messages() {
    let mut server = NatsServer::start().await;
    let port = server.port();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(file_stream("KEPT", 1)).await.unwrap();
    js.publish("kept.one", "before the crash".into())
        .await
        .unwrap()
        .await
        .unwrap();

    server.kill();
    assert!(port_is_closed(port), "server still listening after kill()");
    server.restart().await;

    assert_eq!(server.port(), port);
    // A fresh client, so the check does not depend on the old client's reconnect timing.
    let js = jetstream::new(server.client().await);
    let stream = js.get_stream("KEPT").await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), "kept.one");
    assert_eq!(&message.payload[..], b"before the crash");
    // The original client reconnects to the restarted server by itself.
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the original client reconnected after restart()");
}

#[tokio::test]
async fn cluster_keeps_an_r3_stream_available_after_losing_a_node() {
    let mut cluster = NatsCluster::start().await;
    assert_eq!(cluster.urls().len(), 3);
    let js = jetstream::new(cluster.client().await);
    let mut stream = js
        .create_stream(file_stream("REPLICATED", 3))
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    let cluster_info = info
        .cluster
        .as_ref()
        .expect("a clustered stream has cluster info");
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");
    assert_eq!(
        publish_until_acked(&js, "replicated.a", "a").await,
        1,
        "first message"
    );

    let killed_port = cluster.node(0).port();
    cluster.node(0).kill();
    assert!(
        port_is_closed(killed_port),
        "n1 still listening after kill()"
    );

    assert_eq!(
        publish_until_acked(&js, "replicated.b", "b").await,
        2,
        "second message, with n1 down"
    );
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2);

    cluster.node(0).restart().await;
    let node_js = jetstream::new(cluster.node(0).client().await);
    node_js.get_stream("REPLICATED").await.unwrap();
}

#[tokio::test]
async fn nats_server_versions_are_told_apart() {
    let current = nats_server_version(&nats_server_binary()).expect("current server version");
    assert!(current >= MIN_SERVER_VERSION, "{current:?}");
    let old = old_nats_server_binary().expect(
        "no old (< 2.10) nats-server installed; deploy/local/test.sh installs one, or set \
         SWITCHYARD_OLD_NATS_SERVER",
    );
    assert!(nats_server_version(&old).unwrap() < MIN_SERVER_VERSION);

    // Tests of the "refuse an unsupported server" check need the old server running.
    let server = NatsServer::start_with(NatsOptions {
        binary: Some(old),
        ..NatsOptions::default()
    })
    .await;
    let client = server.client().await;
    assert!(client.server_info().version.starts_with("2.9"));
}

/// Creates a table without `IF NOT EXISTS` and counts its rows: if two tests shared a
/// database, one of them would fail here.
async fn use_own_database(db: &switchyard_test_support::TestDatabase) {
    sqlx::query("CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO items VALUES (1, 'one')")
        .execute(&db.pool)
        .await
        .unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM items")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let (current,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(current, db.name);
}

#[tokio::test]
async fn first_test_gets_its_own_database() {
    let db = database().await;
    use_own_database(&db).await;
}

#[tokio::test]
async fn second_test_gets_its_own_database() {
    let db = database().await;
    use_own_database(&db).await;
}

#[tokio::test]
async fn databases_are_distinct_and_dropped_afterwards() {
    let first = database().await;
    let second = database().await;
    assert_ne!(first.name, second.name);
    assert_ne!(first.url, second.url);
    use_own_database(&first).await;
    use_own_database(&second).await;

    let name = first.name.clone();
    drop(first);

    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&second.pool)
            .await
            .unwrap();
    assert!(
        !exists,
        "database {name} still exists after its TestDatabase was dropped"
    );
}

#[tokio::test]
async fn throwaway_cluster_serves_databases() {
    let db = throwaway_database().await;
    use_own_database(&db).await;
    let (fsync,): (String,) = sqlx::query_as("SHOW fsync")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(fsync, "off", "not the throwaway cluster");
}
