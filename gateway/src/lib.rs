//! The HTTP gateway: turns HTTP requests into messages on the bus and back. Starts, cancels
//! and signals are published to `WF_INBOX` and answered 202 only after JetStream's PubAck;
//! status and definitions are NATS request/reply queries to the orchestrator; the registry is
//! `$SRV.INFO`. Every request but `/health`, `/ready` and `/metrics` needs a bearer JWT, and
//! the tenant comes from that token alone.
//!
//! It owns no database, no workflow logic and no state another replica would need: any number
//! of gateways can run behind a load balancer. It parses definitions only to reject a bad
//! input with a 422 before anything is published; the orchestrator stays the authority.

mod audit;
pub mod auth;
pub mod bus;
mod cards;
pub mod definitions;
pub mod error;
pub mod events;
mod ledger;
pub mod limits;
mod meetings;
pub mod metrics;
pub mod observe;
pub mod openapi;
mod research;
mod routes;
mod workers;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use prometheus::Registry;
use switchyard_proto::stream;
use switchyard_runtime::{Config, config::GatewaySettings, nats};
use switchyard_workflow::{Store, ValidateOptions};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::{info, warn};

pub use auth::{Authenticator, Caller, Claims, Permission, Role};
pub use error::Error;

/// The configuration sections this component reads and validates, besides the common ones;
/// the gateway parses definitions as the orchestrator does (`orchestrator.template_env`).
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 2] = {
    use switchyard_runtime::config::Section;
    [Section::Gateway, Section::Orchestrator]
};

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
    /// The registered definitions, followed from `WF_DEFINITIONS`, so that a start is checked
    /// and pinned to a version without a round trip to the orchestrator; absent when the
    /// bucket was missing at start-up (then every start asks the orchestrator).
    mirror: Option<Arc<Store>>,
    /// Stops following the definitions when the last clone of the state is dropped.
    _watch: Option<DropGuard>,
    /// Work a request leaves behind (audit publishes awaiting their PubAck); [`run`] waits
    /// for it within the shutdown grace period.
    tasks: TaskTracker,
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
        let env_allow = config.orchestrator.template_env.clone();
        let (mirror, watch) = match bus.js.get_key_value(stream::WF_DEFINITIONS_BUCKET).await {
            Ok(kv) => {
                let store = Arc::new(Store::new(
                    kv,
                    ValidateOptions {
                        env_allow: env_allow.clone(),
                    },
                ));
                let stop = CancellationToken::new();
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
        Ok(AppState {
            inner: Arc::new(Inner {
                bus,
                auth,
                limits: limits::Limits::new(&config.gateway.rate_limits),
                settings: config.gateway.clone(),
                metrics,
                registry,
                definitions: definitions::DefinitionCache::new(env_allow),
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

    pub(crate) fn mirror(&self) -> Option<&Store> {
        self.inner.mirror.as_deref()
    }

    pub(crate) fn limits(&self) -> &limits::Limits {
        &self.inner.limits
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

/// Every route, with body limit, timeouts, correlation ids, metrics and problem bodies.
/// Testable with `tower::ServiceExt::oneshot`; [`run`] serves it.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Every (method, path template) the router serves, in the order they are declared.
pub fn route_table() -> Vec<(axum::http::Method, &'static str)> {
    routes::routes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

/// Runs the gateway as a process: check the auth settings, connect, serve `config.http_addr`
/// until `shutdown`, then give in-flight requests `shutdown_grace` to finish and drain.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let auth = Authenticator::from_settings(&config.gateway.auth)?;
    let client = nats::connect(&config, "switchyard-gateway").await?;
    let state = AppState::new(&config, client.clone(), auth, Registry::new()).await?;
    let addr = config.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| switchyard_runtime::Error::Bind { addr, source })?;
    let bound: SocketAddr = listener
        .local_addr()
        .map_err(|source| switchyard_runtime::Error::Bind { addr, source })?;
    info!(http_addr = %bound, "gateway serving");
    let tasks = state.tasks().clone();
    let serve = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let grace = config.shutdown_grace;
    let stopped_by = tokio::time::Instant::now() + grace;
    let result = tokio::select! {
        r = serve => r.map_err(Error::Serve),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running after the grace period; stopping");
            Ok(())
        }
    };
    tasks.close();
    if tokio::time::timeout_at(stopped_by.max(tokio::time::Instant::now()), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "audit publishes still unconfirmed at shutdown"
        );
    }
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "cannot drain the nats connection");
    }
    info!("gateway stopped");
    switchyard_runtime::telemetry::shutdown();
    result
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => switchyard_runtime::process::exit_code(e),
        _ => switchyard_runtime::process::EXIT_FAILURE,
    }
}
