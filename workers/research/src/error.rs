//! The crate's one error type, and its mapping to bus outcomes ([`Error::failure`]) in one
//! exhaustive `match`: a new variant does not compile until someone decides its outcome.

use switchyard_runtime::JobFailure;

use crate::sources::SourceError;

/// Why a topic could not be researched, or the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job's input is well-formed JSON but cannot be used.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// Sources were asked for and none of them could be read; each failure names its source.
    #[error("no source could be read: {}", list(.0))]
    AllSourcesFailed(Vec<SourceError>),
    /// The corpus directory cannot be read (missing, not a directory, no permission).
    #[error("{key}: cannot read the corpus directory {path}: {message}")]
    Corpus {
        key: &'static str,
        path: String,
        message: String,
    },
    /// The search index failed.
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The AI provider that writes the summary failed.
    #[error("summary: {0}")]
    Summary(#[from] switchyard_ai::Error),
    /// A usage event could not be published.
    #[error("cannot publish usage: {0}")]
    Usage(String),
    /// Start-up: a setting the worker needs is wrong.
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    /// Start-up: the HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The runtime (NATS, metrics, configuration) failed.
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
}

fn list(failures: &[SourceError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
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

    /// What the worker loop should do about this error.
    pub fn failure(self) -> JobFailure {
        match self {
            Error::InvalidInput { field, message } => JobFailure::invalid_input(field, message),
            // Worth another attempt only when some source may answer later (a timeout, a 5xx);
            // a refused address or a PDF stays refused.
            Error::AllSourcesFailed(ref failures) => {
                if failures.iter().any(SourceError::is_transient) {
                    JobFailure::retryable(self.to_string())
                } else {
                    JobFailure::permanent(self.to_string())
                }
            }
            Error::Summary(e) => e.into_failure(),
            Error::Usage(_) => JobFailure::unavailable("the bus", self.to_string()),
            Error::Index(_) | Error::Runtime(_) => JobFailure::retryable(self.to_string()),
            Error::Corpus { .. } | Error::Config { .. } | Error::Client(_) => {
                JobFailure::permanent(self.to_string())
            }
        }
    }
}
