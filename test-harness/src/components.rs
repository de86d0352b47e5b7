//! The engine and workers a test runs in its own process, stopped when the test drops them.

use std::{collections::BTreeMap, time::Duration};

use prometheus::Registry;
use switchyard_orchestrator::{Options, Orchestrator};
use switchyard_runtime::{Config, Handler, Worker, config::WorkerSettings};
use switchyard_test_support::Role;
use switchyard_test_worker::TestWorker;
use tokio_util::sync::CancellationToken;

use crate::{Bus, engine};

/// The replicas a test started; dropping this stops every one of them.
#[derive(Debug, Default)]
pub struct Components {
    stops: Vec<CancellationToken>,
    /// The metrics registry of each orchestrator started, in order.
    pub registries: Vec<Registry>,
}

impl Drop for Components {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A worker configuration for tests: quick retries (100 ms, at most 1 s), short pulls
/// (500 ms) and the replica named `worker_id`.
pub fn worker_config(nats_url: String, worker_id: &str) -> Config {
    Config {
        nats_url,
        worker: WorkerSettings {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            pull_expiry: Duration::from_millis(500),
            worker_id: Some(worker_id.to_owned()),
            ..WorkerSettings::default()
        },
        ..Config::default()
    }
}

/// An orchestrator replica's options for tests: 32 messages at once, no template variables,
/// a 5 s grace period, 10 deliveries before a failing message is dead-lettered, replicas
/// asked whether they are there every 250 ms.
pub fn orchestrator_options(replica_id: &str) -> Options {
    Options {
        concurrency: 32,
        env: BTreeMap::new(),
        replica_id: replica_id.to_owned(),
        grace: Duration::from_secs(5),
        max_deliveries: 10,
        limits: switchyard_workflow::RenderLimits::default(),
        replica_sweep: Duration::from_millis(250),
    }
}

impl Components {
    /// Stops every replica started so far.
    pub fn stop_all(&mut self) {
        for s in &self.stops {
            s.cancel();
        }
    }

    /// Forgets the replicas started so far without stopping them: they run until the test's
    /// runtime ends, as a crashed process's work would be left to the bus.
    pub fn detach(&mut self) {
        self.stops.clear();
    }

    /// Stops `stop` when these components are dropped.
    pub fn stop_on_drop(&mut self, stop: CancellationToken) {
        self.stops.push(stop);
    }

    /// Runs `handler` as a worker replica on its own connection, its metrics in `registry`.
    pub async fn worker<H: Handler>(
        &mut self,
        bus: &Bus,
        config: &Config,
        handler: H,
        registry: &Registry,
    ) {
        let role = Role::Worker(handler.kind().to_owned());
        let worker =
            Worker::new(bus.connect_as(&role).await, config, handler, registry).expect("worker");
        let stop = CancellationToken::new();
        let run = worker.run(stop.clone());
        tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("the worker failed: {e}");
            }
        });
        self.stops.push(stop);
    }

    /// Runs a `test` worker replica named `worker_id` with [`worker_config`].
    pub async fn test_worker(&mut self, bus: &Bus, worker_id: &str) {
        let config = worker_config(bus.url(), worker_id);
        self.worker(bus, &config, TestWorker, &Registry::new())
            .await;
    }

    /// Runs an orchestrator replica on its own connection and returns once its service
    /// answers; the index of its metrics registry in [`Components::registries`].
    pub async fn orchestrator(&mut self, bus: &Bus, options: Options) -> usize {
        let registry = Registry::new();
        let orchestrator = Orchestrator::new(
            bus.connect_as(&Role::Orchestrator).await,
            options,
            &registry,
        )
        .await
        .expect("orchestrator");
        let stop = CancellationToken::new();
        let run = orchestrator.run(stop.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = run.await {
                panic!("the orchestrator failed: {e}");
            }
        });
        self.stops.push(stop);
        self.registries.push(registry);
        let answered = tokio::select! {
            () = engine::wait_for_engine(&bus.client, Duration::from_secs(10)) => true,
            _ = task => false,
        };
        assert!(answered, "the orchestrator stopped before it answered");
        self.registries.len() - 1
    }

    /// A `test` worker `w1` and an orchestrator `o1` with the default options.
    pub async fn engine(bus: &Bus) -> Components {
        let mut components = Components::default();
        components.test_worker(bus, "w1").await;
        components
            .orchestrator(bus, orchestrator_options("o1"))
            .await;
        components
    }
}
