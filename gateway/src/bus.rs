//! The gateway's two ways onto the bus: JetStream publishes (starts, cancels, signals), acked
//! before any 202, and request/reply queries to the orchestrator's service endpoints.

use std::time::{Duration, Instant};

use async_nats::{
    HeaderMap, RequestErrorKind,
    jetstream::{self, context::PublishAckFuture, publish::PublishAck},
};
use switchyard_proto::orchestrator::{
    ERROR_CODE_HEADER, Endpoint, ErrorReply, ServiceError, ServiceErrorCode,
};

use backon::{ExponentialBuilder, Retryable};
use switchyard_runtime::objects::Objects;
use tracing::warn;

use crate::Error;

/// How long a publish is repeated while the bus does not confirm it: longer than a stream
/// leader election or a server restart, well inside the streams' 2-minute duplicate window.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);

/// A NATS connection and its JetStream context.
#[derive(Debug, Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Where request payloads too large for a message go ([`switchyard_runtime::objects`]).
    pub objects: Objects,
}

impl Bus {
    pub fn new(client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        Bus {
            objects: Objects::new(js.clone()),
            client,
            js,
        }
    }

    /// Asks the orchestrator's endpoint `E`; its error replies become the matching [`Error`].
    pub async fn query<E: Endpoint>(
        &self,
        request: &E::Request,
        headers: HeaderMap,
    ) -> Result<E::Reply, Error> {
        let payload =
            serde_json::to_vec(request).map_err(|e| Error::internal("encoding a query", e))?;
        let reply = self
            .client
            .request_with_headers(E::subject(), headers, payload.into())
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => {
                    Error::unavailable("the workflow engine is not running", e)
                }
                RequestErrorKind::TimedOut => {
                    Error::unavailable("the workflow engine did not answer in time", e)
                }
                RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                    Error::internal("querying the workflow engine", e)
                }
                RequestErrorKind::Other => Error::unavailable("querying the workflow engine", e),
            })?;
        let failed = reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(ERROR_CODE_HEADER).is_some());
        // Only the header marks a failure: a status view has an `error` field of its own.
        if failed {
            let body: ErrorReply = serde_json::from_slice(&reply.payload)
                .map_err(|e| Error::internal("decoding the workflow engine's error", e))?;
            return Err(from_service_error(body.error));
        }
        serde_json::from_slice(&reply.payload)
            .map_err(|e| Error::internal("decoding the workflow engine's reply", e))
    }

    /// Publishes to a stream and waits for the PubAck: only then is the message durable. The
    /// message carries a `Nats-Msg-Id` (every caller sets one), so when no PubAck comes (a
    /// stream leader election, a server restart) the same message is published again, with
    /// backoff, for up to [`PUBLISH_PATIENCE`]: the stream stores it at most once, and the
    /// caller hears "unavailable" only after a fault longer than that.
    pub async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<PublishAck, Error> {
        debug_assert!(
            headers.get(switchyard_proto::header::MSG_ID).is_some(),
            "a publish the gateway retries needs a message id"
        );
        let payload = bytes::Bytes::from(payload);
        let started = Instant::now();
        let attempt = || async {
            let ack: PublishAckFuture = self
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| Error::unavailable("publishing to the bus", e))?;
            ack.await
                .map_err(|e| Error::unavailable("waiting for the bus to store the message", e))
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .without_max_times(),
            )
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, Error::Unavailable { .. }) && started.elapsed() < PUBLISH_PATIENCE)
            .notify(|e, wait| warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the bus did not store a message yet; publishing it again"))
            .await
    }
}

/// The one mapping from the engine's error codes to the gateway's errors.
fn from_service_error(e: ServiceError) -> Error {
    match e.code {
        ServiceErrorCode::InvalidDefinition => Error::InvalidDefinition {
            message: e.message,
            problems: e.problems,
        },
        // A refusal that names its field becomes one naming it for the client too.
        ServiceErrorCode::BadRequest => match e.problems.first() {
            Some(p) if !p.path.is_empty() => Error::field(p.path.clone(), p.message.clone()),
            _ => Error::BadRequest(e.message),
        },
        ServiceErrorCode::NotFound => Error::NotFound(e.message),
        ServiceErrorCode::Conflict => Error::Conflict(e.message),
        ServiceErrorCode::Internal => Error::Internal {
            action: "the workflow engine failed",
            reason: e.message,
        },
    }
}
