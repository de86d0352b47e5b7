//! Usage events for fetched cards: one `cards_fetched` event per card a job or request fetched,
//! with the card's type and the source (`workflow` or `api`) as attributes.
//!
//! Each event goes out through the job's context keyed by the card id
//! ([`JobContext::usage_once`]), so a redelivered job publishes the same event ids, JetStream
//! drops the copies within its duplicate window, and the ledger, idempotent by event id, drops
//! any later one. Only an event the stream stored counts in `cards_api_usage_total` and
//! `workflow_cards_fetched_total`, so the counters and the stream agree across redeliveries.

use std::collections::HashMap;

use switchyard_runtime::JobContext;

use crate::{
    Error,
    metrics::{Metrics, Source},
    store::Card,
};

/// The meter of fetched cards.
pub const METER: &str = "cards_fetched";
/// The unit of its quantity.
pub const UNIT: &str = "card";

/// Publishes one event per card (all at once, then every PubAck awaited) and counts the
/// stored ones.
pub async fn fetched(
    ctx: &JobContext,
    metrics: &Metrics,
    cards: &[Card],
    source: Source,
    workflow: Option<&str>,
) -> Result<(), Error> {
    let stored = futures::future::try_join_all(cards.iter().map(|card| {
        let mut attributes = HashMap::from([
            ("card_type".to_owned(), card.card_type.clone()),
            ("source".to_owned(), source.as_str().to_owned()),
        ]);
        if let Some(w) = workflow {
            attributes.insert("workflow_type".to_owned(), w.to_owned());
        }
        ctx.usage_once(&card.id, METER, 1.0, UNIT, attributes)
    }))
    .await
    .map_err(|e| Error::Usage(e.to_string()))?;
    for (card, stored) in cards.iter().zip(stored) {
        if stored {
            metrics.fetched(ctx.tenant(), &card.card_type, source, workflow);
        }
    }
    Ok(())
}
