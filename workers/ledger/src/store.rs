//! The ledger's own Postgres schema `ledger`: what one batch of decoded messages does to it
//! ([`apply`]), and emptying it for a rebuild ([`truncate`]).
//!
//! Every write is idempotent and independent of the order messages arrive in, so a batch
//! handed back after a database error, a redelivery, or a replay of the whole stream gives
//! the same tables:
//!
//! - usage events are keyed by their id, and the daily rollups grow only by the rows the same
//!   statement newly inserted (`INSERT … ON CONFLICT DO NOTHING RETURNING`);
//! - an instance's row is a fold of its events where a later run (a re-run) wins and, within a
//!   run, a terminal status is never replaced by `running`; times only move towards the first
//!   start and the last event, and SLA breaches are a set of step ids;
//! - audit entries are keyed by their id.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row as _};
use switchyard_proto::{AuditEvent, UsageEvent, WorkflowEvent, event};
use switchyard_runtime::database;

use crate::Error;

/// Runs the crate's migrations, keeping their bookkeeping table inside the `ledger` schema so
/// other workers' migrations in the same database do not collide with ours.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    database::migrate(pool, sqlx::migrate!("./migrations"), "ledger").await?;
    Ok(())
}

/// The ledger's tables, in the order [`truncate`] empties them and tests compare them.
pub const TABLES: [&str; 4] = [
    "ledger.usage_events",
    "ledger.usage_daily",
    "ledger.instances",
    "ledger.audit_log",
];

/// Empties every ledger table (within the caller's transaction).
pub async fn truncate(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query(
        "TRUNCATE ledger.usage_events, ledger.usage_daily, ledger.instances, ledger.audit_log",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One message the ledger keeps, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Usage(UsageEvent),
    Event(WorkflowEvent),
    Audit(AuditEvent),
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// Messages written: new usage events and audit entries, instance events folded in.
    pub stored: usize,
    /// Usage events and audit entries the ledger already had.
    pub duplicate: usize,
    /// `(tenant, meter, quantity)` of each newly stored usage event.
    pub new_usage: Vec<(String, String, f64)>,
}

/// Applies `items` in the caller's transaction.
pub async fn apply(conn: &mut PgConnection, items: &[Item]) -> Result<Applied, Error> {
    let mut usage = Vec::new();
    let mut events = Vec::new();
    let mut audit = Vec::new();
    for item in items {
        match item {
            Item::Usage(u) => usage.push(u),
            Item::Event(e) => events.push(e),
            Item::Audit(a) => audit.push(a),
        }
    }
    let mut applied = Applied::default();
    if !usage.is_empty() {
        let new = insert_usage(conn, &usage).await?;
        applied.stored += new.len();
        applied.duplicate += usage.len() - new.len();
        applied.new_usage = new;
    }
    if !events.is_empty() {
        upsert_instances(conn, &events).await?;
        applied.stored += events.len();
    }
    if !audit.is_empty() {
        let new = insert_audit(conn, &audit).await?;
        applied.stored += new;
        applied.duplicate += audit.len() - new;
    }
    Ok(applied)
}

fn attributes_json(map: &std::collections::HashMap<String, String>) -> String {
    // Sorted, so the stored document does not depend on a hash map's order.
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "{}".into())
}

