//! Logging with `tracing`: JSON lines (or human-readable) carrying the fields of the current
//! span, so every line of a job carries its `correlation_id`, `job_id` and operation.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Call once, from a binary's `main`.
///
/// `RUST_LOG`, when set, takes precedence over `log_level` for ad-hoc debugging.
pub fn init(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log_level));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (e.g. two components in one test process) keeps the first subscriber.
    let _ = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
}
