//! Calls to workers' service endpoints (`svc.<kind>.<op>`): the cards, task, integration and
//! research routes send a job over request/reply and answer with its output. One place builds
//! the job, maps the transport's failures, and turns a worker's failure into a problem:
//! invalid input 422 naming the field, not found 404, stale version 412, refused 502 with the
//! worker's reason, unavailable 503 (with `Retry-After` when the worker named a delay).

use std::time::Duration;

use async_nats::{RequestErrorKind, service::NATS_SERVICE_ERROR_CODE};
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use switchyard_catalog::{Catalog, SchemaError};
use switchyard_proto::{
    ContentType, ErrorCode, Job, JobError, JobResult, JobStatus, decode, encode_proto,
    header as bus_header, now_ms, subject,
};
use tracing::warn;

use crate::{
    Error,
    bus::Bus,
    call::CallMeta,
    error::{FieldError, Problem},
};

/// Why a call to a worker did not produce its output. Kept here rather than in
/// [`crate::Error`] because these answers carry the worker's own reason to the client (a 502
/// says what ClickUp refused), which the gateway's 5xx never do; the one mapping to HTTP is
/// [`WorkerError::problem`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The request failed before reaching the worker, as any other request would.
    #[error(transparent)]
    Gateway(#[from] Error),
    /// The input does not fit the operation (checked here, or by the worker).
    #[error("the input of {operation} is invalid")]
    InvalidInput {
        operation: &'static str,
        problems: Vec<SchemaError>,
    },
    /// The external system refused, or the worker cannot do it as configured: retrying the
    /// same request will not help. `message` is the worker's, with the API's reason.
    #[error("{0}")]
    Refused(String),
    /// The thing asked about does not exist for this tenant (`ERROR_CODE_NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// It changed since the version the request was based on (`ERROR_CODE_CONFLICT`).
    #[error("{0}")]
    Stale(String),
    /// The worker's failure is worth retrying later: a rate limit, an outage, another
    /// delivery of the same job in flight. `message` is the worker's and goes to the log, not
    /// to the client.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// No answer within the request's deadline; the job may still run.
    #[error(
        "the {0} worker did not answer in time; the effect may still happen: retry with the same Idempotency-Key"
    )]
    TimedOut(&'static str),
    /// Nobody serves the operation: the worker kind named is not running.
    #[error("the {0} worker is not running")]
    NotRunning(&'static str),
}

impl WorkerError {
    fn problem(&self) -> Problem {
        let (status, kind, title) = match self {
            WorkerError::Gateway(e) => return e.problem(),
            WorkerError::InvalidInput { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid operation input",
            ),
            WorkerError::Refused(_) => (
                StatusCode::BAD_GATEWAY,
                "refused",
                "The worker refused the request",
            ),
            WorkerError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            WorkerError::Stale(_) => (
                StatusCode::PRECONDITION_FAILED,
                "stale-version",
                "It changed since that version",
            ),
            WorkerError::Unavailable { .. }
            | WorkerError::TimedOut(_)
            | WorkerError::NotRunning(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
        };
        let errors: Vec<FieldError> = match self {
            WorkerError::InvalidInput { problems, .. } => problems
                .iter()
                .map(|p| FieldError {
                    path: if p.path.is_empty() {
                        "body".to_owned()
                    } else {
                        p.path.clone()
                    },
                    message: p.message.clone(),
                    line: None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let detail = match self {
            WorkerError::InvalidInput { problems, .. } => problems
                .first()
                .map(|p| format!("{}: {}", p.path, p.message))
                .unwrap_or_else(|| self.to_string()),
            // The worker's own words (a database or an API outage) stay in the log.
            WorkerError::Unavailable { .. } => "the worker cannot do it now; retry later".into(),
            _ => self.to_string(),
        };
        Problem {
            kind: format!("urn:switchyard:problem:{kind}"),
            title,
            status: status.as_u16(),
            detail,
            field: errors.first().map(|e| e.path.clone()),
            errors,
            instance_id: None,
            may_have_been_stored: None,
            correlation_id: String::new(),
            internal: matches!(self, WorkerError::Unavailable { .. }).then(|| self.to_string()),
        }
    }
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        if let WorkerError::Gateway(e) = self {
            return e.into_response();
        }
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = status.into_response();
        if let WorkerError::Unavailable {
            retry_after_secs: Some(secs),
            ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        // The observe layer renders the body with the correlation id.
        response.extensions_mut().insert(problem);
        response
    }
}

/// The worker kind of an operation (`integration` for `integration.clickup.create_task`) and
/// the request/reply subject its workers serve it on (`svc.integration.clickup.create_task`).
pub(crate) fn service_subject(operation: &'static str) -> (&'static str, String) {
    let (kind, suffix) = operation.split_once('.').unwrap_or((operation, ""));
    (kind, format!("{}.{suffix}", subject::service_group(kind)))
}

/// Why a job sent to a worker's service endpoint got no result.
enum SendFailure {
    /// No worker of the kind serves the operation.
    NotRunning,
    /// No answer within the request's deadline; the job may still run.
    TimedOut,
    /// Anything else, as the gateway's own error.
    Gateway(Error),
}

/// Sends `input` as job `job_id` of `operation` to a worker's service endpoint
/// (`svc.<kind>.<op>`) and returns its result, within the request's deadline less a moment,
/// so a slow call ends in a problem that says what to do rather than in a bare 408.
async fn send_job(
    bus: &Bus,
    meta: &CallMeta,
    request_timeout: Duration,
    operation: &'static str,
    job_id: &str,
    input: &Value,
) -> Result<JobResult, SendFailure> {
    let (kind, service) = service_subject(operation);
    let timeout = request_timeout
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    let now = now_ms();
    let job = Job {
        job_id: job_id.to_owned(),
        tenant: meta.tenant.clone(),
        operation: operation.to_owned(),
        input: serde_json::to_vec(input)
            .map_err(|e| SendFailure::Gateway(Error::internal("encoding a job", e)))?,
        deadline_ms: now + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2),
        correlation_id: meta.correlation_id.clone(),
        created_at_ms: now,
        ..Job::default()
    };
    let mut headers = meta.headers();
    headers.insert(bus_header::CONTENT_TYPE, bus_header::PROTOBUF);
    headers.insert(bus_header::TENANT, meta.tenant.as_str());
    let request = async_nats::Request::new()
        .payload(encode_proto(&job).into())
        .headers(headers)
        .timeout(Some(timeout));
    let reply = bus
        .client
        .send_request(service, request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => SendFailure::NotRunning,
            RequestErrorKind::TimedOut => SendFailure::TimedOut,
            RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                SendFailure::Gateway(Error::internal("calling a worker", format!("{kind}: {e}")))
            }
            RequestErrorKind::Other => SendFailure::Gateway(Error::unavailable(
                "calling a worker",
                format!("{kind}: {e}"),
            )),
        })?;
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_SERVICE_ERROR_CODE))
    {
        return Err(SendFailure::Gateway(Error::internal(
            "calling a worker",
            format!("the {kind} worker refused the request (service error {code})"),
        )));
    }
    decode(ContentType::Protobuf, &reply.payload).map_err(|e| {
        SendFailure::Gateway(Error::internal(
            "decoding a worker's answer",
            format!("{kind}: {e}"),
        ))
    })
}

