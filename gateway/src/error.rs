//! The gateway's error type and its one mapping to HTTP: status, problem type and the
//! `application/problem+json` body (RFC 9457).
//!
//! A handler returns an [`Error`]; its response carries a [`Problem`] in its extensions, and the
//! outermost middleware renders the body with the request's correlation id (see
//! `observe::finish`). 5xx bodies say only that something failed and give the correlation id;
//! the details go to the log.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use switchyard_proto::orchestrator::Problem as DefinitionProblem;

use crate::{
    limits::{Group, Limited, StreamsFull, retry_after_secs},
    permission::Permission,
};

/// Why a request failed, as something a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable bearer token; `reason` is a metric label (`missing`, `expired`, …).
    #[error("authentication failed: {reason}")]
    Unauthenticated { reason: &'static str },
    #[error("the token does not grant {permission}")]
    Forbidden { permission: Permission },
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        line: usize,
        column: usize,
        message: String,
    },
    /// A field of the request (body, path, query or header) has a bad value.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The orchestrator refused the request as malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("invalid workflow definition: {message}")]
    InvalidDefinition {
        message: String,
        problems: Vec<DefinitionProblem>,
    },
    #[error("workflow {name:?} is not registered")]
    UnknownWorkflow { name: String },
    #[error("{0}")]
    NotFound(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request took too long")]
    Timeout,
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` already used for a different request.
    #[error(
        "this Idempotency-Key was used for a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    /// Over the rate of the route group; come back after `retry_after`.
    #[error("too many {group} requests; retry in {}s", retry_after_secs(*retry_after))]
    RateLimited {
        group: Group,
        retry_after: std::time::Duration,
    },
    /// Over a cap of open event streams.
    #[error("{} already holds {limit} open event streams; close one first", if *tenant { "the tenant" } else { "this gateway" })]
    TooManyStreams { tenant: bool, limit: usize },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type {0:?}")]
    UnsupportedMediaType(String),
    #[error("input of workflow {workflow:?} does not match its input schema")]
    InvalidInput {
        workflow: String,
        problems: Vec<DefinitionProblem>,
    },
    /// The bus or the workflow engine could not be reached; nothing was done. Retry later.
    #[error("{action}: {reason}")]
    Unavailable {
        action: &'static str,
        reason: String,
    },
    /// A start the bus did not confirm within the gateway's patience: it may or may not have
    /// been stored. Repeating the request with the same `Idempotency-Key` finds out, and
    /// starts at most this instance.
    #[error("the start of instance {instance_id} was not confirmed: {reason}")]
    StartUnconfirmed { instance_id: String, reason: String },
    /// `/ready` says why the gateway cannot serve.
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("{action}: {reason}")]
    Internal {
        action: &'static str,
        reason: String,
    },
    /// Start-up: configuration, connection, binding.
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
}

impl From<StreamsFull> for Error {
    fn from(full: StreamsFull) -> Self {
        Error::TooManyStreams {
            tenant: full.tenant,
            limit: full.limit,
        }
    }
}

impl From<Limited> for Error {
    fn from(l: Limited) -> Self {
        Error::RateLimited {
            group: l.group,
            retry_after: l.retry_after,
        }
    }
}

impl Error {
    pub(crate) fn unavailable(action: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            action,
            reason: err.to_string(),
        }
    }

    pub(crate) fn internal(action: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Internal {
            action,
            reason: err.to_string(),
        }
    }

    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The problem this error is, with its status: the one place where errors become HTTP.
    pub fn problem(&self) -> Problem {
        use StatusCode as S;
        let (status, kind, title) = match self {
            Error::Unauthenticated { .. } => (S::UNAUTHORIZED, "unauthenticated", "Unauthorized"),
            Error::Forbidden { .. } => (S::FORBIDDEN, "forbidden", "Forbidden"),
            Error::MalformedJson { .. } => (S::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            Error::InvalidField { .. } => (S::BAD_REQUEST, "invalid-field", "Invalid request"),
            Error::BadRequest(_) => (S::BAD_REQUEST, "bad-request", "Bad request"),
            Error::InvalidDefinition { .. } => (
                S::BAD_REQUEST,
                "invalid-definition",
                "Invalid workflow definition",
            ),
            Error::UnknownWorkflow { .. } => (S::NOT_FOUND, "unknown-workflow", "Unknown workflow"),
            Error::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Error::RouteNotFound => (S::NOT_FOUND, "no-route", "Not found"),
            Error::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Error::Timeout => (S::REQUEST_TIMEOUT, "timeout", "Request timeout"),
            Error::Conflict(_) => (S::CONFLICT, "conflict", "Conflict"),
            Error::IdempotencyKeyReused => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            Error::RateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            }
            Error::TooManyStreams { .. } => (
                S::TOO_MANY_REQUESTS,
                "too-many-streams",
                "Too many event streams",
            ),
            Error::PayloadTooLarge { .. } => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Error::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Error::InvalidInput { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid workflow input",
            ),
            Error::Unavailable { .. } | Error::StartUnconfirmed { .. } => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            Error::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            Error::Internal { .. } | Error::Runtime(_) | Error::Metrics(_) | Error::Serve(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            }
        };
        let server_side = status.is_server_error() && !matches!(self, Error::NotReady(_));
        let mut problem = Problem {
            kind: format!("urn:switchyard:problem:{kind}"),
            title,
            status: status.as_u16(),
            // Clients never see internal error text; the log line has it.
            detail: if server_side {
                "the request could not be completed; quote the correlation id when reporting it"
                    .to_owned()
            } else {
                self.to_string()
            },
            field: None,
            errors: Vec::new(),
            instance_id: None,
            may_have_been_stored: None,
            correlation_id: String::new(),
            internal: server_side.then(|| self.to_string()),
        };
        match self {
            Error::StartUnconfirmed { instance_id, .. } => {
                problem.detail = format!(
                    "the bus did not confirm the start of instance {instance_id} in time, so it \
                     may have been stored; repeat the request with the same Idempotency-Key \
                     (the one in this response's header, if you sent none): it starts this \
                     instance at most once"
                );
                problem.instance_id = Some(instance_id.clone());
                problem.may_have_been_stored = Some(true);
            }
            Error::InvalidField { field, .. } => problem.field = Some(field.clone()),
            Error::IdempotencyKeyReused => problem.field = Some("Idempotency-Key".into()),
            Error::InvalidDefinition { problems, .. } | Error::InvalidInput { problems, .. } => {
                problem.errors = problems
                    .iter()
                    .map(|p| FieldError {
                        path: p.path.clone(),
                        message: p.message.clone(),
                        line: p.line,
                    })
                    .collect();
                if let [only] = problem.errors.as_slice() {
                    problem.field = Some(only.path.clone());
                }
            }
            _ => {}
        }
        problem
    }
}

/// An RFC 9457 problem body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// A start the bus did not confirm (`503`): the instance it would be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// A start the bus did not confirm (`503`): always `true`, the start may have been
    /// stored (its retry with the same key finds out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_have_been_stored: Option<bool>,
    pub correlation_id: String,
    /// For the log only.
    #[serde(skip)]
    pub internal: Option<String>,
}

/// One failing path of an input or a definition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = status.into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match &self {
                Error::Unauthenticated { reason: "missing" } => "Bearer realm=\"switchyard\"",
                _ => "Bearer realm=\"switchyard\", error=\"invalid_token\"",
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Error::RateLimited { retry_after, .. } = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(*retry_after)),
            );
        }
        response.extensions_mut().insert(problem);
        response
    }
}

impl Problem {
    /// The finished response body, stamped with the correlation id.
    pub(crate) fn render(mut self, correlation_id: &str) -> Vec<u8> {
        self.correlation_id = correlation_id.to_owned();
        serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_details() {
        let p = Error::internal("decoding a reply", "secret internals").problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret internals"));
        assert!(p.internal.as_deref().is_some_and(|i| i.contains("secret")));
        let p = Error::field("workflow_name", "must not be empty").problem();
        assert_eq!((p.status, p.field.as_deref()), (400, Some("workflow_name")));
    }
}
