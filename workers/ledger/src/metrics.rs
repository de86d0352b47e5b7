//! Metric names and help texts of the ledger worker, in one place. Labels come from bounded
//! sets: the three streams, four outcomes, tenants bounded by [`TenantLabels`], and meters
//! (named by the workers' code, not by users).

use prometheus::{
    Counter, CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use switchyard_runtime::metrics::TenantLabels;

/// What became of one message, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (a new usage event or audit entry, or an instance event folded in).
    Stored,
    /// Already in the ledger: the same event id delivered again.
    Duplicate,
    /// An event type the read model does not need (token deltas, a worker's own progress).
    Ignored,
    /// Not a readable envelope; copied to the DLQ.
    Malformed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Malformed => "malformed",
        }
    }
}

/// `switchyard_ledger_messages_total`, `switchyard_ledger_batch_seconds`,
/// `switchyard_ledger_lag_messages` and `switchyard_usage_quantity_total`.
#[derive(Debug, Clone)]
pub struct Metrics {
    messages: IntCounterVec,
    batch_seconds: HistogramVec,
    lag: IntGaugeVec,
    usage: CounterVec,
    tenants: std::sync::Arc<TenantLabels>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Metrics {
            messages: IntCounterVec::new(
                Opts::new(
                    "switchyard_ledger_messages_total",
                    "Messages the ledger read, by stream and outcome (stored, duplicate, ignored, malformed)",
                ),
                &["stream", "outcome"],
            )?,
            batch_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_ledger_batch_seconds",
                    "Time of one batch's Postgres transaction, commit included",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["stream"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new(
                    "switchyard_ledger_lag_messages",
                    "Messages in the stream not yet delivered to the ledger's durable consumer, sampled",
                ),
                &["stream"],
            )?,
            usage: CounterVec::new(
                Opts::new(
                    "switchyard_usage_quantity_total",
                    "Usage quantity newly stored in the ledger, by tenant and meter (duplicates not counted)",
                ),
                &["tenant_id", "meter"],
            )?,
            tenants: std::sync::Arc::new(TenantLabels::default()),
        };
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.batch_seconds.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.usage.clone()))?;
        Ok(metrics)
    }

    /// Counts `n` messages of `stream` with `outcome`.
    pub fn messages(&self, stream: &str, outcome: Outcome, n: usize) {
        if n > 0 {
            self.messages
                .with_label_values(&[stream, outcome.as_str()])
                .inc_by(n as u64);
        }
    }

    pub fn batch(&self, stream: &str, seconds: f64) {
        self.batch_seconds
            .with_label_values(&[stream])
            .observe(seconds);
    }

    pub fn lag(&self, stream: &str, pending: u64) {
        self.lag
            .with_label_values(&[stream])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Adds newly stored usage.
    pub fn usage(&self, tenant: &str, meter: &str, quantity: f64) {
        if quantity.is_finite() && quantity > 0.0 {
            let counter: Counter = self
                .usage
                .with_label_values(&[&self.tenants.label(tenant), meter]);
            counter.inc_by(quantity);
        }
    }
}
