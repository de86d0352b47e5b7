//! Metric names and help texts of the worker loop, in one place. Labels come from bounded
//! sets: the kind, the operations the handler declares (or `unknown`), and fixed outcomes.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// How a job's handling ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// A retryable failure, handed back with a delay.
    Retried,
    /// Given up on: a failed result and a dead letter.
    Failed,
    /// The instance was cancelled; a cancelled result was published.
    Cancelled,
    /// Shutdown reached its grace period; the job went back for another replica.
    HandedBack,
    /// The payload was not a job; it went to the dead-letter queue.
    Malformed,
    /// The bus refused the result or dead letter; the job will be redelivered.
    BusError,
    /// Infrastructure the job needs was unavailable; handed back without using an attempt.
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::HandedBack => "handed_back",
            Outcome::Malformed => "malformed",
            Outcome::BusError => "bus_error",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The worker loop's metrics, registered once per worker.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub jobs: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub redeliveries: IntCounterVec,
    pub dead_letters: IntCounterVec,
}

impl WorkerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = WorkerMetrics {
            jobs: IntCounterVec::new(
                Opts::new(
                    "switchyard_jobs_total",
                    "Jobs handled by the worker loop, by outcome",
                ),
                &["kind", "operation", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_job_duration_seconds",
                    "Time from a job's delivery to its ack, nak or term",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0,
                ]),
                &["kind", "operation"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new("switchyard_jobs_in_flight", "Jobs being handled right now"),
                &["kind"],
            )?,
            redeliveries: IntCounterVec::new(
                Opts::new(
                    "switchyard_job_redeliveries_total",
                    "Deliveries of a job after its first",
                ),
                &["kind"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "switchyard_dead_letters_total",
                    "Messages copied to the dead-letter queue, by reason",
                ),
                &["kind", "reason"],
            )?,
        };
        registry.register(Box::new(metrics.jobs.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.redeliveries.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        Ok(metrics)
    }
}

/// How often a process samples the consumers it pulls from (and the orchestrator the DLQ).
pub const LAG_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Consumer lag, sampled from consumer info by each process for the consumers it pulls from,
/// by `stream` and `consumer` (both from the fixed set `bus-config` provisions).
#[derive(Debug, Clone)]
pub struct ConsumerLag {
    pub pending: IntGaugeVec,
    pub ack_pending: IntGaugeVec,
}

impl ConsumerLag {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lag = ConsumerLag {
            pending: IntGaugeVec::new(
                Opts::new(
                    "switchyard_consumer_pending_messages",
                    "Messages in the stream not yet delivered to the consumer (its backlog)",
                ),
                &["stream", "consumer"],
            )?,
            ack_pending: IntGaugeVec::new(
                Opts::new(
                    "switchyard_consumer_ack_pending_messages",
                    "Messages delivered to the consumer and not yet acknowledged",
                ),
                &["stream", "consumer"],
            )?,
        };
        registry.register(Box::new(lag.pending.clone()))?;
        registry.register(Box::new(lag.ack_pending.clone()))?;
        Ok(lag)
    }

    /// Records one consumer's info.
    pub fn observe(&self, info: &async_nats::jetstream::consumer::Info) {
        let labels = [info.stream_name.as_str(), info.name.as_str()];
        self.pending
            .with_label_values(&labels)
            .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        self.ack_pending
            .with_label_values(&labels)
            .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
    }

    /// Samples `consumers` every `every` until `shutdown`. A failed sample keeps the last
    /// figures and is logged at debug level: lag is a gauge, not worth a warning per tick.
    pub async fn sample(
        self,
        mut consumers: Vec<async_nats::jetstream::consumer::PullConsumer>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for consumer in &mut consumers {
                match consumer.info().await {
                    Ok(info) => self.observe(info),
                    Err(e) => tracing::debug!(error = %e, "cannot sample consumer lag"),
                }
            }
        }
    }
}

/// The label value for tenants beyond a [`TenantLabels`] limit.
pub const OTHER_TENANTS: &str = "_other";

/// Keeps a `tenant_id` label bounded: the first `limit` tenants a process sees keep their own
/// label value, every later one is counted under [`OTHER_TENANTS`]. Tenants are few for most
/// deployments; the limit protects Prometheus from a flood of series, not the bill (the
/// ledger, not a metric, is what is billed).
#[derive(Debug)]
pub struct TenantLabels {
    limit: usize,
    seen: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl TenantLabels {
    /// The default number of tenants with their own label value per process.
    pub const DEFAULT_LIMIT: usize = 200;

    pub fn new(limit: usize) -> Self {
        TenantLabels {
            limit,
            seen: std::sync::RwLock::new(std::collections::HashSet::new()),
        }
    }

    /// The label value to use for `tenant`.
    pub fn label(&self, tenant: &str) -> String {
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if seen.contains(tenant) {
                return tenant.to_owned();
            }
            if seen.len() >= self.limit {
                return OTHER_TENANTS.to_owned();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.contains(tenant) || seen.len() < self.limit {
            seen.insert(tenant.to_owned());
            tenant.to_owned()
        } else {
            OTHER_TENANTS.to_owned()
        }
    }
}

impl Default for TenantLabels {
    fn default() -> Self {
        TenantLabels::new(Self::DEFAULT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_limit_share_one_label() {
        let labels = TenantLabels::new(2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER_TENANTS);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("d"), OTHER_TENANTS);
    }
}
