//! The card and onboarding routes: create, read, update, delete, list and version content
//! cards, register the schema of a tenant's own card type, and turn onboarding answers into the
//! first cards. Each route is a request/reply call to the cards worker's service endpoint
//! (`svc.cards.<op>`) with the tenant from the token; the gateway keeps no card state.
//!
//! A body is checked against the operation's catalog schema before it is sent, so a bad field
//! is a 422 naming it without a round trip. Writes carry a job id derived from the
//! `Idempotency-Key` (the worker records each write's result by job id, so a retried request
//! gets the first answer); reads get a fresh id, which also names the request in the usage
//! events of the cards it fetched. `GET /cards/{id}` answers with an `ETag` of the card's
//! version and `PATCH` takes it back in `If-Match`: a stale version is a 412.

use axum::{
    Json,
    extract::{Path, Query},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use axum::http::Method;

use crate::{
    Error, Permission,
    extract::{Ctx, JsonBody},
    limits::Group,
    route::{Deadline, RouteDef, route},
    workers::WorkerError,
};

/// Catalog names of the operations called here.
pub(crate) const CREATE: &str = "cards.create";
pub(crate) const BATCH_CREATE: &str = "cards.batch_create";
pub(crate) const RETRIEVE: &str = "cards.retrieve";
pub(crate) const GET: &str = "cards.get";
pub(crate) const UPDATE: &str = "cards.update";
pub(crate) const DELETE: &str = "cards.delete";
pub(crate) const LIST: &str = "cards.list";
pub(crate) const VERSIONS: &str = "cards.versions";
pub(crate) const ONBOARD: &str = "cards.onboard";
pub(crate) const REGISTER_TYPE: &str = "cards.register_type";
/// A fresh job id, for reads.
fn fresh_id() -> String {
    Uuid::now_v7().to_string()
}

fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Error> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Error::field("query", e.body_text()))
}

/// `"<version>"`, the entity tag of a card at a version.
fn etag(card: &Value) -> Option<HeaderValue> {
    let version = card.get("version")?.as_i64()?;
    HeaderValue::from_str(&format!("\"{version}\"")).ok()
}

