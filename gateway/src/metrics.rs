//! Metric names and help texts of the gateway, in one place. Labels come from bounded sets:
//! the route template (never the raw path), a known method or `other`, the status code, and
//! fixed authentication-failure reasons.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The gateway's metrics, registered once per [`crate::AppState`].
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGaugeVec,
    pub auth_failures: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub event_streams: IntGauge,
    pub audit_failures: IntCounter,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "switchyard_http_requests_total",
                    "HTTP requests answered, by route template, method and status",
                ),
                &["route", "method", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_http_request_duration_seconds",
                    "Time from a request's arrival to its response",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
                &["route", "method"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    "switchyard_http_requests_in_flight",
                    "HTTP requests being answered now, by route template",
                ),
                &["route"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "switchyard_auth_failures_total",
                    "Requests refused by authentication (401) or authorization (403), by reason",
                ),
                &["reason"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "switchyard_rate_limited_total",
                    "Requests refused with 429 because their tenant (or user) was over the route group's rate",
                ),
                &["group"],
            )?,
            event_streams: IntGauge::new(
                "switchyard_event_streams",
                "Server-Sent Event streams open now",
            )?,
            audit_failures: IntCounter::new(
                "switchyard_audit_failures_total",
                "Audit events the bus did not take (they are logged instead)",
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.auth_failures.clone()))?;
        registry.register(Box::new(metrics.rate_limited.clone()))?;
        registry.register(Box::new(metrics.event_streams.clone()))?;
        registry.register(Box::new(metrics.audit_failures.clone()))?;
        Ok(metrics)
    }
}

/// The `method` label: the standard methods, anything else as `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
