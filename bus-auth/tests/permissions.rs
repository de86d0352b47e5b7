//! The bus as a boundary: against a real nats-server that trusts only users the bus's account
//! signed, each role can do its job and the server refuses everything else.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, jetstream};
use futures::StreamExt as _;
use switchyard_bus_auth::Role;
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_test_support::NatsServer;
use tokio::sync::mpsc;

/// How long the server gets to report a refusal.
const REFUSAL: Duration = Duration::from_secs(5);

/// A connection as one role that records the errors the server sends it.
struct Probe {
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Probe {
    async fn connect(server: &NatsServer, role: &Role) -> Probe {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = ConnectOptions::new()
            .credentials_file(server.credentials(role).expect("an authenticated server"))
            .await
            .expect("creds")
            .custom_inbox_prefix(role.inbox_prefix())
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string().to_lowercase());
                    }
                }
            })
            .connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("{role} connects: {e}"));
        Probe { client, errors }
    }

    /// Waits for the server to report a permissions violation naming `subject`.
    async fn refused(&mut self, subject: &str) -> bool {
        let subject = subject.to_lowercase();
        let deadline = tokio::time::Instant::now() + REFUSAL;
        loop {
            match tokio::time::timeout_at(deadline, self.errors.recv()).await {
                Ok(Some(e)) if e.contains("permissions violation") && e.contains(&subject) => {
                    return true;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Publishes to `subject` and says whether the server refused it.
    async fn publish_refused(&mut self, subject: &str) -> bool {
        self.client
            .publish(subject.to_owned(), "{}".into())
            .await
            .expect("publish");
        self.client.flush().await.expect("flush");
        self.refused(subject).await
    }

    /// Subscribes to `subject` and says whether the server refused it.
    async fn subscribe_refused(&mut self, subject: &str) -> bool {
        let _sub = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        self.client.flush().await.expect("flush");
        self.refused(subject).await
    }

    /// Asserts that nothing was refused so far.
    fn assert_nothing_refused(&mut self) {
        if let Ok(e) = self.errors.try_recv() {
            panic!("the server refused something: {e}");
        }
    }
}

async fn applied_bus() -> NatsServer {
    let server = NatsServer::start().await;
    let js = jetstream::new(server.client().await);
    apply(&js, &BusConfig::default(), ApplyOptions::default())
        .await
        .expect("bus apply");
    server
}

#[tokio::test]
async fn an_anonymous_client_is_refused() {
    let server = NatsServer::start().await;
    let err = async_nats::connect(server.url())
        .await
        .expect_err("an anonymous client must be refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let forged = switchyard_bus_auth::AuthDir::open(tempfile::tempdir().expect("tmp").path())
        .expect("another deployment's keys");
    let creds = forged
        .credentials(&Role::Operator, None)
        .expect("creds of another deployment");
    let err = ConnectOptions::with_credentials(&creds)
        .expect("creds parse")
        .connect(server.url())
        .await
        .expect_err("an operator of another deployment must be refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
}

#[tokio::test]
async fn a_tenant_publisher_starts_its_workflows_and_reads_its_events_only() {
    let server = applied_bus().await;
    let acme = Role::Tenant("acme".into());
    let mut tenant = Probe::connect(&server, &acme).await;
    let operator = server.client().await;

    // What it may do: start its workflows (stored, acknowledged) and follow their events.
    let mut events = tenant
        .client
        .subscribe("wf.events.acme.>")
        .await
        .expect("subscribe");
    let js = jetstream::new(tenant.client.clone());
    js.publish("wf.start.acme.hello", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("the start is stored and acknowledged");
    tenant
        .client
        .publish("wf.cancel.acme.i-1", "{}".into())
        .await
        .expect("cancel");
    tenant
        .client
        .publish("wf.signal.acme.i-1.approve", "{}".into())
        .await
        .expect("signal");
    tenant
        .client
        .publish("wf.rerun.acme.i-1", "{}".into())
        .await
        .expect("re-run");
    tenant.client.flush().await.expect("flush");
    operator
        .publish("wf.events.acme.i-1.started", "{}".into())
        .await
        .expect("event");
    operator.flush().await.expect("flush");
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("its own event arrives")
        .expect("subscription open");
    assert_eq!(event.subject.as_str(), "wf.events.acme.i-1.started");
    tenant.assert_nothing_refused();

    // What the server refuses it.
    for subject in [
        "wf.start.globex.hello",
        "wf.cancel.globex.i-1",
        "wf.rerun.globex.i-1",
        "wf.signal.globex.i-1.approve",
        "wf.result.i-1",
        "wf.schedule.acme.hello.0",
        "wf.tick.acme.hello.0",
        "jobs.ai.generate",
        "usage.acme.ai_input_tokens",
        "audit.acme.definition.put",
        "dlq.ai",
        "$KV.WF_DEFINITIONS.shared.hello.1",
        "$KV.WF_STATE.i-1",
        "$JS.API.DIRECT.GET.KV_WF_STATE.$KV.WF_STATE.i-1",
        "$JS.API.STREAM.INFO.KV_WF_STATE",
        "$JS.API.STREAM.INFO.OBJ_WF_OBJECTS",
        "$JS.API.CONSUMER.CREATE.OBJ_WF_OBJECTS",
        "$JS.API.STREAM.PURGE.WF_INBOX",
        "svc.cards.list",
        "svc.orchestrator.instance.get",
        "svc.ledger.usage",
    ] {
        assert!(
            tenant.publish_refused(subject).await,
            "tenant acme may not publish to {subject}"
        );
    }
    for subject in [
        "wf.events.globex.>",
        "wf.events.*.*.started",
        "wf.>",
        ">",
        "_INBOX.>",
        "_INBOX_globex.>",
        "$KV.WF_STATE.>",
        "$O.WF_OBJECTS.>",
    ] {
        assert!(
            tenant.subscribe_refused(subject).await,
            "tenant acme may not subscribe to {subject}"
        );
    }
    // A request to a service is refused before it reaches anyone.
    let err = tenant
        .client
        .request("svc.cards.list", "{}".into())
        .await
        .expect_err("no service answers a refused request");
    assert!(
        matches!(
            err.kind(),
            async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::Other
        ),
        "{err}"
    );
}

#[tokio::test]
async fn every_service_user_is_refused_outside_its_permissions() {
    let server = applied_bus().await;
    let cases: &[(Role, &[&str], &[&str])] = &[
        (
            Role::Gateway,
            &[
                "usage.acme.ai_input_tokens",
                "jobs.ai.generate",
                "wf.result.i-1",
                "wf.events.acme.i-1.completed",
                "$KV.WF_DEFINITIONS.shared.hello.1",
                "$KV.WF_STATE.i-1",
                "$JS.API.DIRECT.GET.KV_WF_STATE.$KV.WF_STATE.i-1",
                "$JS.API.CONSUMER.MSG.NEXT.JOBS_AI.worker-ai",
                "$JS.API.STREAM.DELETE.WF_INBOX",
            ],
            &["jobs.>", "usage.>"],
        ),
        (
            Role::Orchestrator,
            &[
                "usage.acme.ai_input_tokens",
                "audit.acme.definition.put",
                "wf.signal.acme.i-1.approval",
                "wf.tick.acme.hello.0",
                "wf.result.i-1",
                "dlq.ai",
                "$JS.API.STREAM.PURGE.WF_INBOX",
                "$O.WF_OBJECTS.C.x",
                "$JS.API.CONSUMER.MSG.NEXT.JOBS_AI.worker-ai",
                "$JS.API.CONSUMER.MSG.NEXT.USAGE.ledger-usage",
                "$JS.API.STREAM.DELETE.WF_INBOX",
            ],
            &["jobs.>", "usage.>", "wf.events.>"],
        ),
        (
            Role::Ledger,
            &[
                "usage.acme.ai_input_tokens",
                "audit.acme.definition.put",
                "wf.start.acme.hello",
                "jobs.ai.generate",
                "wf.events.acme.i-1.completed",
                "$KV.WF_STATE.i-1",
                "$JS.API.CONSUMER.MSG.NEXT.WF_INBOX.orchestrator-commands",
                "$JS.API.STREAM.DELETE.USAGE",
            ],
            &["jobs.>", "svc.orchestrator.>"],
        ),
        (
            Role::Worker("ai".into()),
            &[
                "wf.start.acme.hello",
                "jobs.cards.list",
                "audit.acme.definition.put",
                "dlq.cards",
                "$KV.WF_STATE.i-1",
                "$KV.WF_DEFINITIONS.shared.hello.1",
                "$JS.API.CONSUMER.MSG.NEXT.JOBS_CARDS.worker-cards",
                "$JS.ACK.JOBS_CARDS.worker-cards.1.1.1.1.0",
                "$JS.API.CONSUMER.MSG.NEXT.WF_INBOX.orchestrator-commands",
                "$JS.API.STREAM.PURGE.JOBS_AI",
            ],
            &["jobs.>", "svc.cards.>", "wf.start.>", "usage.>"],
        ),
    ];
    for (role, publishes, subscribes) in cases {
        let mut probe = Probe::connect(&server, role).await;
        for subject in *publishes {
            assert!(
                probe.publish_refused(subject).await,
                "{role} may not publish to {subject}"
            );
        }
        for subject in *subscribes {
            assert!(
                probe.subscribe_refused(subject).await,
                "{role} may not subscribe to {subject}"
            );
        }
    }
}

#[tokio::test]
async fn a_worker_pulls_only_its_own_kinds_jobs() {
    let server = applied_bus().await;
    let operator = jetstream::new(server.client().await);
    operator
        .publish("jobs.test.echo", "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let mut worker = Probe::connect(&server, &Role::Worker("test".into())).await;
    let js = jetstream::new(worker.client.clone());
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("JOBS_TEST")
        .await
        .expect("its own stream")
        .get_consumer("worker-test")
        .await
        .expect("its own consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let job = batch.next().await.expect("one job").expect("job delivered");
    job.ack().await.expect("ack");
    worker.client.flush().await.expect("flush");
    worker.assert_nothing_refused();

    let err = js
        .get_stream("JOBS_AI")
        .await
        .expect_err("another kind's stream is out of reach");
    assert!(worker.refused("$JS.API.STREAM.INFO.JOBS_AI").await, "{err}");
}
