//! Dead letters: the one way every consumer (worker loop, orchestrator inbox, ledger) copies a
//! message it gives up on to `dlq.<kind>`, so the DLQ always accepts it.
//!
//! A letter carries the original payload and headers, which with the error can exceed the
//! server's `max_payload`; such a letter keeps the first bytes of the payload with the
//! original's size and SHA-256 ([`fit`]) rather than being refused and leaving the message to
//! circle forever.

use std::{collections::HashMap, sync::LazyLock};

use async_nats::{HeaderMap, jetstream};
use prometheus::{IntCounterVec, Opts, Registry};
use sha2::{Digest as _, Sha256};
use switchyard_proto::{
    ContentType, DeadLetter, DeadLetterReason, encode_proto, header, now_ms, subject,
};

use crate::{Error, telemetry};

/// Room left for the NATS headers and the letter's own fields when cutting it to size.
const ROOM: usize = 16 << 10;
/// The longest error text a letter keeps.
const MAX_ERROR: usize = 4 << 10;

/// Headers copied from a message onto what is derived from it: its dead letter, a job's
/// result and events.
const CARRIED: [&str; 4] = [
    header::CORRELATION_ID,
    header::TRACEPARENT,
    header::TRACESTATE,
    header::TENANT,
];

/// `msg`'s correlation, tenant and trace headers, with the trace context replaced by the
/// current span's (the span handling `msg`, a child of its sender) when there is one.
pub(crate) fn carried_headers(msg: &jetstream::Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(incoming) = &msg.headers {
        for name in CARRIED {
            if let Some(value) = incoming.get(name) {
                headers.insert(name, value.as_str());
            }
        }
    }
    telemetry::inject(&tracing::Span::current(), &mut headers);
    headers
}

/// Why and by whom a message is given up on.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'a> {
    /// The DLQ subject's kind: a worker kind, `orchestrator` or `ledger`.
    pub kind: &'a str,
    pub reason: DeadLetterReason,
    pub error: &'a str,
    pub attempts: u32,
    /// The job's id, when the message was one; empty otherwise.
    pub job_id: &'a str,
    pub worker_id: &'a str,
}

/// The letter for `msg`, cut to fit in `max_payload` bytes.
pub fn letter(msg: &jetstream::Message, why: Reason<'_>, max_payload: usize) -> DeadLetter {
    let headers: HashMap<String, String> = msg
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .filter_map(|(name, values)| {
            values
                .first()
                .map(|v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    let stream_sequence = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
    let letter = DeadLetter {
        kind: why.kind.to_owned(),
        subject: msg.subject.to_string(),
        payload: msg.payload.to_vec(),
        headers,
        reason: why.reason as i32,
        error: why.error.to_owned(),
        attempts: why.attempts,
        stream_sequence,
        job_id: why.job_id.to_owned(),
        failed_at_ms: now_ms(),
        worker_id: why.worker_id.to_owned(),
        ..DeadLetter::default()
    };
    fit(letter, max_payload)
}

/// `letter` as it is when it fits in `max_payload` bytes with room for headers; otherwise with
/// its error text shortened, its payload cut to what fits (recording the original's size and
/// SHA-256) and, if still too large, its copied headers dropped.
pub fn fit(mut letter: DeadLetter, max_payload: usize) -> DeadLetter {
    let limit = max_payload.saturating_sub(ROOM).max(1024);
    if encode_proto(&letter).len() <= limit {
        return letter;
    }
    if letter.error.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !letter.error.is_char_boundary(end) {
            end -= 1;
        }
        letter.error.truncate(end);
        letter.error.push('…');
    }
    let size = encode_proto(&letter).len();
    if size > limit {
        letter.payload_size = letter.payload.len() as u64;
        letter.payload_sha256 = hex::encode(Sha256::digest(&letter.payload));
        letter.payload_truncated = true;
        let over = size - limit;
        // Room for the fields just set and the shorter length prefix.
        let keep = letter.payload.len().saturating_sub(over + 256);
        letter.payload.truncate(keep);
    }
    if encode_proto(&letter).len() > limit {
        letter.headers.clear();
    }
    letter
}

/// Dead letters the DLQ stream did not take, by the kind of consumer that tried: the message
/// stays on its own stream and comes back, but nobody learns why it failed until it is stored.
static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "switchyard_dead_letter_failures_total",
            "Dead letters the DLQ stream did not take; the message stays on its stream",
        ),
        &["kind"],
    )
    .expect("a valid metric")
});

/// Registers `switchyard_dead_letter_failures_total` in `registry` (once per registry, however
/// many consumers of the process share it), with a zero series for `kind`.
pub fn register_metrics(registry: &Registry, kind: &str) -> Result<(), prometheus::Error> {
    FAILURES.with_label_values(&[kind]);
    match registry.register(Box::new(FAILURES.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Publishes the dead letter of `msg` to `dlq.<kind>` under the message id
/// `dlq-<stream>-<seq>` (so a second try is dropped as a duplicate) and waits for the PubAck.
pub async fn publish(
    js: &jetstream::Context,
    msg: &jetstream::Message,
    why: Reason<'_>,
) -> Result<(), Error> {
    let max_payload = js.client().server_info().max_payload;
    let letter = letter(msg, why, max_payload);
    let (stream_name, seq) = msg
        .info()
        .map(|i| (i.stream.to_owned(), i.stream_sequence))
        .unwrap_or_default();
    let mut headers = carried_headers(msg);
    headers.insert(header::MSG_ID, format!("dlq-{stream_name}-{seq}").as_str());
    headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
    let stored = async {
        js.publish_with_headers(
            subject::dlq(why.kind),
            headers,
            encode_proto(&letter).into(),
        )
        .await
        .map_err(Error::jetstream)?
        .await
        .map_err(Error::jetstream)
    }
    .await;
    if stored.is_err() {
        FAILURES.with_label_values(&[why.kind]).inc();
    }
    stored.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter_of(payload: Vec<u8>, error: String) -> DeadLetter {
        DeadLetter {
            kind: "ledger".into(),
            subject: "usage.acme.tokens".into(),
            payload,
            headers: HashMap::from([("Nats-Msg-Id".to_owned(), "u-1".to_owned())]),
            error,
            ..DeadLetter::default()
        }
    }

    #[test]
    fn a_letter_that_fits_is_left_alone() {
        let letter = letter_of(b"{\"not\": \"protobuf\"}".to_vec(), "decode error".into());
        assert_eq!(fit(letter.clone(), 1 << 20), letter);
    }

    #[test]
    fn an_oversized_letter_keeps_a_prefix_with_the_originals_size_and_hash() {
        let max_payload = 1 << 20;
        let payload: Vec<u8> = (0..max_payload).map(|i| (i % 251) as u8).collect();
        let error = "é".repeat(10_000);
        let fitted = fit(letter_of(payload.clone(), error), max_payload);
        assert!(encode_proto(&fitted).len() <= max_payload - ROOM);
        assert!(fitted.payload_truncated);
        assert_eq!(fitted.payload_size, payload.len() as u64);
        assert_eq!(fitted.payload_sha256, hex::encode(Sha256::digest(&payload)));
        assert!(payload.starts_with(&fitted.payload));
        assert!(fitted.payload.len() > max_payload / 2);
        assert!(fitted.error.len() <= MAX_ERROR + '…'.len_utf8());
        assert_eq!(
            fitted.headers.len(),
            1,
            "headers kept when the payload cut suffices"
        );
    }
}
