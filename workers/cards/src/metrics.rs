//! Metric names and help texts of the cards worker, in one place. Labels come from bounded
//! sets: tenants (through [`TenantLabels`]), card types (built-in plus the tenant's registered ones), a fixed source,
//! workflow names and operation names.

use std::sync::Arc;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use switchyard_runtime::metrics::TenantLabels;

/// Who fetched a card, as the `source` label and usage attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A step of a workflow instance.
    Workflow,
    /// A request through the API (or any caller outside a workflow).
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Workflow => "workflow",
            Source::Api => "api",
        }
    }
}

/// `cards_api_usage_total`, `workflow_cards_fetched_total`, `cards_operations_total` and
/// `cards_operation_duration_seconds`.
#[derive(Debug, Clone)]
pub struct Metrics {
    usage: IntCounterVec,
    workflow_fetched: IntCounterVec,
    operations: IntCounterVec,
    duration: HistogramVec,
    tenants: Arc<TenantLabels>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Metrics {
            usage: IntCounterVec::new(
                Opts::new(
                    "cards_api_usage_total",
                    "Cards fetched (get or retrieve), counted once per job or request and card",
                ),
                &["tenant_id", "card_type", "source"],
            )?,
            workflow_fetched: IntCounterVec::new(
                Opts::new(
                    "workflow_cards_fetched_total",
                    "Cards fetched by workflow steps, counted once per job and card",
                ),
                &["tenant_id", "workflow_type"],
            )?,
            operations: IntCounterVec::new(
                Opts::new(
                    "cards_operations_total",
                    "Cards operations handled, by outcome (ok, invalid_input, not_found, conflict, error)",
                ),
                &["operation", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cards_operation_duration_seconds",
                    "Time one cards operation took, answer or error",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["operation"],
            )?,
            tenants: Arc::new(TenantLabels::default()),
        };
        registry.register(Box::new(metrics.usage.clone()))?;
        registry.register(Box::new(metrics.workflow_fetched.clone()))?;
        registry.register(Box::new(metrics.operations.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        Ok(metrics)
    }

    /// Counts one card fetched for the first time by a job or request.
    pub fn fetched(&self, tenant: &str, card_type: &str, source: Source, workflow: Option<&str>) {
        let tenant = self.tenants.label(tenant);
        self.usage
            .with_label_values(&[tenant.as_str(), card_type, source.as_str()])
            .inc();
        if source == Source::Workflow {
            self.workflow_fetched
                .with_label_values(&[tenant.as_str(), workflow.unwrap_or("unknown")])
                .inc();
        }
    }

    /// Counts one operation and its duration.
    pub fn observe(&self, operation: &str, outcome: &str, seconds: f64) {
        self.operations
            .with_label_values(&[operation, outcome])
            .inc();
        self.duration
            .with_label_values(&[operation])
            .observe(seconds);
    }
}
