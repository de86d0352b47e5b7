//! Reading the streams: one loop per durable consumer (`ledger-usage` on `USAGE`,
//! `ledger-events` on `WF_EVENTS`, `ledger-audit` on `AUDIT`) gathers messages into a batch
//! bounded by count and time, decodes them, and writes the batch in one transaction.
//!
//! | message | the loop does |
//! |---|---|
//! | decoded | written with its batch; acked after the commit |
//! | an event type the read model does not need | acked at once, not decoded |
//! | not a readable envelope | copied to `dlq.ledger` with the reason, then acked |
//! | its batch hit a database error | nak'd with a growing delay: redelivered, never lost |
//! | Postgres refuses it for good (a constraint) | written alone; if still refused, dead-lettered |

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use sqlx::PgPool;
use switchyard_proto::{
    AuditEvent, ContentType, DeadLetterReason, UsageEvent, WorkflowEvent, decode, event, header,
    now_ms, stream, subject,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    Error, KIND,
    metrics::{Metrics, Outcome},
    store::{self, Applied, Item},
};

/// A stream the ledger reads, with its durable consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Usage,
    Events,
    Audit,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Usage, Source::Events, Source::Audit];

    pub fn stream(self) -> &'static str {
        match self {
            Source::Usage => stream::USAGE,
            Source::Events => stream::WF_EVENTS,
            Source::Audit => stream::AUDIT,
        }
    }

    pub fn consumer(self) -> &'static str {
        match self {
            Source::Usage => stream::LEDGER_USAGE,
            Source::Events => stream::LEDGER_EVENTS,
            Source::Audit => stream::LEDGER_AUDIT,
        }
    }
}

/// The workflow event types the instance read model is built from; every other type (token
/// deltas, a worker's own progress events) is skipped by its subject, without decoding.
const READ_MODEL_EVENTS: [&str; 17] = [
    event::SCHEDULED,
    event::QUEUED,
    event::STARTED,
    event::RERUN,
    event::COMPLETED,
    event::FAILED,
    event::CANCELLED,
    event::SLA_BREACHED,
    event::STEP_SCHEDULED,
    event::STEP_STARTED,
    event::STEP_RETRYING,
    event::STEP_COMPLETED,
    event::STEP_FAILED,
    event::STEP_SKIPPED,
    event::STEP_WAITING,
    event::STEP_SLEEPING,
    event::STEP_SIGNALLED,
];

/// Decodes one message of `source`: `Ok(None)` for a message the ledger does not need,
/// `Err(reason)` for one it cannot read. `published_ms` (the stream's timestamp) stands in
/// for a missing `at_ms`, so a replay dates the event the same way.
pub fn decode_message(
    source: Source,
    subject_name: &str,
    content_type: Option<&str>,
    payload: &[u8],
    published_ms: i64,
) -> Result<Option<Item>, String> {
    let ct = ContentType::from_header(content_type);
    let required = |field: &str, value: &str| {
        if value.is_empty() {
            Err(format!("field `{field}` is empty"))
        } else {
            Ok(())
        }
    };
    match source {
        Source::Usage => {
            let mut u: UsageEvent = decode(ct, payload).map_err(|e| e.to_string())?;
            required("event_id", &u.event_id)?;
            required("tenant", &u.tenant)?;
            required("meter", &u.meter)?;
            if !u.quantity.is_finite() {
                return Err(format!("field `quantity`: {} is not a number", u.quantity));
            }
            if u.at_ms <= 0 {
                u.at_ms = published_ms;
            }
            Ok(Some(Item::Usage(u)))
        }
        Source::Events => {
            let ty = subject::parse_event(subject_name).map(|(_, _, ty)| ty);
            if !ty.is_some_and(|t| READ_MODEL_EVENTS.contains(&t)) {
                return Ok(None);
            }
            let mut e: WorkflowEvent = decode(ct, payload).map_err(|e| e.to_string())?;
            required("tenant", &e.tenant)?;
            required("instance_id", &e.instance_id)?;
            if e.r#type.is_empty() {
                e.r#type = ty.unwrap_or_default().to_owned();
            }
            if e.at_ms <= 0 {
                e.at_ms = published_ms;
            }
            Ok(Some(Item::Event(e)))
        }
        Source::Audit => {
            let mut a: AuditEvent = decode(ct, payload).map_err(|e| e.to_string())?;
            required("event_id", &a.event_id)?;
            required("tenant", &a.tenant)?;
            required("action", &a.action)?;
            if a.at_ms <= 0 {
                a.at_ms = published_ms;
            }
            Ok(Some(Item::Audit(a)))
        }
    }
}

/// Decodes a message as read from a consumer.
pub(crate) fn decode_stored(
    source: Source,
    msg: &jetstream::Message,
) -> Result<Option<Item>, String> {
    let content_type = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(header::CONTENT_TYPE))
        .map(|v| v.as_str());
    let published_ms = msg
        .info()
        .map(|i| i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        .unwrap_or_else(|_| now_ms());
    decode_message(
        source,
        &msg.subject,
        content_type,
        &msg.payload,
        published_ms,
    )
}

