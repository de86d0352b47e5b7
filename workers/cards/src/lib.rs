//! The cards worker: typed content cards of each tenant (company, audience, voice, insight, and
//! types a tenant registers with a JSON schema), versioned and soft-deleted, kept in the
//! worker's own Postgres schema `cards`. Its `cards.*` operations run as workflow steps (from
//! `JOBS_CARDS`) and as request/reply service endpoints the gateway calls; onboarding turns a
//! tenant's answers into its first four cards with the AI worker's local provider.
//!
//! Every read and write filters by the job's tenant: another tenant's card is a missing card.
//! Every write records its result by job id in the same transaction, so a redelivered job (or a
//! request retried with the same `Idempotency-Key`) gets the first answer instead of a second
//! card. Fetching cards publishes one usage event per card with a deterministic id (see
//! [`usage`]).
//!
//! This crate must not hold workflow logic, keep state a second replica would need outside
//! Postgres, or answer for one tenant with another tenant's data.

mod error;
pub mod metrics;
pub mod onboard;
pub mod store;
pub mod types;
pub mod usage;

use std::{sync::Arc, time::Instant};

use prometheus::Registry;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use switchyard_proto::Job;
use switchyard_runtime::JobInput as _;
use switchyard_runtime::{
    Config, Handler, JobContext, JobFailure, OperationInfo, database, process,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use error::Error;

/// The configuration sections this component reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 2] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Database]
};

use metrics::{Metrics, Source};
use store::{Change, NewCard};

/// The worker kind.
pub const KIND: &str = "cards";

/// The operations of the kind, as named in the catalog (`register_type` is served on the
/// request/reply endpoint only; it is not a workflow step).
pub mod op {
    pub const RETRIEVE: &str = "cards.retrieve";
    pub const CREATE: &str = "cards.create";
    pub const BATCH_CREATE: &str = "cards.batch_create";
    pub const GET: &str = "cards.get";
    pub const UPDATE: &str = "cards.update";
    pub const DELETE: &str = "cards.delete";
    pub const LIST: &str = "cards.list";
    pub const VERSIONS: &str = "cards.versions";
    pub const ONBOARD: &str = "cards.onboard";
    pub const REGISTER_TYPE: &str = "cards.register_type";
}

/// Most cards one retrieve or batch create takes.
pub const MAX_BATCH: usize = 100;

/// The handler of the `cards` kind; cheap to clone.
#[derive(Debug, Clone)]
pub struct CardsWorker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    metrics: Metrics,
}

