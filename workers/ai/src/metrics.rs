//! Metric names and help texts of the AI worker, in one place. Labels come from bounded
//! sets: the configured provider names, their kinds, and fixed outcomes — never a model name
//! from job input.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The AI worker's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `cross_system_calls_total{system, provider, outcome}`.
    pub calls: IntCounterVec,
    /// `cross_system_call_duration_seconds{system, provider}`.
    pub call_duration: HistogramVec,
    /// `ai_provider_errors_total{provider, reason}`.
    pub errors: IntCounterVec,
    /// `ai_circuit_breaker_state{provider}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::unregistered()?;
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.call_duration.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.breaker_state.clone()))?;
        Ok(metrics)
    }

    /// Metrics nobody scrapes, for tests and benchmarks.
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Metrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "cross_system_calls_total",
                    "Calls to external systems (AI providers), by outcome",
                ),
                &["system", "provider", "outcome"],
            )?,
            call_duration: HistogramVec::new(
                HistogramOpts::new(
                    "cross_system_call_duration_seconds",
                    "Duration of calls to external systems (AI providers), streaming included",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0,
                ]),
                &["system", "provider"],
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "ai_provider_errors_total",
                    "Failed provider calls and rejected model outputs, by reason",
                ),
                &["provider", "reason"],
            )?,
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    "ai_circuit_breaker_state",
                    "Circuit breaker per provider: 0 closed, 1 open, 2 half-open",
                ),
                &["provider"],
            )?,
        })
    }
}
