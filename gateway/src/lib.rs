//! The HTTP gateway: turns HTTP requests into messages on the bus and back. Starts, cancels
//! and signals are published to `WF_INBOX` and answered 202 only after JetStream's PubAck;
//! status and definitions are NATS request/reply queries to the orchestrator; the registry is
//! `$SRV.INFO`. Every request but `/health`, `/ready` and `/metrics` needs a bearer JWT, and
//! the tenant comes from that token alone.
//!
//! It owns no database, no workflow logic and no state another replica would need: any number
//! of gateways can run behind a load balancer. It parses definitions only to reject a bad
//! input with a 422 before anything is published; the orchestrator stays the authority.

mod api;
mod audit;
pub mod auth;
pub mod bus;
mod call;
pub mod definitions;
pub mod error;
mod extract;
mod idempotency;
pub mod limits;
mod mcp;
pub mod metrics;
pub mod observe;
pub mod openapi;
mod permission;
mod responses;
mod route;
mod start;
mod state;
mod workers;

use std::net::SocketAddr;

use axum::Router;
use prometheus::Registry;
use switchyard_runtime::{Config, nats};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use api::events::CONSUMER_PREFIX;
pub use auth::{Authenticator, Caller, Claims, Role};
pub use error::Error;
pub use permission::Permission;
pub use state::AppState;

/// The configuration sections this component reads and validates, besides the common ones;
/// the gateway parses definitions as the orchestrator does (`orchestrator.template_env`).
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 2] = {
    use switchyard_runtime::config::Section;
    [Section::Gateway, Section::Orchestrator]
};

/// Every route, with body limit, timeouts, correlation ids, metrics and problem bodies.
/// Testable with `tower::ServiceExt::oneshot`; [`run`] serves it.
pub fn router(state: AppState) -> Router {
    api::router(state)
}

/// Every (method, path template) the router serves, in the order they are declared.
pub fn route_table() -> Vec<(axum::http::Method, &'static str)> {
    api::routes()
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
    // With the peer's address, for the rate of refused credentials per client.
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Without Nagle's algorithm: a response written in pieces (an SSE stream: MCP answers,
    // live events) would otherwise wait for the client's delayed ACK, ~40 ms, before each
    // piece after the first.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let serve = axum::serve(listener, app)
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
