//! The crate's one error type, its mapping to service answers ([`Error::failure`]) in one
//! exhaustive `match`, and the translation of Postgres errors (SQLSTATE) into it.

use switchyard_runtime::JobFailure;

/// Why a ledger operation failed, or the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query's input cannot be used; `field` names the parameter.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// Postgres could not be reached or refused for a transient reason: the batch is handed
    /// back to the stream and tried again.
    #[error("ledger store: {0}")]
    Store(sqlx::Error),
    /// Postgres refused the statement for a reason retrying cannot fix.
    #[error("ledger store refused the statement ({code}): {message}")]
    Refused { code: String, message: String },
    /// A stream or consumer could not be read or written.
    #[error("{what}: {reason}")]
    Bus { what: &'static str, reason: String },
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

    pub(crate) fn bus(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Bus {
            what,
            reason: reason.to_string(),
        }
    }

    /// How a query endpoint reports this error: invalid input names the field (the gateway
    /// answers 422), a store that may come back is worth a retry (503), the rest is permanent.
    pub fn failure(&self) -> JobFailure {
        match self {
            Error::InvalidInput { field, message } => {
                JobFailure::invalid_input(field.clone(), message.clone())
            }
            Error::Store(e) => {
                switchyard_runtime::database::failure(e, self.to_string(), JobFailure::retryable)
            }
            Error::Bus { .. } => JobFailure::unavailable("the bus", self.to_string()),
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
    fn query_errors_map_to_service_failures() {
        assert_eq!(
            Error::invalid("cursor", "not a cursor").failure(),
            JobFailure::invalid_input("cursor", "not a cursor")
        );
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
        assert!(matches!(
            Error::Refused {
                code: "22007".into(),
                message: "bad date".into()
            }
            .failure(),
            JobFailure::Permanent { .. }
        ));
    }
}