/// Inserts the events the ledger does not have yet and adds exactly those to the daily
/// rollups, in one statement; returns what was new.
async fn insert_usage(
    conn: &mut PgConnection,
    events: &[&UsageEvent],
) -> Result<Vec<(String, String, f64)>, Error> {
    let mut cols: [Vec<String>; 9] = Default::default();
    let mut at = Vec::with_capacity(events.len());
    for e in events {
        cols[0].push(e.event_id.clone());
        cols[1].push(e.tenant.clone());
        cols[2].push(e.meter.clone());
        // Rust's shortest round-trip text of the f64, read by Postgres as an exact numeric.
        cols[3].push(e.quantity.to_string());
        cols[4].push(e.unit.clone());
        cols[5].push(e.instance_id.clone());
        cols[6].push(e.step_id.clone());
        cols[7].push(e.operation.clone());
        cols[8].push(attributes_json(&e.attributes));
        at.push(e.at_ms);
    }
    let [
        ids,
        tenants,
        meters,
        quantities,
        units,
        instances,
        steps,
        operations,
        attributes,
    ] = cols;
    let rows = sqlx::query(
        r#"
        WITH batch AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[])
                AS b(event_id, tenant, meter, quantity, unit, instance_id, step_id, operation,
                     at_ms, attributes)
        ), inserted AS (
            INSERT INTO ledger.usage_events
                (event_id, tenant, meter, quantity, unit, instance_id, step_id, operation,
                 at_ms, day, attributes)
            SELECT event_id, tenant, meter, quantity::numeric, unit, instance_id, step_id,
                   operation, at_ms, (to_timestamp(at_ms / 1000.0) AT TIME ZONE 'UTC')::date,
                   attributes::jsonb
            FROM batch
            ORDER BY event_id
            ON CONFLICT (event_id) DO NOTHING
            RETURNING tenant, day, meter, unit, quantity
        ), rolled AS (
            INSERT INTO ledger.usage_daily AS d (tenant, day, meter, unit, quantity, events)
            SELECT tenant, day, meter, unit, sum(quantity), count(*)
            FROM inserted
            GROUP BY tenant, day, meter, unit
            ORDER BY tenant, day, meter, unit
            ON CONFLICT (tenant, day, meter, unit) DO UPDATE
                SET quantity = d.quantity + EXCLUDED.quantity,
                    events = d.events + EXCLUDED.events
        )
        SELECT tenant, meter, quantity::float8 AS quantity FROM inserted
        "#,
    )
    .bind(ids)
    .bind(tenants)
    .bind(meters)
    .bind(quantities)
    .bind(units)
    .bind(instances)
    .bind(steps)
    .bind(operations)
    .bind(at)
    .bind(attributes)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("tenant")?,
                r.try_get::<String, _>("meter")?,
                r.try_get::<f64, _>("quantity")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

/// The status of an instance in the read model.
pub mod status {
    /// Accepted with a `not_before` still ahead.
    pub const SCHEDULED: &str = "scheduled";
    /// Waiting for a slot of its concurrency key.
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    /// Every status, for checking a filter.
    pub const ALL: [&str; 6] = [SCHEDULED, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED];

    /// How far along a run the status is: a row's status moves only forward within a run
    /// (the SQL twin is `ledger.status_rank`).
    pub fn rank(status: &str) -> u8 {
        match status {
            SCHEDULED => 0,
            QUEUED => 1,
            RUNNING => 2,
            _ => 3,
        }
    }
}

/// What the read model learns about one instance from some of its events. Folding is
/// commutative, like the SQL that merges it into the stored row.
#[derive(Debug, Clone, PartialEq)]
struct InstanceDelta {
    workflow: String,
    version: Option<i32>,
    status: &'static str,
    correlation_id: String,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    duration_ms: Option<i64>,
    error_code: Option<String>,
    failed_step: Option<String>,
    sla_steps: BTreeSet<String>,
    /// The start's labels as JSON text, from the `started` event.
    labels: Option<String>,
    /// The run the event belongs to (0 before any re-run; workers' events carry none).
    run: i32,
    /// The run `version` was learnt from.
    version_run: i32,
    created_at_ms: i64,
    last_event_at_ms: i64,
}

fn data_of(e: &WorkflowEvent) -> Value {
    serde_json::from_slice(&e.data).unwrap_or(Value::Null)
}

fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl InstanceDelta {
    fn of(e: &WorkflowEvent) -> Self {
        let data = data_of(e);
        let mut d = InstanceDelta {
            workflow: text(&data, "workflow").unwrap_or_default(),
            version: None,
            status: status::RUNNING,
            correlation_id: e.correlation_id.clone(),
            started_at_ms: None,
            finished_at_ms: None,
            duration_ms: None,
            error_code: None,
            failed_step: None,
            sla_steps: BTreeSet::new(),
            labels: None,
            run: data
                .get("run")
                .and_then(Value::as_i64)
                .and_then(|r| i32::try_from(r).ok())
                .unwrap_or(0),
            version_run: 0,
            created_at_ms: e.at_ms,
            last_event_at_ms: e.at_ms,
        };
        d.version_run = d.run;
        let terminal = |d: &mut InstanceDelta, status: &'static str| {
            d.status = status;
            d.finished_at_ms = Some(e.at_ms);
            d.duration_ms = data.get("duration_ms").and_then(Value::as_i64);
        };
        match e.r#type.as_str() {
            event::QUEUED => d.status = status::QUEUED,
            event::SCHEDULED => {
                d.status = status::SCHEDULED;
                d.labels = data
                    .get("labels")
                    .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                    .map(Value::to_string);
                d.version = data
                    .get("version")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok());
            }
            event::STARTED => {
                d.started_at_ms = Some(e.at_ms);
                d.labels = data
                    .get("labels")
                    .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
                    .map(Value::to_string);
                d.version = data
                    .get("version")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok());
            }
            event::COMPLETED => terminal(&mut d, status::COMPLETED),
            event::FAILED => {
                terminal(&mut d, status::FAILED);
                d.error_code = Some(text(&data, "code").unwrap_or_else(|| "failed".into()));
                d.failed_step = text(&data, "step");
            }
            event::CANCELLED => {
                terminal(&mut d, status::CANCELLED);
                d.error_code = Some("cancelled".into());
            }
            event::RERUN => {
                d.version = data
                    .get("version")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok());
            }
            event::SLA_BREACHED if !e.step_id.is_empty() => {
                d.sla_steps.insert(e.step_id.clone());
            }
            _ => {}
        }
        d
    }

    fn merge(&mut self, o: InstanceDelta) {
        if self.workflow.is_empty() {
            self.workflow = o.workflow;
        }
        if self.correlation_id.is_empty() {
            self.correlation_id = o.correlation_id;
        }
        self.started_at_ms = match (self.started_at_ms, o.started_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The version of the latest run that names one.
        if o.version.is_some() && (self.version.is_none() || o.version_run > self.version_run) {
            self.version = o.version;
            self.version_run = o.version_run;
        }
        let later_run = o.run > self.run;
        if later_run || (o.run == self.run && status::rank(o.status) > status::rank(self.status)) {
            self.status = o.status;
            self.finished_at_ms = o.finished_at_ms;
            self.duration_ms = o.duration_ms;
            self.error_code = o.error_code;
            self.failed_step = o.failed_step;
        }
        self.run = self.run.max(o.run);
        self.sla_steps.extend(o.sla_steps);
        self.labels = self.labels.take().or(o.labels);
        self.created_at_ms = self.created_at_ms.min(o.created_at_ms);
        self.last_event_at_ms = self.last_event_at_ms.max(o.last_event_at_ms);
    }
}

/// Separates the step ids of one row in a text parameter (a 2-D array must be rectangular).
const STEP_SEPARATOR: char = '\u{1f}';

