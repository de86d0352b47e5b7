//! The ledger's routes: `GET /api/v1/usage`, `/api/v1/workflows/instances`,
//! `/api/v1/workflows/stats` and `/api/v1/audit`. Each checks its query parameters (a bad one
//! is a 400 naming it), then asks the ledger worker over request/reply (`svc.ledger.<op>`) with
//! the tenant from the token; the gateway keeps no usage or history of its own.
//!
//! Every read is scoped to the caller's tenant. An admin may name another tenant with
//! `tenant=` on `/usage` and `/audit` (refused credentials are logged under `_anonymous`).

use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchyard_proto::subject;
use uuid::Uuid;

use axum::http::Method;

use crate::{
    Error, Permission,
    extract::{Ctx, query_of},
    limits::Group,
    route::{Deadline, RouteDef, route},
    workers::WorkerError,
};

/// The ledger's operations (service endpoints only; not workflow steps).
pub(crate) const USAGE: &str = "ledger.usage";
pub(crate) const INSTANCES: &str = "ledger.instances";
pub(crate) const STATS: &str = "ledger.stats";
pub(crate) const AUDIT: &str = "ledger.audit";

/// The most rows one page holds (the ledger's own limit too).
const MAX_LIMIT: i64 = 500;
const MAX_TEXT: usize = 256;

/// A UTC day `YYYY-MM-DD`, checked to be a real date.
fn day(field: &str, value: &str) -> Result<String, Error> {
    parse_date(value).map(|_| value.to_owned()).ok_or_else(|| {
        Error::field(
            field,
            format!("{value:?} is not a date; expected YYYY-MM-DD"),
        )
    })
}

fn parse_date(value: &str) -> Option<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    (value.len() == 10)
        .then(|| time::Date::parse(value, &format).ok())
        .flatten()
}

/// A point in time as milliseconds since the epoch: RFC 3339 with any offset, a date (its
/// midnight UTC, or with `end_of_day` the next midnight, so `to=<date>` includes that day), or
/// milliseconds since the epoch.
/// The statuses the instance list filters by.
pub(crate) const STATUSES: [&str; 6] = [
    "scheduled",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
];

pub(crate) fn instant(field: &str, value: &str, end_of_day: bool) -> Result<i64, Error> {
    let bad = || {
        Error::field(
            field,
            format!(
                "{value:?} is not a time; expected RFC 3339 (2026-01-15T08:00:00Z), a date (2026-01-15) or milliseconds since the epoch"
            ),
        )
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| bad());
    }
    let at = match parse_date(value) {
        Some(date) => {
            let midnight = date.midnight().assume_utc();
            if end_of_day {
                midnight + time::Duration::DAY
            } else {
                midnight
            }
        }
        None => time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?,
    };
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

fn limit(value: Option<&str>) -> Result<Option<i64>, Error> {
    value
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Error::field("limit", format!("expected a number from 1 to {MAX_LIMIT}"))
                })
        })
        .transpose()
}

fn token(field: &str, value: &str) -> Result<(), Error> {
    subject::check_token(value).map_err(|e| Error::field(field, e.to_string()))
}

fn text(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_TEXT {
        return Err(Error::field(
            field,
            format!("at most {MAX_TEXT} characters"),
        ));
    }
    Ok(())
}

/// The tenant a read is about: the caller's, or for the deployment's operator (`platform`), the one named.
pub(crate) fn tenant(ctx: &Ctx, named: Option<&str>) -> Result<Option<String>, Error> {
    match named {
        None => Ok(None),
        Some(t) if t == ctx.tenant() => Ok(None),
        Some(t) => {
            token("tenant", t)?;
            ctx.require(Permission::OtherTenants)?;
            Ok(Some(t.to_owned()))
        }
    }
}

/// `from`/`to` as a time window, checked to be in order.
pub(crate) fn window(
    input: &mut Map<String, Value>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), Error> {
    // A window that ends before it starts is empty, not an error.
    let from = from.map(|v| instant("from", v, false)).transpose()?;
    let to = to.map(|v| instant("to", v, true)).transpose()?;
    input.insert("from_ms".into(), json!(from));
    input.insert("to_ms".into(), json!(to));
    Ok(())
}

