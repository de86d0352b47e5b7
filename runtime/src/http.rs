//! The small HTTP server every worker process runs: `/metrics` (Prometheus text format) and
//! `/healthz` (200 while the NATS connection is up, 503 otherwise).

use std::net::SocketAddr;

use async_nats::connection::State;
use axum::{
    Router, extract::State as AxState, http::StatusCode, response::IntoResponse, routing::get,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::Error;

#[derive(Clone)]
struct Ctx {
    registry: Registry,
    client: async_nats::Client,
}

/// The router, for tests with `oneshot` and for [`serve`].
pub fn router(registry: Registry, client: async_nats::Client) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Ctx { registry, client })
}

async fn metrics(AxState(ctx): AxState<Ctx>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&ctx.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz(AxState(ctx): AxState<Ctx>) -> impl IntoResponse {
    match ctx.client.connection_state() {
        State::Connected => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "nats disconnected\n"),
    }
}

/// Binds `addr` and serves until `shutdown`; returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    client: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let app = router(registry, client);
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
