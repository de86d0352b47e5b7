//! A configured provider: one wire-format client wrapped with what every provider gets the
//! same way — a few short in-call retries with backoff and jitter (honouring `Retry-After`),
//! a circuit breaker, metrics, and cancellation.
//!
//! In-call retries are deliberately few and short: the worker loop already retries jobs
//! with the step's own policy, so a long wait (a `Retry-After` beyond `retry_max_delay`, or
//! retries used up) hands the job back as retryable with that delay instead of holding a
//! slot.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable as _};
use switchyard_runtime::config::{AiProviderKind, AiProviderSettings, AiSettings};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    breaker::Breaker,
    error::Error,
    metrics::Metrics,
    provider::{
        ChatApi, ChatRequest, ChatResponse, Deltas, TranscribeRequest, Transcription,
        anthropic::Anthropic,
        bedrock::{AwsKeys, Bedrock},
        openai::OpenAi,
    },
};

/// How a provider retries within one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

/// One configured provider, ready to call.
#[derive(Debug)]
pub struct Provider {
    name: String,
    kind: &'static str,
    pub default_model: String,
    pub transcription_model: String,
    pub timeout: Duration,
    retry: RetryPolicy,
    breaker: Breaker,
    metrics: Metrics,
    api: Arc<dyn ChatApi>,
}

impl Provider {
    /// Wraps `api`. `breaker_failures` consecutive faults open the breaker for `open_for`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        kind: &'static str,
        default_model: impl Into<String>,
        timeout: Duration,
        retry: RetryPolicy,
        breaker: Breaker,
        metrics: Metrics,
        api: Arc<dyn ChatApi>,
    ) -> Self {
        let provider = Provider {
            name: name.into(),
            kind,
            default_model: default_model.into(),
            transcription_model: "whisper-1".into(),
            timeout,
            retry,
            breaker,
            metrics,
            api,
        };
        provider.export_state();
        provider
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn export_state(&self) {
        self.metrics
            .breaker_state
            .with_label_values(&[&self.name])
            .set(self.breaker.state().as_gauge());
    }

    /// Calls the provider, retrying transient failures briefly; stops at once when `cancel`
    /// fires (dropping the request, which closes its connection).
    pub async fn chat(
        &self,
        request: &ChatRequest,
        deltas: Option<&Deltas>,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, Error> {
        let call = || self.once(|| self.api.chat(request, deltas));
        self.with_retries(call, cancel).await
    }

    /// Speech to text, with the same retries, breaker and cancellation as [`Provider::chat`].
    pub async fn transcribe(
        &self,
        request: &TranscribeRequest,
        cancel: &CancellationToken,
    ) -> Result<Transcription, Error> {
        let call = || self.once(|| self.api.transcribe(request));
        self.with_retries(call, cancel).await
    }

    async fn with_retries<T, F, Fut>(&self, call: F, cancel: &CancellationToken) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries as usize)
            .with_jitter();
        let max_wait = self.retry.max_delay;
        let retried = call
            .retry(backoff)
            .sleep(tokio::time::sleep)
            // An open breaker will not close within an in-call delay: hand the job back.
            .when(|e: &Error| e.is_transient() && !matches!(e, Error::CircuitOpen { .. }))
            .adjust(|e: &Error, next: Option<Duration>| {
                let next = next?;
                match e.retry_after() {
                    Some(asked) if asked > max_wait => None,
                    Some(asked) => Some(asked.max(next)),
                    None => Some(next),
                }
            })
            .notify(|e: &Error, delay: Duration| {
                debug!(provider = %self.name, delay_ms = delay.as_millis() as u64, error = %e, "retrying provider call");
            });
        tokio::select! {
            result = retried => result,
            () = cancel.cancelled() => Err(Error::Cancelled),
        }
    }

    /// One call through the breaker, with metrics.
    async fn once<T, Fut>(&self, call: impl FnOnce() -> Fut) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let permit = self.breaker.acquire(Instant::now()).map_err(|retry_in| {
            self.record_outcome("circuit_open");
            Error::CircuitOpen {
                provider: self.name.clone(),
                retry_in,
            }
        })?;
        self.export_state();
        let started = Instant::now();
        let result = call().await;
        self.metrics
            .call_duration
            .with_label_values(&[self.kind, &self.name])
            .observe(started.elapsed().as_secs_f64());
        let fault = result.as_ref().is_err_and(Error::is_provider_fault);
        self.breaker.record(permit, fault, Instant::now());
        self.export_state();
        match &result {
            Ok(_) => self.record_outcome("ok"),
            Err(e) => {
                let reason = reason(e);
                self.record_outcome(reason);
                self.metrics
                    .errors
                    .with_label_values(&[&self.name, reason])
                    .inc();
                warn!(provider = %self.name, reason, error = %e, "provider call failed");
            }
        }
        result
    }

    fn record_outcome(&self, outcome: &str) {
        self.metrics
            .calls
            .with_label_values(&[self.kind, &self.name, outcome])
            .inc();
    }

    /// Counts a model output that failed validation (the call itself succeeded).
    pub fn record_invalid_output(&self) {
        self.metrics
            .errors
            .with_label_values(&[&self.name, "invalid_output"])
            .inc();
    }
}