/// Folds `events` per instance and merges each fold into its row.
async fn upsert_instances(conn: &mut PgConnection, events: &[&WorkflowEvent]) -> Result<(), Error> {
    // Sorted by key, so concurrent replicas lock rows in the same order.
    let mut folds: BTreeMap<(&str, &str), InstanceDelta> = BTreeMap::new();
    for e in events {
        let delta = InstanceDelta::of(e);
        match folds.entry((e.tenant.as_str(), e.instance_id.as_str())) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(delta);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(delta),
        }
    }
    let n = folds.len();
    let mut tenants = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut workflows = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut correlations = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut failed_steps = Vec::with_capacity(n);
    let mut sla = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut last = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut runs = Vec::with_capacity(n);
    let mut version_runs = Vec::with_capacity(n);
    for ((tenant, id), d) in folds {
        tenants.push(tenant.to_owned());
        ids.push(id.to_owned());
        workflows.push(d.workflow);
        versions.push(d.version);
        statuses.push(d.status.to_owned());
        correlations.push(d.correlation_id);
        started.push(d.started_at_ms);
        finished.push(d.finished_at_ms);
        durations.push(d.duration_ms);
        codes.push(d.error_code);
        failed_steps.push(d.failed_step);
        sla.push(
            d.sla_steps
                .into_iter()
                .collect::<Vec<_>>()
                .join(&STEP_SEPARATOR.to_string()),
        );
        created.push(d.created_at_ms);
        last.push(d.last_event_at_ms);
        labels.push(d.labels.unwrap_or_else(|| "{}".to_owned()));
        runs.push(d.run);
        version_runs.push(d.version_run);
    }
    sqlx::query(
        r#"
        INSERT INTO ledger.instances AS i
            (tenant, instance_id, workflow, version, status, correlation_id, started_at_ms,
             finished_at_ms, duration_ms, error_code, failed_step, sla_breached_steps,
             created_at_ms, last_event_at_ms, labels, run, version_run)
        SELECT b.tenant, b.instance_id, b.workflow, b.version, b.status, b.correlation_id,
               b.started_at_ms, b.finished_at_ms, b.duration_ms, b.error_code, b.failed_step,
               CASE WHEN b.sla = '' THEN '{}'::text[] ELSE string_to_array(b.sla, E'\x1f') END,
               b.created_at_ms, b.last_event_at_ms, b.labels::jsonb, b.run, b.version_run
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[], $6::text[],
                    $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[],
                    $13::int8[], $14::int8[], $15::text[], $16::int4[], $17::int4[])
            AS b(tenant, instance_id, workflow, version, status, correlation_id, started_at_ms,
                 finished_at_ms, duration_ms, error_code, failed_step, sla, created_at_ms,
                 last_event_at_ms, labels, run, version_run)
        ON CONFLICT (tenant, instance_id) DO UPDATE SET
            workflow = CASE WHEN i.workflow = '' THEN EXCLUDED.workflow ELSE i.workflow END,
            -- The version of the latest run that names one.
            version = CASE WHEN EXCLUDED.version IS NOT NULL
                             AND (i.version IS NULL OR EXCLUDED.version_run > i.version_run)
                           THEN EXCLUDED.version ELSE i.version END,
            version_run = CASE WHEN EXCLUDED.version IS NOT NULL
                                 AND (i.version IS NULL OR EXCLUDED.version_run > i.version_run)
                               THEN EXCLUDED.version_run ELSE i.version_run END,
            correlation_id = CASE WHEN i.correlation_id = '' THEN EXCLUDED.correlation_id
                                  ELSE i.correlation_id END,
            started_at_ms = LEAST(i.started_at_ms, EXCLUDED.started_at_ms),
            -- The batch's fold replaces the row's status when it is of a later run, or of
            -- the same run and further along it (scheduled, running, finished).
            status = CASE WHEN EXCLUDED.run > i.run
                            OR (EXCLUDED.run = i.run AND ledger.status_rank(EXCLUDED.status)
                                                         > ledger.status_rank(i.status))
                          THEN EXCLUDED.status ELSE i.status END,
            finished_at_ms = CASE WHEN EXCLUDED.run > i.run
                                    OR (EXCLUDED.run = i.run AND ledger.status_rank(EXCLUDED.status)
                                                                 > ledger.status_rank(i.status))
                                  THEN EXCLUDED.finished_at_ms ELSE i.finished_at_ms END,
            duration_ms = CASE WHEN EXCLUDED.run > i.run
                                 OR (EXCLUDED.run = i.run AND ledger.status_rank(EXCLUDED.status)
                                                              > ledger.status_rank(i.status))
                               THEN EXCLUDED.duration_ms ELSE i.duration_ms END,
            error_code = CASE WHEN EXCLUDED.run > i.run
                                OR (EXCLUDED.run = i.run AND ledger.status_rank(EXCLUDED.status)
                                                             > ledger.status_rank(i.status))
                              THEN EXCLUDED.error_code ELSE i.error_code END,
            failed_step = CASE WHEN EXCLUDED.run > i.run
                                 OR (EXCLUDED.run = i.run AND ledger.status_rank(EXCLUDED.status)
                                                              > ledger.status_rank(i.status))
                               THEN EXCLUDED.failed_step ELSE i.failed_step END,
            run = GREATEST(i.run, EXCLUDED.run),
            sla_breached_steps = ARRAY(
                SELECT DISTINCT s FROM unnest(i.sla_breached_steps || EXCLUDED.sla_breached_steps) s
                ORDER BY s),
            created_at_ms = LEAST(i.created_at_ms, EXCLUDED.created_at_ms),
            last_event_at_ms = GREATEST(i.last_event_at_ms, EXCLUDED.last_event_at_ms),
            labels = CASE WHEN i.labels = '{}'::jsonb THEN EXCLUDED.labels ELSE i.labels END
        "#,
    )
    .bind(tenants)
    .bind(ids)
    .bind(workflows)
    .bind(versions)
    .bind(statuses)
    .bind(correlations)
    .bind(started)
    .bind(finished)
    .bind(durations)
    .bind(codes)
    .bind(failed_steps)
    .bind(sla)
    .bind(created)
    .bind(last)
    .bind(labels)
    .bind(runs)
    .bind(version_runs)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the audit entries the log does not have yet; returns how many were new.
