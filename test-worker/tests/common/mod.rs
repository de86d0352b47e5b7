//! Shared set-up for the worker-loop tests: a real nats-server with the bus provisioned, jobs
//! published the way the orchestrator publishes them, and readers for results and dead letters.
#![allow(dead_code)]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull},
};
use futures::StreamExt as _;
use prometheus::Registry;
use switchyard_proto::{
    DeadLetter, Job, RetryPolicy, WorkflowEvent, decode, encode_proto, event, header, stream,
    subject,
};
use switchyard_runtime::{Config, Worker, config::WorkerSettings};
use switchyard_test_worker::TestWorker;
use tokio_util::sync::CancellationToken;

pub use switchyard_test_harness::{Bus, NatsServer, TENANT, jobs::next_result};

/// A server with every stream and consumer of the design, the `test` consumer's ack wait set
/// to `ack_wait` so that redelivery after a crash is quick.
pub async fn bus(ack_wait: Duration) -> Bus {
    let bus = switchyard_test_harness::bus().await;
    bus.set_worker_ack_wait("test", ack_wait).await;
    bus
}

pub fn config(bus: &Bus, worker_id: &str) -> Config {
    Config {
        nats_url: bus.server.url(),
        shutdown_grace: Duration::from_secs(10),
        worker: WorkerSettings {
            concurrency: 8,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            pull_expiry: Duration::from_millis(500),
            worker_id: Some(worker_id.to_owned()),
            ..WorkerSettings::default()
        },
        ..Config::default()
    }
}

/// A replica in this process; returns its stop token, metrics and task.
pub async fn in_process(
    bus: &Bus,
    worker_id: &str,
) -> (
    CancellationToken,
    Registry,
    tokio::task::JoinHandle<Result<(), switchyard_runtime::Error>>,
) {
    in_process_with(bus, config(bus, worker_id)).await
}

/// [`in_process`] with a configuration of the test's own.
pub async fn in_process_with(
    bus: &Bus,
    config: Config,
) -> (
    CancellationToken,
    Registry,
    tokio::task::JoinHandle<Result<(), switchyard_runtime::Error>>,
) {
    let registry = Registry::new();
    let client = bus
        .connect_as(&switchyard_test_harness::BusRole::Worker("test".into()))
        .await;
    let worker = Worker::new(client, &config, TestWorker, &registry).expect("worker");
    let stop = CancellationToken::new();
    let task = tokio::spawn(worker.run(stop.clone()));
    (stop, registry, task)
}

/// A replica as its own process (the `switchyard-test-worker` binary).
pub fn process(bus: &Bus, worker_id: &str) -> Child {
    process_at(&bus.server, worker_id)
}

pub fn process_at(server: &NatsServer, worker_id: &str) -> Child {
    process_with(server, worker_id, &[])
}

