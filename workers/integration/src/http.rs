//! What every HTTP integration shares: the client, metrics around each call, the mapping of
//! HTTP statuses to [`Error`] (429 → rate limited with `Retry-After`, 5xx → unavailable, other
//! 4xx → rejected with the API's message), and the check of URLs that come from job input
//! (the shared [`AddressGuard`] of the runtime).

use std::time::{Duration, Instant, SystemTime};

use reqwest::{
    RequestBuilder, StatusCode, Url,
    header::{HeaderMap, RETRY_AFTER},
};

use switchyard_runtime::net::{self, AddressGuard};

use crate::{
    Error,
    metrics::{Metrics, System},
};

/// The longest `Retry-After` honoured; a longer one is capped so a job is not parked for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How much of an error body goes into an error message.
const MAX_ERROR_TEXT: usize = 500;

/// An answer with its status, headers and body read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The HTTP side of the worker: clients and metrics.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// For the configured APIs (their base URLs are trusted configuration).
    pub client: reqwest::Client,
    /// For URLs from job input: no redirects, and names resolved through the guard.
    pub guarded: reqwest::Client,
    pub guard: AddressGuard,
    pub metrics: Metrics,
}

impl Http {
    pub fn new(timeout: Duration, guard: AddressGuard, metrics: Metrics) -> Result<Self, Error> {
        let user_agent = concat!("switchyard-integration/", env!("CARGO_PKG_VERSION"));
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(Error::Client)?;
        let guarded = net::guarded_client(&guard, 0)
            .user_agent(user_agent)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(Error::Client)?;
        Ok(Http {
            client,
            guarded,
            guard,
            metrics,
        })
    }

    /// Sends `request` and hands the reply to `interpret`; counts the call and its duration
    /// under `system` with the outcome of the whole exchange.
    pub async fn call<T>(
        &self,
        system: System,
        request: RequestBuilder,
        interpret: impl FnOnce(Reply) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = match send(system, request).await {
            Ok(reply) => interpret(reply),
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .observe(system, outcome, started.elapsed().as_secs_f64());
        result
    }
}

async fn send(system: System, request: RequestBuilder) -> Result<Reply, Error> {
    let response = request.send().await.map_err(|e| transport(system, e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport(system, e))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A request that got no answer. Only a failed connection proves nothing was sent. The URL is
/// left out of the message: a Slack webhook URL is a credential.
fn transport(system: System, e: reqwest::Error) -> Error {
    let maybe_applied = !e.is_connect() && !e.is_builder();
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    Error::Unavailable {
        system,
        message,
        maybe_applied,
    }
}

/// The common mapping of a non-2xx status; `message` is the API's own error text.
pub(crate) fn status_error(system: System, reply: &Reply, message: String) -> Error {
    let status = reply.status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        Error::RateLimited {
            system,
            retry_after: retry_after(&reply.headers, SystemTime::now()),
        }
    } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        Error::Unavailable {
            system,
            message: format!("HTTP {}: {message}", status.as_u16()),
            // A 503 or 429-like refusal happens before the work; a 500 may come after it.
            maybe_applied: status != StatusCode::SERVICE_UNAVAILABLE,
        }
    } else {
        Error::Rejected {
            system,
            status: status.as_u16(),
            message,
        }
    }
}

/// The body as text for an error message, shortened.
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3), else ClickUp's
/// `X-RateLimit-Reset` (Unix seconds); capped at an hour.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let delay = if let Some(v) = value(RETRY_AFTER.as_str()) {
        if let Ok(secs) = v.parse::<u64>() {
            Some(Duration::from_secs(secs))
        } else if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            Some(Duration::from_secs_f64(
                secs.min(MAX_RETRY_AFTER.as_secs_f64()),
            ))
        } else {
            httpdate::parse_http_date(v)
                .ok()
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
        }
    } else {
        value("x-ratelimit-reset")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|reset| {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
                at.duration_since(now).unwrap_or(Duration::ZERO)
            })
    };
    delay.map(|d| d.min(MAX_RETRY_AFTER))
}

/// `base` with `segments` appended as path segments, each percent-encoded, so an id from job
/// input can never change the path.
pub(crate) fn endpoint(base: &str, segments: &[&str]) -> Result<Url, Error> {
    let mut url = Url::parse(base).map_err(|e| Error::Config {
        key: "integration base_url",
        message: format!("{base:?} is not a URL: {e}"),
    })?;
    {
        let mut path = url.path_segments_mut().map_err(|()| Error::Config {
            key: "integration base_url",
            message: format!("{base:?} cannot have a path"),
        })?;
        path.pop_if_empty();
        for s in segments {
            path.push(s);
        }
    }
    Ok(url)
}

/// Checks an id from job input that goes into a URL path.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{id:?} is not an id; expected letters, digits, `-` and `_`"),
        ))
    }
}

impl Http {
    /// Checks a URL from job input against the address guard: http(s) only, and every
    /// address its host resolves to allowed. The guarded client resolves the name again
    /// through the guard, so a name that changes its answer in between is caught there.
    pub async fn check_url(&self, field: &str, raw: &str) -> Result<Url, Error> {
        self.guard.check_url(raw).await.map_err(|e| match e {
            net::Error::InvalidUrl { reason, .. } => Error::invalid(field, reason),
            net::Error::Blocked { .. } => Error::invalid(
                field,
                format!("{e}; set integration.webhook.allow_private_addresses to allow it"),
            ),
            net::Error::Resolve { .. } => Error::Unavailable {
                system: System::Webhook,
                message: e.to_string(),
                maybe_applied: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_clickup_resets() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(now + Duration::from_secs(7))
                .parse()
                .unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", "1700000005".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[tokio::test]
    async fn urls_are_checked_for_scheme_and_address() {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let strict = Http::new(
            Duration::from_secs(1),
            AddressGuard::public_only(),
            metrics.clone(),
        )
        .unwrap();
        for (url, needle) in [
            ("file:///etc/passwd", "scheme `file`"),
            ("ftp://example.com/x", "scheme `ftp`"),
            ("http://127.0.0.1:8080/hook", "non-public address"),
            ("http://[::1]/hook", "non-public address"),
            ("http://169.254.169.254/latest", "non-public address"),
            ("http://localhost:9/hook", "non-public address"),
            ("http://user:pw@example.com/", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = strict.check_url("url", url).await.expect_err(url);
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert!(matches!(err, Error::InvalidInput { .. }), "{url}: {err:?}");
        }
        let open = Http::new(Duration::from_secs(1), AddressGuard::allow_all(), metrics).unwrap();
        assert!(
            open.check_url("url", "http://127.0.0.1:8080/hook")
                .await
                .is_ok()
        );
    }

    #[test]
    fn ids_cannot_change_the_path() {
        let url = endpoint("http://h:1/base/", &["v1", "blocks", "a b?c#d", "children"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://h:1/base/v1/blocks/a%20b%3Fc%23d/children"
        );
        assert!(check_id("task_id", "../x").is_err());
        assert!(check_id("task_id", "").is_err());
        assert!(check_id("task_id", "86a1b2c3").is_ok());
    }
}
