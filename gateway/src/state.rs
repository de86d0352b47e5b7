//! What every handler shares ([`AppState`]): the bus, the token checker, the rate limits,
//! the metrics, the definitions and the tracker of work requests leave behind.

use std::sync::Arc;

use prometheus::Registry;
use switchyard_proto::stream;
use switchyard_runtime::{Config, config::GatewaySettings};
use switchyard_workflow::{Operations, Store, ValidateOptions};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::warn;

use crate::{Authenticator, Error, audit, bus, definitions, limits, metrics};

/// What every handler shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: bus::Bus,
    auth: Authenticator,
    settings: GatewaySettings,
    metrics: metrics::HttpMetrics,
    registry: Registry,
    definitions: definitions::DefinitionCache,
    limits: limits::Limits,
    streams: Arc<limits::StreamSlots>,
    refusals: audit::RefusalSampler,
    /// The registered definitions, followed from `WF_DEFINITIONS`, so that a start is checked
    /// and pinned to a version without a round trip to the orchestrator; absent when the
    /// bucket was missing at start-up (then every start asks the orchestrator).
    mirror: Option<Arc<Store>>,
    /// The `Idempotency-Key`s seen, each with its request's fingerprint; absent when the
    /// bucket was missing at start-up (then a reused key is not told apart from a retry).
    idempotency: Option<async_nats::jetstream::kv::Store>,
    /// Stops following the definitions when the last clone of the state is dropped.
    _watch: Option<DropGuard>,
    /// Work a request leaves behind (audit publishes awaiting their PubAck); [`run`] waits
    /// for it within the shutdown grace period.
    tasks: TaskTracker,
}

/// The operations declared at run time, followed until `stop`; `None` without the bucket.
async fn follow_operations(
    js: &async_nats::jetstream::Context,
    stop: CancellationToken,
) -> Option<Arc<Operations>> {
    match js.get_key_value(stream::OPERATIONS_BUCKET).await {
        Ok(kv) => {
            let operations = Arc::new(Operations::new(kv));
            match operations.clone().watch(stop).await {
                Ok(_) => Some(operations),
                Err(e) => {
                    warn!(error = %e, "cannot follow the declared operations; definitions that use them are checked by the workflow engine");
                    None
                }
            }
        }
        Err(e) => {
            warn!(error = %e, bucket = stream::OPERATIONS_BUCKET, "no declared-operations bucket (run `switchyard bus apply`)");
            None
        }
    }
}

impl AppState {
    /// The state of one gateway: its NATS connection, token checker, rate limits, metrics
    /// (registered in `registry`, which `/metrics` serves) and its mirror of the definitions.
    pub async fn new(
        config: &Config,
        client: async_nats::Client,
        auth: Authenticator,
        registry: Registry,
    ) -> Result<AppState, Error> {
        let metrics = metrics::HttpMetrics::register(&registry)?;
        let bus = bus::Bus::new(client);
        let options = validate_options(config);
        let stop = CancellationToken::new();
        // Boxed: the watch's set-up would otherwise make this future too large to move.
        let operations = Box::pin(follow_operations(&bus.js, stop.clone())).await;
        let (mirror, watch) = match bus.js.get_key_value(stream::WF_DEFINITIONS_BUCKET).await {
            Ok(kv) => {
                let mut store = Store::new(kv, options.clone());
                if let Some(operations) = &operations {
                    store = store.with_operations(operations.clone());
                }
                let store = Arc::new(store);
                match store.clone().watch(stop.clone()).await {
                    Ok(_) => (Some(store), Some(stop.drop_guard())),
                    Err(e) => {
                        warn!(error = %e, "cannot follow the definitions; every start asks the workflow engine");
                        (None, None)
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, bucket = stream::WF_DEFINITIONS_BUCKET, "no definitions bucket; every start asks the workflow engine");
                (None, None)
            }
        };
        let idempotency = match bus.js.get_key_value(stream::IDEMPOTENCY_BUCKET).await {
            Ok(kv) => Some(kv),
            Err(e) => {
                warn!(error = %e, bucket = stream::IDEMPOTENCY_BUCKET, "no idempotency bucket; a reused Idempotency-Key is not told apart from a retry (run `switchyard bus apply`)");
                None
            }
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                idempotency,
                bus,
                auth,
                limits: limits::Limits::new(&config.gateway.rate_limits),
                streams: limits::StreamSlots::new(
                    config.gateway.event_streams_per_tenant,
                    config.gateway.event_streams,
                ),
                refusals: audit::RefusalSampler::default(),
                settings: config.gateway.clone(),
                metrics,
                registry,
                definitions: definitions::DefinitionCache::new(options, operations),
                mirror,
                _watch: watch,
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn settings(&self) -> &GatewaySettings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &metrics::HttpMetrics {
        &self.inner.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn bus(&self) -> &bus::Bus {
        &self.inner.bus
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub(crate) fn definitions(&self) -> &definitions::DefinitionCache {
        &self.inner.definitions
    }

    pub(crate) fn idempotency(&self) -> Option<&async_nats::jetstream::kv::Store> {
        self.inner.idempotency.as_ref()
    }

    pub(crate) fn mirror(&self) -> Option<&Store> {
        self.inner.mirror.as_deref()
    }

    pub(crate) fn limits(&self) -> &limits::Limits {
        &self.inner.limits
    }

    /// Which refused credentials reach the audit log.
    pub(crate) fn refusals(&self) -> &audit::RefusalSampler {
        &self.inner.refusals
    }

    /// The caps on open event streams.
    pub(crate) fn streams(&self) -> &Arc<limits::StreamSlots> {
        &self.inner.streams
    }

    /// Runs `work` after the response, tracked so that shutdown waits for it.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.inner.tasks.spawn(work);
    }

    /// The tracker of the work requests left behind.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
}

/// How definitions parse here: as in the orchestrator, with its template variables and
/// limits.
fn validate_options(config: &Config) -> ValidateOptions {
    let t = config.orchestrator.template_limits;
    ValidateOptions {
        env_allow: config.orchestrator.template_env.clone(),
        limits: switchyard_workflow::RenderLimits {
            value_bytes: t.value_bytes,
            output_bytes: t.output_bytes,
            step_input_bytes: t.step_input_bytes,
        },
    }
}
