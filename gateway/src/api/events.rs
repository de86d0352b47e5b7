//! `GET /api/v1/workflows/instances/{id}/events`: an instance's events as Server-Sent Events,
//! live and in order, read from the `WF_EVENTS` stream.
//!
//! Each SSE `id` is the event's stream sequence, so a client that reconnects with
//! `Last-Event-ID` gets exactly the events after the last one it saw. A stream ends after the
//! instance's terminal event. Each connection reads through its own ephemeral, memory-backed
//! consumer (no acks, filtered to the instance), deleted as soon as the client goes away; the
//! server's inactivity threshold removes it too if this gateway dies first.

use std::{convert::Infallible, time::Duration};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};
use switchyard_proto::{ContentType, WorkflowEvent, decode, event, stream, subject};
use tracing::{debug, warn};

use axum::http::Method;

use crate::{
    AppState, Error, Permission,
    extract::Ctx,
    limits::{Group, StreamSlot},
    route::{Deadline, RouteDef, route},
};

/// How long a stream of an instance that had already finished waits for more history before
/// it ends (the terminal event may be a moment behind the stored state).
const FINISHED_IDLE: Duration = Duration::from_secs(2);
/// How long an unknown instance is waited for (see [`instance_soon`]).
const NEW_INSTANCE_GRACE: Duration = Duration::from_secs(2);
/// The server removes a consumer whose gateway vanished after this long.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);
/// The prefix of the consumers that serve event streams.
pub const CONSUMER_PREFIX: &str = "sse-";

/// The SSE response.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/instances/{id}/events",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "The instance id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (the `id` of the last event received)")
    ),
    responses(
        (status = 200, description = "Server-Sent Events, one per workflow event, in order: `id` is the stream sequence, `event` the type (`started`, `step_completed`, `ai_delta`, `completed`, …), `data` the event as JSON. The stream ends after the terminal event.", content_type = "text/event-stream"),
        crate::responses::ReadErrors
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stream(
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    ctx.require(Permission::WorkflowsRead)?;
    let after = last_event_id(&headers)?;
    // Another tenant's instance, or none at all, is a 404 before anything is opened.
    let status = instance_soon(&ctx, &id).await?;
    let finished = status.status.is_finished();
    let slot = ctx.state.streams().acquire(ctx.tenant())?;

    let bus = ctx.state.bus();
    let events = bus
        .js
        .get_stream(stream::WF_EVENTS)
        .await
        .map_err(|e| Error::unavailable("opening the event stream", e))?;
    let name = format!("{CONSUMER_PREFIX}{}", uuid::Uuid::now_v7().simple());
    let consumer = events
        .create_consumer(pull::Config {
            name: Some(name.clone()),
            description: Some(format!("SSE of instance {id}")),
            filter_subject: subject::events_of(ctx.tenant(), &id),
            deliver_policy: match after {
                Some(seq) => DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
                None => DeliverPolicy::All,
            },
            ack_policy: AckPolicy::None,
            inactive_threshold: INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::unavailable("opening the event stream", e))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| Error::unavailable("opening the event stream", e))?;
    let guard = ConsumerGuard {
        state: ctx.state.clone(),
        name,
        _slot: slot,
    };
    ctx.state.metrics().event_streams.inc();
    debug!(instance_id = %id, after, "event stream opened");

    let body = sse_events(messages, guard, finished);
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies must pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The instance's status. A start accepted a moment ago is not an instance until the
/// orchestrator has taken it off the stream, and clients open the stream right after their
/// trigger: an unknown instance is asked for again for a short while before it is a 404.
async fn instance_soon(
    ctx: &Ctx,
    id: &str,
) -> Result<switchyard_proto::orchestrator::InstanceView, Error> {
    let deadline = tokio::time::Instant::now() + NEW_INSTANCE_GRACE;
    // Doubling pauses: a start is usually taken within milliseconds, and an id that never
    // appears (or is another tenant's) costs a handful of queries, not one per tick.
    let mut pause = Duration::from_millis(25);
    loop {
        match ctx.instance(id).await {
            Err(Error::NotFound(_)) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// `Last-Event-ID`: a stream sequence from an earlier event of this stream.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        Error::field(
            "Last-Event-ID",
            format!("{text:?} is not an event id of this stream; expected the `id` of an event"),
        )
    })
}

/// The events as SSE, ending after the terminal one (or, for an instance that had already
/// finished, when its history runs dry).
fn sse_events(
    messages: pull::Stream,
    guard: ConsumerGuard,
    finished: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (messages, guard, false),
        move |(mut messages, guard, done)| async move {
            if done {
                return None;
            }
            loop {
                let next = if finished {
                    match tokio::time::timeout(FINISHED_IDLE, messages.next()).await {
                        Ok(n) => n,
                        Err(_) => return None,
                    }
                } else {
                    messages.next().await
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        // The client reconnects with Last-Event-ID and misses nothing.
                        warn!(error = %e, "event stream interrupted");
                        return None;
                    }
                    None => return None,
                };
                let Ok(info) = msg.info() else { continue };
                let seq = info.stream_sequence;
                let Ok(e) = decode::<WorkflowEvent>(ContentType::Protobuf, &msg.payload) else {
                    warn!(subject = %msg.subject, seq, "skipping an unreadable workflow event");
                    continue;
                };
                let terminal = event::TERMINAL.contains(&e.r#type.as_str());
                let sse = Event::default()
                    .id(seq.to_string())
                    .event(e.r#type.clone())
                    .data(view(&e).to_string());
                return Some((Ok(sse), (messages, guard, terminal)));
            }
        },
    )
}

/// The JSON of one event as clients see it.
fn view(e: &WorkflowEvent) -> Value {
    let data: Value = if e.data.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&e.data).unwrap_or(Value::Null)
    };
    json!({
        "event_id": e.event_id,
        "type": e.r#type,
        "instance_id": e.instance_id,
        "step_id": (!e.step_id.is_empty()).then_some(&e.step_id),
        "data": data,
        "at_ms": e.at_ms,
        "correlation_id": (!e.correlation_id.is_empty()).then_some(&e.correlation_id),
    })
}

/// Deletes the connection's consumer when the response body is dropped (the stream ended or
/// the client went away), on the gateway's tracker so that shutdown waits for it, and gives
/// back the stream's slot.
struct ConsumerGuard {
    state: AppState,
    name: String,
    _slot: StreamSlot,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.state.metrics().event_streams.dec();
        // Dropped outside a runtime (its shutdown): the inactivity threshold removes it.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let js = self.state.bus().js.clone();
        let name = std::mem::take(&mut self.name);
        self.state.spawn(async move {
            match js
                .delete_consumer_from_stream(&name, stream::WF_EVENTS)
                .await
            {
                Ok(_) => debug!(consumer = %name, "event stream closed"),
                // The inactivity threshold removes it later.
                Err(e) => {
                    debug!(consumer = %name, error = %e, "cannot delete an event stream's consumer")
                }
            }
        });
    }
}

/// This area's routes.
pub(crate) fn routes() -> Vec<RouteDef> {
    use Method as M;
    vec![route(
        M::GET,
        "/api/v1/workflows/instances/{id}/events",
        Group::Read,
        Deadline::Stream,
        stream,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_sequence_or_a_named_400() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert_eq!(last_event_id(&h).unwrap(), Some(42));
        h.insert("last-event-id", HeaderValue::from_static("abc"));
        match last_event_id(&h) {
            Err(Error::InvalidField { field, .. }) => assert_eq!(field, "Last-Event-ID"),
            other => panic!("{other:?}"),
        }
    }
}
