//! `/api/v1/dlq…`: the dead letters of the caller's tenant (another tenant's for the
//! deployment's operator, with `tenant=`): list, show, replay (one, or those a filter selects)
//! and purge. The workflow engine's service does the work and writes the audit log; these
//! routes check what they are given and scope it to the tenant.

use axum::{Json, extract::Path, http::Method};
use serde::Deserialize;
use switchyard_proto::{
    orchestrator::{
        DlqFilter, DlqLetter, DlqList, DlqPage, DlqPurge, DlqPurgeReply, DlqRef, DlqReplay,
        DlqReplayReply, GetDeadLetter, ListDeadLetters, PurgeDeadLetters, ReplayDeadLetters,
    },
    subject,
};

use crate::{
    Error, Permission,
    api::ledger::{instant, tenant},
    extract::{Ctx, JsonBody, check_token, query_of},
    limits::Group,
    route::{Deadline, RouteDef, route},
};

/// Letters one page holds at most.
pub(crate) const MAX_PAGE: u32 = 500;
/// Letters one bulk replay or purge acts on at most.
pub(crate) const MAX_BULK: u32 = 1000;
/// Why a letter was given up on, as the API names it.
pub(crate) const REASONS: [&str; 7] = [
    "unspecified",
    "decode",
    "permanent",
    "retries_exhausted",
    "deadline_exceeded",
    "unknown_operation",
    "unavailable",
];

/// What selects dead letters, as query parameters or body fields.
#[derive(Debug, Default)]
struct Selection {
    kind: Option<String>,
    operation: Option<String>,
    reason: Option<String>,
    instance_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
}

impl Selection {
    fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.operation.is_none()
            && self.reason.is_none()
            && self.instance_id.is_none()
            && self.from.is_none()
            && self.to.is_none()
    }

    /// The filter the engine takes, checked, for the caller's tenant or the one named.
    fn filter(&self, ctx: &Ctx) -> Result<DlqFilter, Error> {
        for (field, value) in [("kind", &self.kind), ("instance_id", &self.instance_id)] {
            if let Some(v) = value {
                check_token(field, v)?;
            }
        }
        if let Some(op) = &self.operation {
            subject::check_operation(op).map_err(|e| Error::field("operation", e.to_string()))?;
        }
        if let Some(r) = &self.reason
            && !REASONS.contains(&r.as_str())
        {
            return Err(Error::field(
                "reason",
                format!("{r:?} is not one of {}", REASONS.join(", ")),
            ));
        }
        Ok(DlqFilter {
            tenant: Some(scope(ctx, self.tenant.as_deref())?),
            kind: self.kind.clone(),
            operation: self.operation.clone(),
            reason: self.reason.clone(),
            instance_id: self.instance_id.clone(),
            from_ms: self
                .from
                .as_deref()
                .map(|v| instant("from", v, false))
                .transpose()?,
            to_ms: self
                .to
                .as_deref()
                .map(|v| instant("to", v, true))
                .transpose()?,
            handled: None,
        })
    }
}

