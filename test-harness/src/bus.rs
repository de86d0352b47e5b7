//! A real nats-server with every stream, consumer and bucket of the design applied.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull},
};
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_proto::{header, stream};
use switchyard_test_support::{NatsServer, Role};

/// A server, a connection to it and its JetStream context.
#[derive(Debug)]
pub struct Bus {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// Waits until the server has read everything `client` sent so far, its subscriptions
/// included. `flush` only writes the client's buffer out: a subscription followed by a
/// publish on another connection can miss the message. A message to itself comes back only
/// after the server has processed what the connection sent before it.
pub async fn round_trip(client: &async_nats::Client) {
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await.expect("subscribe");
    client.publish(inbox, "".into()).await.expect("publish");
    tokio::time::timeout(Duration::from_secs(10), echo.next())
        .await
        .expect("a round trip to the server within 10 s")
        .expect("the echo");
}

/// A fresh server on a free port with the bus applied.
pub async fn bus() -> Bus {
    Bus::on(NatsServer::start().await).await
}

impl Bus {
    /// `server` with the bus applied.
    pub async fn on(server: NatsServer) -> Bus {
        let client = server.client().await;
        let js = jetstream::new(client.clone());
        apply(&js, &BusConfig::default(), ApplyOptions::default())
            .await
            .expect("bus apply");
        Bus { server, client, js }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A connection of its own, as a separate process would have, as the operator.
    pub async fn connect(&self) -> async_nats::Client {
        self.server.client().await
    }

    /// A connection of its own as `role`, with only that role's permissions: components a
    /// test runs connect this way, so the suite runs each one as it is deployed.
    pub async fn connect_as(&self, role: &Role) -> async_nats::Client {
        self.server.connect_as(role).await
    }

    /// Shortens (or lengthens) how long `consumer` of `stream_name` waits for an ack, so
    /// messages a killed replica held come back when a test wants them to.
    pub async fn set_ack_wait(&self, stream_name: &str, consumer: &str, ack_wait: Duration) {
        let stream = self.js.get_stream(stream_name).await.expect("stream");
        let c = stream
            .get_consumer::<pull::Config>(consumer)
            .await
            .expect("consumer");
        let mut config = c.cached_info().config.clone();
        config.ack_wait = ack_wait;
        stream.update_consumer(config).await.expect("ack wait");
    }

    /// [`Bus::set_ack_wait`] for the orchestrator's three inbox consumers.
    pub async fn set_orchestrator_ack_wait(&self, ack_wait: Duration) {
        for name in [
            stream::ORCHESTRATOR_COMMANDS,
            stream::ORCHESTRATOR_RESULTS,
            stream::ORCHESTRATOR_TIMERS,
        ] {
            self.set_ack_wait(stream::WF_INBOX, name, ack_wait).await;
        }
    }

    /// [`Bus::set_ack_wait`] for a worker kind's consumer.
    pub async fn set_worker_ack_wait(&self, kind: &str, ack_wait: Duration) {
        self.set_ack_wait(
            &stream::jobs(kind),
            &stream::worker_consumer(kind),
            ack_wait,
        )
        .await;
    }

    /// Waits until every `(stream, consumer)` has nothing pending and nothing unacked;
    /// panics after `within`.
    pub async fn wait_idle(&self, consumers: &[(&str, &str)], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        'again: loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{consumers:?} still have work after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            for (stream_name, name) in consumers {
                let mut consumer: jetstream::consumer::PullConsumer = self
                    .js
                    .get_stream(*stream_name)
                    .await
                    .expect("stream")
                    .get_consumer(name)
                    .await
                    .expect("consumer");
                let info = consumer.info().await.expect("consumer info");
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    continue 'again;
                }
            }
            return;
        }
    }

    /// Publishes to a stream with `Nats-Msg-Id: msg_id` and waits for the PubAck.
    pub async fn publish(&self, subject: &str, msg_id: &str, payload: Vec<u8>) {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id);
        self.publish_with(subject, headers, payload).await;
    }

    /// Publishes to a stream with `headers` and waits for the PubAck.
    pub async fn publish_with(&self, subject: &str, headers: HeaderMap, payload: Vec<u8>) {
        self.js
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
    }
}
