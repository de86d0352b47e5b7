//! The questions the ledger answers: usage per meter, day or workflow; the instance list with
//! filters and a cursor; per-workflow stats; the audit log. Every query is scoped to one
//! tenant, named by the caller (the gateway passes the token's tenant, or for the deployment's operator the
//! tenant asked for).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row as _, postgres::PgRow};

use crate::{Error, store::status};

/// Most rows one page of instances or audit entries holds.
pub const MAX_LIMIT: i64 = 500;
/// Rows per page when the caller does not say.
pub const DEFAULT_LIMIT: i64 = 50;

/// `ledger.usage` input.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The tenant to report on; the job's tenant when absent.
    #[serde(default)]
    pub tenant: Option<String>,
    /// First UTC day, `YYYY-MM-DD`, inclusive; the first day of the current month when absent.
    #[serde(default)]
    pub from: Option<String>,
    /// Last UTC day, inclusive; today when absent.
    #[serde(default)]
    pub to: Option<String>,
    /// `meter` (default), `day` or `workflow`.
    #[serde(default)]
    pub group_by: Option<String>,
}

/// `ledger.instances` input.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// Instances created at or after this time (ms since the epoch).
    #[serde(default)]
    pub from_ms: Option<i64>,
    /// Instances created before this time.
    #[serde(default)]
    pub to_ms: Option<i64>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Only instances started with all of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `ledger.stats` input.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub from_ms: Option<i64>,
    #[serde(default)]
    pub to_ms: Option<i64>,
}

/// `ledger.audit` input.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The tenant whose log to read; the job's tenant when absent (`_anonymous` holds refused
    /// credentials).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub from_ms: Option<i64>,
    #[serde(default)]
    pub to_ms: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `YYYY-MM-DD` naming a real day, checked here so that a bad date is the caller's 422 rather
/// than a refused statement.
pub fn check_day(field: &str, value: &str) -> Result<(), Error> {
    let bad = || {
        Error::invalid(
            field,
            format!("{value:?} is not a date; expected YYYY-MM-DD"),
        )
    };
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(&value[..4])?, num(&value[5..7])?, num(&value[8..])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=days).contains(&d) || y == 0 {
        return Err(bad());
    }
    Ok(())
}

/// The opaque position after a row: its sort time and id, hex-encoded.
pub fn cursor(at_ms: i64, id: &str) -> String {
    hex::encode(format!("{at_ms}:{id}"))
}

fn parse_cursor(value: &str) -> Result<(i64, String), Error> {
    let bad = || Error::invalid("cursor", "not a cursor this API returned");
    let bytes = hex::decode(value).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

fn limit(value: Option<i64>) -> Result<i64, Error> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(
            "limit",
            format!("{n} is out of range; expected 1 to {MAX_LIMIT}"),
        )),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

/// Usage of `tenant` in a range of UTC days, grouped.
pub async fn usage(pool: &PgPool, tenant: &str, q: UsageQuery) -> Result<Value, Error> {
    for (field, value) in [("from", &q.from), ("to", &q.to)] {
        if let Some(v) = value {
            check_day(field, v)?;
        }
    }
    let group_by = q.group_by.as_deref().unwrap_or("meter");
    let (from, to): (String, String) = sqlx::query(
        "SELECT COALESCE($1::date, date_trunc('month', now() AT TIME ZONE 'UTC')::date)::text,
                COALESCE($2::date, (now() AT TIME ZONE 'UTC')::date)::text",
    )
    .bind(&q.from)
    .bind(&q.to)
    .fetch_one(pool)
    .await
    .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))?;
    // A range that ends before it starts holds no days: an empty answer, not an error.
    let sql = match group_by {
        "meter" => {
            "SELECT NULL::text AS key, meter, unit, sum(quantity)::float8 AS quantity,
                    sum(events)::int8 AS events
             FROM ledger.usage_daily
             WHERE tenant = $1 AND day BETWEEN $2::date AND $3::date
             GROUP BY meter, unit ORDER BY meter, unit"
        }
        "day" => {
            "SELECT day::text AS key, meter, unit, sum(quantity)::float8 AS quantity,
                    sum(events)::int8 AS events
             FROM ledger.usage_daily
             WHERE tenant = $1 AND day BETWEEN $2::date AND $3::date
             GROUP BY day, meter, unit ORDER BY day, meter, unit"
        }
        "workflow" => {
            "SELECT COALESCE(i.workflow, '') AS key, u.meter, u.unit,
                    sum(u.quantity)::float8 AS quantity, count(*)::int8 AS events
             FROM ledger.usage_events u
             LEFT JOIN ledger.instances i
                    ON i.tenant = u.tenant AND i.instance_id = u.instance_id
             WHERE u.tenant = $1 AND u.day BETWEEN $2::date AND $3::date
             GROUP BY 1, u.meter, u.unit ORDER BY 1, u.meter, u.unit"
        }
        other => {
            return Err(Error::invalid(
                "group_by",
                format!("{other:?} is not one of meter, day, workflow"),
            ));
        }
    };
    let rows = sqlx::query(sql)
        .bind(tenant)
        .bind(&from)
        .bind(&to)
        .fetch_all(pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut row = json!({
            "meter": r.try_get::<String, _>("meter")?,
            "unit": r.try_get::<String, _>("unit")?,
            "quantity": r.try_get::<f64, _>("quantity")?,
            "events": r.try_get::<i64, _>("events")?,
        });
        let key: Option<String> = r.try_get("key")?;
        match group_by {
            "day" => row["day"] = json!(key),
            // Usage outside any workflow (a direct API call) has no workflow.
            "workflow" => row["workflow"] = json!(key.filter(|k| !k.is_empty())),
            _ => {}
        }
        out.push(row);
    }
    Ok(json!({
        "tenant": tenant,
        "from": from,
        "to": to,
        "group_by": group_by,
        "usage": out,
    }))
}

