//! The outermost layer: the correlation id in and out, the request span, metrics, and the
//! rendering of every error as `application/problem+json` — including the bare responses that
//! tower-http (408, 413) and axum (404, 405) produce.

use std::time::Instant;

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use switchyard_proto::header::CORRELATION_ID;
use switchyard_runtime::telemetry::{self, TraceContext};
use tracing::Instrument as _;

use crate::{
    AppState, Error,
    error::{PROBLEM_JSON, Problem},
    metrics::method_label,
};

/// Longest correlation id accepted from a client.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// The id that follows one request through the gateway, the bus and every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    /// The client's `X-Correlation-ID` when it is at most 128 characters of `[A-Za-z0-9._-]`,
    /// else a fresh uuid v7.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(CORRELATION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_valid(v))
            .map(|v| CorrelationId(v.to_owned()))
            .unwrap_or_else(|| CorrelationId(uuid::Uuid::now_v7().to_string()))
    }
}

/// The trace context the request's span hands on to the bus: `traceparent` and `tracestate`
/// of the gateway's span when tracing is on, else the caller's, bounded in size.
pub(crate) fn outgoing_trace(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
) -> TraceContext {
    if let Some(trace) = extensions.get::<TraceContext>()
        && trace.traceparent.is_some()
    {
        return trace.clone();
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 512)
            .map(str::to_owned)
    };
    TraceContext {
        traceparent: text(switchyard_proto::header::TRACEPARENT),
        tracestate: text(switchyard_proto::header::TRACESTATE),
    }
}

fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CORRELATION_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) async fn observe(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let correlation = CorrelationId::from_headers(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    req.extensions_mut().insert(correlation.clone());
    let span = tracing::info_span!(
        "http_request",
        correlation_id = %correlation.0,
        trace_id = tracing::field::Empty,
        http.request.method = method,
        http.route = %route,
    );
    // The request's span continues the caller's trace (or starts one); what the handlers
    // publish carries this span's context.
    let trace = telemetry::continue_trace(&span, &telemetry::HttpExtractor(req.headers()));
    req.extensions_mut().insert(trace);
    let metrics = state.metrics();
    let in_flight = InFlight::enter(metrics.in_flight.with_label_values(&[route.as_str()]));
    let response = next.run(req).instrument(span.clone()).await;
    drop(in_flight);
    let response = span.in_scope(|| {
        let response = finish(response, &correlation, state.settings().body_limit);
        tracing::debug!(
            http.response.status_code = response.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "request answered"
        );
        response
    });
    metrics
        .requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    metrics
        .duration
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// One request in the in-flight gauge, until answered or dropped (the client went away).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Renders the problem of an error response and stamps the correlation id on every response.
fn finish(mut response: Response, correlation: &CorrelationId, body_limit: usize) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(p) => Some(p),
        None if (status.is_client_error() || status.is_server_error()) && !is_problem => {
            Some(bare_status_problem(status, body_limit))
        }
        None => None,
    };
    if let Some(problem) = problem {
        if let Some(internal) = &problem.internal {
            tracing::error!(status = status.as_u16(), error = %internal, "request failed");
        }
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(problem.render(&correlation.0));
    }
    if let Ok(value) = HeaderValue::from_str(&correlation.0) {
        response.headers_mut().insert(
            HeaderName::from_bytes(CORRELATION_ID.as_bytes())
                .unwrap_or(HeaderName::from_static("x-correlation-id")),
            value,
        );
    }
    response
}

/// The problem for a response some layer produced with a status and no body.
fn bare_status_problem(status: StatusCode, body_limit: usize) -> Problem {
    let error = match status {
        StatusCode::NOT_FOUND => Error::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => Error::MethodNotAllowed,
        StatusCode::REQUEST_TIMEOUT => Error::Timeout,
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge { limit: body_limit },
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(String::new()),
        s if s.is_client_error() => Error::BadRequest(
            s.canonical_reason()
                .unwrap_or("the request was refused")
                .to_lowercase(),
        ),
        s => Error::internal(
            "a layer answered without a body",
            format!("status {}", s.as_u16()),
        ),
    };
    let mut problem = error.problem();
    problem.status = status.as_u16();
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_accepted_only_when_safe() {
        let mut h = HeaderMap::new();
        h.insert("x-correlation-id", HeaderValue::from_static("req-1.a_B"));
        assert_eq!(CorrelationId::from_headers(&h).0, "req-1.a_B");
        h.insert("x-correlation-id", HeaderValue::from_static("a b"));
        assert_ne!(CorrelationId::from_headers(&h).0, "a b");
        let long = "x".repeat(129);
        h.insert("x-correlation-id", HeaderValue::from_str(&long).unwrap());
        assert_eq!(CorrelationId::from_headers(&h).0.len(), 36);
    }
}
