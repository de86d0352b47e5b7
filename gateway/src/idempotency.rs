//! `Idempotency-Key`s and the requests they were first used for. A key names one request: a
//! retry (the same method, path and body) gets the first answer, and the same key with a
//! different request is refused with a 422 rather than answered with the first request's
//! result, as the IETF `Idempotency-Key` draft asks. The first use of each key (per tenant,
//! method and path) is recorded in the `WF_IDEMPOTENCY` KV bucket with a fingerprint of its
//! body; entries expire with the bucket's `max_age` (a day by default).
//!
//! A request sent without a key gets one the gateway makes up ([`GENERATED_PREFIX`]): its ids
//! are derived from it as from a client's key, and a `5xx` answer (the request may or may not
//! have been done) hands it back in the `Idempotency-Key` header. Repeating the request with
//! it derives the same ids, so the retry can never do it twice.

use std::sync::{Arc, Mutex, OnceLock};

use async_nats::jetstream::kv::{CreateErrorKind, Store};
use axum::{extract::State, middleware::Next, response::Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::{AppState, Error};

/// A keyed request's claim, put in the request's extensions by the [`crate::extract::Ctx`]
/// extractor and settled when its body is read. The body's fingerprint goes into `print`,
/// which the `Ctx` shares: ids derived from the key include it, so that once a key has
/// expired here, a new request under it is a new request everywhere, not the old one's replay.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) tenant: String,
    pub(crate) key: String,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) print: Arc<OnceLock<String>>,
}

impl Claim {
    /// The KV key: the tenant, then a digest of method, path and `Idempotency-Key` (which
    /// may hold characters a KV key cannot).
    fn kv_key(&self) -> String {
        let digest = Sha256::digest(format!("{}\n{}\n{}", self.method, self.path, self.key));
        format!("{}.{}", self.tenant, hex::encode(digest))
    }
}

/// The fingerprint of a body: JSON is compared as data (key order and white space aside),
/// anything else byte for byte.
pub(crate) fn fingerprint(body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    hex::encode(Sha256::digest(canonical.as_deref().unwrap_or(body)))
}

/// How keys the gateway made up begin. Ids derived from such a key leave the body's
/// fingerprint out, so that the made-up key's first request and its retry derive the same.
pub(crate) const GENERATED_PREFIX: &str = "sy-retry-";

/// What a request leaves for [`release_refused`]: the KV key of a first use it recorded (to be
/// forgotten when the request is refused), and the key made up for a request sent without one
/// (handed to the client with a `5xx`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    first_use: Arc<Mutex<Option<String>>>,
    pub(crate) generated: Arc<OnceLock<String>>,
}

/// Records the claim's first use (in `recorded`), or checks a later one against it.
pub(crate) async fn settle(
    store: &Store,
    claim: &Claim,
    print: &str,
    recorded: Option<&Recorded>,
) -> Result<(), Error> {
    let key = claim.kv_key();
    match store.create(&key, print.to_owned().into()).await {
        Ok(_) => {
            if let Some(recorded) = recorded {
                *recorded.first_use.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
            }
            Ok(())
        }
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            let first = store
                .get(&key)
                .await
                .map_err(|e| Error::unavailable("reading an Idempotency-Key", e))?;
            match first {
                // Expired between the two calls: this use is as good as the first.
                None => Ok(()),
                Some(first) if first.as_ref() == print.as_bytes() => Ok(()),
                Some(_) => Err(Error::IdempotencyKeyReused),
            }
        }
        Err(e) => Err(Error::unavailable("recording an Idempotency-Key", e)),
    }
}

/// A key whose first request was refused (a 4xx other than 408: nothing was done) is
/// forgotten, so the corrected request may use it; after a success, a server error or a
/// timeout (whose outcome a retry finds out) it stays. A server error or timeout of a request
/// sent without a key carries the key the gateway made up for it, to retry with.
pub(crate) async fn release_refused(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let recorded = Recorded::default();
    req.extensions_mut().insert(recorded.clone());
    let mut response = next.run(req).await;
    let status = response.status();
    let unsettled = status.is_server_error() || status == axum::http::StatusCode::REQUEST_TIMEOUT;
    if unsettled
        && let Some(key) = recorded.generated.get()
        && let Ok(value) = axum::http::HeaderValue::from_str(key)
    {
        response.headers_mut().insert("idempotency-key", value);
    }
    if status.is_client_error() && !unsettled {
        let key = recorded
            .first_use
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(key), Some(store)) = (key, state.idempotency())
            && let Err(e) = store.delete(&key).await
        {
            warn!(error = %e, "cannot forget the Idempotency-Key of a refused request");
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_compare_as_data() {
        assert_eq!(
            fingerprint(br#"{"a": 1, "b": [true]}"#),
            fingerprint(br#"{"b":[true],"a":1}"#)
        );
        assert_ne!(fingerprint(br#"{"a": 1}"#), fingerprint(br#"{"a": 2}"#));
        assert_ne!(fingerprint(b"name: a"), fingerprint(b"name:  a"));
    }

    #[test]
    fn keys_are_per_tenant_method_and_path_and_safe_for_kv() {
        let claim = |tenant: &str, path: &str, key: &str| Claim {
            tenant: tenant.into(),
            key: key.into(),
            method: "POST".into(),
            path: path.into(),
            print: Arc::default(),
        };
        let a = claim("acme", "/api/v1/cards", "k 1/*>");
        assert!(
            a.kv_key()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{}",
            a.kv_key()
        );
        assert_ne!(
            a.kv_key(),
            claim("globex", "/api/v1/cards", "k 1/*>").kv_key()
        );
        assert_ne!(
            a.kv_key(),
            claim("acme", "/api/v1/tasks", "k 1/*>").kv_key()
        );
    }
}