async fn insert_audit(conn: &mut PgConnection, events: &[&AuditEvent]) -> Result<usize, Error> {
    let mut cols: [Vec<String>; 8] = Default::default();
    let mut at = Vec::with_capacity(events.len());
    for e in events {
        cols[0].push(e.event_id.clone());
        cols[1].push(e.tenant.clone());
        cols[2].push(e.actor.clone());
        cols[3].push(e.action.clone());
        cols[4].push(e.target.clone());
        cols[5].push(e.outcome.clone());
        cols[6].push(e.correlation_id.clone());
        cols[7].push(attributes_json(&e.attributes));
        at.push(e.at_ms);
    }
    let [
        ids,
        tenants,
        actors,
        actions,
        targets,
        outcomes,
        correlations,
        attributes,
    ] = cols;
    let result = sqlx::query(
        r#"
        INSERT INTO ledger.audit_log
            (event_id, tenant, actor, action, target, outcome, correlation_id, attributes, at_ms)
        SELECT event_id, tenant, actor, action, target, outcome, correlation_id,
               attributes::jsonb, at_ms
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::text[], $9::int8[])
            AS b(event_id, tenant, actor, action, target, outcome, correlation_id, attributes,
                 at_ms)
        ORDER BY event_id
        ON CONFLICT (event_id) DO NOTHING
        "#,
    )
    .bind(ids)
    .bind(tenants)
    .bind(actors)
    .bind(actions)
    .bind(targets)
    .bind(outcomes)
    .bind(correlations)
    .bind(attributes)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(usize::try_from(result.rows_affected()).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: &str, at_ms: i64, data: Value) -> WorkflowEvent {
        WorkflowEvent {
            event_id: format!("{ty}-{at_ms}"),
            tenant: "t".into(),
            instance_id: "i".into(),
            r#type: ty.into(),
            step_id: String::new(),
            data: serde_json::to_vec(&data).unwrap(),
            at_ms,
            correlation_id: "c".into(),
        }
    }

    #[test]
    fn folding_events_does_not_depend_on_their_order() {
        let events = [
            ev(
                event::STARTED,
                100,
                serde_json::json!({"workflow": "w", "version": 2}),
            ),
            ev(event::STEP_COMPLETED, 150, serde_json::json!({})),
            ev(
                event::FAILED,
                200,
                serde_json::json!({"workflow": "w", "code": "permanent", "step": "s", "duration_ms": 100}),
            ),
        ];
        let fold = |order: &[usize]| {
            let mut d = InstanceDelta::of(&events[order[0]]);
            for &i in &order[1..] {
                d.merge(InstanceDelta::of(&events[i]));
            }
            d
        };
        let forward = fold(&[0, 1, 2]);
        assert_eq!(forward.status, status::FAILED);
        assert_eq!(forward.version, Some(2));
        assert_eq!(forward.duration_ms, Some(100));
        assert_eq!(forward.failed_step.as_deref(), Some("s"));
        assert_eq!(
            (forward.created_at_ms, forward.last_event_at_ms),
            (100, 200)
        );
        for order in [[2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            assert_eq!(fold(&order), forward, "{order:?}");
        }
    }

    #[test]
    fn a_scheduled_instance_moves_on_whatever_order_its_events_arrive_in() {
        use serde_json::json;
        let events = [
            ev(
                event::SCHEDULED,
                100,
                json!({"workflow": "w", "version": 3, "not_before_ms": 5_000, "labels": {"a": "b"}}),
            ),
            ev(
                event::STARTED,
                5_000,
                json!({"workflow": "w", "version": 3}),
            ),
            ev(
                event::COMPLETED,
                6_000,
                json!({"workflow": "w", "duration_ms": 1_000}),
            ),
        ];
        let fold = |order: &[usize]| {
            let mut d = InstanceDelta::of(&events[order[0]]);
            for &i in &order[1..] {
                d.merge(InstanceDelta::of(&events[i]));
            }
            d
        };
        assert_eq!(fold(&[0]).status, status::SCHEDULED);
        assert_eq!(fold(&[0]).started_at_ms, None);
        assert_eq!(fold(&[0]).labels.as_deref(), Some(r#"{"a":"b"}"#));
        let running = fold(&[0, 1]);
        assert_eq!(
            (running.status, running.started_at_ms),
            (status::RUNNING, Some(5_000))
        );
        assert_eq!(fold(&[1, 0]), running);
        let done = fold(&[0, 1, 2]);
        assert_eq!((done.status, done.created_at_ms), (status::COMPLETED, 100));
        for order in [[2, 1, 0], [1, 2, 0], [2, 0, 1], [0, 2, 1]] {
            assert_eq!(fold(&order), done, "{order:?}");
        }
    }

    #[test]
    fn a_later_runs_events_win_in_any_order() {
        use serde_json::json;
        let events = [
            ev(event::STARTED, 100, json!({"workflow": "w", "version": 1})),
            ev(
                event::FAILED,
                200,
                json!({"workflow": "w", "code": "permanent", "step": "c", "duration_ms": 100}),
            ),
            ev(
                event::RERUN,
                300,
                json!({"workflow": "w", "version": 2, "run": 1}),
            ),
            // A worker's event of the re-run carries no run.
            ev(event::STEP_STARTED, 350, json!({})),
            ev(
                event::COMPLETED,
                400,
                json!({"workflow": "w", "duration_ms": 300, "run": 1}),
            ),
        ];
        let fold = |order: &[usize]| {
            let mut d = InstanceDelta::of(&events[order[0]]);
            for &i in &order[1..] {
                d.merge(InstanceDelta::of(&events[i]));
            }
            d
        };
        let forward = fold(&[0, 1, 2, 3, 4]);
        assert_eq!((forward.status, forward.run), (status::COMPLETED, 1));
        assert_eq!(
            (forward.version, forward.error_code.clone()),
            (Some(2), None)
        );
        assert_eq!(forward.finished_at_ms, Some(400));
        for order in [
            [4, 3, 2, 1, 0],
            [1, 4, 0, 2, 3],
            [2, 4, 1, 3, 0],
            [3, 1, 2, 0, 4],
        ] {
            assert_eq!(fold(&order), forward, "{order:?}");
        }
        // Before the re-run finishes, the row is running again.
        let rerunning = fold(&[0, 1, 2, 3]);
        assert_eq!(
            (rerunning.status, rerunning.finished_at_ms),
            (status::RUNNING, None)
        );
        assert_eq!(fold(&[2, 3, 1, 0]), rerunning);
    }
}
