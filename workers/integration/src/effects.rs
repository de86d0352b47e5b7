//! The effect records: one row per job in `integration.effects`, written before and after each
//! external call. They make a redelivered job return the recorded result instead of calling
//! the API again, keep two deliveries of one job from calling at the same time (a lease), and
//! let a multi-call effect resume where it stopped.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgPool, Row as _};
use switchyard_runtime::database;
use tracing::{info, warn};

use crate::{Error, metrics::System};

/// Runs the crate's migrations, keeping their bookkeeping table inside the `integration`
/// schema so other workers' migrations in the same database do not collide with ours.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    database::migrate(pool, sqlx::migrate!("./migrations"), "integration").await?;
    Ok(())
}

/// What [`Effects::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The effect was done by an earlier delivery; this is what it returned.
    Done(Value),
    /// This delivery may perform the effect.
    Go {
        /// What an earlier delivery got done of a multi-call effect.
        progress: Option<Value>,
        /// An earlier call's outcome is unknown: it may have had its effect.
        uncertain: bool,
    },
}

/// A done effect's recorded result (JSON text; none is `null`).
fn recorded_result(text: Option<&str>) -> Result<Value, Error> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| Error::Store(sqlx::Error::Decode(Box::new(e))))
        .map(|v| v.unwrap_or(Value::Null))
}

/// Who is performing an effect: the job and this delivery's identity.
#[derive(Debug, Clone)]
pub struct EffectKey<'a> {
    pub job_id: &'a str,
    pub operation: &'a str,
    pub system: System,
    pub tenant: &'a str,
    pub instance_id: &'a str,
    pub worker_id: &'a str,
}

impl<'a> EffectKey<'a> {
    /// The key of `job`'s effect on `system`, claimed by replica `worker_id`.
    pub fn of(job: &'a switchyard_proto::Job, system: System, worker_id: &'a str) -> Self {
        EffectKey {
            job_id: job.effect_id(),
            operation: &job.operation,
            system,
            tenant: &job.tenant,
            instance_id: &job.instance_id,
            worker_id,
        }
    }
}

/// The effect store.
#[derive(Debug, Clone)]
pub struct Effects {
    pool: PgPool,
    /// How long a claim keeps other deliveries away; renewed with each progress record.
    lease: Duration,
}

