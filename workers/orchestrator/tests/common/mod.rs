//! The engine tests' set-up, on the workspace's test harness: a real nats-server with the bus
//! provisioned, `test` worker replicas and orchestrator replicas, and helpers to register,
//! start and follow workflows the way a user would.
#![allow(dead_code, unused_imports)]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use prometheus::Registry;
use serde_json::Value;
use switchyard_test_harness::{
    Bus, Components, NatsServer, engine, metrics, orchestrator_options, worker_config,
};
use switchyard_test_worker::TestWorker;

pub use switchyard_test_harness::{
    TENANT,
    engine::{event_data, step, until_event},
};

/// A provisioned bus and the replicas a test started on it; dropping it stops them.
pub struct Env {
    pub bus: Bus,
    pub components: Components,
}

impl std::ops::Deref for Env {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

/// A server with the bus applied and the orchestrator's and `test` worker's consumers' ack
/// wait shortened to `ack_wait`, so messages a killed replica held come back quickly.
pub async fn bus(ack_wait: Duration) -> Env {
    let bus = switchyard_test_harness::bus().await;
    bus.set_orchestrator_ack_wait(ack_wait).await;
    bus.set_worker_ack_wait("test", ack_wait).await;
    Env {
        bus,
        components: Components::default(),
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
        let mut config = worker_config(self.bus.url(), id);
        config.worker.concurrency = 64;
        let registry = Registry::new();
        self.components
            .worker(&self.bus, &config, TestWorker, &registry)
            .await;
        self.components.registries.push(registry);
    }

    /// Starts an orchestrator replica in this process (templates may read `env.PUBLIC_NAME`)
    /// and returns its metrics registry's index.
    pub async fn orchestrator(&mut self, id: &str) -> usize {
        let mut options = orchestrator_options(id);
        options.env = BTreeMap::from([("PUBLIC_NAME".to_owned(), "Switchyard".to_owned())]);
        self.components.orchestrator(&self.bus, options).await
    }

    pub fn registries(&self) -> &[Registry] {
        &self.components.registries
    }

    pub async fn query(&self, endpoint_name: &str, body: Value) -> Value {
        engine::query(&self.client, endpoint_name, body).await
    }

    /// Registers a definition for the test tenant; panics with the problems if it is refused.
    pub async fn register(&self, yaml: &str) {
        engine::register(&self.client, TENANT, yaml).await;
    }

    /// Subscribes to the instance's events, then publishes its start.
    pub async fn start(&self, workflow: &str, input: Value) -> (String, async_nats::Subscriber) {
        engine::start(&self.bus, TENANT, workflow, input).await
    }

    pub async fn start_as(&self, workflow: &str, instance: &str, input: Value) {
        engine::start_as(&self.bus, TENANT, workflow, instance, input).await;
    }

    pub async fn cancel(&self, instance: &str, reason: &str) {
        engine::cancel(&self.bus, TENANT, instance, reason).await;
    }

    pub async fn signal(&self, instance: &str, name: &str, payload: Value) {
        engine::signal(&self.bus, TENANT, instance, name, payload).await;
    }

    pub async fn status(&self, instance: &str) -> Value {
        engine::status(&self.client, TENANT, instance).await
    }

    /// Polls the instance's status until it is no longer running.
    pub async fn finished(&self, instance: &str, within: Duration) -> Value {
        engine::finished(&self.client, TENANT, instance, within).await
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
        metrics::counter(self.registries(), name, &[])
    }
}

/// The orchestrator as its own process.
pub fn orchestrator_process(server: &NatsServer, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_switchyard-orchestrator"))
        .env_clear()
        .envs(server.env_for(&switchyard_test_harness::BusRole::Orchestrator))
        .env("SWITCHYARD_NATS_CONNECT_TIMEOUT", "5s")
        .env("SWITCHYARD_WORKER__WORKER_ID", id)
        .env("SWITCHYARD_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the orchestrator binary")
}

/// The interpreter with nats-py: `SWITCHYARD_PYTHON` (set by `deploy/local/test.sh`), else the
/// project's venv.
pub fn python() -> PathBuf {
    switchyard_test_harness::python_with("nats")
}