/// What every consumer loop shares.
#[derive(Debug)]
pub(crate) struct Ingest {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub metrics: Metrics,
    pub batch_size: usize,
    pub batch_wait: Duration,
    pub worker_id: String,
}

/// The shortest and longest delay before a batch that hit a database error comes back.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The durable consumer of `source`, which `switchyard bus apply` declares.
pub(crate) async fn durable(
    js: &jetstream::Context,
    source: Source,
) -> Result<PullConsumer, Error> {
    let name = source.stream();
    let s = js
        .get_stream(name)
        .await
        .map_err(|_| switchyard_runtime::Error::NotProvisioned {
            what: format!("stream {name}"),
        })?;
    s.get_consumer(source.consumer()).await.map_err(|_| {
        switchyard_runtime::Error::NotProvisioned {
            what: format!("consumer {} on {name}", source.consumer()),
        }
        .into()
    })
}

impl Ingest {
    /// Consumes `source` until `shutdown`; the batch in hand is finished first.
    pub(crate) async fn consume(
        self: Arc<Self>,
        source: Source,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let consumer = durable(&self.js, source).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .map_err(|e| Error::bus("cannot read the stream", e))?;
        info!(
            stream = source.stream(),
            consumer = source.consumer(),
            "ledger consuming"
        );
        let mut failures: u32 = 0;
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            let first = match first {
                None => return Err(Error::bus("the stream ended", source.stream())),
                Some(Err(e)) => {
                    warn!(stream = source.stream(), error = %e, "pull failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(RETRY_FIRST) => continue,
                    }
                }
                Some(Ok(m)) => m,
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.batch_wait;
            while batch.len() < self.batch_size {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m),
                    Ok(Some(Err(e))) => {
                        warn!(stream = source.stream(), error = %e, "pull failed");
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            match self.handle(source, batch).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = retry_delay(failures);
                    warn!(
                        stream = source.stream(),
                        error = %e,
                        failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "batch not written; handed back"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        info!(stream = source.stream(), "ledger consumer stopped");
        Ok(())
    }

    /// Decodes, dead-letters, writes and settles one batch. An error means the batch's
    /// messages were handed back with a delay.
    async fn handle(&self, source: Source, batch: Vec<jetstream::Message>) -> Result<(), Error> {
        let name = source.stream();
        let mut keep = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        let mut malformed = Vec::new();
        let mut ignored = 0;
        for msg in batch {
            match decode_stored(source, &msg) {
                Ok(Some(item)) => {
                    items.push(item);
                    keep.push(msg);
                }
                Ok(None) => {
                    ignored += 1;
                    ack(&msg).await;
                }
                Err(reason) => malformed.push((msg, reason)),
            }
        }
        for (i, (msg, reason)) in malformed.iter().enumerate() {
            warn!(stream = name, subject = %msg.subject, error = %reason, "malformed message");
            if let Err(e) = self
                .dead_letter(msg, DeadLetterReason::Decode, reason)
                .await
            {
                // Nothing is acked that has not landed somewhere: hand the rest back.
                let rest: Vec<_> = malformed[i..].iter().map(|(m, _)| m.clone()).collect();
                nak_all(&rest, retry_delay(1)).await;
                nak_all(&keep, retry_delay(1)).await;
                return Err(e);
            }
            self.metrics.messages(name, Outcome::Malformed, 1);
            ack(msg).await;
        }
        self.metrics.messages(name, Outcome::Ignored, ignored);
        if items.is_empty() {
            return Ok(());
        }
        match self.write(name, &items).await {
            Ok(applied) => {
                self.settle(name, &keep, applied).await;
                Ok(())
            }
            // One message Postgres will never take (bad data, a violated constraint) must not
            // hold back the others: write them one by one and dead-letter what is refused.
            Err(Error::Refused { code, message }) if is_poison(&code) => {
                if items.len() == 1 {
                    return self.refused(name, &keep[0], &code, &message).await;
                }
                let mut rest = items.into_iter().zip(keep);
                while let Some((item, msg)) = rest.next() {
                    if let Err(e) = self.handle_one(name, item, msg).await {
                        let left: Vec<_> = rest.map(|(_, m)| m).collect();
                        nak_all(&left, retry_delay(1)).await;
                        return Err(e);
                    }
                }
                Ok(())
            }
            Err(e) => {
                nak_all(&keep, retry_delay(1)).await;
                Err(e)
            }
        }
    }

    async fn handle_one(
        &self,
        name: &str,
        item: Item,
        msg: jetstream::Message,
    ) -> Result<(), Error> {
        match self.write(name, std::slice::from_ref(&item)).await {
            Ok(applied) => {
                self.settle(name, std::slice::from_ref(&msg), applied).await;
                Ok(())
            }
            Err(Error::Refused { code, message }) if is_poison(&code) => {
                self.refused(name, &msg, &code, &message).await
            }
            Err(e) => {
                nak_all(std::slice::from_ref(&msg), retry_delay(1)).await;
                Err(e)
            }
        }
    }

    async fn refused(
        &self,
        name: &str,
        msg: &jetstream::Message,
        code: &str,
        message: &str,
    ) -> Result<(), Error> {
        let reason = format!("the ledger's database refused it ({code}): {message}");
        warn!(stream = name, subject = %msg.subject, error = %reason, "message refused");
        self.dead_letter(msg, DeadLetterReason::Permanent, &reason)
            .await?;
        self.metrics.messages(name, Outcome::Malformed, 1);
        ack(msg).await;
        Ok(())
    }

    /// One transaction for the batch, timed.
    async fn write(&self, name: &str, items: &[Item]) -> Result<Applied, Error> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let applied = store::apply(&mut tx, items).await?;
        tx.commit().await?;
        self.metrics.batch(name, started.elapsed().as_secs_f64());
        Ok(applied)
    }

    /// Acks what was committed and counts it.
    async fn settle(&self, name: &str, msgs: &[jetstream::Message], applied: Applied) {
        for msg in msgs {
            ack(msg).await;
        }
        self.metrics.messages(name, Outcome::Stored, applied.stored);
        self.metrics
            .messages(name, Outcome::Duplicate, applied.duplicate);
        for (tenant, meter, quantity) in &applied.new_usage {
            self.metrics.usage(tenant, meter, *quantity);
        }
        debug!(
            stream = name,
            stored = applied.stored,
            duplicate = applied.duplicate,
            "batch written"
        );
    }

    /// Copies `msg` to `dlq.ledger` with `reason` and waits for the PubAck. Fails (and the
    /// message is handed back) when the DLQ cannot store it.
    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        reason: DeadLetterReason,
        error: &str,
    ) -> Result<(), Error> {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or_default();
        let why = switchyard_runtime::dlq::Reason {
            kind: KIND,
            reason,
            error,
            attempts: u32::try_from(delivered).unwrap_or(u32::MAX),
            job_id: "",
            worker_id: &self.worker_id,
        };
        switchyard_runtime::dlq::publish(&self.js, msg, why)
            .await
            .map_err(|e| Error::bus("cannot dead-letter a message", e))
    }
}

/// Whether Postgres refused a message for its content (SQLSTATE class 22, data exception, or
/// 23, integrity constraint violation), which no retry fixes. Other refusals (a missing table,
/// a revoked privilege) are the deployment's to fix: the batch waits for that.
fn is_poison(code: &str) -> bool {
    switchyard_runtime::sqlstate::refuses_content(code)
}

/// The delay before the `failures`-th consecutive failed batch comes back: doubling from
/// [`RETRY_FIRST`] up to [`RETRY_MAX`].
fn retry_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

async fn ack(msg: &jetstream::Message) {
    if let Err(e) = msg.ack().await {
        // Not acked means redelivered, which the ledger shrugs off.
        debug!(error = %e, "ack failed");
    }
}

async fn nak_all(msgs: &[jetstream::Message], delay: Duration) {
    for msg in msgs {
        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
    }
}

/// Samples each durable consumer's pending count every `interval` until `shutdown`.
pub(crate) async fn sample_lag(
    js: jetstream::Context,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut consumers: Vec<(Source, Option<PullConsumer>)> =
        Source::ALL.iter().map(|s| (*s, None)).collect();
    loop {
        for (source, consumer) in &mut consumers {
            if consumer.is_none() {
                *consumer = durable(&js, *source).await.ok();
            }
            if let Some(c) = consumer {
                match c.info().await {
                    Ok(info) => metrics.lag(source.stream(), info.num_pending),
                    Err(e) => {
                        debug!(stream = source.stream(), error = %e, "cannot read the consumer's lag")
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(40), RETRY_MAX);
    }

    #[test]
    fn token_deltas_are_skipped_without_decoding_and_garbage_is_malformed() {
        let skipped = decode_message(
            Source::Events,
            &subject::event("t", "i", "ai_delta"),
            None,
            b"not protobuf at all",
            1,
        );
        assert_eq!(skipped, Ok(None));
        let bad = decode_message(
            Source::Usage,
            &subject::usage("t", "tokens"),
            Some(header::JSON),
            b"{\"event_id\": 7}",
            1,
        );
        assert!(bad.unwrap_err().contains("event_id"));
        let empty = decode_message(
            Source::Usage,
            &subject::usage("t", "tokens"),
            Some(header::JSON),
            br#"{"tenant": "t", "meter": "m", "quantity": 1}"#,
            1,
        );
        assert_eq!(empty, Err("field `event_id` is empty".into()));
        let dated = decode_message(
            Source::Usage,
            &subject::usage("t", "m"),
            Some(header::JSON),
            br#"{"event_id": "e", "tenant": "t", "meter": "m", "quantity": 1.5}"#,
            42,
        );
        let Ok(Some(Item::Usage(u))) = dated else {
            panic!("{dated:?}")
        };
        assert_eq!((u.at_ms, u.quantity), (42, 1.5));
    }
}