/// The `reason`/`outcome` label of a failed call.
fn reason(e: &Error) -> &'static str {
    match e {
        Error::RateLimited { .. } => "rate_limited",
        Error::Server { .. } => "server_error",
        Error::Timeout { .. } => "timeout",
        Error::Connection { .. } => "connection",
        Error::Refused { .. } => "refused",
        Error::Malformed { .. } => "malformed",
        Error::CircuitOpen { .. } => "circuit_open",
        Error::Cancelled => "cancelled",
        Error::InvalidOutput { .. } => "invalid_output",
        Error::InvalidInput { .. }
        | Error::Unsupported { .. }
        | Error::Template { .. }
        | Error::Request { .. }
        | Error::Bus(_) => "other",
    }
}

/// Every configured provider by name.
#[derive(Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<Provider>>,
}

impl Providers {
    /// Builds a client per configured provider (no network until the first call).
    pub fn from_settings(settings: &AiSettings, metrics: &Metrics) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchyard-ai/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Request {
                provider: "*".into(),
                message: e.to_string(),
            })?;
        let mut by_name = BTreeMap::new();
        for (name, p) in &settings.providers {
            by_name.insert(
                name.clone(),
                Arc::new(build(name, p, http.clone(), metrics.clone())?),
            );
        }
        Ok(Providers { by_name })
    }

    /// Adds (or replaces) a provider, e.g. one built by a test.
    pub fn insert(&mut self, provider: Provider) {
        self.by_name
            .insert(provider.name.clone(), Arc::new(provider));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// One provider from its settings.
pub fn build(
    name: &str,
    p: &AiProviderSettings,
    http: reqwest::Client,
    metrics: Metrics,
) -> Result<Provider, Error> {
    let key = p.api_key.as_ref().map(|k| k.expose().to_owned());
    let (kind, api): (&'static str, Arc<dyn ChatApi>) = match p.kind {
        AiProviderKind::Openai => (
            "openai",
            Arc::new(OpenAi::new(name, p.base_url(), key, http)),
        ),
        AiProviderKind::Anthropic => (
            "anthropic",
            Arc::new(Anthropic::new(
                name,
                p.base_url(),
                key.unwrap_or_default(),
                p.anthropic_version.clone(),
                http,
            )),
        ),
        AiProviderKind::Bedrock => {
            let keys = AwsKeys {
                access_key_id: p.access_key_id.clone().unwrap_or_default(),
                secret_access_key: p
                    .secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
                session_token: p.session_token.as_ref().map(|s| s.expose().to_owned()),
            };
            (
                "bedrock",
                Arc::new(Bedrock::new(
                    name,
                    p.base_url(),
                    p.region.clone().unwrap_or_default(),
                    keys,
                    http,
                )),
            )
        }
    };
    let mut provider = Provider::new(
        name,
        kind,
        p.model.clone(),
        p.timeout,
        RetryPolicy {
            max_retries: p.max_retries,
            initial_delay: p.retry_initial_delay,
            max_delay: p.retry_max_delay,
        },
        Breaker::new(p.breaker_failures, p.breaker_open_for),
        metrics,
        api,
    );
    provider.transcription_model = p.transcription_model.clone();
    Ok(provider)
}
