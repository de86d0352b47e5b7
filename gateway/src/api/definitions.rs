//! `/api/v1/workflows/definitions…`: list, read, register, validate and delete definitions
//! through the workflow engine.

use axum::{
    Json,
    extract::{Path, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use switchyard_proto::orchestrator::{
    DefinitionDetail, DefinitionList, DefinitionRef, DefinitionSource, DefinitionsList,
    DeleteDefinition, DeleteReply, Endpoint, GetDefinition, ListDefinitions, PutDefinition,
    ValidateDefinition, ValidateReply,
};

use crate::{
    Error, Permission,
    extract::{Ctx, check_token, definition_source, query_of},
    limits::Group,
    route::{Deadline, RouteDef, route},
    state::AppState,
};

// ---- definitions ----

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    include_deleted: bool,
}

#[derive(Debug, Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions",
    tag = "definitions",
    params(("include_deleted" = Option<bool>, Query, description = "Also list deleted versions")),
    responses(
        (status = 200, description = "Every definition version the tenant sees", body = DefinitionList),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_definitions(
    ctx: Ctx,
    uri: axum::http::Uri,
) -> Result<Json<DefinitionList>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: ListQuery = query_of(&uri)?;
    ctx.query::<ListDefinitions>(&DefinitionsList {
        tenant: ctx.tenant().to_owned(),
        include_deleted: q.include_deleted,
    })
    .await
    .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "The workflow name"),
        ("version" = Option<u32>, Query, description = "A version; the latest when absent")
    ),
    responses(
        (status = 200, description = "The definition with its text", body = DefinitionDetail),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DefinitionDetail>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    definition_query::<GetDefinition>(&ctx, name, &uri).await
}

/// Asks the engine's endpoint `E` about the definition `name` (`?version=N` optional).
async fn definition_query<E: Endpoint<Request = DefinitionRef>>(
    ctx: &Ctx,
    name: String,
    uri: &axum::http::Uri,
) -> Result<Json<E::Reply>, Error> {
    let q: VersionQuery = query_of(uri)?;
    ctx.query::<E>(&DefinitionRef {
        tenant: ctx.tenant().to_owned(),
        name,
        version: q.version,
    })
    .await
    .map(Json)
}

#[utoipa::path(
    delete,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "The workflow name"),
        ("version" = Option<u32>, Query, description = "One version; every version when absent")
    ),
    responses(
        (status = 200, description = "What was deleted; running instances keep their version", body = DeleteReply),
        crate::responses::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DeleteReply>, Error> {
    ctx.require(Permission::DefinitionsWrite)?;
    let reply = definition_query::<DeleteDefinition>(&ctx, name.clone(), &uri).await?;
    let version = query_of::<VersionQuery>(&uri)?
        .version
        .map_or_else(|| "all".to_owned(), |v| v.to_string());
    ctx.audit(
        switchyard_proto::audit::DEFINITION_DELETE,
        &name,
        [
            ("version".to_owned(), version),
            ("deleted".to_owned(), reply.0.deleted.to_string()),
        ]
        .into(),
    );
    Ok(reply)
}

#[utoipa::path(
    put,
    path = "/api/v1/workflows/definitions/{name}",
    tag = "definitions",
    params(("name" = String, Path, description = "The workflow name; must match `name` in the definition")),
    request_body(content = Object, description = "The definition as a YAML mapping (`application/yaml`, `text/yaml`, `text/plain`), or JSON `{\"source\": \"…\"}` holding that YAML", content_type = "application/yaml"),
    responses(
        (status = 201, description = "A new version was registered", body = switchyard_proto::orchestrator::PutReply),
        (status = 200, description = "The same version with the same text was registered already", body = switchyard_proto::orchestrator::PutReply),
        crate::responses::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_definition(
    ctx: Ctx,
    Path(name): Path<String>,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, Error> {
    ctx.require(Permission::DefinitionsWrite)?;
    check_token("name", &name)?;
    let source = definition_source(req, &state).await?;
    // The name in the path must be the one in the text; when the text does not parse here,
    // the orchestrator reports why.
    if let Some(def) = state.definitions().parse(&source)
        && def.name != name
    {
        return Err(Error::field(
            "name",
            format!(
                "the path names {name:?} but the definition is {:?}",
                def.name
            ),
        ));
    }
    let reply = ctx
        .query::<PutDefinition>(&DefinitionSource {
            tenant: ctx.tenant().to_owned(),
            source,
        })
        .await?;
    ctx.audit(
        switchyard_proto::audit::DEFINITION_PUT,
        &name,
        [
            ("version".to_owned(), reply.version.to_string()),
            ("created".to_owned(), reply.created.to_string()),
        ]
        .into(),
    );
    if reply.created {
        let location = format!(
            "/api/v1/workflows/definitions/{name}?version={}",
            reply.version
        );
        let mut response = (StatusCode::CREATED, Json(reply)).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        Ok(response)
    } else {
        Ok((StatusCode::OK, Json(reply)).into_response())
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/definitions/validate",
    tag = "definitions",
    request_body(content = Object, description = "The definition as a YAML mapping, or JSON `{\"source\": \"…\"}` holding that YAML; a body that is no mapping at all is a 400, anything else is answered with its problems", content_type = "application/yaml"),
    responses(
        (status = 200, description = "Whether it is valid, and every problem with its path", body = ValidateReply),
        crate::responses::DefinitionWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate_definition(
    ctx: Ctx,
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<ValidateReply>, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let source = definition_source(req, &state).await?;
    ctx.query::<ValidateDefinition>(&DefinitionSource {
        tenant: ctx.tenant().to_owned(),
        source,
    })
    .await
    .map(Json)
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::GET,
            "/api/v1/workflows/definitions",
            Group::Read,
            Deadline::Request,
            list_definitions,
        ),
        route(
            M::POST,
            "/api/v1/workflows/definitions/validate",
            Group::Definitions,
            Deadline::Request,
            validate_definition,
        ),
        route(
            M::GET,
            "/api/v1/workflows/definitions/{name}",
            Group::Read,
            Deadline::Request,
            get_definition,
        ),
        route(
            M::PUT,
            "/api/v1/workflows/definitions/{name}",
            Group::Definitions,
            Deadline::Request,
            put_definition,
        ),
        route(
            M::DELETE,
            "/api/v1/workflows/definitions/{name}",
            Group::Definitions,
            Deadline::Request,
            delete_definition,
        ),
    ]
}