impl Effects {
    pub fn new(pool: PgPool, lease: Duration) -> Self {
        Effects { pool, lease }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The result recorded for `tenant`'s `job_id` when its effect is done; `None` while it
    /// is not (or when the id is another tenant's).
    pub async fn recorded(
        &self,
        tenant: &str,
        job_id: &str,
        operation: &str,
    ) -> Result<Option<Value>, Error> {
        let row = sqlx::query(
            "SELECT result::text AS result FROM integration.effects
             WHERE job_id = $1 AND operation = $2 AND tenant = $3 AND state = 'done'",
        )
        .bind(job_id)
        .bind(operation)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let result: Option<String> = row.try_get("result")?;
        recorded_result(result.as_deref()).map(Some)
    }

    /// What the worker loop asks before giving `job` up ([`switchyard_runtime::Handler::recorded`]):
    /// its recorded result when its effect is done; `None` otherwise, or when the record
    /// cannot be read (logged).
    pub async fn recorded_for(&self, job: &switchyard_proto::Job) -> Option<Value> {
        match self
            .recorded(&job.tenant, job.effect_id(), &job.operation)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                warn!(job_id = %job.job_id, error = %e, "cannot read the effect record");
                None
            }
        }
    }

    /// Performs an effect at most once per job as far as the record can tell: a done effect
    /// returns its recorded result; otherwise `perform` runs (with what an earlier delivery
    /// recorded of its progress) and its result is recorded. A failed call releases the
    /// claim, saying whether the call may have had its effect.
    pub async fn perform<F, Fut>(
        &self,
        key: &EffectKey<'_>,
        attempt: u32,
        perform: F,
    ) -> Result<Value, Error>
    where
        F: FnOnce(Option<Value>) -> Fut,
        Fut: Future<Output = Result<Value, Error>>,
    {
        let system = key.system;
        let (progress, uncertain) = match self.claim(key).await? {
            Claim::Done(result) => {
                info!(
                    system = system.as_str(),
                    "effect already done: returning the recorded result"
                );
                return Ok(result);
            }
            Claim::Go {
                progress,
                uncertain,
            } => (progress, uncertain),
        };
        if uncertain {
            warn!(
                system = system.as_str(),
                attempt, "an earlier call's outcome is unknown: this attempt may repeat its effect"
            );
        }
        match perform(progress).await {
            Ok(result) => {
                self.done(key.job_id, &result).await?;
                Ok(result)
            }
            Err(e) => {
                if let Err(store) = self
                    .release(key.job_id, e.maybe_applied(), &e.to_string())
                    .await
                {
                    warn!(error = %store, "cannot release the effect claim; it expires by itself");
                }
                Err(e)
            }
        }
    }

    /// Claims the job's effect for this delivery, or says it is done already.
    pub async fn claim(&self, key: &EffectKey<'_>) -> Result<Claim, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO integration.effects (job_id, operation, system, state, tenant, instance_id)
             VALUES ($1, $2, $3, 'new', $4, $5)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(key.job_id)
        .bind(key.operation)
        .bind(key.system.as_str())
        .bind(key.tenant)
        .bind(key.instance_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT state, operation, tenant, result::text AS result, progress::text AS progress,
                    EXTRACT(EPOCH FROM (claimed_until - now()))::float8 AS lease_left
             FROM integration.effects WHERE job_id = $1 FOR UPDATE",
        )
        .bind(key.job_id)
        .fetch_one(&mut *tx)
        .await?;
        let state: String = row.try_get("state")?;
        let operation: String = row.try_get("operation")?;
        let tenant: String = row.try_get("tenant")?;
        if tenant != key.tenant {
            // Which tenant holds the id is not this one's business.
            return Err(Error::invalid(
                "job_id",
                format!("job id {} is already in use", key.job_id),
            ));
        }
        if operation != key.operation {
            return Err(Error::invalid(
                "job_id",
                format!(
                    "job {} was recorded for {operation}, not {}",
                    key.job_id, key.operation
                ),
            ));
        }
        if state == "done" {
            let result: Option<String> = row.try_get("result")?;
            tx.commit().await?;
            return recorded_result(result.as_deref()).map(Claim::Done);
        }
        let lease_left: Option<f64> = row.try_get("lease_left")?;
        if state == "started"
            && let Some(left) = lease_left.filter(|l| *l > 0.0)
        {
            tx.commit().await?;
            return Err(Error::InProgress {
                retry_after: Duration::from_secs_f64(left.min(3600.0)),
            });
        }
        let progress: Option<String> = row.try_get("progress")?;
        let uncertain = state == "started";
        sqlx::query(
            "UPDATE integration.effects
             SET state = 'started', attempts = attempts + 1,
                 uncertain_attempts = uncertain_attempts + $2,
                 claimed_by = $3, claimed_until = now() + make_interval(secs => $4),
                 updated_at = now()
             WHERE job_id = $1",
        )
        .bind(key.job_id)
        .bind(i32::from(uncertain))
        .bind(key.worker_id)
        .bind(self.lease.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let progress = progress
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok());
        Ok(Claim::Go {
            progress,
            uncertain,
        })
    }

    /// Records partial progress of a multi-call effect and renews the lease.
    pub async fn progress(&self, job_id: &str, progress: &Value) -> Result<(), Error> {
        sqlx::query(
            "UPDATE integration.effects
             SET progress = $2::jsonb, claimed_until = now() + make_interval(secs => $3),
                 updated_at = now()
             WHERE job_id = $1",
        )
        .bind(job_id)
        .bind(progress.to_string())
        .bind(self.lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether `tenant`'s `operation` created the task `task_id` (its result's `task_id`):
    /// tasks are bound to the tenant whose job created them. The expression matches the
    /// index `effects_created_objects`.
    pub async fn created(
        &self,
        tenant: &str,
        operation: &str,
        task_id: &str,
    ) -> Result<bool, Error> {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM integration.effects
                 WHERE tenant = $1 AND operation = $2 AND state = 'done'
                   AND result ->> 'task_id' = $3
             )",
        )
        .bind(tenant)
        .bind(operation)
        .bind(task_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(found)
    }

    /// Records the effect as done with its result. Tried a few times: the effect has
    /// happened, and a lost record is what could make a redelivery repeat it.
    pub async fn done(&self, job_id: &str, result: &Value) -> Result<(), Error> {
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            let outcome = sqlx::query(
                "UPDATE integration.effects
                 SET state = 'done', result = $2::jsonb, claimed_until = NULL, last_error = NULL,
                     updated_at = now(), finished_at = now()
                 WHERE job_id = $1",
            )
            .bind(job_id)
            .bind(result.to_string())
            .execute(&self.pool)
            .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) if tries < 4 => {
                    tries += 1;
                    warn!(job_id, error = %e, tries, "cannot record a done effect: trying again");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Ends this delivery's claim after a failed call. When the call may have had its
    /// effect the row stays `started` (the next attempt is counted as uncertain); otherwise
    /// it becomes `not_applied`.
    pub async fn release(
        &self,
        job_id: &str,
        maybe_applied: bool,
        error: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE integration.effects
             SET state = CASE WHEN $2 THEN 'started' ELSE 'not_applied' END,
                 claimed_until = NULL, last_error = $3, updated_at = now()
             WHERE job_id = $1 AND state <> 'done'",
        )
        .bind(job_id)
        .bind(maybe_applied)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
