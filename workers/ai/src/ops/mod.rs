//! The operations of the `ai` kind, each a function of (environment, input) → output, so they
//! run the same under the worker loop, in tests and in benchmarks. The environment
//! ([`JobEnv`]) is what a job may do besides returning: publish progress events and usage,
//! and notice cancellation.

mod generate;
mod speakers;
mod structured;
mod summarize;
mod tasks;

use std::{collections::HashMap, sync::Arc};
use switchyard_runtime::net::{AddressGuard, guarded_client};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    client::{Provider, Providers},
    error::Error,
    local,
    provider::{ChatRequest, ChatResponse},
};

/// The workflow event type of streamed text: `{"seq": n, "text": "…"}`, published on
/// `wf.events.<tenant>.<instance>.ai_delta` while a provider streams its answer. Concatenating
/// `text` in `seq` order gives the answer so far. Deltas are a live view, not the result: a
/// call retried after failing mid-stream streams again from the beginning, and the step's
/// output is what counts.
pub const DELTA_EVENT: &str = "ai_delta";

/// Usage meters (subjects `usage.<tenant>.<meter>`), with `provider` and `model` attributes.
pub mod meter {
    pub const INPUT_TOKENS: &str = "ai_input_tokens";
    pub const OUTPUT_TOKENS: &str = "ai_output_tokens";
    pub const AUDIO_SECONDS: &str = "ai_audio_seconds";
}

/// What an operation may do besides returning its output.
pub trait JobEnv: Send + Sync {
    /// Fires when the job is cancelled; provider calls stop at once.
    fn cancel(&self) -> &CancellationToken;
    /// Publishes a progress event for the instance's followers (best effort).
    fn event(&self, event_type: &str, data: Value) -> impl Future<Output = ()> + Send;
    /// Publishes a usage event; an error fails the job as retryable.
    fn usage(
        &self,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: HashMap<String, String>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Redirects followed when fetching a recording, each hop checked by the guard.
const MAX_AUDIO_REDIRECTS: usize = 5;

/// Everything the operations need: the configured providers and which one is the default.
#[derive(Debug)]
pub struct Ops {
    pub(crate) providers: Providers,
    pub(crate) default_provider: String,
    /// For `audio_url`: only addresses the guard allows, after DNS and on every redirect.
    pub(crate) http: reqwest::Client,
    pub(crate) guard: AddressGuard,
}

/// The provider a job asked for (or the default): `None` for the local provider.
pub(crate) enum Chosen {
    Local,
    Remote(Arc<Provider>),
}

impl Ops {
    /// Operations whose `audio_url` may reach public addresses only.
    pub fn new(providers: Providers, default_provider: impl Into<String>) -> Self {
        Ops::with_guard(providers, default_provider, AddressGuard::public_only())
    }

    /// Operations whose `audio_url` may reach what `guard` allows.
    pub fn with_guard(
        providers: Providers,
        default_provider: impl Into<String>,
        guard: AddressGuard,
    ) -> Self {
        Ops {
            providers,
            default_provider: default_provider.into(),
            // Recordings are fetched with a bound: a stalled download must not hold a slot
            // until the step times out.
            http: guarded_client(&guard, MAX_AUDIO_REDIRECTS)
                .user_agent(concat!("switchyard-ai/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
            guard,
        }
    }

    /// Runs `operation` on `input` (defaults applied, already checked against its schema).
    pub async fn run<E: JobEnv>(
        &self,
        env: &E,
        operation: &str,
        input: Value,
    ) -> Result<Value, Error> {
        match operation {
            "ai.generate" => generate::run(self, env, parse(input)?).await,
            "ai.summarize" => summarize::run(self, env, parse(input)?).await,
            "ai.extract_tasks" => tasks::run(self, env, parse(input)?).await,
            "ai.identify_speakers" => speakers::identify(parse(input)?),
            "ai.transcribe" => speakers::transcribe(self, env, parse(input)?).await,
            other => Err(Error::invalid_input(
                "operation",
                format!("{other:?} is not an ai operation"),
            )),
        }
    }

    pub(crate) fn choose(&self, asked: Option<&str>) -> Result<Chosen, Error> {
        let name = asked.unwrap_or(&self.default_provider);
        if name == local::NAME {
            return Ok(Chosen::Local);
        }
        match self.providers.get(name) {
            Some(p) => Ok(Chosen::Remote(p.clone())),
            None => {
                let mut known = vec![local::NAME];
                known.extend(self.providers.names());
                Err(Error::invalid_input(
                    "provider",
                    format!(
                        "{name:?} is not a configured provider; configured: {}",
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

fn parse<T: DeserializeOwned>(input: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        Error::invalid_input(
            if path == "." { "input" } else { &path },
            e.inner().to_string(),
        )
    })
}

/// Publishes token usage for one provider answer.
pub(crate) async fn record_usage<E: JobEnv>(
    env: &E,
    provider: &str,
    model: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Result<(), Error> {
    let attributes = HashMap::from([
        ("provider".to_owned(), provider.to_owned()),
        ("model".to_owned(), model.to_owned()),
    ]);
    env.usage(
        meter::INPUT_TOKENS,
        input_tokens as f64,
        "tokens",
        attributes.clone(),
    )
    .await?;
    env.usage(
        meter::OUTPUT_TOKENS,
        output_tokens as f64,
        "tokens",
        attributes,
    )
    .await
}

/// Calls `provider` streaming, forwarding deltas as [`DELTA_EVENT`]s while the answer
/// arrives. Deltas that arrive together go out as one event.
pub(crate) async fn chat_streaming<E: JobEnv>(
    env: &E,
    provider: &Provider,
    request: &ChatRequest,
) -> Result<ChatResponse, Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let call = async {
        let tx = tx;
        let result = provider.chat(request, Some(&tx), env.cancel()).await;
        drop(tx);
        result
    };
    let forward = async {
        let mut seq = 0u64;
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            let text: String = batch.drain(..).collect();
            env.event(DELTA_EVENT, json!({ "seq": seq, "text": text }))
                .await;
            seq += 1;
        }
    };
    let (result, ()) = tokio::join!(call, forward);
    result
}

/// The request every operation starts from.
pub(crate) fn base_request(provider: &Provider, model: Option<&str>) -> ChatRequest {
    ChatRequest {
        model: model.unwrap_or(&provider.default_model).to_owned(),
        system: None,
        messages: Vec::new(),
        temperature: None,
        max_tokens: 1024,
        stop: Vec::new(),
        json: None,
        stream: false,
        timeout: provider.timeout,
    }
}
