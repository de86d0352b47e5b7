//! A built-in kind declares its operations to the engine the way any kind does
//! (docs/worker-protocol.md, section 2): its catalog YAML is its declaration. The engine stores
//! it (the registry then lists its versions) and, on the first declaration, creates the kind's
//! stream and consumer, so `bus.toml` need not list the kind.

use std::time::Duration;

use async_nats::RequestErrorKind;
use switchyard_catalog::declare::Declaration;
use switchyard_proto::orchestrator::{ERROR_CODE_HEADER, declare_subject};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long one declaration request waits for the engine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How a declaration ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Declared {
    /// Stored (or the same as stored): the kind's stream and consumer exist.
    Accepted,
    /// The engine refused it, with its reason.
    Refused(String),
    /// No engine answered within the patience, or shutdown came first.
    Unanswered,
}

/// Sends `declaration`, retrying (1 s doubling to 30 s, with jitter) while no engine answers, for
/// at most `patience` (forever when `None`) or until `shutdown`.
pub(crate) async fn declare(
    client: &async_nats::Client,
    declaration: &Declaration,
    patience: Option<Duration>,
    shutdown: &CancellationToken,
) -> Declared {
    let kind = declaration.kind.as_str();
    let body = match serde_json::to_vec(declaration) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => return Declared::Refused(format!("encoding the declaration: {e}")),
    };
    let subject_name = declare_subject(kind);
    let started = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let answer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.request(subject_name.clone(), body.clone()),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => {
                let refused = reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(ERROR_CODE_HEADER))
                    .is_some();
                if refused {
                    let why = String::from_utf8_lossy(&reply.payload).into_owned();
                    warn!(kind, reason = %why, "the engine refused this kind's declaration");
                    return Declared::Refused(why);
                }
                info!(kind, "operations declared");
                return Declared::Accepted;
            }
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                debug!(kind, "no engine to declare the operations to yet");
            }
            Ok(Err(e)) => debug!(kind, error = %e, "declaring the operations"),
            Err(_) => debug!(kind, "the engine did not answer the declaration in time"),
        }
        // The same growth as a job handed back for an outage: 1 s doubling to 30 s.
        let delay = super::fault_delay(tries);
        if patience.is_some_and(|p| started.elapsed() + delay > p) {
            return Declared::Unanswered;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Declared::Unanswered,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
