//! The network sources: URLs fetched through the address guard, and the SearXNG search API.
//!
//! A URL from job input (or from a search result) is checked before the first request and on
//! every redirect ([`switchyard_runtime::net`]); its body is streamed and abandoned at the size
//! cap; only `text/html`, `application/xhtml+xml`, `text/plain` and `text/markdown` are read.
//! The SearXNG base URL is trusted configuration and called with an ordinary client; the
//! result URLs it returns are not trusted and go through the guard like any other.

use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url, header::CONTENT_TYPE};
use serde::Deserialize;
use switchyard_runtime::{
    config::ResearchSettings,
    net::{self, AddressGuard},
};

use crate::{Error, metrics::Metrics, text};

const USER_AGENT: &str = concat!("switchyard-research/", env!("CARGO_PKG_VERSION"));

/// Why one source could not be used; the other sources are still tried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {failure}")]
pub struct SourceError {
    /// The URL (or the search API) that failed.
    pub location: String,
    pub failure: Failure,
}

/// What went wrong with a source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// The address guard refused the URL or a redirect.
    #[error("refused: {0}")]
    Refused(String),
    /// The body is larger than `research.max_bytes`.
    #[error("the body is larger than {limit} bytes (research.max_bytes)")]
    TooLarge { limit: u64 },
    /// A content type that is not text.
    #[error("content type {0:?} is not supported; expected text/html, text/plain or text/markdown")]
    UnsupportedType(String),
    /// A non-2xx answer.
    #[error("HTTP {0}")]
    Status(u16),
    /// No complete answer within `research.fetch_timeout`.
    #[error("no answer within {0:?} (research.fetch_timeout)")]
    Timeout(Duration),
    /// Connection refused, reset, DNS failure.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// An answer that cannot be read (the search API's JSON).
    #[error("unexpected answer: {0}")]
    BadResponse(String),
}

impl SourceError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match &self.failure {
            Failure::Status(s) => *s >= 500 || *s == 429 || *s == 408,
            Failure::Timeout(_) | Failure::Unreachable(_) => true,
            Failure::Refused(_)
            | Failure::TooLarge { .. }
            | Failure::UnsupportedType(_)
            | Failure::BadResponse(_) => false,
        }
    }

    /// The `outcome` label of `cross_system_calls_total`.
    fn outcome(&self) -> &'static str {
        match &self.failure {
            Failure::Refused(_) => "refused",
            Failure::TooLarge { .. } => "too_large",
            Failure::UnsupportedType(_) => "unsupported_type",
            Failure::Status(_) => "rejected",
            Failure::Timeout(_) => "timeout",
            Failure::Unreachable(_) => "unavailable",
            Failure::BadResponse(_) => "bad_response",
        }
    }
}

/// A fetched page's readable text.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Where the text came from, after redirects.
    pub url: String,
    pub doc: text::Document,
    /// Body bytes read.
    pub bytes: u64,
}

/// Fetches URLs from job input through the address guard.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: AddressGuard,
    max_bytes: u64,
    timeout: Duration,
    metrics: Metrics,
}

