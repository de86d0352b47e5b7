//! The AI worker's errors, and the one place that decides what each means for the job
//! (retry later, give up, or bad input).

use std::time::Duration;

use switchyard_runtime::JobFailure;

/// What went wrong while serving an AI job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The provider answered 429.
    #[error("provider {provider}: rate limited (HTTP 429)")]
    RateLimited {
        provider: String,
        retry_after: Option<Duration>,
    },
    /// The provider answered 5xx (or 529, Anthropic's "overloaded").
    #[error("provider {provider}: server error (HTTP {status}): {body}")]
    Server {
        provider: String,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// No complete answer within the call's timeout.
    #[error("provider {provider}: no answer within {after:?}")]
    Timeout { provider: String, after: Duration },
    /// The connection failed or broke before the answer was complete.
    #[error("provider {provider}: connection failed: {message}")]
    Connection { provider: String, message: String },
    /// The provider refused the request (4xx other than 429): retrying the same request
    /// cannot help.
    #[error("provider {provider}: request refused (HTTP {status}): {body}")]
    Refused {
        provider: String,
        status: u16,
        body: String,
    },
    /// The answer is not in the provider's documented format.
    #[error("provider {provider}: malformed response: {message}")]
    Malformed { provider: String, message: String },
    /// The provider's circuit breaker is open: calls fail fast until it lets a probe through.
    #[error("provider {provider}: circuit open after repeated failures; next try in {retry_in:?}")]
    CircuitOpen {
        provider: String,
        retry_in: Duration,
    },
    /// The model's output does not match the operation's output schema, even after it was
    /// shown the problems once. `raw` is kept so the dead letter shows what came back.
    #[error("model output does not match the output schema: {problems}; raw output: {raw}")]
    InvalidOutput { problems: String, raw: String },
    /// The job input names something that cannot be served.
    #[error("field `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// The provider cannot do what the operation needs (e.g. speech-to-text on Anthropic).
    #[error("provider {provider} cannot {what}")]
    Unsupported { provider: String, what: String },
    /// A prompt template failed to render: a bug in a shipped template or a context it
    /// cannot use.
    #[error("prompt template {name}: {message}")]
    Template { name: String, message: String },
    /// Signing or building a request failed before it was sent.
    #[error("provider {provider}: cannot build the request: {message}")]
    Request { provider: String, message: String },
    /// The bus refused a usage event or a stored text; the job is retried.
    #[error("bus: {0}")]
    Bus(String),
    /// The job was cancelled while the call was running.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Whether another attempt of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Timeout { .. }
                | Error::Connection { .. }
                | Error::CircuitOpen { .. }
                | Error::Bus(_)
        )
    }

    /// Whether this says something about the provider's health (for the circuit breaker).
    /// A 429 does not: the provider is up and says when to come back.
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self,
            Error::Server { .. } | Error::Timeout { .. } | Error::Connection { .. }
        )
    }

    /// The delay the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Server { retry_after, .. } => {
                *retry_after
            }
            Error::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// What the worker loop does with the job.
    pub fn into_failure(self) -> JobFailure {
        match self {
            Error::RateLimited { .. }
            | Error::Server { .. }
            | Error::Timeout { .. }
            | Error::Connection { .. }
            | Error::CircuitOpen { .. } => JobFailure::Retryable {
                retry_after: self.retry_after(),
                message: self.to_string(),
            },
            Error::Bus(_) => JobFailure::unavailable("the bus", self.to_string()),
            Error::InvalidInput { field, message } => JobFailure::InvalidInput { field, message },
            Error::Refused { .. }
            | Error::Malformed { .. }
            | Error::InvalidOutput { .. }
            | Error::Unsupported { .. }
            | Error::Template { .. }
            | Error::Request { .. }
            | Error::Cancelled => JobFailure::permanent(self.to_string()),
        }
    }

    pub(crate) fn invalid_input(field: &str, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Cuts `text` to at most `max` characters for an error message, marking the cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_hand_the_job_back_with_the_asked_delay() {
        let e = Error::RateLimited {
            provider: "openai".into(),
            retry_after: Some(Duration::from_secs(20)),
        };
        assert_eq!(
            e.into_failure(),
            JobFailure::Retryable {
                message: "provider openai: rate limited (HTTP 429)".into(),
                retry_after: Some(Duration::from_secs(20)),
            }
        );
        let e = Error::Malformed {
            provider: "openai".into(),
            message: "not JSON".into(),
        };
        assert!(matches!(e.into_failure(), JobFailure::Permanent { .. }));
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("héllo", 2), "hé…");
        assert_eq!(excerpt("hi", 5), "hi");
    }
}
