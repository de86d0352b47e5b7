//! What the routes answer besides their own bodies: the 202 of an accepted start, and the
//! documented sets of `application/problem+json` answers that routes list in their OpenAPI
//! annotations.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response as ApiResponse},
};

use crate::error::PROBLEM_JSON;

/// Where an instance's status is, relative to this host.
pub(crate) fn status_url(instance_id: &str) -> String {
    format!("/api/v1/workflows/status/{instance_id}")
}

pub(crate) fn accepted(instance_id: &str) -> Response {
    let url = status_url(instance_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(json!({ "instance_id": instance_id, "status_url": url })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A start, cancel or signal the bus has stored; follow `status_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The instance, e.g. `0193c7a2-…`.
    pub instance_id: String,
    /// Where its status is, relative to this host.
    pub status_url: String,
}

/// A signal the bus has stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalAccepted {
    pub instance_id: String,
    /// The signal's id; the same `Idempotency-Key` gives the same id and one delivery.
    pub signal_id: String,
    pub status_url: String,
}

/// What each error status means, said once for every route.
fn problem_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed JSON (with line and column) or a bad field, named in `field`",
        401 => "No valid bearer token",
        403 => "The token's roles do not allow this",
        404 => "No such instance, workflow or definition for this tenant",
        408 => "The request took longer than `gateway.request_timeout`",
        409 => "The instance already finished, or the version exists with other content",
        412 => "The card changed since the version in `If-Match`; read it again",
        413 => "The body is over `gateway.body_limit`",
        415 => "Unsupported content type",
        422 => "The input fails the workflow's input schema; `errors[]` names each path",
        429 => "Over the tenant's rate for this route group; see `Retry-After`",
        502 => "The external service refused; its reason is in `detail`",
        503 => {
            "The bus, the workflow engine or a worker cannot be reached, or the external \
                service is rate limiting (see `Retry-After`). A start the bus did not confirm \
                names its `instance_id` with `may_have_been_stored: true`: repeat it with the \
                same `Idempotency-Key` (the response's, if none was sent)"
        }
        _ => "An error",
    }
}

/// The documented `application/problem+json` answers for `statuses`.
fn problems(statuses: &[u16]) -> BTreeMap<String, RefOr<ApiResponse>> {
    let mut out = BTreeMap::new();
    for &status in statuses {
        let response = ResponseBuilder::new()
            .description(problem_description(status))
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        out.insert(status.to_string(), RefOr::T(response));
    }
    out
}

/// Declares a set of error answers that routes list in `responses(...)`.
macro_rules! problem_set {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal),*];)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<ApiResponse>> {
                problems(&[$($status),*])
            }
        }
    )*};
}

problem_set! {
    /// Trigger and execute.
    StartErrors = [400, 401, 403, 404, 408, 413, 415, 422, 429, 503];
    /// Reads of instances, events and definitions.
    ReadErrors = [400, 401, 403, 404, 408, 429, 503];
    /// Cancel and signal.
    ControlErrors = [400, 401, 403, 404, 408, 409, 413, 415, 429, 503];
    /// Registering, deleting and validating definitions.
    DefinitionWriteErrors = [400, 401, 403, 404, 408, 409, 413, 415, 429, 503];
    /// Tasks created and updated in an external service through the integration worker.
    TaskErrors = [400, 401, 403, 404, 408, 413, 415, 422, 429, 502, 503];
    /// Card reads (and deletes) through the cards worker.
    CardReadErrors = [400, 401, 403, 404, 408, 415, 422, 429, 503];
    /// Card writes through the cards worker.
    CardWriteErrors = [400, 401, 403, 408, 413, 415, 422, 429, 503];
    /// Card updates: also a missing card and a stale `If-Match`.
    CardUpdateErrors = [400, 401, 403, 404, 408, 412, 413, 415, 422, 429, 503];
    /// Reads from the ledger: a bad parameter is a 400, a cursor it cannot use a 422.
    LedgerReadErrors = [400, 401, 403, 408, 422, 429, 503];
    /// Routes that only authenticate and ask the bus.
    AuthErrors = [401, 403, 408, 429, 503];
}
