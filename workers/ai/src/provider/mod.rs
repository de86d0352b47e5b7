//! Provider clients behind one trait: what a chat call carries, what comes back, and the
//! HTTP plumbing the clients share (status → error, `Retry-After`, transport errors).
//!
//! A client makes exactly one HTTP call per [`ChatApi::chat`]; retries, the circuit breaker,
//! metrics and cancellation are the [`crate::client::Provider`] wrapper's job, the same for
//! every wire format.

pub mod anthropic;
pub mod bedrock;
pub mod eventstream;
pub mod openai;
pub mod sse;

use std::{fmt, time::Duration};

use futures::future::BoxFuture;
use reqwest::{Response, StatusCode, header::HeaderMap};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{Error, excerpt};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Ask for JSON matching a schema (OpenAI `response_format`, Anthropic and Bedrock tool use).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonOutput {
    /// A name for the schema / tool, letters, digits and `_`.
    pub name: String,
    /// A JSON Schema object.
    pub schema: Value,
}

/// One chat call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub json: Option<JsonOutput>,
    /// Ask for the answer as a stream of deltas.
    pub stream: bool,
    /// The whole call, streaming included.
    pub timeout: Duration,
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatResponse {
    /// The text, or for JSON output the JSON document as text.
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub stop_reason: Option<String>,
}

/// Where streamed text deltas go as they arrive.
pub type Deltas = UnboundedSender<String>;

/// A speech-to-text call.
#[derive(Debug, Clone)]
pub struct TranscribeRequest {
    pub model: String,
    pub audio: bytes::Bytes,
    pub file_name: String,
    pub language: Option<String>,
    pub timeout: Duration,
}

/// A transcription with timings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcription {
    pub text: String,
    pub language: Option<String>,
    pub duration_seconds: f64,
    /// `(start, end, text)` in seconds.
    pub segments: Vec<(f64, f64, String)>,
}

/// One provider's wire format. Implementations make one HTTP request per call.
pub trait ChatApi: Send + Sync + fmt::Debug {
    /// Sends `request`; when it streams, each text delta also goes to `deltas`.
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<&'a Deltas>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>>;

    /// Speech to text; only some providers offer it.
    fn transcribe<'a>(
        &'a self,
        request: &'a TranscribeRequest,
    ) -> BoxFuture<'a, Result<Transcription, Error>> {
        let _ = request;
        Box::pin(async move {
            Err(Error::Unsupported {
                provider: self.name().to_owned(),
                what: "transcribe audio".into(),
            })
        })
    }

    /// The configured provider name, for errors.
    fn name(&self) -> &str;
}

/// Turns a non-success status into the error it means.
pub(crate) async fn check_status(provider: &str, response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers(), std::time::SystemTime::now());
    let body = excerpt(response.text().await.unwrap_or_default().trim(), 500);
    let provider = provider.to_owned();
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
            provider,
            retry_after,
        },
        s if s.is_server_error() || s.as_u16() == 529 => Error::Server {
            provider,
            status: s.as_u16(),
            body,
            retry_after,
        },
        s => Error::Refused {
            provider,
            status: s.as_u16(),
            body,
        },
    })
}

/// Maps a transport error (connect, timeout, a broken body) to the error it means.
/// Reads a whole (non-streamed) reply as `T`; a body that is not `what` is a permanent error
/// quoting the start of it.
pub(crate) async fn read_json<T: DeserializeOwned>(
    provider: &str,
    timeout: Duration,
    response: Response,
    what: &str,
) -> Result<T, Error> {
    let text = response
        .text()
        .await
        .map_err(|e| transport(provider, timeout, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Malformed {
        provider: provider.to_owned(),
        message: format!("not {what} ({e}): {}", excerpt(&text, 300)),
    })
}

pub(crate) fn transport(provider: &str, timeout: Duration, err: reqwest::Error) -> Error {
    if err.is_timeout() {
        Error::Timeout {
            provider: provider.to_owned(),
            after: timeout,
        }
    } else if err.is_decode() {
        Error::Malformed {
            provider: provider.to_owned(),
            message: err.to_string(),
        }
    } else {
        Error::Connection {
            provider: provider.to_owned(),
            message: error_chain(&err),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The delay a response asks for: `retry-after-ms` (OpenAI), `Retry-After` in seconds, or
/// `Retry-After` as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires.
fn parse_http_date(text: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u8 + 1;
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let mut hms = clock.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let at = date.with_hms(h, m, s).ok()?.assume_utc();
    Some(std::time::SystemTime::from(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_700);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(77)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