impl Fetcher {
    pub fn new(settings: &ResearchSettings, metrics: Metrics) -> Result<Self, Error> {
        let allowed = settings
            .allowed_addresses
            .iter()
            .map(|entry| {
                AddressGuard::parse_network(entry).map_err(|message| Error::Config {
                    key: "research.allowed_addresses",
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let guard = AddressGuard::with_allowed(allowed);
        let client = net::guarded_client(&guard, settings.max_redirects)
            .user_agent(USER_AGENT)
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(Error::Client)?;
        Ok(Fetcher {
            client,
            guard,
            max_bytes: settings.max_bytes,
            timeout: settings.fetch_timeout,
            metrics,
        })
    }

    /// Fetches `raw` and extracts its readable text; `origin` (`url` or `search`) labels the
    /// metrics.
    pub async fn fetch(&self, raw: &str, origin: &'static str) -> Result<Page, SourceError> {
        let started = Instant::now();
        let result = self.fetch_inner(raw).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .call("web", origin, outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn fetch_inner(&self, raw: &str) -> Result<Page, SourceError> {
        let fail = |failure| SourceError {
            location: raw.to_owned(),
            failure,
        };
        let url = self
            .guard
            .check_url(raw)
            .await
            .map_err(|e| fail(guard_failure(e)))?;
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(self.transport(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(Failure::Status(status.as_u16())));
        }
        let final_url = response.url().to_string();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let kind = match essence.as_str() {
            "text/html" | "application/xhtml+xml" => Kind::Html,
            "text/markdown" | "text/x-markdown" => Kind::Markdown,
            "text/plain" => Kind::Plain,
            _ => return Err(fail(Failure::UnsupportedType(content_type))),
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(fail(Failure::TooLarge {
                limit: self.max_bytes,
            }));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(self.transport(e)))?
        {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(fail(Failure::TooLarge {
                    limit: self.max_bytes,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        let source = String::from_utf8_lossy(&body);
        let fallback = Url::parse(&final_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| final_url.clone());
        let doc = match kind {
            Kind::Html => text::from_html(&source, &fallback),
            Kind::Markdown => text::from_markdown(&source, &fallback),
            Kind::Plain => text::from_plain(&source, &fallback),
        };
        Ok(Page {
            url: final_url,
            doc,
            bytes: body.len() as u64,
        })
    }

    fn transport(&self, e: reqwest::Error) -> Failure {
        if let Some(refusal) = net::refusal(&e) {
            return guard_failure(refusal.clone());
        }
        if e.is_timeout() {
            return Failure::Timeout(self.timeout);
        }
        Failure::Unreachable(chain(&e.without_url()))
    }
}

enum Kind {
    Html,
    Markdown,
    Plain,
}

fn guard_failure(e: net::Error) -> Failure {
    match e {
        net::Error::Resolve { .. } => Failure::Unreachable(e.to_string()),
        net::Error::InvalidUrl { reason, .. } => Failure::Refused(reason),
        net::Error::Blocked { .. } => Failure::Refused(format!(
            "{e}; add it to research.allowed_addresses to allow it"
        )),
    }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// One SearXNG result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchHit {
    pub url: String,
    #[serde(default)]
    pub title: String,
    /// The engine's snippet.
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub engine: String,
    #[serde(default)]
    pub score: f64,
}

#[derive(Debug, Deserialize)]
struct SearchReply {
    #[serde(default)]
    results: Vec<SearchHit>,
}

/// A SearXNG instance's JSON API (`GET /search?q=…&format=json`).
#[derive(Debug, Clone)]
pub struct Searxng {
    client: reqwest::Client,
    endpoint: Url,
    metrics: Metrics,
}

impl Searxng {
    /// A client of the instance at `base` (trusted configuration).
    pub fn new(base: &str, timeout: Duration, metrics: Metrics) -> Result<Self, Error> {
        let bad = |message: String| Error::Config {
            key: "research.searxng_url",
            message,
        };
        let mut endpoint = Url::parse(base).map_err(|e| bad(format!("{base:?}: {e}")))?;
        endpoint
            .path_segments_mut()
            .map_err(|()| bad(format!("{base:?} cannot have a path")))?
            .pop_if_empty()
            .push("search");
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .build()
            .map_err(Error::Client)?;
        Ok(Searxng {
            client,
            endpoint,
            metrics,
        })
    }

    /// The first `limit` results for `query`, in SearXNG's order.
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>, SourceError> {
        let started = Instant::now();
        let result = self.search_inner(query, limit).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.call(
            "searxng",
            "search",
            outcome,
            started.elapsed().as_secs_f64(),
        );
        result
    }

    async fn search_inner(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>, SourceError> {
        let fail = |failure| SourceError {
            location: self.endpoint.to_string(),
            failure,
        };
        let response = self
            .client
            .get(self.endpoint.clone())
            .query(&[("q", query), ("format", "json")])
            .send()
            .await
            .map_err(|e| {
                fail(if e.is_timeout() {
                    Failure::Unreachable("timed out".into())
                } else {
                    Failure::Unreachable(chain(&e.without_url()))
                })
            })?;
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            // SearXNG answers 403 when the JSON format is not enabled in its settings.
            return Err(fail(Failure::BadResponse(
                "HTTP 403: enable the json format under search.formats in the SearXNG settings"
                    .into(),
            )));
        }
        if !status.is_success() {
            return Err(fail(Failure::Status(status.as_u16())));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| fail(Failure::Unreachable(chain(&e.without_url()))))?;
        let reply: SearchReply = serde_json::from_slice(&bytes)
            .map_err(|e| fail(Failure::BadResponse(e.to_string())))?;
        Ok(reply
            .results
            .into_iter()
            .filter(|r| r.url.starts_with("http://") || r.url.starts_with("https://"))
            .take(limit)
            .collect())
    }
}