impl CardsWorker {
    /// Builds the handler on a migrated `pool` ([`store::migrate`]); metrics are registered in
    /// `registry`.
    pub fn build(pool: PgPool, registry: &Registry) -> Result<Self, Error> {
        let metrics = Metrics::register(registry)?;
        Ok(CardsWorker {
            inner: Arc::new(Inner { pool, metrics }),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

// ---- inputs ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveInput {
    card_ids: Vec<String>,
    #[serde(default)]
    allow_partial: bool,
    /// The workflow fetching the cards, for `workflow_cards_fetched_total`.
    #[serde(default)]
    workflow: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCardInput {
    #[serde(rename = "type")]
    card_type: String,
    title: String,
    content: Value,
}

impl From<NewCardInput> for NewCard {
    fn from(c: NewCardInput) -> Self {
        NewCard {
            card_type: c.card_type,
            title: c.title,
            content: c.content,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    #[serde(rename = "type")]
    card_type: String,
    title: String,
    content: Value,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCreateInput {
    cards: Vec<NewCardInput>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetInput {
    card_id: String,
    #[serde(default)]
    version: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateInput {
    card_id: String,
    #[serde(default)]
    expected_version: Option<i32>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardIdInput {
    card_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default, rename = "type")]
    card_type: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnboardInput {
    answers: Map<String, Value>,
    #[serde(default)]
    actor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterTypeInput {
    #[serde(rename = "type")]
    card_type: String,
    schema: Value,
}

/// Who a write is recorded as: the input's `actor` (the gateway sets the caller), else the
/// workflow instance, else the job.
fn actor(given: Option<String>, job: &Job) -> String {
    given.filter(|a| !a.trim().is_empty()).unwrap_or_else(|| {
        if job.instance_id.is_empty() {
            format!("job:{}", job.job_id)
        } else {
            format!("workflow:{}", job.instance_id)
        }
    })
}

fn source(job: &Job) -> Source {
    if job.instance_id.is_empty() {
        Source::Api
    } else {
        Source::Workflow
    }
}

/// What [`Inner::begin`] found.
enum Begin {
    /// An earlier delivery of the job committed; this is what it returned.
    Done(Value),
    /// This delivery writes, in this transaction.
    Go(Transaction<'static, Postgres>),
}

/// Refuses text with U+0000 anywhere (a key or a string, at any depth): Postgres cannot store
/// it in `text` or `jsonb`, so it is the caller's 422 naming where, not a failed write.
fn refuse_nul(value: &Value, path: &mut String) -> Result<(), Error> {
    let found = |path: &str| Error::invalid(path, "contains U+0000 (NUL), which cannot be stored");
    match value {
        Value::String(s) if s.contains('\0') => Err(found(path)),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            refuse_nul(v, path)?;
            path.truncate(len);
            Ok(())
        }),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            if k.contains('\0') {
                return Err(found(path));
            }
            refuse_nul(v, path)?;
            path.truncate(len);
            Ok(())
        }),
        _ => Ok(()),
    }
}

impl Handler for CardsWorker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn operations(&self) -> Vec<OperationInfo> {
        OperationInfo::of_kind(KIND)
    }

    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        let started = Instant::now();
        let result = self.inner.handle(&ctx, job).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::InvalidInput { .. }) => "invalid_input",
            Err(Error::NotFound { .. } | Error::Missing { .. }) => "not_found",
            Err(Error::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        self.inner
            .metrics
            .observe(&job.operation, outcome, started.elapsed().as_secs_f64());
        result.map_err(|e| {
            warn!(job_id = %job.job_id, operation = %job.operation, error = %e, "cards operation failed");
            e.failure()
        })
    }
}

impl Inner {
    #[instrument(skip_all, fields(job_id = %job.job_id, operation = %job.operation, tenant = %job.tenant))]
    async fn handle(&self, ctx: &JobContext, job: &Job) -> Result<Value, Error> {
        let tenant = job.tenant.as_str();
        if let Ok(input) = serde_json::from_slice::<Value>(&job.input) {
            refuse_nul(&input, &mut String::new())?;
        }
        match job.operation.as_str() {
            op::RETRIEVE => {
                let i: RetrieveInput = job.input()?;
                if i.card_ids.is_empty() || i.card_ids.len() > MAX_BATCH {
                    return Err(Error::invalid(
                        "card_ids",
                        format!("expected 1 to {MAX_BATCH} card ids"),
                    ));
                }
                let (cards, missing) = store::retrieve(&self.pool, tenant, &i.card_ids).await?;
                if !missing.is_empty() && !i.allow_partial {
                    return Err(Error::Missing { ids: missing });
                }
                usage::fetched(
                    ctx,
                    &self.metrics,
                    &cards,
                    source(job),
                    i.workflow.as_deref(),
                )
                .await?;
                Ok(json!({
                    "partial_result": !missing.is_empty(),
                    "cards": cards,
                    "missing_ids": missing,
                }))
            }
            op::GET => {
                let i: GetInput = job.input()?;
                if i.version.is_some_and(|v| v < 1) {
                    return Err(Error::invalid("version", "expected 1 or more"));
                }
                let card = store::get(&self.pool, tenant, &i.card_id, i.version)
                    .await?
                    .ok_or_else(|| match i.version {
                        Some(v) => Error::not_found(format!("card {} at version {v}", i.card_id)),
                        None => Error::not_found(format!("card {}", i.card_id)),
                    })?;
                usage::fetched(
                    ctx,
                    &self.metrics,
                    std::slice::from_ref(&card),
                    source(job),
                    None,
                )
                .await?;
                Ok(json!({ "card": card }))
            }
            op::LIST => {
                let i: ListInput = job.input()?;
                if let Some(t) = &i.card_type {
                    types::check_type_name("type", t)?;
                }
                let limit = i.limit.unwrap_or(50);
                if !(1..=200).contains(&limit) {
                    return Err(Error::invalid("limit", "expected 1 to 200"));
                }
                let (cards, next) = store::list(
                    &self.pool,
                    tenant,
                    i.card_type.as_deref(),
                    i.cursor.as_deref(),
                    limit,
                )
                .await?;
                let mut out = json!({ "cards": cards });
                if let Some(next) = next {
                    out["next_cursor"] = Value::String(next);
                }
                Ok(out)
            }
            op::VERSIONS => {
                let i: CardIdInput = job.input()?;
                let versions = store::versions(&self.pool, tenant, &i.card_id).await?;
                Ok(json!({ "versions": versions }))
            }
            op::CREATE => {
                let i: CreateInput = job.input()?;
                let actor = actor(i.actor, job);
                let new = NewCard {
                    card_type: i.card_type,
                    title: i.title,
                    content: i.content,
                };
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let mut cards =
                    store::create(&mut tx, tenant, &actor, &[new], |_| String::new()).await?;
                let card = cards.pop();
                self.finish(tx, job, json!({ "card": card })).await
            }
            op::BATCH_CREATE => {
                let i: BatchCreateInput = job.input()?;
                if i.cards.is_empty() || i.cards.len() > MAX_BATCH {
                    return Err(Error::invalid(
                        "cards",
                        format!("expected 1 to {MAX_BATCH} cards"),
                    ));
                }
                let actor = actor(i.actor, job);
                let new: Vec<NewCard> = i.cards.into_iter().map(Into::into).collect();
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let cards =
                    store::create(&mut tx, tenant, &actor, &new, |i| format!("cards[{i}]")).await?;
                self.finish(tx, job, json!({ "cards": cards })).await
            }
            op::UPDATE => {
                let i: UpdateInput = job.input()?;
                if i.expected_version.is_some_and(|v| v < 1) {
                    return Err(Error::invalid("expected_version", "expected 1 or more"));
                }
                if i.title.is_none() && i.content.is_none() {
                    return Err(Error::invalid(
                        "content",
                        "nothing to change: give `title`, `content` or both",
                    ));
                }
                let actor = actor(i.actor, job);
                let change = Change {
                    expected_version: i.expected_version,
                    title: i.title,
                    content: i.content,
                };
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let card = store::update(&mut tx, tenant, &actor, &i.card_id, &change).await?;
                self.finish(tx, job, json!({ "card": card })).await
            }
            op::DELETE => {
                let i: CardIdInput = job.input()?;
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let deleted = store::delete(&mut tx, tenant, &i.card_id).await?;
                self.finish(tx, job, json!({ "deleted": deleted })).await
            }
            op::ONBOARD => {
                let i: OnboardInput = job.input()?;
                let actor = actor(i.actor, job);
                let new = onboard::cards(&i.answers)?;
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let cards = store::create(&mut tx, tenant, &actor, &new, |_| String::new()).await?;
                let ids: Vec<&str> = cards.iter().map(|c| c.id.as_str()).collect();
                let out = json!({ "card_ids": ids, "cards": cards });
                self.finish(tx, job, out).await
            }
            op::REGISTER_TYPE => {
                let i: RegisterTypeInput = job.input()?;
                let mut tx = match self.begin(job).await? {
                    Begin::Done(v) => return Ok(v),
                    Begin::Go(tx) => tx,
                };
                let version =
                    store::register_type(&mut tx, tenant, &i.card_type, &i.schema).await?;
                let out = json!({ "type": i.card_type, "version": version, "schema": i.schema });
                self.finish(tx, job, out).await
            }
            other => Err(Error::invalid(
                "operation",
                format!("{other:?} is not a cards operation"),
            )),
        }
    }

    /// Starts a write: the recorded result of an earlier delivery of the job, or a transaction.
    async fn begin(&self, job: &Job) -> Result<Begin, Error> {
        let mut tx = self.pool.begin().await?;
        match store::recorded(&mut tx, &job.tenant, job.effect_id()).await? {
            Some((operation, result)) => {
                tx.commit().await?;
                if operation != job.operation {
                    return Err(Error::invalid(
                        "job_id",
                        format!(
                            "job {} was recorded for {operation}, not {}",
                            job.job_id, job.operation
                        ),
                    ));
                }
                info!("write already done: returning the recorded result");
                Ok(Begin::Done(result))
            }
            None => Ok(Begin::Go(tx)),
        }
    }

    /// Records the job's result with the write and commits; when another delivery committed
    /// first, rolls back and returns what that one recorded.
    async fn finish(
        &self,
        mut tx: Transaction<'static, Postgres>,
        job: &Job,
        out: Value,
    ) -> Result<Value, Error> {
        if store::record(&mut tx, &job.tenant, job.effect_id(), &job.operation, &out).await? {
            tx.commit().await?;
            return Ok(out);
        }
        tx.rollback().await?;
        let mut conn = self.pool.acquire().await?;
        store::recorded(&mut conn, &job.tenant, job.effect_id())
            .await?
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Store(sqlx::Error::RowNotFound))
    }
}

/// Connects to Postgres and brings the `cards` schema up to date.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, Error> {
    let pool = database::connect(database_url, max_connections).await?;
    store::migrate(&pool).await?;
    Ok(pool)
}

/// Runs one replica of the cards worker until `shutdown` is cancelled: connects to Postgres
/// (`database_url`, required) and migrates, then serves `cards` jobs and requests.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let url = database::url(&config, "the cards worker (cards live in Postgres)")?;
    let pool = connect(&url, database::pool_size(&config)).await?;
    let build = |registry: Registry| async move {
        let handler = CardsWorker::build(pool, &registry)?;
        info!("cards worker ready");
        Ok::<_, Error>(handler)
    };
    process::run_worker(&config, "switchyard-cards", build, shutdown).await
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => process::exit_code(e),
        _ => process::EXIT_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_nul_is_refused_where_it_is() {
        let field = |v: Value| match refuse_nul(&v, &mut String::new()) {
            Err(Error::InvalidInput { field, .. }) => Some(field),
            _ => None,
        };
        assert_eq!(field(json!({"title": "a\u{0}b"})), Some("title".into()));
        assert_eq!(
            field(json!({"cards": [{"content": {"x": ["ok", "\u{0}"]}}]})),
            Some("cards[0].content.x[1]".into())
        );
        assert_eq!(
            field(json!({"content": {"k\u{0}": 1}})),
            Some("content.k\u{0}".into())
        );
        assert_eq!(field(json!({"title": "fine", "content": {"n": 1}})), None);
    }
}
