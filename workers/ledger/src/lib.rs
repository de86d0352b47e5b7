//! The ledger worker: reads `USAGE`, `WF_EVENTS` and `AUDIT` in batches into its own Postgres
//! schema `ledger` — usage events (each counted once, by event id) with daily rollups per
//! tenant, meter and unit for billing; a read model of workflow instances (status, timings,
//! error, SLA breaches) for listing and stats; the audit log — and answers queries about them
//! over NATS request/reply (`svc.ledger.*`), which is how the gateway serves `/usage`,
//! `/workflows/instances`, `/workflows/stats` and `/audit` without a database of its own.
//!
//! Everything in the schema is derived from the streams: [`rebuild()`] empties it and replays
//! them to the same tables. A message is acked only after its batch committed; a batch that
//! hit a database error is handed back with a delay; a message that cannot be read goes to
//! `dlq.ledger` with the reason.
//!
//! This crate must not sit on any workflow's hot path (nothing waits for the ledger), keep
//! state a second replica would need outside Postgres, or answer one tenant with another's
//! data.

mod error;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod rebuild;
pub mod service;
pub mod store;

use std::sync::Arc;

use async_nats::jetstream;
use prometheus::Registry;
use sqlx::PgPool;
use switchyard_runtime::{Config, config::LedgerSettings, database, nats, process};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info};

pub use error::Error;
pub use ingest::Source;
pub use rebuild::RebuildReport;

/// The configuration sections this component reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 3] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Ledger, Section::Database]
};

/// The kind: the service group `svc.ledger` and the dead-letter subject `dlq.ledger`.
pub const KIND: &str = "ledger";

/// One ledger replica: its database, settings and metrics. Any number may run; they share
/// the durable consumers.
#[derive(Debug)]
pub struct Ledger {
    pool: PgPool,
    settings: LedgerSettings,
    metrics: metrics::Metrics,
    worker_id: String,
}

impl Ledger {
    /// Builds a replica on a migrated `pool` ([`store::migrate`]); metrics are registered in
    /// `registry`.
    pub fn build(
        pool: PgPool,
        settings: &LedgerSettings,
        worker_id: impl Into<String>,
        registry: &Registry,
    ) -> Result<Self, Error> {
        Ok(Ledger {
            pool,
            settings: settings.clone(),
            metrics: {
                switchyard_runtime::dlq::register_metrics(registry, KIND)?;
                metrics::Metrics::register(registry)?
            },
            worker_id: worker_id.into(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Consumes the three streams and answers queries until `shutdown`; the batches in hand
    /// are written first. Fails at once when a stream or consumer is missing.
    pub async fn run(
        self,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let js = jetstream::new(client.clone());
        // Refuse to start half-provisioned, with the command that fixes it.
        for source in Source::ALL {
            ingest::durable(&js, source).await?;
        }
        let ingest = Arc::new(ingest::Ingest {
            pool: self.pool.clone(),
            js: js.clone(),
            metrics: self.metrics.clone(),
            batch_size: self.settings.batch_size,
            batch_wait: self.settings.batch_wait,
            worker_id: self.worker_id.clone(),
        });
        let tracker = TaskTracker::new();
        let service = service::start(
            &client,
            self.pool.clone(),
            &self.worker_id,
            &tracker,
            shutdown.clone(),
        )
        .await?;
        // A consumer loop that fails stops the replica, so the process supervisor restarts it.
        let failed = CancellationToken::new();
        let stop = CancellationToken::new();
        let mut loops = Vec::new();
        for source in Source::ALL {
            let (ingest, stop, failed) = (ingest.clone(), stop.clone(), failed.clone());
            loops.push(tracker.spawn(async move {
                let result = ingest.consume(source, stop).await;
                if let Err(e) = &result {
                    error!(stream = source.stream(), error = %e, "ledger consumer failed");
                    failed.cancel();
                }
                result
            }));
        }
        tracker.spawn(ingest::sample_lag(
            js,
            self.metrics.clone(),
            self.settings.lag_interval,
            stop.clone(),
        ));
        info!(worker_id = %self.worker_id, batch_size = self.settings.batch_size, "ledger started");
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = failed.cancelled() => {}
        }
        stop.cancel();
        tracker.close();
        let mut result = Ok(());
        for handle in loops {
            match handle.await {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Err(e) if result.is_ok() => {
                    result = Err(Error::bus("a consumer loop panicked", e));
                }
                _ => {}
            }
        }
        if let Err(e) = service.stop().await {
            tracing::debug!(error = %e, "cannot stop the ledger service");
        }
        tracker.wait().await;
        info!("ledger stopped");
        result
    }
}

/// Connects to Postgres and brings the `ledger` schema up to date.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, Error> {
    let pool = database::connect(database_url, max_connections).await?;
    store::migrate(&pool).await?;
    Ok(pool)
}

fn database_url(config: &Config) -> Result<String, Error> {
    Ok(database::url(config, "the ledger (it lives in Postgres)")?)
}

/// Runs one ledger replica as a process until `shutdown`: connects to Postgres
/// (`database_url`, required) and migrates, serves `/metrics` and `/healthz`, consumes and
/// answers queries.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let pool = connect(&database_url(&config)?, 8).await?;
    let settings = config.ledger.clone();
    let worker_id = config.worker_id();
    process::run_process(
        &config,
        "switchyard-ledger",
        |client, registry| async move {
            Ledger::build(pool, &settings, worker_id, &registry)?
                .run(client, shutdown)
                .await
        },
    )
    .await
}

/// `switchyard ledger rebuild`: empties the ledger and replays the streams into it.
pub async fn rebuild(config: &Config) -> Result<RebuildReport, Error> {
    let pool = connect(&database_url(config)?, 2).await?;
    let client = nats::connect(config, "switchyard-ledger-rebuild").await?;
    let report = rebuild::rebuild(&pool, &client, config.ledger.batch_size).await;
    let _ = client.drain().await;
    report
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => process::exit_code(e),
        _ => process::EXIT_FAILURE,
    }
}