/// Checks `input` against the operation's catalog schema (operations the catalog does not
/// list, such as an outside worker's, are the worker's to check), then asks a worker of the
/// operation's kind to run it as job `job_id` and returns its output. The call ends a moment
/// before `request_timeout`, so a slow worker is a problem that says what to do.
pub(crate) async fn call_worker(
    bus: &Bus,
    meta: &CallMeta,
    request_timeout: Duration,
    operation: &'static str,
    job_id: String,
    input: Value,
) -> Result<Value, WorkerError> {
    let (kind, _) = service_subject(operation);
    if let Some(spec) = Catalog::builtin().get(operation) {
        spec.input
            .validate(&input)
            .map_err(|problems| WorkerError::InvalidInput {
                operation,
                problems,
            })?;
    }
    let result = send_job(bus, meta, request_timeout, operation, &job_id, &input)
        .await
        .map_err(|failure| match failure {
            SendFailure::NotRunning => WorkerError::NotRunning(kind),
            SendFailure::TimedOut => WorkerError::TimedOut(kind),
            SendFailure::Gateway(e) => e.into(),
        })?;
    job_output(operation, &job_id, result)
}

/// The output of a finished job, or its failure as a [`WorkerError`].
pub(crate) fn job_output(
    operation: &'static str,
    job_id: &str,
    result: JobResult,
) -> Result<Value, WorkerError> {
    if JobStatus::try_from(result.status) == Ok(JobStatus::Succeeded) {
        return serde_json::from_slice(&result.output).map_err(|e| {
            Error::internal("decoding a worker's output", format!("{operation}: {e}")).into()
        });
    }
    let error = result.error.unwrap_or_default();
    let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
    warn!(job_id, operation, code = code.as_str_name(), error = %error.message, "worker call failed");
    Err(worker_error(operation, code, error))
}

