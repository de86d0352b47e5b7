//! Usage events for fetched cards: one `cards_fetched` event per card a job or request fetched,
//! on `usage.<tenant>.cards_fetched`, with the card's type and the source (`workflow` or
//! `api`) as attributes.
//!
//! The event id is derived from the job (or request) id and the card id, and doubles as the
//! `Nats-Msg-Id`: a redelivered job publishes the same ids, JetStream drops the copies within
//! its duplicate window, and the ledger, idempotent by event id, drops any later one. The
//! PubAck says whether the stream stored the event or dropped it as a duplicate; only a stored
//! event counts in `cards_api_usage_total` and `workflow_cards_fetched_total`, so the counters
//! and the stream agree across redeliveries.

use std::collections::HashMap;

use async_nats::{HeaderMap, jetstream};
use switchyard_proto::{ContentType, Job, UsageEvent, encode_proto, header, now_ms, subject};

use crate::{
    Error,
    metrics::{Metrics, Source},
    store::Card,
};

/// The meter of fetched cards.
pub const METER: &str = "cards_fetched";
/// The unit of its quantity.
pub const UNIT: &str = "card";

/// The event id of `card_id` fetched by job (or request) `job_id`.
pub fn event_id(job_id: &str, card_id: &str) -> String {
    format!("{job_id}:card:{card_id}")
}

/// Publishes usage events and keeps the usage counters.
#[derive(Debug, Clone)]
pub struct Usage {
    js: jetstream::Context,
    metrics: Metrics,
}

impl Usage {
    pub fn new(client: async_nats::Client, metrics: Metrics) -> Self {
        Usage {
            js: jetstream::new(client),
            metrics,
        }
    }

    /// Publishes one event per card and waits for every PubAck; counts the stored ones.
    pub async fn fetched(
        &self,
        job: &Job,
        cards: &[Card],
        source: Source,
        workflow: Option<&str>,
    ) -> Result<(), Error> {
        let tenant_token = if job.tenant.is_empty() {
            "_"
        } else {
            job.tenant.as_str()
        };
        let mut acks = Vec::with_capacity(cards.len());
        for card in cards {
            let mut attributes = HashMap::from([
                ("card_type".to_owned(), card.card_type.clone()),
                ("source".to_owned(), source.as_str().to_owned()),
            ]);
            if let Some(w) = workflow {
                attributes.insert("workflow_type".to_owned(), w.to_owned());
            }
            let event = UsageEvent {
                event_id: event_id(&job.job_id, &card.id),
                tenant: job.tenant.clone(),
                meter: METER.to_owned(),
                quantity: 1.0,
                unit: UNIT.to_owned(),
                instance_id: job.instance_id.clone(),
                step_id: job.step_id.clone(),
                operation: job.operation.clone(),
                at_ms: now_ms(),
                attributes,
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::TENANT, job.tenant.as_str());
            headers.insert(header::MSG_ID, event.event_id.as_str());
            headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
            if !job.correlation_id.is_empty() {
                headers.insert(header::CORRELATION_ID, job.correlation_id.as_str());
            }
            // Sent one after another, acknowledged together: one round trip for the batch.
            let ack = self
                .js
                .publish_with_headers(
                    subject::usage(tenant_token, METER),
                    headers,
                    encode_proto(&event).into(),
                )
                .await
                .map_err(|e| Error::Usage(e.to_string()))?;
            acks.push((card, ack));
        }
        for (card, ack) in acks {
            let ack = ack.await.map_err(|e| Error::Usage(e.to_string()))?;
            if !ack.duplicate {
                self.metrics
                    .fetched(&job.tenant, &card.card_type, source, workflow);
            }
        }
        Ok(())
    }
}
