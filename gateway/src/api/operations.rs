//! The worker registry and the unauthenticated `/health`, `/ready` and `/metrics`.

use std::{collections::BTreeMap, time::Duration};

use async_nats::connection::State as ConnState;
use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use prometheus::{Encoder as _, TextEncoder};
use serde_json::{Value, json};
use switchyard_proto::{
    orchestrator::{GetRegistry, RegistryGet},
    stream,
};
use tracing::warn;

use crate::{
    Error, Permission,
    extract::Ctx,
    limits::Group,
    route::{Deadline, RouteDef, route},
    state::AppState,
};

/// The NATS micro-service discovery subject (part of the NATS protocol, not of Switchyard's).
const SERVICE_INFO_SUBJECT: &str = "$SRV.INFO";
/// How long `/registry` gathers `$SRV.INFO` answers.
const REGISTRY_GATHER: Duration = Duration::from_millis(250);

// ---- registry ----

#[utoipa::path(
    get,
    path = "/api/v1/registry",
    tag = "operations",
    responses(
        (status = 200, description = "Every worker kind as the engine sees it (`kinds`: operations with their versions and capabilities, live replicas with the age of their last answer, pending and ack-pending jobs, the caller's definitions that use it), the `capabilities` with their contract and providers, and every live service from `$SRV.INFO` (`services: [{name, id, version, description, metadata, endpoints}]`)", body = Object),
        crate::responses::AuthErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn registry(ctx: Ctx) -> Result<Json<Value>, Error> {
    ctx.require(Permission::RegistryRead)?;
    let client = &ctx.state.bus().client;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    client
        .publish_with_reply(SERVICE_INFO_SUBJECT, inbox, Bytes::new())
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    client
        .flush()
        .await
        .map_err(|e| Error::unavailable("asking for the service registry", e))?;
    let deadline = tokio::time::Instant::now() + REGISTRY_GATHER;
    let mut services = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
        // "No responders" comes back as an empty message.
        if msg.payload.is_empty() {
            continue;
        }
        match serde_json::from_slice::<async_nats::service::Info>(&msg.payload) {
            Ok(info) => services.push(json!({
                "name": info.name,
                "id": info.id,
                "version": info.version,
                "description": info.description,
                "metadata": info.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                "endpoints": info.endpoints.into_iter().map(|e| json!({
                    "name": e.name,
                    "subject": e.subject,
                    "metadata": e.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            })),
            Err(e) => warn!(error = %e, "ignoring a $SRV.INFO answer that does not parse"),
        }
    }
    services.sort_by(|a, b| {
        (a["name"].as_str(), a["id"].as_str()).cmp(&(b["name"].as_str(), b["id"].as_str()))
    });
    let engine = ctx
        .query::<GetRegistry>(&RegistryGet {
            tenant: Some(ctx.tenant().to_owned()),
        })
        .await?;
    Ok(Json(json!({
        "kinds": engine.kinds,
        "capabilities": engine.capabilities,
        "sweep_ms": engine.sweep_ms,
        "services": services,
    })))
}

// ---- operations ----

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Object))
)]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Connected to NATS and the streams exist", body = Object),
        (status = 503, description = "Not ready, and why", body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let bus = state.bus();
    if bus.client.connection_state() != ConnState::Connected {
        return Err(Error::NotReady("not connected to NATS".into()));
    }
    match tokio::time::timeout(Duration::from_secs(2), bus.js.get_stream(stream::WF_INBOX)).await {
        Ok(Ok(_)) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(Error::NotReady(format!(
            "stream {} is not available ({e}); run `switchyard bus apply`",
            stream::WF_INBOX
        ))),
        Err(_) => Err(Error::NotReady("JetStream did not answer in time".into())),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, Error> {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&state.registry().gather(), &mut body)
        .map_err(|e| Error::internal("encoding metrics", e))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
        .into_response())
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![
        route(
            M::GET,
            "/api/v1/registry",
            Group::Read,
            Deadline::Request,
            registry,
        ),
        route(M::GET, "/health", Group::Open, Deadline::Request, health),
        route(M::GET, "/ready", Group::Open, Deadline::Request, ready),
        route(M::GET, "/metrics", Group::Open, Deadline::Request, metrics),
    ]
}
