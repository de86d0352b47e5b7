//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/openapi.json`. A test checks that it lists exactly the routes the router serves.

use std::collections::BTreeMap;

use axum::{Json, http::header, response::IntoResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::{
    IntoResponses, Modify, OpenApi, ToSchema,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        response::Response,
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use switchyard_proto::orchestrator as contract;

use crate::error::{FieldError, PROBLEM_JSON, Problem};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Run AI workflows on NATS JetStream: start them, follow their progress, \
            manage their definitions. Every `/api/v1` route needs a bearer JWT; the tenant comes \
            from the token. Errors are `application/problem+json` (RFC 9457). Every request may \
            send `X-Correlation-ID` (returned on every response) and a W3C `traceparent` / \
            `tracestate`, which the request's trace continues across the bus.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::routes::trigger,
        crate::routes::execute,
        crate::routes::status,
        crate::routes::instance,
        crate::events::stream,
        crate::routes::cancel,
        crate::routes::signal,
        crate::routes::list_definitions,
        crate::routes::validate_definition,
        crate::routes::get_definition,
        crate::routes::put_definition,
        crate::routes::delete_definition,
        crate::routes::registry,
        crate::meetings::process,
        crate::meetings::context,
        crate::meetings::create_task,
        crate::meetings::update_task_status,
        crate::meetings::integrations_status,
        crate::research::research,
        crate::cards::create,
        crate::cards::batch,
        crate::cards::retrieve,
        crate::cards::list,
        crate::cards::get,
        crate::cards::update,
        crate::cards::delete,
        crate::cards::versions,
        crate::cards::register_type,
        crate::cards::onboarding,
        crate::ledger::usage,
        crate::ledger::instances,
        crate::ledger::stats,
        crate::ledger::audit_log,
        crate::routes::health,
        crate::routes::ready,
        crate::routes::metrics,
        serve,
    ),
    components(
        schemas(
            Problem, FieldError, Accepted, SignalAccepted, contract::InstanceView,
            contract::StepView, contract::InstanceStatus, contract::StepStatus,
            contract::InstanceError, contract::StepError, contract::ItemsView,
            contract::SignalView, contract::DefinitionList, contract::DefinitionSummary,
            contract::DefinitionDetail, contract::DefinitionStep, contract::DefinitionScope,
            contract::PutReply, contract::DeleteReply, contract::ValidateReply,
            contract::Problem
        )
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "workflows", description = "Start, follow, cancel and signal workflow instances"),
        (name = "definitions", description = "Register, read, validate and delete workflow definitions"),
        (name = "operations", description = "Health, readiness, metrics, the worker registry and this document"),
        (name = "meetings", description = "Turn meeting transcripts into summaries and tasks, and read the results"),
        (name = "research", description = "Research a topic over the document corpus, given URLs and a search API"),
        (name = "integrations", description = "Create and update ClickUp tasks, and check which integrations work"),
        (name = "ledger", description = "Usage per meter, day or workflow; instance history and stats; the audit log"),
        (name = "cards", description = "Versioned content cards (company, audience, voice, insight, and a tenant's own types) and onboarding"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as JSON.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub(crate) async fn serve() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(document()),
    )
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
                service is rate limiting (see `Retry-After`)"
        }
        _ => "An error",
    }
}

/// The documented `application/problem+json` answers for `statuses`.
fn problems(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
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
            fn responses() -> BTreeMap<String, RefOr<Response>> {
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
    TaskErrors = [400, 401, 403, 408, 413, 415, 422, 429, 502, 503];
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
