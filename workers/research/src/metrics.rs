//! Metric names and help texts of the research worker, in one place.
//!
//! Calls out (URL fetches, SearXNG queries, hosted summary providers) go into the shared
//! `cross_system_calls_total{system, provider, outcome}` and
//! `cross_system_call_duration_seconds{system, provider}` of the AI crate's [`AiMetrics`]: the
//! worker registers those once and uses them for its own calls too, so one registry never
//! holds the name twice. `system` is `web` or `searxng` here, `provider` the source kind;
//! never a host or URL (unbounded).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use switchyard_ai::metrics::Metrics as AiMetrics;

/// The research worker's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The shared `cross_system_*` metrics (and the AI providers' own).
    pub ai: AiMetrics,
    /// `research_corpus_passages`: passages in the index.
    pub passages: IntGauge,
    /// `research_corpus_files_indexed_total{change}`: files (re-)indexed or removed.
    pub files_indexed: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::unregistered()?;
        registry.register(Box::new(metrics.passages.clone()))?;
        registry.register(Box::new(metrics.files_indexed.clone()))?;
        Ok(Metrics {
            ai: AiMetrics::register(registry)?,
            ..metrics
        })
    }

    /// Metrics nobody scrapes, for tests.
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Metrics {
            ai: AiMetrics::unregistered()?,
            passages: IntGauge::new(
                "research_corpus_passages",
                "Passages of the local corpus in the search index",
            )?,
            files_indexed: IntCounterVec::new(
                Opts::new(
                    "research_corpus_files_indexed_total",
                    "Corpus files indexed because they were added or changed, or dropped because they were removed",
                ),
                &["change"],
            )?,
        })
    }

    /// Counts one call out and its duration.
    pub fn call(&self, system: &str, provider: &str, outcome: &str, seconds: f64) {
        self.ai
            .calls
            .with_label_values(&[system, provider, outcome])
            .inc();
        self.ai
            .call_duration
            .with_label_values(&[system, provider])
            .observe(seconds);
    }
}