/// A card answer (`{card}`) with its `ETag`.
fn with_etag(status: StatusCode, output: Value) -> Response {
    let tag = output.get("card").and_then(etag);
    let mut response = (status, Json(output)).into_response();
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`; `None` without the header
/// (or with `*`, which any existing card matches).
fn if_match(headers: &HeaderMap) -> Result<Option<i32>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    // Versions are 32-bit in the store: a larger one cannot be a card's.
    bare.parse::<i32>()
        .ok()
        .filter(|v| *v >= 1)
        .map(Some)
        .ok_or_else(|| {
            Error::field(
                "If-Match",
                "expected the card's ETag, a version in quotes such as \"3\"",
            )
        })
}

/// A card id from the path: refused early when it cannot be one.
fn card_id(id: &str) -> Result<(), WorkerError> {
    if id.chars().count() <= 64 && !id.is_empty() {
        Ok(())
    } else {
        Err(Error::field("id", "not a card id").into())
    }
}

// ---- query parameters ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default, rename = "type")]
    card_type: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionParams {
    #[serde(default)]
    version: Option<i32>,
}

// ---- routes ----

/// Adds the caller as the writer, refusing a body that names one itself.
fn with_actor(ctx: &Ctx, mut body: Map<String, Value>) -> Result<Value, WorkerError> {
    if body.contains_key("actor") {
        return Err(Error::field("actor", "the writer comes from the token; leave it out").into());
    }
    body.insert("actor".into(), Value::String(ctx.caller.subject.clone()));
    Ok(Value::Object(body))
}

#[utoipa::path(
    post,
    path = "/api/v1/cards",
    tag = "cards",
    request_body(content = Object, description = "A card to create; the schema is the one the body is checked against"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first card instead of creating another")),
    responses(
        (status = 201, description = "`{card}` at version 1, with its `ETag`", body = Object),
        crate::responses::CardWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    ctx: Ctx,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let job_id = ctx.derived_id(&["job", CREATE]);
    let output = ctx
        .call_worker(CREATE, job_id, with_actor(&ctx, body)?)
        .await?;
    let location = output["card"]["id"]
        .as_str()
        .map(|id| format!("/api/v1/cards/{id}"));
    let mut response = with_etag(StatusCode::CREATED, output);
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/api/v1/cards/batch",
    tag = "cards",
    request_body(content = Object, description = "1 to 100 cards to create in one transaction; the schema is the one the body is checked against"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first cards")),
    responses(
        (status = 201, description = "`{cards}`, all created in one transaction (or none, with the failing `cards[i]` named)", body = Object),
        crate::responses::CardWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn batch(
    ctx: Ctx,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let named = body
        .get("cards")
        .and_then(Value::as_array)
        .and_then(|cards| cards.iter().position(|c| c.get("actor").is_some()));
    if let Some(i) = named {
        return Err(Error::field(
            format!("cards[{i}].actor"),
            "the writer comes from the token; leave it out",
        )
        .into());
    }
    let job_id = ctx.derived_id(&["job", BATCH_CREATE]);
    let output = ctx
        .call_worker(BATCH_CREATE, job_id, with_actor(&ctx, body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(output)).into_response())
}

#[utoipa::path(
    post,
    path = "/api/v1/cards/retrieve",
    tag = "cards",
    request_body(content = Object, description = "Cards to fetch at once; `allow_partial` is true when absent (with false, any missing id is a 404 naming it); the schema is the one the body is checked against"),
    responses(
        (status = 200, description = "`{cards, missing_ids, partial_result}`: the cards in the order asked; ids of missing, deleted or other tenants' cards in `missing_ids`", body = Object),
        crate::responses::CardReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retrieve(
    ctx: Ctx,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    if body.contains_key("workflow") {
        return Err(Error::field("workflow", "unknown field").into());
    }
    // Absent or null: partial answers are allowed over HTTP.
    if body.get("allow_partial").is_none_or(Value::is_null) {
        body.insert("allow_partial".into(), Value::Bool(true));
    }
    ctx.call_worker(RETRIEVE, fresh_id(), Value::Object(body))
        .await
        .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/cards",
    tag = "cards",
    params(
        ("type" = Option<String>, Query, description = "Only cards of this type"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 200; 50 when absent")
    ),
    responses(
        (status = 200, description = "`{cards, next_cursor?}`, newest first", body = Object),
        crate::responses::CardReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: ListParams = query_of(&uri)?;
    let mut input = Map::new();
    if let Some(t) = q.card_type {
        input.insert("type".into(), Value::String(t));
    }
    if let Some(c) = q.cursor {
        input.insert("cursor".into(), Value::String(c));
    }
    if let Some(l) = q.limit {
        input.insert("limit".into(), json!(l));
    }
    ctx.call_worker(LIST, fresh_id(), Value::Object(input))
        .await
        .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/cards/{id}",
    tag = "cards",
    params(
        ("id" = String, Path, description = "The card id"),
        ("version" = Option<u32>, Query, description = "A version; the latest when absent")
    ),
    responses(
        (status = 200, description = "`{card}`, with its version as the `ETag`", body = Object),
        crate::responses::CardReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    ctx: Ctx,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    card_id(&id)?;
    let q: VersionParams = query_of(&uri)?;
    let mut input = json!({ "card_id": id });
    if let Some(v) = q.version {
        input["version"] = json!(v);
    }
    let output = ctx.call_worker(GET, fresh_id(), input).await?;
    Ok(with_etag(StatusCode::OK, output))
}

#[utoipa::path(
    patch,
    path = "/api/v1/cards/{id}",
    tag = "cards",
    request_body(content = Object, description = "A change to a card: a new `title`, new `content` (checked against the card type's schema) or both; the schema is the one the body is checked against"),
    params(
        ("id" = String, Path, description = "The card id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` the change is based on; a card at another version answers 412"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first answer")
    ),
    responses(
        (status = 200, description = "`{card}` at its new version, with the new `ETag`", body = Object),
        crate::responses::CardUpdateErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update(
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    card_id(&id)?;
    for (name, from) in [("card_id", "the path"), ("expected_version", "If-Match")] {
        if body.contains_key(name) {
            return Err(Error::field(name, format!("comes from {from}; leave it out")).into());
        }
    }
    let expected = if_match(&headers)?;
    body.insert("card_id".into(), Value::String(id.clone()));
    if let Some(v) = expected {
        body.insert("expected_version".into(), json!(v));
    }
    let version = expected.map(|v| v.to_string()).unwrap_or_default();
    let job_id = ctx.derived_id(&["job", UPDATE, &id, &version]);
    let output = ctx
        .call_worker(UPDATE, job_id, with_actor(&ctx, body)?)
        .await?;
    Ok(with_etag(StatusCode::OK, output))
}

#[utoipa::path(
    delete,
    path = "/api/v1/cards/{id}",
    tag = "cards",
    params(("id" = String, Path, description = "The card id")),
    responses(
        (status = 200, description = "`{deleted}`: false when it was deleted already. Its versions are kept", body = Object),
        crate::responses::CardReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    card_id(&id)?;
    let job_id = ctx.derived_id(&["job", DELETE, &id]);
    ctx.call_worker(DELETE, job_id, json!({ "card_id": id }))
        .await
        .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/cards/{id}/versions",
    tag = "cards",
    params(("id" = String, Path, description = "The card id")),
    responses(
        (status = 200, description = "`{versions}`: the card at each version, oldest first", body = Object),
        crate::responses::CardReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn versions(ctx: Ctx, Path(id): Path<String>) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    card_id(&id)?;
    ctx.call_worker(VERSIONS, fresh_id(), json!({ "card_id": id }))
        .await
        .map(Json)
}

#[utoipa::path(
    put,
    path = "/api/v1/cards/types/{type}",
    tag = "cards",
    params(("type" = String, Path, description = "The type name: lowercase letters, digits and `_`; not a built-in type")),
    request_body(content = Object, description = "The JSON schema (draft 2020-12) of the type's content; its `type` must be `object`"),
    responses(
        (status = 200, description = "`{type, version, schema}`; cards of the type are checked against it from now on", body = Object),
        crate::responses::CardWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register_type(
    ctx: Ctx,
    Path(card_type): Path<String>,
    JsonBody(schema): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::DefinitionsWrite)?;
    if schema.is_empty() {
        return Err(Error::field("body", "expected a JSON schema object").into());
    }
    let job_id = ctx.derived_id(&["job", REGISTER_TYPE, &card_type]);
    ctx.call_worker(
        REGISTER_TYPE,
        job_id,
        json!({ "type": card_type, "schema": schema }),
    )
    .await
    .map(Json)
}

#[utoipa::path(
    post,
    path = "/api/v1/onboarding",
    tag = "cards",
    request_body(content = Object, description = "Onboarding answers; the schema is the one the body is checked against"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first cards")),
    responses(
        (status = 201, description = "`{card_ids, cards}`: the company, audience, voice and insight cards made from the answers", body = Object),
        crate::responses::CardWriteErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn onboarding(
    ctx: Ctx,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let job_id = ctx.derived_id(&["job", ONBOARD]);
    let output = ctx
        .call_worker(ONBOARD, job_id, with_actor(&ctx, body)?)
        .await?;
    Ok((StatusCode::CREATED, Json(output)).into_response())
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::POST,
            "/api/v1/cards",
            Group::Control,
            Deadline::Request,
            create,
        ),
        route(
            M::POST,
            "/api/v1/cards/batch",
            Group::Control,
            Deadline::Request,
            batch,
        ),
        route(
            M::POST,
            "/api/v1/cards/retrieve",
            Group::Read,
            Deadline::Request,
            retrieve,
        ),
        route(
            M::GET,
            "/api/v1/cards",
            Group::Read,
            Deadline::Request,
            list,
        ),
        route(
            M::GET,
            "/api/v1/cards/{id}",
            Group::Read,
            Deadline::Request,
            get,
        ),
        route(
            M::PATCH,
            "/api/v1/cards/{id}",
            Group::Control,
            Deadline::Request,
            update,
        ),
        route(
            M::DELETE,
            "/api/v1/cards/{id}",
            Group::Control,
            Deadline::Request,
            delete,
        ),
        route(
            M::GET,
            "/api/v1/cards/{id}/versions",
            Group::Read,
            Deadline::Request,
            versions,
        ),
        route(
            M::PUT,
            "/api/v1/cards/types/{type}",
            Group::Definitions,
            Deadline::Request,
            register_type,
        ),
        route(
            M::POST,
            "/api/v1/onboarding",
            Group::Start,
            Deadline::Request,
            onboarding,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::service_subject;
    use switchyard_catalog::Catalog;

    #[test]
    fn the_called_operations_map_to_the_worker_subjects() {
        for op in [
            CREATE,
            BATCH_CREATE,
            RETRIEVE,
            GET,
            UPDATE,
            DELETE,
            LIST,
            VERSIONS,
            ONBOARD,
        ] {
            assert!(Catalog::builtin().get(op).is_some(), "{op}");
        }
        assert_eq!(service_subject(GET).1, "svc.cards.get");
        assert_eq!(service_subject(REGISTER_TYPE).1, "svc.cards.register_type");
    }

    #[test]
    fn if_match_takes_quoted_weak_and_bare_versions() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&h("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&h("W/\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&h("*")).unwrap(), None);
        assert!(if_match(&h("\"abc\"")).is_err());
        assert!(if_match(&h("\"0\"")).is_err());
    }
}
