//! Starts from events: a message on `evt.<tenant>.<subject>` (stream `WF_TRIGGERS`) starts
//! the latest version of each of that tenant's definitions with a trigger matching `subject`
//! (ADR 19). The stream drops a message whose `Nats-Msg-Id` it saw within its duplicate
//! window, and the instance id is derived from that id (or from the message's place in the
//! stream), so a redelivered or republished event starts each workflow once.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{self, AckKind, consumer::PullConsumer},
};
use futures::StreamExt as _;
use serde_json::Value;
use switchyard_proto::{
    DeadLetterReason, StartWorkflow, encode_proto, header::CORRELATION_ID, now_ms, subject,
};
use switchyard_workflow::{Definition, store::Scope};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Error, shared::Shared};

/// The label a triggered instance carries: the event's subject (after `evt.<tenant>.`).
pub const TRIGGER_LABEL: &str = "trigger";

/// Deliveries of an event whose starts cannot be published before it is dead-lettered.
const MAX_DELIVERIES: i64 = 5;

/// How long to wait before pulling again after the pull failed.
const RETRY: Duration = Duration::from_secs(5);

/// The latest version of each of `tenant`'s definitions with a trigger matching `subject`, and
/// the first such trigger's index.
fn triggered(shared: &Shared, tenant: &str, subject: &str) -> Vec<(Arc<Definition>, usize)> {
    let mut latest: BTreeMap<String, Arc<Definition>> = BTreeMap::new();
    for entry in shared.definitions.all() {
        if entry.scope != Scope::Tenant(tenant.to_owned()) || entry.definition.triggers.is_empty() {
            continue;
        }
        let def = entry.definition;
        if latest
            .get(&def.name)
            .is_none_or(|d| d.version < def.version)
        {
            latest.insert(def.name.clone(), def);
        }
    }
    latest
        .into_values()
        .filter_map(|def| {
            let index = def.triggers.iter().position(|t| t.matches(subject))?;
            Some((def, index))
        })
        .collect()
}

/// Turns each event on `orchestrator-triggers` into starts, until `shutdown`.
pub(crate) async fn run(shared: Arc<Shared>, consumer: PullConsumer, shutdown: CancellationToken) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot pull tenants' events; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    debug!(error = %e, "event pull interrupted");
                    break;
                }
                None => break,
            };
            let outcome = match handle(&shared, &msg).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    let delivered = msg.info().map_or(1, |i| i.delivered);
                    if delivered >= MAX_DELIVERIES {
                        dead_letter(&shared, &msg, DeadLetterReason::Unavailable, &e.to_string())
                            .await;
                        "dead_letter"
                    } else {
                        warn!(subject = %msg.subject, error = %e, "cannot start from an event; it comes back");
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                            .await;
                        "retry"
                    }
                }
            };
            shared
                .metrics
                .trigger_events
                .with_label_values(&[outcome])
                .inc();
        }
    }
}