pub(crate) fn fresh_id() -> String {
    Uuid::now_v7().to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    tenant: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "ledger",
    params(
        ("from" = Option<String>, Query, description = "First UTC day, `YYYY-MM-DD`, inclusive; the first day of the current month when absent"),
        ("to" = Option<String>, Query, description = "Last UTC day, inclusive; today when absent"),
        ("group_by" = Option<String>, Query, description = "`meter` (default), `day` or `workflow` (usage outside a workflow has `workflow: null`)"),
        ("tenant" = Option<String>, Query, description = "Another tenant's usage (admin only)")
    ),
    responses(
        (status = 200, description = "`{tenant, from, to, group_by, usage: [{meter, unit, quantity, events, day?, workflow?}]}`: every usage event counted once", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn usage(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: UsageParams = query_of(&uri)?;
    let mut input = Map::new();
    if let Some(t) = tenant(&ctx, q.tenant.as_deref())? {
        input.insert("tenant".into(), json!(t));
    }
    let from = q.from.as_deref().map(|v| day("from", v)).transpose()?;
    let to = q.to.as_deref().map(|v| day("to", v)).transpose()?;
    let group_by = match q.group_by.as_deref() {
        None => "meter",
        Some(g @ ("meter" | "day" | "workflow")) => g,
        Some(other) => {
            return Err(Error::field(
                "group_by",
                format!("{other:?} is not one of meter, day, workflow"),
            )
            .into());
        }
    };
    input.insert("from".into(), json!(from));
    input.insert("to".into(), json!(to));
    input.insert("group_by".into(), json!(group_by));
    ctx.call_worker(USAGE, fresh_id(), Value::Object(input))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesParams {
    workflow: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    correlation_id: Option<String>,
    label: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/instances",
    tag = "ledger",
    params(
        ("workflow" = Option<String>, Query, description = "Only this workflow"),
        ("status" = Option<String>, Query, description = "`running`, `completed`, `failed` or `cancelled`"),
        ("from" = Option<String>, Query, description = "Created at or after: RFC 3339 (`2026-01-15T08:00:00Z`), a date (its midnight UTC) or ms since the epoch"),
        ("to" = Option<String>, Query, description = "Created before; a date includes that whole day"),
        ("correlation_id" = Option<String>, Query, description = "Only instances started with this correlation id"),
        ("label" = Option<String>, Query, description = "Only instances started with this label, `key=value`"),
        ("limit" = Option<i64>, Query, description = "Instances per page, 1–500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")
    ),
    responses(
        (status = 200, description = "`{instances: [{instance_id, workflow, version, status, correlation_id, created_at_ms, started_at_ms, finished_at_ms, duration_ms, error_code, failed_step, run, sla_breaches, labels, last_event_at_ms}], next_cursor}`, newest first; `next_cursor` is null on the last page", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn instances(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: InstancesParams = query_of(&uri)?;
    let mut input = Map::new();
    if let Some(w) = &q.workflow {
        token("workflow", w)?;
    }
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(Error::field(
            "status",
            format!("{s:?} is not one of {}", STATUSES.join(", ")),
        )
        .into());
    }
    for (field, value) in [("correlation_id", &q.correlation_id), ("cursor", &q.cursor)] {
        if let Some(v) = value {
            text(field, v)?;
        }
    }
    window(&mut input, q.from.as_deref(), q.to.as_deref())?;
    input.insert("limit".into(), json!(limit(q.limit.as_deref())?));
    input.insert("workflow".into(), json!(q.workflow));
    input.insert("status".into(), json!(q.status));
    input.insert("correlation_id".into(), json!(q.correlation_id));
    if let Some(label) = &q.label {
        input.insert("labels".into(), label_filter(label)?);
    }
    input.insert("cursor".into(), json!(q.cursor));
    ctx.call_worker(INSTANCES, fresh_id(), Value::Object(input))
        .await
        .map(Json)
}

/// A `label` filter, `key=value`, as the ledger takes it: `{key: value}`.
pub(crate) fn label_filter(label: &str) -> Result<Value, Error> {
    let refused = || {
        Error::field(
            "label",
            "expected key=value, the key 1 to 63 letters, digits, '_', '-' and '.'",
        )
    };
    let (key, value) = label.split_once('=').ok_or_else(refused)?;
    let labels =
        crate::start::labels([(key.to_owned(), value.to_owned())].into()).map_err(|_| refused())?;
    Ok(json!(labels))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    workflow: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/workflows/stats",
    tag = "ledger",
    params(
        ("workflow" = Option<String>, Query, description = "Only this workflow"),
        ("from" = Option<String>, Query, description = "Instances created at or after (as for the instance list)"),
        ("to" = Option<String>, Query, description = "Instances created before")
    ),
    responses(
        (status = 200, description = "`{workflows: [{workflow, counts: {scheduled, queued, running, completed, failed, cancelled}, total, duration_ms: {p50, p95, p99}, sla_breaches, reruns: {instances, total}}]}`; percentiles over finished instances; `reruns` counts instances re-run at least once and re-runs in all", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::WorkflowsRead)?;
    let q: StatsParams = query_of(&uri)?;
    let mut input = Map::new();
    if let Some(w) = &q.workflow {
        token("workflow", w)?;
    }
    window(&mut input, q.from.as_deref(), q.to.as_deref())?;
    input.insert("workflow".into(), json!(q.workflow));
    ctx.call_worker(STATS, fresh_id(), Value::Object(input))
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    action: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    tenant: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "ledger",
    params(
        ("action" = Option<String>, Query, description = "`definition.put`, `definition.delete`, `instance.cancel`, `instance.signal`, `instance.rerun`, `dlq.replay`, `dlq.purge` or `auth.failed`"),
        ("actor" = Option<String>, Query, description = "Only what this token subject did"),
        ("from" = Option<String>, Query, description = "At or after (as for the instance list)"),
        ("to" = Option<String>, Query, description = "Before"),
        ("limit" = Option<i64>, Query, description = "Entries per page, 1–500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("tenant" = Option<String>, Query, description = "Another tenant's log; `_anonymous` holds refused credentials")
    ),
    responses(
        (status = 200, description = "`{tenant, entries: [{event_id, actor, action, target, outcome, at_ms, correlation_id, attributes}], next_cursor}`, newest first", body = Object),
        crate::responses::LedgerReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn audit_log(ctx: Ctx, uri: axum::http::Uri) -> Result<Json<Value>, WorkerError> {
    ctx.require(Permission::AuditRead)?;
    let q: AuditParams = query_of(&uri)?;
    let mut input = Map::new();
    // `_anonymous` (refused credentials) is read like any other tenant: by the deployment's operator (`platform`).
    if let Some(t) = tenant(&ctx, q.tenant.as_deref())? {
        input.insert("tenant".into(), json!(t));
    }
    for (field, value) in [
        ("action", &q.action),
        ("actor", &q.actor),
        ("cursor", &q.cursor),
    ] {
        if let Some(v) = value {
            text(field, v)?;
        }
    }
    window(&mut input, q.from.as_deref(), q.to.as_deref())?;
    input.insert("limit".into(), json!(limit(q.limit.as_deref())?));
    input.insert("action".into(), json!(q.action));
    input.insert("actor".into(), json!(q.actor));
    input.insert("cursor".into(), json!(q.cursor));
    ctx.call_worker(AUDIT, fresh_id(), Value::Object(input))
        .await
        .map(Json)
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::GET,
            "/api/v1/usage",
            Group::Read,
            Deadline::Request,
            usage,
        ),
        route(
            M::GET,
            "/api/v1/workflows/instances",
            Group::Read,
            Deadline::Request,
            instances,
        ),
        route(
            M::GET,
            "/api/v1/workflows/stats",
            Group::Read,
            Deadline::Request,
            stats,
        ),
        route(
            M::GET,
            "/api/v1/audit",
            Group::Read,
            Deadline::Request,
            audit_log,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_dates_or_milliseconds() {
        assert_eq!(
            instant("from", "1700000000000", false).unwrap(),
            1_700_000_000_000
        );
        let midnight = instant("from", "2026-01-15", false).unwrap();
        assert_eq!(midnight, 1_768_435_200_000);
        assert_eq!(
            instant("to", "2026-01-15", true).unwrap(),
            midnight + 86_400_000
        );
        assert_eq!(
            instant("from", "2026-01-15T00:00:01Z", false).unwrap(),
            midnight + 1000
        );
        assert!(instant("from", "last tuesday", false).is_err());
        assert!(day("from", "2026-02-30").is_err());
        assert!(day("from", "2026-02-28").is_ok());
    }
}
