//! `POST /api/v1/hooks/{tenant}/{source}`: signed inbound webhooks. No bearer token: the
//! sender signs the body with the tenant's webhook secret (`gateway.webhook_secrets`), as
//! Switchyard's own outgoing webhooks are signed (`X-Switchyard-Timestamp`,
//! `X-Switchyard-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`). A verified body
//! becomes the tenant's event `hook.<source>` (`evt.<tenant>.hook.<source>`), which starts the
//! workflows whose `triggers:` name it; `X-Switchyard-Delivery` names the delivery, so a retry
//! of it starts nothing twice.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use switchyard_proto::{header, subject};
use switchyard_runtime::signature::{DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};
use tracing::{info, warn};

use crate::{
    Error,
    extract::check_token,
    limits::Group,
    route::{Deadline, RouteDef, route},
    state::AppState,
};

/// How far a signed timestamp may be from the gateway's clock, either way, in seconds.
pub(crate) const TOLERANCE_SECS: u64 = 300;

/// Longest `X-Switchyard-Delivery`.
pub(crate) const MAX_DELIVERY_LEN: usize = 200;

#[utoipa::path(
    post,
    path = "/api/v1/hooks/{tenant}/{source}",
    tag = "workflows",
    params(
        ("tenant" = String, Path, description = "The tenant whose webhook secret signs the body"),
        ("source" = String, Path, description = "Names the sender; the event's subject is `hook.<source>`"),
        ("X-Switchyard-Timestamp" = String, Header, description = "Unix seconds when the body was signed, within 5 minutes of now"),
        ("X-Switchyard-Signature" = String, Header, description = "`v1=` and the hex HMAC-SHA256 of `\"<timestamp>.<body>\"` under the tenant's webhook secret"),
        ("X-Switchyard-Delivery" = Option<String>, Header, description = "Names the delivery, the same on every retry, so a retry starts nothing twice; without it the signature names it")
    ),
    request_body(content = Object, description = "Any JSON: the event's body, which the triggers' `input:` read as `event`", content_type = "application/json"),
    responses(
        (status = 202, description = "`{subject, delivery, duplicate}`: the event is stored on the bus; `duplicate` when this delivery was stored before", body = Object),
        (status = 400, description = "The body is not JSON, or `source` is not a subject token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid signature, or a timestamp too far from now", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The tenant receives no webhooks (no secret is configured for it)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the gateway takes", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's start rate; `Retry-After` says when to send again", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The bus did not store the event; send it again", body = crate::error::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn receive(
    State(state): State<AppState>,
    Path((tenant, source)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let Some(secret) = state.settings().webhook_secrets.get(&tenant) else {
        return Err(Error::NotFound(format!(
            "tenant {tenant:?} receives no webhooks"
        )));
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let refuse = |reason: &'static str| {
        state
            .metrics()
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        warn!(%tenant, %source, reason, "webhook refused");
        Error::Unauthenticated { reason }
    };
    let timestamp: u64 = text(TIMESTAMP_HEADER)
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| refuse("webhook_timestamp"))?;
    let now = u64::try_from(switchyard_proto::now_ms() / 1000).unwrap_or(0);
    if now.abs_diff(timestamp) > TOLERANCE_SECS {
        return Err(refuse("webhook_timestamp"));
    }
    let signature = text(SIGNATURE_HEADER).unwrap_or_default();
    if !verify(secret.expose().as_bytes(), timestamp, &body, signature) {
        return Err(refuse("webhook_signature"));
    }
    check_token("source", &source)?;
    // A verified webhook counts against its tenant's start rate, like a trigger.
    let caller = crate::auth::Caller {
        subject: format!("webhook:{source}"),
        tenant: tenant.clone(),
        roles: Vec::new(),
    };
    state
        .limits()
        .check(Group::Start, &caller)
        .inspect_err(|_| {
            state
                .metrics()
                .rate_limited
                .with_label_values(&[Group::Start.as_str()])
                .inc();
        })?;
    if serde_json::from_slice::<Value>(&body).is_err() {
        return Err(Error::field("body", "expected JSON"));
    }
    let delivery = match text(DELIVERY_HEADER) {
        Some(d)
            if !d.is_empty()
                && d.len() <= MAX_DELIVERY_LEN
                && d.chars().all(|c| c.is_ascii_graphic()) =>
        {
            d.to_owned()
        }
        Some(_) => {
            return Err(Error::field(
                DELIVERY_HEADER,
                format!("expected 1 to {MAX_DELIVERY_LEN} visible ASCII characters"),
            ));
        }
        None => format!("sig-{}", hex::encode(Sha256::digest(signature.as_bytes()))),
    };
    let event_subject = format!("hook.{source}");
    let mut message = async_nats::HeaderMap::new();
    // Scoped to the tenant and the source, so two senders' delivery ids cannot collide.
    message.insert(
        header::MSG_ID,
        format!("hook.{tenant}.{source}.{delivery}").as_str(),
    );
    message.insert(header::CONTENT_TYPE, "application/json");
    if let Some(correlation) = text("x-correlation-id") {
        message.insert(header::CORRELATION_ID, correlation);
    }
    let ack = state
        .bus()
        .publish(
            subject::tenant_event(&tenant, &event_subject),
            message,
            body.to_vec(),
        )
        .await?;
    info!(%tenant, subject = %event_subject, %delivery, duplicate = ack.duplicate, "webhook accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "subject": event_subject,
            "delivery": delivery,
            "duplicate": ack.duplicate,
        })),
    )
        .into_response())
}

pub(crate) fn routes() -> Vec<RouteDef> {
    vec![route(
        Method::POST,
        "/api/v1/hooks/{tenant}/{source}",
        // Checked by the handler, after the signature: no token names the tenant before.
        Group::Start,
        Deadline::Request,
        receive,
    )]
}
