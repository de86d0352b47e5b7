//! Metric names and help texts of the integration worker, in one place. Labels come from
//! bounded sets: the [`System`] called and a fixed outcome.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The external system a call goes to, as the `system` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Notion,
    Slack,
    ClickUp,
    Webhook,
    Markdown,
    Mcp,
}

impl System {
    pub fn as_str(self) -> &'static str {
        match self {
            System::Notion => "notion",
            System::Slack => "slack",
            System::ClickUp => "clickup",
            System::Webhook => "webhook",
            System::Markdown => "markdown",
            System::Mcp => "mcp",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Notion => "Notion",
            System::Slack => "Slack",
            System::ClickUp => "ClickUp",
            System::Webhook => "the webhook receiver",
            System::Markdown => "the Markdown sink",
            System::Mcp => "the MCP server",
        })
    }
}

/// `cross_system_calls_total` and `cross_system_call_duration_seconds`.
#[derive(Debug, Clone)]
pub struct Metrics {
    calls: IntCounterVec,
    duration: HistogramVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Metrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "cross_system_calls_total",
                    "Calls to external systems (and writes to the Markdown sink), by outcome",
                ),
                &["system", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "cross_system_call_duration_seconds",
                    "Time one call to an external system took, answer or error",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["system"],
            )?,
        };
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        Ok(metrics)
    }

    /// Counts one call and its duration.
    pub fn observe(&self, system: System, outcome: &str, seconds: f64) {
        self.calls
            .with_label_values(&[system.as_str(), outcome])
            .inc();
        self.duration
            .with_label_values(&[system.as_str()])
            .observe(seconds);
    }
}
