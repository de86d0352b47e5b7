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