/// The one mapping from a worker's failure, as it crossed the bus, to what the HTTP caller
/// gets: by code and typed fields only; the message is for people.
fn worker_error(operation: &'static str, code: ErrorCode, error: JobError) -> WorkerError {
    let JobError {
        message,
        retry_after_ms,
        field,
        ..
    } = error;
    match code {
        ErrorCode::InvalidInput => WorkerError::InvalidInput {
            operation,
            problems: vec![SchemaError {
                path: field,
                message,
            }],
        },
        ErrorCode::NotFound => WorkerError::NotFound(message),
        ErrorCode::Conflict => WorkerError::Stale(message),
        ErrorCode::Permanent => WorkerError::Refused(message),
        ErrorCode::RetriesExhausted
        | ErrorCode::DeadlineExceeded
        | ErrorCode::Cancelled
        | ErrorCode::Unavailable => {
            WorkerError::Unavailable {
                // Whole seconds for `Retry-After`, rounded up so the caller never comes early.
                retry_after_secs: (retry_after_ms > 0).then(|| retry_after_ms.div_ceil(1000)),
                message,
            }
        }
        ErrorCode::Unspecified | ErrorCode::UnknownOperation | ErrorCode::Decode => {
            Error::internal("a worker failed", format!("{operation}: {message}")).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_their_workers_subjects() {
        assert_eq!(
            service_subject("integration.clickup.create_task"),
            (
                "integration",
                "svc.integration.clickup.create_task".to_owned()
            )
        );
        assert_eq!(
            service_subject("integration.status"),
            ("integration", "svc.integration.status".to_owned())
        );
        assert_eq!(
            service_subject("research.topic"),
            ("research", "svc.research.topic".to_owned())
        );
    }

    fn failed(code: ErrorCode, message: &str) -> JobResult {
        JobResult {
            status: JobStatus::Failed as i32,
            error: Some(JobError {
                code: code as i32,
                message: message.into(),
                ..JobError::default()
            }),
            ..JobResult::default()
        }
    }

    fn problem_of(result: JobResult) -> Problem {
        job_output("integration.clickup.create_task", "j", result)
            .unwrap_err()
            .problem()
    }

    #[test]
    fn every_wire_code_has_its_http_status() {
        // An exhaustive list: a new code fails to compile in `worker_error` until it has a
        // status, and must be added here with the one it got.
        for code in [
            ErrorCode::Unspecified,
            ErrorCode::InvalidInput,
            ErrorCode::Permanent,
            ErrorCode::RetriesExhausted,
            ErrorCode::DeadlineExceeded,
            ErrorCode::UnknownOperation,
            ErrorCode::Decode,
            ErrorCode::Cancelled,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::Unavailable,
        ] {
            let expected = match code {
                ErrorCode::InvalidInput => 422,
                ErrorCode::NotFound => 404,
                ErrorCode::Conflict => 412,
                ErrorCode::Permanent => 502,
                ErrorCode::RetriesExhausted
                | ErrorCode::DeadlineExceeded
                | ErrorCode::Cancelled
                | ErrorCode::Unavailable => 503,
                ErrorCode::Unspecified | ErrorCode::UnknownOperation | ErrorCode::Decode => 500,
            };
            // The same words under every code: only the code decides.
            let p = problem_of(failed(code, "not found: version conflict: retry after 9s"));
            assert_eq!(p.status, expected, "{code:?}");
        }
    }

    #[test]
    fn worker_failures_become_problems_with_their_reason_and_typed_fields() {
        let mut invalid = failed(ErrorCode::InvalidInput, "\"ada\" is not a ClickUp user id");
        invalid.error.as_mut().unwrap().field = "assignees".into();
        let p = problem_of(invalid);
        assert_eq!((p.status, p.field.as_deref()), (422, Some("assignees")));

        let p = problem_of(failed(
            ErrorCode::Permanent,
            "ClickUp refused the call (401): Token invalid (OAUTH_025)",
        ));
        assert_eq!(p.status, 502);
        assert!(p.detail.contains("Token invalid (OAUTH_025)"), "{p:?}");

        // The delay travels as a number; the text does not matter.
        let mut limited = failed(ErrorCode::RetriesExhausted, "ClickUp rate limited the call");
        limited.error.as_mut().unwrap().retry_after_ms = 2_500;
        let e = job_output("integration.clickup.create_task", "j", limited).unwrap_err();
        assert!(
            matches!(
                e,
                WorkerError::Unavailable {
                    retry_after_secs: Some(3),
                    ..
                }
            ),
            "{e:?}"
        );
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");

        let e = job_output(
            "integration.clickup.create_task",
            "j",
            failed(
                ErrorCode::RetriesExhausted,
                "ClickUp is unavailable (retry after 5s): HTTP 502",
            ),
        )
        .unwrap_err();
        let p = e.problem();
        assert_eq!(p.status, 503);
        assert!(!p.detail.contains("HTTP 502"), "no worker text: {p:?}");
        assert_eq!(
            p.internal.as_deref(),
            Some("ClickUp is unavailable (retry after 5s): HTTP 502")
        );
        assert!(
            matches!(
                e,
                WorkerError::Unavailable {
                    retry_after_secs: None,
                    ..
                }
            ),
            "a delay written in the text is not read: {e:?}"
        );
        assert_eq!(
            WorkerError::NotRunning("integration").problem().detail,
            "the integration worker is not running"
        );
    }
}
