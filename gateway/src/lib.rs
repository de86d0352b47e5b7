//! The HTTP gateway: turns HTTP requests into messages on the bus and back. Starts, cancels
//! and signals are published to `WF_INBOX` and answered 202 only after JetStream's PubAck;
//! status and definitions are NATS request/reply queries to the orchestrator; the registry is
//! `$SRV.INFO`. Every request but `/health`, `/ready` and `/metrics` needs a bearer JWT, and
//! the tenant comes from that token alone.
//!
//! It owns no database, no workflow logic and no state another replica would need: any number
//! of gateways can run behind a load balancer. It parses definitions only to reject a bad
//! input with a 422 before anything is published; the orchestrator stays the authority.

pub mod auth;
pub mod bus;
pub mod definitions;
pub mod error;
pub mod metrics;
pub mod observe;
mod routes;

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use prometheus::Registry;
use switchyard_runtime::{Config, config::GatewaySettings, nats};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use auth::{Authenticator, Caller, Claims, Permission, Role};
pub use error::Error;

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
}

impl AppState {
    /// The state of one gateway: its NATS connection, token checker and metrics (registered in
    /// `registry`, which `/metrics` serves).
    pub fn new(
        config: &Config,
        client: async_nats::Client,
        auth: Authenticator,
        registry: Registry,
    ) -> Result<AppState, Error> {
        let metrics = metrics::HttpMetrics::register(&registry)?;
        Ok(AppState {
            inner: Arc::new(Inner {
                bus: bus::Bus::new(client),
                auth,
                settings: config.gateway.clone(),
                metrics,
                registry,
                definitions: definitions::DefinitionCache::new(
                    config.orchestrator.template_env.clone(),
                ),
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
}

/// Every route, with body limit, timeouts, correlation ids, metrics and problem bodies.
/// Testable with `tower::ServiceExt::oneshot`; [`run`] serves it.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Runs the gateway as a process: check the auth settings, connect, serve `config.http_addr`
/// until `shutdown`, then give in-flight requests `shutdown_grace` to finish and drain.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let auth = Authenticator::from_settings(&config.gateway.auth)?;
    let client = nats::connect(&config, "switchyard-gateway").await?;
    let state = AppState::new(&config, client.clone(), auth, Registry::new())?;
    let addr = config.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| switchyard_runtime::Error::Bind { addr, source })?;
    let bound: SocketAddr = listener
        .local_addr()
        .map_err(|source| switchyard_runtime::Error::Bind { addr, source })?;
    info!(http_addr = %bound, "gateway serving");
    let serve = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let grace = config.shutdown_grace;
    let result = tokio::select! {
        r = serve => r.map_err(Error::Serve),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running after the grace period; stopping");
            Ok(())
        }
    };
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "cannot drain the nats connection");
    }
    info!("gateway stopped");
    result
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => switchyard_runtime::process::exit_code(e),
        _ => switchyard_runtime::process::EXIT_FAILURE,
    }
}
