//! Audit events: who changed a definition, cancelled or signalled an instance, or was refused.
//! Each goes to `audit.<tenant>.<action>` on the `AUDIT` stream, which the ledger keeps as the
//! audit log (ADR 0006).
//!
//! An action is audited after it was accepted, without holding up the response: the record is
//! published from a task that waits for the PubAck and logs (and counts) a failure. Refused
//! credentials are published without waiting for an ack at all, so a flood of bad tokens costs
//! the gateway one message each and nothing more.

use std::collections::HashMap;

use async_nats::HeaderMap;
use switchyard_proto::{AuditEvent, audit, encode_proto, header, now_ms, subject};
use tracing::warn;
use uuid::Uuid;

use crate::AppState;

/// One audit record before it is sent.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub tenant: &'a str,
    pub actor: &'a str,
    pub action: &'static str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub correlation_id: &'a str,
    pub attributes: HashMap<String, String>,
}

impl Record<'_> {
    fn message(&self) -> (String, HeaderMap, Vec<u8>) {
        let event = AuditEvent {
            event_id: Uuid::now_v7().to_string(),
            tenant: self.tenant.to_owned(),
            actor: self.actor.to_owned(),
            action: self.action.to_owned(),
            target: self.target.to_owned(),
            outcome: self.outcome.to_owned(),
            at_ms: now_ms(),
            correlation_id: self.correlation_id.to_owned(),
            attributes: self.attributes.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, event.event_id.as_str());
        headers.insert(header::TENANT, self.tenant);
        headers.insert(header::CONTENT_TYPE, header::PROTOBUF);
        if !self.correlation_id.is_empty() {
            headers.insert(header::CORRELATION_ID, self.correlation_id);
        }
        (
            subject::audit(self.tenant, self.action),
            headers,
            encode_proto(&event),
        )
    }
}

/// Records an accepted action; the PubAck is awaited in the background.
pub(crate) fn accepted(state: &AppState, record: Record<'_>) {
    let (subject, headers, payload) = record.message();
    let js = state.bus().js.clone();
    let failures = state.metrics().audit_failures.clone();
    let action = record.action;
    state.spawn(async move {
        let stored = match js
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = stored {
            failures.inc();
            warn!(action, %error, "audit event not stored");
        }
    });
}

/// Records refused credentials. `tenant` is [`audit::ANONYMOUS_TENANT`] unless a verified
/// token named one (a permission refusal).
pub(crate) fn refused(state: &AppState, record: Record<'_>) {
    debug_assert_eq!(record.action, audit::AUTH_FAILED);
    let (subject, headers, payload) = record.message();
    let client = state.bus().client.clone();
    let failures = state.metrics().audit_failures.clone();
    state.spawn(async move {
        if let Err(error) = client
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            failures.inc();
            warn!(%error, "audit event not sent");
        }
    });
}
