//! The crate's one error type, its mapping to bus outcomes ([`Error::failure`]) in one
//! exhaustive `match`, and the translation of Postgres errors (SQLSTATE) into it.
//!
//! A failure crosses the bus as a code and a message: a missing card and a stale version have
//! codes of their own (`not_found`, `conflict`), which the gateway answers 404 and 412.

use switchyard_runtime::JobFailure;

/// Why a cards operation failed, or the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is well-formed JSON but cannot be used; `field` names where.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// The card (or the version of it) does not exist for this tenant, or is deleted.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// Cards asked for by a job that does not allow a partial result.
    #[error("not found: cards {}", .ids.join(", "))]
    Missing { ids: Vec<String> },
    /// The card changed since the version the update was based on.
    #[error("version conflict: card {card_id} is at version {current}, not {expected}")]
    Conflict {
        card_id: String,
        current: i32,
        expected: i32,
    },
    /// Postgres could not be reached or refused for a transient reason.
    #[error("card store: {0}")]
    Store(sqlx::Error),
    /// Postgres refused the statement for a reason retrying cannot fix.
    #[error("card store refused the write ({code}): {message}")]
    Refused { code: String, message: String },
    /// Publishing a usage event failed.
    #[error("cannot publish a usage event: {0}")]
    Usage(String),
    /// Start-up: the database schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The runtime (NATS, metrics, configuration) failed.
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
}

impl From<switchyard_runtime::InputError> for Error {
    fn from(e: switchyard_runtime::InputError) -> Self {
        Error::InvalidInput {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<prometheus::Error> for Error {
    fn from(e: prometheus::Error) -> Self {
        Error::Runtime(switchyard_runtime::Error::Metrics(e))
    }
}

impl From<sqlx::Error> for Error {
    /// SQLSTATE classes that retrying cannot fix become [`Error::Refused`]; the rest
    /// (connections, serialization failures, deadlocks, shutdown) stay retryable.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(code) = db.code()
            && switchyard_runtime::sqlstate::is_permanent(&code)
        {
            return Error::Refused {
                code: code.into_owned(),
                message: db.message().to_owned(),
            };
        }
        Error::Store(e)
    }
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// What the worker loop (or the service endpoint) should do about this error.
    pub fn failure(&self) -> JobFailure {
        match self {
            Error::InvalidInput { field, message } => {
                JobFailure::invalid_input(field.clone(), message.clone())
            }
            Error::Store(e) => {
                switchyard_runtime::database::failure(e, self.to_string(), JobFailure::retryable)
            }
            Error::Usage(_) => JobFailure::unavailable("the bus", self.to_string()),
            Error::NotFound { .. } | Error::Missing { .. } => {
                JobFailure::not_found(self.to_string())
            }
            Error::Conflict { .. } => JobFailure::conflict(self.to_string()),
            Error::Refused { .. } | Error::Migrate(_) | Error::Runtime(_) => {
                JobFailure::permanent(self.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_stale_cards_fail_with_their_own_codes() {
        let missing = Error::Missing {
            ids: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            missing.failure(),
            JobFailure::not_found("not found: cards a, b")
        );
        assert!(matches!(
            Error::not_found("card x").failure(),
            JobFailure::NotFound { .. }
        ));
        let stale = Error::Conflict {
            card_id: "c".into(),
            current: 3,
            expected: 2,
        };
        assert_eq!(
            stale.failure(),
            JobFailure::conflict("version conflict: card c is at version 3, not 2")
        );
        assert!(matches!(
            Error::Refused {
                code: "23514".into(),
                message: "check violated".into()
            }
            .failure(),
            JobFailure::Permanent { .. }
        ));
        // An unreachable database is not the job's failure (no attempt used); another
        // store error is worth a retry.
        assert!(matches!(
            Error::Store(sqlx::Error::PoolTimedOut).failure(),
            JobFailure::Unavailable { .. }
        ));
        assert!(matches!(
            Error::Store(sqlx::Error::RowNotFound).failure(),
            JobFailure::Retryable { .. }
        ));
        assert_eq!(
            Error::invalid("content.name", "required").failure(),
            JobFailure::invalid_input("content.name", "required")
        );
    }
}
