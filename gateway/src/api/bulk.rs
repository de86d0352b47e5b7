//! `/api/v1/workflows/bulk/…`: actions on every instance of the caller's tenant a filter
//! selects, as the ledger lists them, bounded per call.

use axum::{Json, http::Method};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Error, Permission,
    api::{
        ledger::{INSTANCES, fresh_id, label_filter, window},
        workflows::{publish_cancel, rerun_instance},
    },
    extract::{Ctx, JsonBody, check_token},
    limits::Group,
    route::{Deadline, RouteDef, route},
    workers::WorkerError,
};

/// The most instances one call acts on.
pub(crate) const MAX_BULK: u32 = 1000;
/// Rows asked of the ledger per page.
const PAGE: u32 = 500;

/// Which running instances to cancel: at least one of `workflow`, `label`, `from` and `to`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkCancelRequest {
    /// Only instances of this workflow.
    #[serde(default)]
    workflow: Option<String>,
    /// Only instances started with this label, `key=value`.
    #[serde(default)]
    label: Option<String>,
    /// Only instances created at or after this time (as for the instance list).
    #[serde(default)]
    from: Option<String>,
    /// Only instances created before this time.
    #[serde(default)]
    to: Option<String>,
    /// Why, for the instances' status and the audit log.
    #[serde(default)]
    reason: Option<String>,
    /// At most this many, 1–1000 (default 1000); `more` says whether others matched.
    #[serde(default)]
    limit: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/bulk/cancel",
    tag = "workflows",
    request_body = BulkCancelRequest,
    responses(
        (status = 200, description = "`{cancelled, instance_ids, more}`: the running instances (as the ledger lists them, newest first) whose cancel is stored on the bus, and whether more matched than `limit`", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    ctx: Ctx,
    JsonBody(req): JsonBody<BulkCancelRequest>,
) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let (filter, limit) = selection(
        [&req.workflow, &req.label, &req.from, &req.to],
        req.limit,
        "running",
    )?;
    let reason = req
        .reason
        .unwrap_or_else(|| "cancelled in bulk over HTTP".into());
    let (ids, more) = listed(&ctx, filter, limit).await?;
    for id in &ids {
        publish_cancel(&ctx, id, reason.clone()).await?;
    }
    Ok(Json(json!({
        "cancelled": ids.len(),
        "instance_ids": ids,
        "more": more,
    })))
}

/// The ledger's filter for a bulk action, from its `[workflow, label, from, to]` (at least
/// one given), and `status`; with its `limit`, checked.
fn selection(
    [workflow, label, from, to]: [&Option<String>; 4],
    limit: Option<u32>,
    status: &str,
) -> Result<(Map<String, Value>, u32), Error> {
    if workflow.is_none() && label.is_none() && from.is_none() && to.is_none() {
        return Err(Error::field(
            "workflow",
            "name at least one of workflow, label, from and to: a bulk action never selects every instance",
        ));
    }
    let limit = limit.unwrap_or(MAX_BULK);
    if !(1..=MAX_BULK).contains(&limit) {
        return Err(Error::field("limit", format!("expected 1 to {MAX_BULK}")));
    }
    let (workflow, label, from, to) = (
        workflow.as_deref(),
        label.as_deref(),
        from.as_deref(),
        to.as_deref(),
    );
    let mut filter = Map::new();
    if let Some(workflow) = workflow {
        check_token("workflow", workflow)?;
        filter.insert("workflow".into(), json!(workflow));
    }
    if let Some(label) = label {
        filter.insert("labels".into(), label_filter(label)?);
    }
    window(&mut filter, from, to)?;
    filter.insert("status".into(), json!(status));
    Ok((filter, limit))
}

/// The ids of at most `limit` instances the ledger lists for `filter`, newest first, and
/// whether more matched.
async fn listed(
    ctx: &Ctx,
    filter: Map<String, Value>,
    limit: u32,
) -> Result<(Vec<String>, bool), WorkerError> {
    let mut ids: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page = filter.clone();
        page.insert("limit".into(), json!(PAGE));
        page.insert("cursor".into(), json!(cursor));
        let listed = ctx
            .call_worker(INSTANCES, fresh_id(), Value::Object(page))
            .await?;
        let rows = listed["instances"].as_array().cloned().unwrap_or_default();
        for id in rows.iter().filter_map(|r| r["instance_id"].as_str()) {
            if ids.len() as u32 == limit {
                return Ok((ids, true));
            }
            ids.push(id.to_owned());
        }
        cursor = listed["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return Ok((ids, false));
        }
        if ids.len() as u32 == limit {
            return Ok((ids, true));
        }
    }
}

/// Which finished instances to re-run: at least one of `workflow`, `label`, `from` and `to`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRerunRequest {
    /// Only instances of this workflow.
    #[serde(default)]
    workflow: Option<String>,
    /// Only instances started with this label, `key=value`.
    #[serde(default)]
    label: Option<String>,
    /// Only instances created at or after this time (as for the instance list).
    #[serde(default)]
    from: Option<String>,
    /// Only instances created before this time.
    #[serde(default)]
    to: Option<String>,
    /// `failed` (the default; timed-out instances are failed too) or `cancelled`.
    #[serde(default)]
    status: Option<String>,
    /// Why, for the events and the audit log.
    #[serde(default)]
    reason: Option<String>,
    /// At most this many, 1–1000 (default 1000); `more` says whether others matched.
    #[serde(default)]
    limit: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/api/v1/workflows/bulk/rerun",
    tag = "workflows",
    request_body = BulkRerunRequest,
    responses(
        (status = 200, description = "`{rerun, instance_ids, refused: [{instance_id, reason}], more}`: the failed (or cancelled) instances, as the ledger lists them, newest first, whose re-run is stored on the bus; those the engine refused, with why; and whether more matched than `limit`", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rerun(
    ctx: Ctx,
    JsonBody(req): JsonBody<BulkRerunRequest>,
) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRun)?;
    let status = req.status.as_deref().unwrap_or("failed");
    if !["failed", "cancelled"].contains(&status) {
        return Err(Error::field("status", "expected failed or cancelled").into());
    }
    let (filter, limit) = selection(
        [&req.workflow, &req.label, &req.from, &req.to],
        req.limit,
        status,
    )?;
    let reason = req
        .reason
        .unwrap_or_else(|| "re-run in bulk over HTTP".into());
    let (ids, more) = listed(&ctx, filter, limit).await?;
    let mut rerun = Vec::new();
    let mut refused = Vec::new();
    for id in ids {
        match rerun_instance(&ctx, &id, None, None, Some(reason.clone())).await {
            Ok(_) => rerun.push(id),
            // The ledger lags the engine: one it still lists may be running again already.
            Err(e @ (Error::Conflict(_) | Error::NotFound(_))) => {
                refused.push(json!({ "instance_id": id, "reason": e.to_string() }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({
        "rerun": rerun.len(),
        "instance_ids": rerun,
        "refused": refused,
        "more": more,
    })))
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    vec![
        route(
            Method::POST,
            "/api/v1/workflows/bulk/cancel",
            Group::Control,
            Deadline::Request,
            cancel,
        ),
        route(
            Method::POST,
            "/api/v1/workflows/bulk/rerun",
            Group::Control,
            Deadline::Request,
            rerun,
        ),
    ]
}