/// The tenant whose letters are meant: the caller's, or (operator of the deployment) the
/// one named.
fn scope(ctx: &Ctx, named: Option<&str>) -> Result<String, Error> {
    Ok(tenant(ctx, named)?.unwrap_or_else(|| ctx.tenant().to_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kind: Option<String>,
    operation: Option<String>,
    reason: Option<String>,
    instance_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
    handled: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    tag = "dlq",
    params(
        ("kind" = Option<String>, Query, description = "The kind of consumer that gave up: a worker kind, `orchestrator` or `ledger`"),
        ("operation" = Option<String>, Query, description = "The job's operation, e.g. `ai.summarize`"),
        ("reason" = Option<String>, Query, description = "Why it was given up on: `retries_exhausted`, `permanent`, `decode`, `deadline_exceeded`, `unknown_operation`, `unavailable`"),
        ("instance_id" = Option<String>, Query, description = "Only letters of this workflow instance's jobs"),
        ("from" = Option<String>, Query, description = "Stored at or after: RFC 3339, a date (its midnight UTC) or ms since the epoch"),
        ("to" = Option<String>, Query, description = "Stored before; a date includes that whole day"),
        ("handled" = Option<bool>, Query, description = "`true`: only letters already replayed; `false`: only the others"),
        ("tenant" = Option<String>, Query, description = "Another tenant's letters (the deployment's operator only)"),
        ("limit" = Option<u32>, Query, description = "Letters per page, 1–500 (default 100)"),
        ("cursor" = Option<u64>, Query, description = "`next_cursor` of the previous page")
    ),
    responses(
        (status = 200, description = "A page of dead letters, oldest first", body = DlqPage),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<DlqPage>, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let q: ListParams = query_of(&uri)?;
    let mut filter = Selection {
        kind: q.kind,
        operation: q.operation,
        reason: q.reason,
        instance_id: q.instance_id,
        from: q.from,
        to: q.to,
        tenant: q.tenant,
    }
    .filter(&ctx)?;
    filter.handled = match q.handled.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(Error::field("handled", "expected true or false")),
    };
    let limit = q
        .limit
        .map(|l| {
            l.parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    Error::field("limit", format!("expected a number from 1 to {MAX_PAGE}"))
                })
        })
        .transpose()?;
    let after = q
        .cursor
        .map(|c| {
            sequence(&c).ok_or_else(|| Error::field("cursor", "expected the next_cursor of a page"))
        })
        .transpose()?;
    ctx.query::<ListDeadLetters>(&DlqList {
        filter,
        limit,
        after,
    })
    .await
    .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/dlq/{seq}",
    tag = "dlq",
    params(
        ("seq" = u64, Path, description = "The letter's sequence in the DLQ stream"),
        ("tenant" = Option<String>, Query, description = "Another tenant's letter (the deployment's operator only)")
    ),
    responses(
        (status = 200, description = "The letter: original payload and headers, the error, attempts and the replica that gave up", body = DlqLetter),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    ctx: Ctx,
    Path(seq): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DlqLetter>, Error> {
    let (seq, tenant) = letter(&ctx, &seq, &uri)?;
    ctx.query::<GetDeadLetter>(&DlqRef {
        tenant: Some(tenant),
        seq,
    })
    .await
    .map(Json)
}

/// The largest stream sequence the API takes: what a JSON number holds exactly.
pub(crate) const MAX_SEQ: u64 = (1 << 53) - 1;

/// A stream sequence given as text, up to [`MAX_SEQ`].
fn sequence(text: &str) -> Option<u64> {
    text.parse().ok().filter(|n| *n <= MAX_SEQ)
}

/// The letter a path names and the tenant it must be of, for an operator.
fn letter(ctx: &Ctx, seq: &str, uri: &axum::http::Uri) -> Result<(u64, String), Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let seq = sequence(seq).filter(|s| *s > 0).ok_or_else(|| {
        Error::field(
            "seq",
            "expected a letter's sequence in the DLQ stream, 1 or more",
        )
    })?;
    let q: TenantParam = query_of(uri)?;
    Ok((seq, scope(ctx, q.tenant.as_deref())?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantParam {
    tenant: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/{seq}/replay",
    tag = "dlq",
    params(
        ("seq" = u64, Path, description = "The letter's sequence in the DLQ stream"),
        ("tenant" = Option<String>, Query, description = "Another tenant's letter (the deployment's operator only)")
    ),
    responses(
        (status = 200, description = "What the replay did: a workflow step's job re-runs its instance from that step (`rerun`); a job published straight to the bus is published again with fresh attempts (`republished`)", body = DlqReplayReply),
        crate::responses::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay(
    ctx: Ctx,
    Path(seq): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<DlqReplayReply>, Error> {
    let (seq, tenant) = letter(&ctx, &seq, &uri)?;
    ctx.query::<ReplayDeadLetters>(&DlqReplay {
        tenant: Some(tenant),
        seq: Some(seq),
        filter: None,
        limit: None,
        requested_by: ctx.caller.subject.clone(),
    })
    .await
    .map(Json)
}

/// Which letters to replay: at least one filter, and how many at most.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkReplayRequest {
    /// The kind of consumer that gave up: a worker kind, `orchestrator` or `ledger`.
    #[serde(default)]
    kind: Option<String>,
    /// The job's operation, e.g. `ai.summarize`.
    #[serde(default)]
    operation: Option<String>,
    /// Why it was given up on: `retries_exhausted`, `permanent`, …
    #[serde(default)]
    reason: Option<String>,
    /// The workflow instance whose jobs they were.
    #[serde(default)]
    instance_id: Option<String>,
    /// Stored at or after: RFC 3339, a date or ms since the epoch.
    #[serde(default)]
    from: Option<String>,
    /// Stored before; a date includes that whole day.
    #[serde(default)]
    to: Option<String>,
    /// Another tenant's letters (the deployment's operator only).
    #[serde(default)]
    tenant: Option<String>,
    /// At most this many, 1–1000 (default 1000); `more` says whether others matched.
    #[serde(default)]
    limit: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/replay",
    tag = "dlq",
    request_body = BulkReplayRequest,
    responses(
        (status = 200, description = "The letters replayed, those refused with why, and whether more matched than `limit`", body = DlqReplayReply),
        crate::responses::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay_bulk(
    ctx: Ctx,
    JsonBody(req): JsonBody<BulkReplayRequest>,
) -> Result<Json<DlqReplayReply>, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let select = Selection {
        kind: req.kind,
        operation: req.operation,
        reason: req.reason,
        instance_id: req.instance_id,
        from: req.from,
        to: req.to,
        tenant: req.tenant,
    };
    if select.is_empty() {
        return Err(Error::field(
            "kind",
            "name at least one of kind, operation, reason, instance_id, from and to: a bulk replay never selects every letter",
        ));
    }
    let limit = req.limit.unwrap_or(MAX_BULK);
    if !(1..=MAX_BULK).contains(&limit) {
        return Err(Error::field("limit", format!("expected 1 to {MAX_BULK}")));
    }
    let filter = select.filter(&ctx)?;
    ctx.query::<ReplayDeadLetters>(&DlqReplay {
        tenant: filter.tenant.clone(),
        seq: None,
        filter: Some(filter),
        limit: Some(limit),
        requested_by: ctx.caller.subject.clone(),
    })
    .await
    .map(Json)
}

/// Which letters to remove: `seqs`, or those the filter selects (by default only letters
/// already replayed; `handled: false` removes the others).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// The kind of consumer that gave up: a worker kind, `orchestrator` or `ledger`.
    #[serde(default)]
    kind: Option<String>,
    /// The job's operation, e.g. `ai.summarize`.
    #[serde(default)]
    operation: Option<String>,
    /// Why it was given up on: `retries_exhausted`, `permanent`, …
    #[serde(default)]
    reason: Option<String>,
    /// The workflow instance whose jobs they were.
    #[serde(default)]
    instance_id: Option<String>,
    /// Stored at or after: RFC 3339, a date or ms since the epoch.
    #[serde(default)]
    from: Option<String>,
    /// Stored before; a date includes that whole day.
    #[serde(default)]
    to: Option<String>,
    /// Another tenant's letters (the deployment's operator only).
    #[serde(default)]
    tenant: Option<String>,
    /// `true` (the default): only letters already replayed; `false`: only the others.
    #[serde(default)]
    handled: Option<bool>,
    /// These letters, replayed or not, instead of a filter: at most 1000.
    #[serde(default)]
    seqs: Option<Vec<u64>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/purge",
    tag = "dlq",
    request_body(content = Option<PurgeRequest>, description = "Which letters; without a body, every letter of the tenant already replayed"),
    responses(
        (status = 200, description = "How many letters were removed", body = DlqPurgeReply),
        crate::responses::ControlErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn purge(
    ctx: Ctx,
    JsonBody(req): JsonBody<PurgeRequest>,
) -> Result<Json<DlqPurgeReply>, Error> {
    ctx.require(Permission::WorkflowsRun)?;
    let seqs = req.seqs.unwrap_or_default();
    if seqs.len() > MAX_BULK as usize {
        return Err(Error::field(
            "seqs",
            format!("at most {MAX_BULK} letters per call"),
        ));
    }
    let mut filter = Selection {
        kind: req.kind,
        operation: req.operation,
        reason: req.reason,
        instance_id: req.instance_id,
        from: req.from,
        to: req.to,
        tenant: req.tenant,
    }
    .filter(&ctx)?;
    filter.handled = Some(req.handled.unwrap_or(true));
    ctx.query::<PurgeDeadLetters>(&DlqPurge {
        filter,
        seqs,
        requested_by: ctx.caller.subject.clone(),
    })
    .await
    .map(Json)
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(M::GET, "/api/v1/dlq", Group::Read, Deadline::Request, list),
        route(
            M::GET,
            "/api/v1/dlq/{seq}",
            Group::Read,
            Deadline::Request,
            show,
        ),
        route(
            M::POST,
            "/api/v1/dlq/{seq}/replay",
            Group::Control,
            Deadline::Request,
            replay,
        ),
        route(
            M::POST,
            "/api/v1/dlq/replay",
            Group::Control,
            Deadline::Request,
            replay_bulk,
        ),
        route(
            M::POST,
            "/api/v1/dlq/purge",
            Group::Control,
            Deadline::Request,
            purge,
        ),
    ]
}
