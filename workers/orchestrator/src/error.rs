//! The orchestrator's error type.

/// Errors a caller of the orchestrator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
    #[error("{what} is missing on the NATS server: run `switchyard bus apply` first")]
    NotProvisioned { what: String },
    #[error("{action}: {reason}")]
    Bus {
        action: &'static str,
        reason: String,
    },
    /// A message could not be written in the form its reader takes.
    #[error("encoding {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error(transparent)]
    Workflow(#[from] switchyard_workflow::Error),
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Error {
    pub(crate) fn bus(action: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Bus {
            action,
            reason: err.to_string(),
        }
    }
}
