//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/openapi.json`. A test checks that it lists exactly the routes the router serves.

use axum::{Json, http::header, response::IntoResponse};
use serde_json::Value;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use switchyard_proto::orchestrator as contract;

use crate::{
    error::{FieldError, Problem},
    responses,
};

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
        crate::api::workflows::trigger,
        crate::api::workflows::execute,
        crate::api::workflows::status,
        crate::api::workflows::instance,
        crate::api::events::stream,
        crate::api::workflows::cancel,
        crate::api::workflows::signal,
        crate::api::definitions::list_definitions,
        crate::api::definitions::validate_definition,
        crate::api::definitions::get_definition,
        crate::api::definitions::put_definition,
        crate::api::definitions::delete_definition,
        crate::api::operations::registry,
        crate::api::meetings::process,
        crate::api::meetings::context,
        crate::api::meetings::create_task,
        crate::api::meetings::update_task_status,
        crate::api::meetings::integrations_status,
        crate::api::research::research,
        crate::api::cards::create,
        crate::api::cards::batch,
        crate::api::cards::retrieve,
        crate::api::cards::list,
        crate::api::cards::get,
        crate::api::cards::update,
        crate::api::cards::delete,
        crate::api::cards::versions,
        crate::api::cards::register_type,
        crate::api::cards::onboarding,
        crate::api::ledger::usage,
        crate::api::ledger::instances,
        crate::api::ledger::stats,
        crate::api::ledger::audit_log,
        crate::api::operations::health,
        crate::api::operations::ready,
        crate::api::operations::metrics,
        serve,
    ),
    components(
        schemas(
            Problem, FieldError, responses::Accepted, responses::SignalAccepted, contract::InstanceView,
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
