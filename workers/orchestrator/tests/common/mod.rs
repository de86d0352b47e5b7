//! Shared set-up for the engine tests: a real nats-server with the bus provisioned, `test`
//! worker replicas and orchestrator replicas, and helpers to register, start and follow
//! workflows the way a user would.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull},
};
use futures::StreamExt as _;
use prometheus::Registry;
use serde_json::{Value, json};
use switchyard_bus_config::{ApplyOptions, BusConfig, apply};
use switchyard_orchestrator::{
    Options, Orchestrator,
    service::{self, endpoint},
};
use switchyard_proto::{
    CancelWorkflow, SignalWorkflow, StartWorkflow, WorkflowEvent, decode, encode_proto, header,
    stream, subject,
};
use switchyard_runtime::{Config, Worker, config::WorkerSettings};
use switchyard_test_support::NatsServer;
use switchyard_test_worker::TestWorker;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "acme";

pub struct Env {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub stops: Vec<CancellationToken>,
    pub registries: Vec<Registry>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }
}

/// A server with the bus applied and the orchestrator consumers' ack wait shortened to
/// `ack_wait`, so messages a killed replica held come back quickly.
pub async fn bus(ack_wait: Duration) -> Env {
    let server = NatsServer::start().await;
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    apply(&js, &BusConfig::default(), ApplyOptions::default())
        .await
        .expect("bus apply");
    let inbox = js.get_stream(stream::WF_INBOX).await.expect("inbox");
    for name in [
        stream::ORCHESTRATOR_COMMANDS,
        stream::ORCHESTRATOR_RESULTS,
        stream::ORCHESTRATOR_TIMERS,
    ] {
        let c = inbox
            .get_consumer::<pull::Config>(name)
            .await
            .expect("consumer");
        let mut config = c.cached_info().config.clone();
        config.ack_wait = ack_wait;
        inbox.update_consumer(config).await.expect("ack wait");
    }
    let jobs = js.get_stream(stream::jobs("test")).await.expect("jobs");
    let c = jobs
        .get_consumer::<pull::Config>(&stream::worker_consumer("test"))
        .await
        .expect("consumer");
    let mut config = c.cached_info().config.clone();
    config.ack_wait = ack_wait;
    jobs.update_consumer(config).await.expect("ack wait");
    Env {
        server,
        client,
        js,
        stops: Vec::new(),
        registries: Vec::new(),
    }
}

/// A bus with one `test` worker and one orchestrator running in this process.
pub async fn env() -> Env {
    let mut env = bus(Duration::from_secs(30)).await;
    env.worker("w1").await;
    env.orchestrator("o1").await;
    env
}

impl Env {
    pub async fn worker(&mut self, id: &str) {
        let config = Config {
            nats_url: self.server.url(),
            worker: WorkerSettings {
                concurrency: 64,
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                pull_expiry: Duration::from_millis(500),
                worker_id: Some(id.to_owned()),
                ..WorkerSettings::default()
            },
            ..Config::default()
        };
        let client = self.server.client().await;
        let worker = Worker::new(client, &config, TestWorker, &Registry::new()).expect("worker");
        let stop = CancellationToken::new();
        tokio::spawn(worker.run(stop.clone()));
        self.stops.push(stop);
    }

