//! `POST /api/v1/research`: a topic researched by the research worker (`research.topic`) and
//! answered in the same request — summary, key points and the sources with their scores.
//! A request/reply call to the worker's service endpoint, rate-limited per user.

use axum::Json;
use serde_json::Value;

use axum::http::Method;

use crate::{
    Permission,
    extract::{Ctx, JsonBody},
    limits::Group,
    route::{Deadline, RouteDef, route},
    workers::WorkerError,
};

/// The operation the route runs.
pub(crate) const TOPIC: &str = "research.topic";

#[utoipa::path(
    post,
    path = "/api/v1/research",
    tag = "research",
    request_body(content = Object, description = "What to research; the schema is the one the body is checked against"),
    responses(
        (status = 200, description = "`{summary, key_points, sources[{title, location, snippet, score, origin}], found, skipped}`; `found` is false when no source covered the topic", body = Object),
        crate::responses::TaskErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn research(
    ctx: Ctx,
    JsonBody(mut body): JsonBody<Value>,
) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    // Over HTTP, sources that cannot be read are reported in the answer (`found: false`,
    // `skipped`) unless the caller asks for a failure.
    if let Some(map) = body.as_object_mut()
        && map.get("allow_unread").is_none_or(Value::is_null)
    {
        map.insert("allow_unread".into(), Value::Bool(true));
    }
    let job_id = ctx.derived_id(&["research"]);
    ctx.call_worker(TOPIC, job_id, body).await.map(Json)
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![route(
        M::POST,
        "/api/v1/research",
        Group::Research,
        Deadline::Request,
        research,
    )]
}