/// [`process_at`] with settings of the test's own, as environment variables.
pub fn process_with(server: &NatsServer, worker_id: &str, settings: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard-test-worker"))
        .env_clear()
        .envs(server.env_for(&switchyard_test_harness::BusRole::Worker("test".into())))
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
        .env("SWITCHYARD_WORKER__WORKER_ID", worker_id)
        .env("SWITCHYARD_WORKER__PULL_EXPIRY", "500ms")
        .env("SWITCHYARD_SHUTDOWN_GRACE", "20s")
        .env("SWITCHYARD_LOG_LEVEL", "info")
        .envs(settings.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the test worker binary")
}

pub fn new_instance() -> String {
    format!("i-{}", uuid::Uuid::now_v7().simple())
}

pub fn job(instance: &str, step: &str, operation: &str, input: serde_json::Value) -> Job {
    Job {
        job_id: format!("{instance}-{step}-1"),
        tenant: TENANT.into(),
        instance_id: instance.into(),
        step_id: step.into(),
        operation: operation.into(),
        input: serde_json::to_vec(&input).expect("json"),
        correlation_id: format!("corr-{step}"),
        created_at_ms: switchyard_proto::now_ms(),
        ..Job::default()
    }
}

pub fn with_retry(mut job: Job, max_attempts: u32, initial_delay_ms: u64) -> Job {
    job.retry = Some(RetryPolicy {
        max_attempts,
        initial_delay_ms,
        max_delay_ms: 10_000,
        multiplier: 2.0,
    });
    job
}

pub async fn publish(bus: &Bus, job: &Job) {
    publish_raw(
        bus,
        &subject::job(&job.operation),
        &job.job_id,
        encode_proto(job),
    )
    .await;
}

pub async fn publish_raw(bus: &Bus, subject_name: &str, msg_id: &str, payload: Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, msg_id);
    headers.insert(header::CORRELATION_ID, format!("corr-{msg_id}").as_str());
    bus.js
        .publish_with_headers(subject_name.to_owned(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("puback");
}

/// Follows results of one instance (a plain subscription sees what the stream stores).
pub async fn results(bus: &Bus, instance: &str) -> async_nats::Subscriber {
    bus.client
        .subscribe(subject::result(instance))
        .await
        .expect("subscribe")
}

pub async fn events(bus: &Bus, instance: &str) -> async_nats::Subscriber {
    bus.client
        .subscribe(subject::events_of(TENANT, instance))
        .await
        .expect("subscribe")
}

/// The next event a handler published, skipping the loop's own `step_started` and
/// `step_retrying` (the engine's tests check those).
pub async fn next_event(sub: &mut async_nats::Subscriber, within: Duration) -> WorkflowEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("an event in time")
            .expect("subscription open");
        let event: WorkflowEvent =
            decode(switchyard_proto::ContentType::Protobuf, &msg.payload).expect("an event");
        if event.r#type != event::STEP_STARTED && event.r#type != event::STEP_RETRYING {
            return event;
        }
    }
}

/// Every dead letter stored so far, oldest first.
pub async fn dead_letters(bus: &Bus) -> Vec<DeadLetter> {
    switchyard_test_support::dlq::dead_letters(&bus.js).await
}

pub async fn wait_for_dead_letters(bus: &Bus, count: usize, within: Duration) -> Vec<DeadLetter> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let letters = dead_letters(bus).await;
        if letters.len() >= count || tokio::time::Instant::now() > deadline {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker consumer's info once nothing is pending or waiting for an ack (within 10 s):
/// what a settled job leaves behind.
pub async fn settled(bus: &Bus) -> jetstream::consumer::Info {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer_info(bus).await;
        if (info.num_ack_pending, info.num_pending) == (0, 0) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never settled: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn consumer_info(bus: &Bus) -> jetstream::consumer::Info {
    let jobs = bus
        .js
        .get_stream(stream::jobs("test"))
        .await
        .expect("jobs stream");
    let mut consumer = jobs
        .get_consumer::<pull::Config>(&stream::worker_consumer("test"))
        .await
        .expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

pub fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    switchyard_test_harness::metrics::counter(std::slice::from_ref(registry), name, labels)
}

/// Sends a signal to a child process by number, through the system's `kill` command.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} failed");
}

pub fn output_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().expect("wait for the worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// `$SRV.INFO` answers from every replica it names; returns the answers.
pub async fn service_infos(bus: &Bus) -> Vec<serde_json::Value> {
    let inbox = bus.client.new_inbox();
    let mut replies = bus.client.subscribe(inbox.clone()).await.unwrap();
    bus.client
        .publish_with_reply("$SRV.INFO.switchyard-test", inbox, "".into())
        .await
        .unwrap();
    let mut infos = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        // Before any replica subscribes, the server answers "no responders" with an empty body.
        if !msg.payload.is_empty() {
            infos.push(serde_json::from_slice(&msg.payload).unwrap());
        }
    }
    infos
}

pub async fn wait_for_services(bus: &Bus, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while service_infos(bus).await.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} replicas did not register"
        );
    }
}