fn instance_json(r: &PgRow) -> Result<Value, sqlx::Error> {
    let workflow: String = r.try_get("workflow")?;
    let sla: Vec<String> = r.try_get("sla_breached_steps")?;
    Ok(json!({
        "instance_id": r.try_get::<String, _>("instance_id")?,
        "workflow": (!workflow.is_empty()).then_some(workflow),
        "version": r.try_get::<Option<i32>, _>("version")?,
        "status": r.try_get::<String, _>("status")?,
        "correlation_id": r.try_get::<String, _>("correlation_id")?,
        "created_at_ms": r.try_get::<i64, _>("created_at_ms")?,
        "started_at_ms": r.try_get::<Option<i64>, _>("started_at_ms")?,
        "finished_at_ms": r.try_get::<Option<i64>, _>("finished_at_ms")?,
        "duration_ms": r.try_get::<Option<i64>, _>("duration_ms")?,
        "error_code": r.try_get::<Option<String>, _>("error_code")?,
        "failed_step": r.try_get::<Option<String>, _>("failed_step")?,
        "run": r.try_get::<i32, _>("run")?,
        "sla_breaches": sla.len(),
        "sla_breached_steps": sla,
        "labels": serde_json::from_str::<Value>(&r.try_get::<String, _>("labels_text")?)
            .unwrap_or_else(|_| json!({})),
        "last_event_at_ms": r.try_get::<i64, _>("last_event_at_ms")?,
    }))
}

/// One page of `tenant`'s instances, newest first.
pub async fn instances(pool: &PgPool, tenant: &str, q: InstancesQuery) -> Result<Value, Error> {
    let limit = limit(q.limit)?;
    let status = non_empty(q.status);
    if let Some(s) = &status
        && !status::ALL.contains(&s.as_str())
    {
        return Err(Error::invalid(
            "status",
            format!("{s:?} is not one of {}", status::ALL.join(", ")),
        ));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let (after_at, after_id) = after.unzip();
    let rows = sqlx::query(
        "SELECT *, labels::text AS labels_text FROM ledger.instances
         WHERE tenant = $1
           AND labels @> $10::jsonb
           AND ($2::text IS NULL OR workflow = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::int8 IS NULL OR created_at_ms >= $4)
           AND ($5::int8 IS NULL OR created_at_ms < $5)
           AND ($6::text IS NULL OR correlation_id = $6)
           AND ($7::int8 IS NULL OR (created_at_ms, instance_id) < ($7, $8::text))
         ORDER BY created_at_ms DESC, instance_id DESC
         LIMIT $9",
    )
    .bind(tenant)
    .bind(non_empty(q.workflow))
    .bind(status)
    .bind(q.from_ms)
    .bind(q.to_ms)
    .bind(non_empty(q.correlation_id))
    .bind(after_at)
    .bind(after_id)
    .bind(limit + 1)
    .bind(json!(q.labels).to_string())
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = match page.last() {
        Some(r) if more => Some(cursor(
            r.try_get("created_at_ms")?,
            &r.try_get::<String, _>("instance_id")?,
        )),
        _ => None,
    };
    let list = page
        .iter()
        .map(instance_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "instances": list, "next_cursor": next }))
}