/// Starts what the event triggers and settles it: `started`, `unmatched` (no trigger names
/// it), or `dead_letter` when an input cannot be made from it.
async fn handle(shared: &Shared, msg: &jetstream::Message) -> Result<&'static str, Error> {
    let Some((tenant, event_subject)) = subject::parse_tenant_event(&msg.subject) else {
        dead_letter(
            shared,
            msg,
            DeadLetterReason::Decode,
            "not an evt.<tenant>.<subject> subject",
        )
        .await;
        return Ok("dead_letter");
    };
    let matched = triggered(shared, tenant, event_subject);
    if matched.is_empty() {
        debug!(subject = %msg.subject, "no trigger names this event");
        let _ = msg.ack().await;
        return Ok("unmatched");
    }
    let event = match serde_json::from_slice::<Value>(&msg.payload) {
        Ok(v) => v,
        Err(_) => match std::str::from_utf8(&msg.payload) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => {
                dead_letter(
                    shared,
                    msg,
                    DeadLetterReason::Decode,
                    "the event is neither JSON nor UTF-8 text",
                )
                .await;
                return Ok("dead_letter");
            }
        },
    };
    let headers = msg.headers.as_ref();
    let key = match headers.and_then(|h| h.get(NATS_MESSAGE_ID)) {
        Some(id) => format!("id:{}", id.as_str()),
        None => {
            let info = msg
                .info()
                .map_err(|e| Error::bus("reading an event's place in its stream", e))?;
            format!(
                "seq:{}:{}:{}",
                info.stream,
                info.stream_sequence,
                info.published.unix_timestamp_nanos()
            )
        }
    };
    let correlation = headers
        .and_then(|h| h.get(CORRELATION_ID))
        .map(|v| v.as_str().to_owned());
    let mut refused = Vec::new();
    for (def, index) in matched {
        let input = match def.render_trigger_input(index, &event, event_subject, &shared.env) {
            Ok(input) => input,
            Err(e) => {
                refused.push(format!(
                    "{} v{}: triggers[{index}].input: {}",
                    def.name, def.version, e.message
                ));
                continue;
            }
        };
        let instance_id = instance_id(tenant, &def.name, &key);
        let start = StartWorkflow {
            tenant: tenant.to_owned(),
            workflow: def.name.clone(),
            instance_id: instance_id.clone(),
            version: def.version,
            input: serde_json::to_vec(&input).map_err(|e| Error::Encode {
                what: "a triggered start's input",
                reason: e.to_string(),
            })?,
            correlation_id: correlation.clone().unwrap_or_else(|| instance_id.clone()),
            requested_at_ms: now_ms(),
            labels: [(
                TRIGGER_LABEL.to_owned(),
                event_subject.chars().take(256).collect(),
            )]
            .into(),
            not_before_ms: 0,
        };
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, instance_id.as_str());
        shared
            .js
            .publish_with_headers(
                subject::start(tenant, &def.name),
                headers,
                encode_proto(&start).into(),
            )
            .await
            .map_err(|e| Error::bus("publishing a triggered start", e))?
            .await
            .map_err(|e| Error::bus("publishing a triggered start", e))?;
        info!(%tenant, workflow = %def.name, %instance_id, subject = %event_subject, "triggered start");
    }
    if refused.is_empty() {
        let _ = msg.ack().await;
        Ok("started")
    } else {
        // The others started; a replay of the letter starts them no second time.
        dead_letter(
            shared,
            msg,
            DeadLetterReason::Permanent,
            &format!(
                "no input could be made from the event: {}",
                refused.join("; ")
            ),
        )
        .await;
        Ok("dead_letter")
    }
}

/// Moves an event to `dlq.orchestrator` with why, then terminates it.
async fn dead_letter(
    shared: &Shared,
    msg: &jetstream::Message,
    reason: DeadLetterReason,
    error: &str,
) {
    warn!(subject = %msg.subject, error, "event dead-lettered");
    let delivered = msg.info().map_or(1, |i| i.delivered);
    let why = switchyard_runtime::dlq::Reason {
        kind: crate::engine::DLQ_KIND,
        reason,
        error,
        attempts: u32::try_from(delivered).unwrap_or(0),
        job_id: "",
        worker_id: &shared.replica_id,
    };
    match switchyard_runtime::dlq::publish(&shared.js, msg, why).await {
        Ok(_) => {
            let _ = msg.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            warn!(error = %e, "cannot dead-letter an event; it comes back");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// The instance an event starts of `workflow`: derived from the event's message id (or its
/// place in the stream), so the same event always names the same instance.
fn instance_id(tenant: &str, workflow: &str, key: &str) -> String {
    let name = format!("trigger\u{1f}{tenant}\u{1f}{workflow}\u{1f}{key}");
    let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    let id = format!("{workflow}-{uuid}");
    if subject::check_token(&id).is_ok() {
        id
    } else {
        uuid.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_names_the_same_instance_and_others_another() {
        let a = instance_id("acme", "orders", "id:order-1");
        assert_eq!(a, instance_id("acme", "orders", "id:order-1"));
        assert!(a.starts_with("orders-"), "{a}");
        assert_ne!(a, instance_id("acme", "orders", "id:order-2"));
        assert_ne!(a, instance_id("globex", "orders", "id:order-1"));
        assert_ne!(a, instance_id("acme", "invoices", "id:order-1"));
        let long = "w".repeat(120);
        assert!(subject::check_token(&instance_id("acme", &long, "id:x")).is_ok());
    }
}
