//! The crate's one error type, and its mapping to bus outcomes ([`Error::failure`]) in one
//! exhaustive `match`: a new variant does not compile until someone decides its outcome.

use std::time::Duration;

use switchyard_runtime::JobFailure;

use crate::metrics::System;

/// Why an integration could not do its effect, or the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The system asked us to slow down (HTTP 429, Slack `ratelimited`).
    #[error("{system} rate limited the call{}", retry_hint(.retry_after))]
    RateLimited {
        system: System,
        retry_after: Option<Duration>,
    },
    /// A 5xx, a timeout or a broken connection: worth another attempt. `maybe_applied` says
    /// whether the system may have done the effect anyway (the request was sent).
    #[error("{system} is unavailable: {message}")]
    Unavailable {
        system: System,
        message: String,
        maybe_applied: bool,
    },
    /// A 4xx other than 429, or an API-level error such as Slack's `channel_not_found`:
    /// retrying cannot help. `message` is the API's own.
    #[error("{system} refused the call ({status}): {message}")]
    Rejected {
        system: System,
        status: u16,
        message: String,
    },
    /// A success status with a body we cannot read: the effect probably happened, so the job
    /// is not retried (a retry could duplicate it).
    #[error("{system} answered with an unexpected body: {message}")]
    BadResponse { system: System, message: String },
    /// The job's input is well-formed but cannot be used.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// What the job names does not exist for its tenant (another tenant's task reads so).
    #[error("{what} not found")]
    NotFound { what: String },
    /// An MCP tool answered with `isError`: its text, for the step's error.
    #[error("MCP tool {tool} of server {server} failed: {message}")]
    ToolFailed {
        server: String,
        tool: String,
        message: String,
    },
    /// An MCP server answered the call with a JSON-RPC error.
    #[error("MCP server {server} refused the call ({code}): {message}")]
    McpRefused {
        server: String,
        code: i32,
        message: String,
    },
    /// The MCP server's circuit breaker is open: the call was not made.
    #[error(
        "MCP server {server} is failing (circuit breaker open for {}s more); last error: {last}",
        retry_in.as_secs_f64().ceil()
    )]
    CircuitOpen {
        server: String,
        retry_in: Duration,
        last: String,
    },
    /// The operation needs a setting that is not there.
    #[error("{what} is not configured: set {key}")]
    NotConfigured {
        what: &'static str,
        key: &'static str,
    },
    /// Another delivery of the same job holds the effect right now.
    #[error("another delivery of this job is performing its effect{}", retry_hint(&Some(*.retry_after)))]
    InProgress { retry_after: Duration },
    /// The effect record could not be read or written.
    #[error("effect store: {0}")]
    Store(#[from] sqlx::Error),
    /// Writing a document into the Markdown sink failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// Start-up: the database schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Start-up: a secret file named in the configuration cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    SecretFile {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Start-up: a setting the worker needs is missing.
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    /// Start-up: the HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The runtime (NATS, metrics, configuration) failed.
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
}

/// ` (retry after <seconds>s)`, for people reading the message; callers get the delay as
/// `retry_after_ms` ([`Error::failure`]). Empty when unknown.
/// JSON-RPC's code for invalid parameters (an MCP tool's arguments that do not fit it).
const INVALID_PARAMS: i32 = -32602;

fn retry_hint(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {}s)", d.as_secs_f64()))
        .unwrap_or_default()
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

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether the external system may have performed the effect although the call failed.
    /// When it may have, the effect record stays "started" and the next attempt is logged as
    /// possibly duplicating it.
    pub fn maybe_applied(&self) -> bool {
        match self {
            Error::Unavailable { maybe_applied, .. } => *maybe_applied,
            Error::BadResponse { .. } => true,
            Error::ToolFailed { .. } | Error::McpRefused { .. } | Error::CircuitOpen { .. } => {
                false
            }
            Error::RateLimited { .. }
            | Error::Rejected { .. }
            | Error::InvalidInput { .. }
            | Error::NotConfigured { .. }
            | Error::NotFound { .. }
            | Error::InProgress { .. }
            | Error::Store(_)
            | Error::Write { .. }
            | Error::Migrate(_)
            | Error::SecretFile { .. }
            | Error::Config { .. }
            | Error::Client(_)
            | Error::Runtime(_) => false,
        }
    }

    /// What the worker loop should do about this error.
    pub fn failure(&self) -> JobFailure {
        match self {
            Error::RateLimited { retry_after, .. } => JobFailure::Retryable {
                message: self.to_string(),
                retry_after: *retry_after,
            },
            Error::InProgress { retry_after } => JobFailure::Retryable {
                message: self.to_string(),
                retry_after: Some(*retry_after),
            },
            Error::Unavailable { .. } | Error::CircuitOpen { .. } | Error::ToolFailed { .. } => {
                JobFailure::retryable(self.to_string())
            }
            Error::McpRefused { code, message, .. } if *code == INVALID_PARAMS => {
                JobFailure::invalid_input("arguments", message.clone())
            }
            Error::Store(e) => {
                switchyard_runtime::database::failure(e, self.to_string(), JobFailure::retryable)
            }
            Error::Write { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::InvalidFilename
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::IsADirectory
                | std::io::ErrorKind::ReadOnlyFilesystem => JobFailure::permanent(self.to_string()),
                _ => JobFailure::retryable(self.to_string()),
            },
            Error::InvalidInput { field, message } => {
                JobFailure::invalid_input(field.clone(), message.clone())
            }
            Error::NotFound { .. } => JobFailure::not_found(self.to_string()),
            Error::Rejected { .. }
            | Error::McpRefused { .. }
            | Error::BadResponse { .. }
            | Error::NotConfigured { .. }
            | Error::Migrate(_)
            | Error::SecretFile { .. }
            | Error::Config { .. }
            | Error::Client(_)
            | Error::Runtime(_) => JobFailure::permanent(self.to_string()),
        }
    }

    /// The `outcome` label of `cross_system_calls_total` for a call that failed this way.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable { .. } => "unavailable",
            Error::Rejected { .. } => "rejected",
            Error::BadResponse { .. } => "bad_response",
            Error::InvalidInput { .. } => "invalid_input",
            Error::ToolFailed { .. } => "tool_error",
            Error::McpRefused { .. } => "rejected",
            Error::CircuitOpen { .. } => "circuit_open",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_outages_retry_and_refusals_do_not() {
        let limited = Error::RateLimited {
            system: System::Slack,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            limited.failure(),
            JobFailure::Retryable {
                message: "Slack rate limited the call (retry after 2s)".into(),
                retry_after: Some(Duration::from_secs(2)),
            }
        );
        let down = Error::Unavailable {
            system: System::Notion,
            message: "HTTP 502".into(),
            maybe_applied: true,
        };
        assert!(matches!(
            down.failure(),
            JobFailure::Retryable {
                retry_after: None,
                ..
            }
        ));
        assert!(down.maybe_applied());
        let refused = Error::Rejected {
            system: System::Slack,
            status: 200,
            message: "channel_not_found".into(),
        };
        assert_eq!(
            refused.failure(),
            JobFailure::permanent("Slack refused the call (200): channel_not_found")
        );
        assert!(!refused.maybe_applied());
    }
}