/// Per workflow: counts by status, duration percentiles of finished instances, SLA breaches,
/// and re-runs (instances re-run at least once, and re-runs in all).
pub async fn stats(pool: &PgPool, tenant: &str, q: StatsQuery) -> Result<Value, Error> {
    let rows = sqlx::query(
        "SELECT workflow,
                count(*) FILTER (WHERE status = 'scheduled') AS scheduled,
                count(*) FILTER (WHERE status = 'queued')    AS queued,
                count(*) FILTER (WHERE status = 'running')   AS running,
                count(*) FILTER (WHERE status = 'completed') AS completed,
                count(*) FILTER (WHERE status = 'failed')    AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                count(*) AS total,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms)
                    FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
                    FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS p95,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms)
                    FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS p99,
                COALESCE(sum(cardinality(sla_breached_steps)), 0)::int8 AS sla_breaches,
                count(*) FILTER (WHERE run > 0) AS rerun_instances,
                COALESCE(sum(run), 0)::int8 AS reruns
         FROM ledger.instances
         WHERE tenant = $1
           AND ($2::text IS NULL OR workflow = $2)
           AND ($3::int8 IS NULL OR created_at_ms >= $3)
           AND ($4::int8 IS NULL OR created_at_ms < $4)
         GROUP BY workflow ORDER BY workflow",
    )
    .bind(tenant)
    .bind(non_empty(q.workflow))
    .bind(q.from_ms)
    .bind(q.to_ms)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let workflow: String = r.try_get("workflow")?;
        out.push(json!({
            "workflow": (!workflow.is_empty()).then_some(workflow),
            "counts": {
                "scheduled": r.try_get::<i64, _>("scheduled")?,
                "queued": r.try_get::<i64, _>("queued")?,
                "running": r.try_get::<i64, _>("running")?,
                "completed": r.try_get::<i64, _>("completed")?,
                "failed": r.try_get::<i64, _>("failed")?,
                "cancelled": r.try_get::<i64, _>("cancelled")?,
            },
            "total": r.try_get::<i64, _>("total")?,
            "duration_ms": {
                "p50": r.try_get::<Option<f64>, _>("p50")?,
                "p95": r.try_get::<Option<f64>, _>("p95")?,
                "p99": r.try_get::<Option<f64>, _>("p99")?,
            },
            "sla_breaches": r.try_get::<i64, _>("sla_breaches")?,
            "reruns": {
                "instances": r.try_get::<i64, _>("rerun_instances")?,
                "total": r.try_get::<i64, _>("reruns")?,
            },
        }));
    }
    Ok(json!({ "workflows": out }))
}

/// One page of `tenant`'s audit log, newest first.
pub async fn audit(pool: &PgPool, tenant: &str, q: AuditQuery) -> Result<Value, Error> {
    let limit = limit(q.limit)?;
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let (after_at, after_id) = after.unzip();
    let rows = sqlx::query(
        "SELECT event_id, actor, action, target, outcome, at_ms, correlation_id,
                attributes::text AS attributes
         FROM ledger.audit_log
         WHERE tenant = $1
           AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR actor = $3)
           AND ($4::int8 IS NULL OR at_ms >= $4)
           AND ($5::int8 IS NULL OR at_ms < $5)
           AND ($6::int8 IS NULL OR (at_ms, event_id) < ($6, $7::text))
         ORDER BY at_ms DESC, event_id DESC
         LIMIT $8",
    )
    .bind(tenant)
    .bind(non_empty(q.action))
    .bind(non_empty(q.actor))
    .bind(q.from_ms)
    .bind(q.to_ms)
    .bind(after_at)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let mut entries = Vec::with_capacity(page.len());
    for r in page {
        let attributes: String = r.try_get("attributes")?;
        entries.push(json!({
            "event_id": r.try_get::<String, _>("event_id")?,
            "actor": r.try_get::<String, _>("actor")?,
            "action": r.try_get::<String, _>("action")?,
            "target": r.try_get::<String, _>("target")?,
            "outcome": r.try_get::<String, _>("outcome")?,
            "at_ms": r.try_get::<i64, _>("at_ms")?,
            "correlation_id": r.try_get::<String, _>("correlation_id")?,
            "attributes": serde_json::from_str::<Value>(&attributes).unwrap_or(Value::Null),
        }));
    }
    let next = match page.last() {
        Some(r) if more => Some(cursor(
            r.try_get("at_ms")?,
            &r.try_get::<String, _>("event_id")?,
        )),
        _ => None,
    };
    Ok(json!({ "tenant": tenant, "entries": entries, "next_cursor": next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_checked_for_real_dates() {
        assert!(check_day("from", "2024-02-29").is_ok());
        assert!(check_day("from", "2023-02-29").is_err());
        assert!(check_day("from", "2023-13-01").is_err());
        assert!(check_day("from", "2023-1-01").is_err());
        assert!(check_day("to", "yesterday").is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = cursor(1_700_000_000_000, "0193-abc");
        assert_eq!(
            parse_cursor(&c).unwrap(),
            (1_700_000_000_000, "0193-abc".into())
        );
        assert!(matches!(
            parse_cursor("zz"),
            Err(Error::InvalidInput { field, .. }) if field == "cursor"
        ));
    }
}