    /// Starts an orchestrator replica in this process and returns its metrics registry index.
    pub async fn orchestrator(&mut self, id: &str) -> usize {
        let registry = Registry::new();
        let client = self.server.client().await;
        let options = Options {
            concurrency: 32,
            env: BTreeMap::from([("PUBLIC_NAME".to_owned(), "Switchyard".to_owned())]),
            replica_id: id.to_owned(),
            grace: Duration::from_secs(5),
        };
        let orchestrator = Orchestrator::new(client, options, &registry)
            .await
            .expect("orchestrator");
        let stop = CancellationToken::new();
        let run = orchestrator.run(stop.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("orchestrator failed: {e}");
            }
        });
        self.stops.push(stop);
        self.registries.push(registry);
        // Wait until its service answers, so definitions can be registered.
        for _ in 0..100 {
            if self
                .client
                .request(
                    service::request_subject(endpoint::DEFINITIONS_LIST),
                    serde_json::to_vec(&json!({ "tenant": TENANT }))
                        .unwrap()
                        .into(),
                )
                .await
                .is_ok()
            {
                break;
            }
            assert!(!task.is_finished(), "the orchestrator stopped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.registries.len() - 1
    }

    pub async fn query(&self, endpoint_name: &str, body: Value) -> Value {
        let mut tries = 0;
        let reply = loop {
            // A replica that is (re)starting answers within moments.
            match self
                .client
                .request(
                    service::request_subject(endpoint_name),
                    serde_json::to_vec(&body).unwrap().into(),
                )
                .await
            {
                Ok(r) => break r,
                Err(e) if tries < 200 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the orchestrator does not answer: {e}"),
            }
        };
        serde_json::from_slice(&reply.payload).expect("a JSON reply")
    }

    /// Registers a definition for the test tenant; panics with the problems if it is refused.
    pub async fn register(&self, yaml: &str) {
        let reply = self
            .query(
                endpoint::DEFINITIONS_PUT,
                json!({ "tenant": TENANT, "source": yaml }),
            )
            .await;
        assert!(
            reply.get("error").is_none(),
            "registration refused: {reply}"
        );
    }

    /// Subscribes to the instance's events, then publishes its start.
    pub async fn start(&self, workflow: &str, input: Value) -> (String, async_nats::Subscriber) {
        let instance = format!("i-{}", uuid::Uuid::now_v7().simple());
        let events = self
            .client
            .subscribe(subject::events_of(TENANT, &instance))
            .await
            .expect("subscribe");
        self.client.flush().await.expect("flush");
        self.start_as(workflow, &instance, input).await;
        (instance, events)
    }

    pub async fn start_as(&self, workflow: &str, instance: &str, input: Value) {
        let start = StartWorkflow {
            tenant: TENANT.into(),
            workflow: workflow.into(),
            instance_id: instance.into(),
            input: serde_json::to_vec(&input).unwrap(),
            correlation_id: format!("corr-{instance}"),
            requested_at_ms: switchyard_proto::now_ms(),
            ..StartWorkflow::default()
        };
        self.publish(
            &subject::start(TENANT, workflow),
            instance,
            encode_proto(&start),
        )
        .await;
    }

    pub async fn publish(&self, subject_name: &str, msg_id: &str, payload: Vec<u8>) {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id);
        self.js
            .publish_with_headers(subject_name.to_owned(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
    }

    pub async fn cancel(&self, instance: &str, reason: &str) {
        let c = CancelWorkflow {
            reason: reason.into(),
            requested_by: "test".into(),
            ..CancelWorkflow::default()
        };
        self.publish(
            &subject::cancel(TENANT, instance),
            &format!("cancel-{instance}"),
            encode_proto(&c),
        )
        .await;
    }

    pub async fn signal(&self, instance: &str, name: &str, payload: Value) {
        let s = SignalWorkflow {
            signal_id: format!("sig-{instance}-{name}"),
            payload: serde_json::to_vec(&payload).unwrap(),
            sent_by: "test".into(),
            ..SignalWorkflow::default()
        };
        self.publish(
            &subject::signal(TENANT, instance, name),
            &format!("signal-{instance}-{name}"),
            encode_proto(&s),
        )
        .await;
    }

    pub async fn status(&self, instance: &str) -> Value {
        self.query(
            endpoint::INSTANCE_GET,
            json!({ "tenant": TENANT, "instance_id": instance }),
        )
        .await
    }

    /// Polls the instance's status until it is no longer running.
    pub async fn finished(&self, instance: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.status(instance).await;
            if status["status"].as_str().is_some_and(|s| s != "running") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {instance} still not finished: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until counter `name` reaches `min`: a message is counted after it is acked, which
    /// is after the state it led to is visible, so a reader can be a moment ahead of the count.
    pub async fn counter_reaches(&self, name: &str, min: f64, within: Duration) -> f64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let value = self.counter(name);
            if value >= min || tokio::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn counter(&self, name: &str) -> f64 {
        self.registries
            .iter()
            .flat_map(|r| r.gather())
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().to_vec())
            .map(|m| m.get_counter().get_value())
            .sum()
    }
}

/// Reads events until one of `event_type` arrives; returns it and those before it.
pub async fn until_event(
    sub: &mut async_nats::Subscriber,
    event_type: &str,
    within: Duration,
) -> (WorkflowEvent, Vec<WorkflowEvent>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {event_type} event in time; saw {:?}",
                    seen.iter()
                        .map(|e: &WorkflowEvent| format!("{}:{}", e.r#type, e.step_id))
                        .collect::<Vec<_>>()
                )
            })
            .expect("subscription open");
        let event: WorkflowEvent =
            decode(switchyard_proto::ContentType::Protobuf, &msg.payload).expect("an event");
        if event.r#type == event_type {
            return (event, seen);
        }
        seen.push(event);
    }
}

pub fn event_data(event: &WorkflowEvent) -> Value {
    serde_json::from_slice(&event.data).unwrap_or(Value::Null)
}

/// The orchestrator as its own process.
pub fn orchestrator_process(url: &str, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard-orchestrator"))
        .env_clear()
        .env("SWITCHYARD_NATS_URL", url)
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
        .env("SWITCHYARD_WORKER__WORKER_ID", id)
        .env("SWITCHYARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the orchestrator binary")
}

pub fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {status:#}"))
}
