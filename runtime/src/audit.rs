//! Audit events: the one way a process writes who did what to `audit.<tenant>.<action>` on the
//! `AUDIT` stream, which the ledger keeps as the audit log (ADR 0006).

use std::collections::HashMap;

use async_nats::{HeaderMap, jetstream};
use switchyard_proto::{AuditEvent, encode_proto, header, now_ms, subject};
use uuid::Uuid;

use crate::Error;

/// One action to record.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub tenant: &'a str,
    pub actor: &'a str,
    /// One of [`switchyard_proto::audit`]'s actions.
    pub action: &'static str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub correlation_id: &'a str,
    pub attributes: HashMap<String, String>,
}

impl Record<'_> {
    /// The event, stamped now with a fresh id.
    pub fn event(&self) -> AuditEvent {
        AuditEvent {
            event_id: Uuid::now_v7().to_string(),
            tenant: self.tenant.to_owned(),
            actor: self.actor.to_owned(),
            action: self.action.to_owned(),
            target: self.target.to_owned(),
            outcome: self.outcome.to_owned(),
            at_ms: now_ms(),
            correlation_id: self.correlation_id.to_owned(),
            attributes: self.attributes.clone(),
        }
    }

    /// The subject, headers and payload of its message.
    pub fn message(&self) -> (String, HeaderMap, Vec<u8>) {
        let event = self.event();
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

    /// Publishes it and waits for the stream to store it.
    pub async fn publish(&self, js: &jetstream::Context) -> Result<(), Error> {
        let (subject, headers, payload) = self.message();
        js.publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(Error::jetstream)?
            .await
            .map_err(Error::jetstream)?;
        Ok(())
    }
}
