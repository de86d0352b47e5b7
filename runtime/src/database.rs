//! Postgres for the components that own a database (cards, integration, the ledger): the URL
//! they cannot run without, and one shape of connection pool. Each component runs its own
//! migrations on the pool, into a schema of its own.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{Config, Error, config::Problem};

/// How long a query waits for a free connection before it fails (and its job is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// `database_url`, or a configuration error that says which component needs it and why
/// (`needed_by`, e.g. "the cards worker (cards live in Postgres)").
pub fn url(config: &Config, needed_by: &str) -> Result<String, Error> {
    config.database_url.clone().ok_or_else(|| {
        Error::Config(vec![Problem {
            key: "DATABASE_URL".into(),
            message: format!(
                "required by {needed_by}; set DATABASE_URL=postgres://user@host:5432/db"
            ),
        }])
    })
}

/// A pool of at most `max_connections` connections to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
}

/// Connections for a worker replica: enough for its concurrency, between 2 and 32.
pub fn pool_size(config: &Config) -> u32 {
    u32::try_from(config.worker.concurrency.clamp(2, 32)).unwrap_or(8)
}

/// Brings the component's `schema` up to date with `migrator` (its `sqlx::migrate!()`), the
/// migrations' own bookkeeping table kept in that schema too, so components sharing one
/// database never see each other's history.
pub async fn migrate(
    pool: &PgPool,
    mut migrator: sqlx::migrate::Migrator,
    schema: &'static str,
) -> Result<(), sqlx::migrate::MigrateError> {
    migrator.create_schema(schema);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.run(pool).await
}

/// Whether `e` says the database could not be reached or had no connection to give (the pool
/// timed out or closed, the connection broke, the server is starting, stopping or full):
/// Postgres is unavailable, the statement is not at fault. A job failing this way is handed
/// back without using an attempt ([`crate::JobFailure::Unavailable`]).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P: the server is
            // shutting down, crashed or not yet accepting connections.
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// The failure for a job whose database call failed with `e`: [`is_unavailable`] errors are
/// the database being unavailable, anything else `otherwise` decides.
pub fn failure(
    e: &sqlx::Error,
    message: String,
    otherwise: impl FnOnce(String) -> crate::JobFailure,
) -> crate::JobFailure {
    if is_unavailable(e) {
        crate::JobFailure::unavailable("the database", message)
    } else {
        otherwise(message)
    }
}
