//! The AI worker (`ai` kind): LLM and speech providers behind one interface, and the
//! operations `ai.generate`, `ai.summarize`, `ai.extract_tasks`, `ai.identify_speakers` and
//! `ai.transcribe`.
//!
//! Providers: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp server),
//! Anthropic Messages and AWS Bedrock Converse, each with streaming, short in-call retries
//! honouring `Retry-After`, a circuit breaker and cancellation; and the default `local`
//! provider, which needs no key and no network (TextRank summaries, rule-based action items,
//! transcript parsing, template-based generation) — a documented baseline, not a model.
//!
//! This crate does the work of one job; it must not keep state another replica would need,
//! and it does not retry jobs itself beyond a few seconds: the worker loop owns that.

pub use switchyard_runtime::breaker;
pub mod client;
pub mod error;
pub mod local;
pub mod metrics;
pub mod ops;
pub mod prompts;
pub mod provider;
pub mod transcript;

use std::{collections::HashMap, sync::Arc};

use prometheus::Registry;
use serde_json::Value;
use switchyard_catalog::Catalog;
use switchyard_proto::Job;
use switchyard_runtime::{
    Config, Handler, JobContext, JobFailure, OperationInfo, config::AiSettings, process,
};
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

pub use error::Error;
pub use ops::{DELTA_EVENT, JobEnv, Ops, meter};

/// The configuration sections this component reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 2] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Ai]
};

use crate::{client::Providers, metrics::Metrics};

/// The worker kind, selecting `JOBS_AI` and the `worker-ai` consumer.
pub const KIND: &str = "ai";

/// Operations whose outputs carry a whole transcript.
const TRANSCRIPT_OPERATIONS: [&str; 2] = ["ai.transcribe", "ai.identify_speakers"];

/// Output fields bigger than this (as JSON) are stored in the object store and replaced by a
/// reference.
pub const OFFLOAD_OVER_BYTES: usize = switchyard_runtime::objects::INLINE_LIMIT;

/// The handler of the `ai` kind: cheap to clone.
#[derive(Debug, Clone)]
pub struct AiWorker {
    ops: Arc<Ops>,
}

impl AiWorker {
    /// Builds the configured providers; their metrics are registered in `registry`.
    pub fn new(settings: &AiSettings, registry: &Registry) -> Result<Self, Error> {
        let metrics = Metrics::register(registry).map_err(|e| Error::Request {
            provider: "*".into(),
            message: format!("cannot register metrics: {e}"),
        })?;
        let providers = Providers::from_settings(settings, &metrics)?;
        Ok(AiWorker::from_ops(Ops::with_guard(
            providers,
            settings.default_provider.clone(),
            settings.audio_guard(),
        )))
    }

    /// A worker over already-built operations (tests and benchmarks build their own
    /// providers).
    pub fn from_ops(ops: Ops) -> Self {
        AiWorker { ops: Arc::new(ops) }
    }

    pub fn ops(&self) -> &Ops {
        &self.ops
    }
}

/// Runs one `ai` replica until `shutdown` fires: the process frame of the runtime with this
/// worker's metrics in the same registry as the loop's.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let settings = &config.ai;
    let build = |registry: Registry| async move { Ok(AiWorker::new(settings, &registry)?) };
    process::run_worker(&config, "switchyard-ai", build, shutdown).await
}

/// Why the worker process stopped with an error: the runtime (connection, bus, config) or
/// this worker's start-up.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Runtime(#[from] switchyard_runtime::Error),
    #[error(transparent)]
    Ai(#[from] Error),
}

/// The job context as the operations see it.
struct Env<'a>(&'a JobContext);

impl JobEnv for Env<'_> {
    fn cancel(&self) -> &CancellationToken {
        &self.0.cancel
    }

    async fn event(&self, event_type: &str, data: Value) {
        if let Err(e) = self.0.event(event_type, data).await {
            warn!(error = %e, event_type, "cannot publish a progress event");
        }
    }

    async fn usage(
        &self,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: HashMap<String, String>,
    ) -> Result<(), Error> {
        self.0
            .usage_with(meter, quantity, unit, attributes)
            .await
            .map_err(|e| Error::Bus(format!("cannot publish usage: {e}")))
    }
}

impl Handler for AiWorker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn operations(&self) -> Vec<OperationInfo> {
        OperationInfo::of_kind(KIND)
    }

    #[instrument(skip_all, fields(operation = %job.operation))]
    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        let mut input: Value = if job.input.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&job.input)
                .map_err(|e| JobFailure::invalid_input("input", e.to_string()))?
        };
        if let Some(spec) = Catalog::builtin().get(&job.operation) {
            spec.input.apply_defaults(&mut input);
        }
        let mut output = self
            .ops
            .run(&Env(&ctx), &job.operation, input)
            .await
            .map_err(Error::into_failure)?;
        if TRANSCRIPT_OPERATIONS.contains(&job.operation.as_str()) {
            // Transcripts travel on by reference: the next steps read them from the object
            // store instead of every message and the instance state carrying a copy.
            ctx.objects()
                .offload(ctx.tenant(), &mut output, OFFLOAD_OVER_BYTES)
                .await
                .map_err(|e| {
                    JobFailure::unavailable(
                        "the object store",
                        format!("cannot store a large output: {e}"),
                    )
                })?;
        }
        Ok(output)
    }
}
