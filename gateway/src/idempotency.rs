//! `Idempotency-Key`s and the requests they were first used for. A key names one request: a
//! retry (the same method, path and body) gets the first answer, and the same key with a
//! different request is refused with a 422 rather than answered with the first request's
//! result, as the IETF `Idempotency-Key` draft asks. The first use of each key (per tenant,
//! method and path) is recorded in the `WF_IDEMPOTENCY` KV bucket with a fingerprint of its
//! body; entries expire with the bucket's `max_age` (a day by default).

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

/// Where a request that records a key's first use leaves the KV key, so that
/// [`release_refused`] can forget it when the request is refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded(Arc<Mutex<Option<String>>>);

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
            if let Some(Recorded(slot)) = recorded {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
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

/// A key whose first request was refused (any 4xx: nothing was done) is forgotten, so the
/// corrected request may use it; after a success or a server error (whose outcome a retry
/// finds out) it stays.
pub(crate) async fn release_refused(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let recorded = Recorded::default();
    req.extensions_mut().insert(recorded.clone());
    let response = next.run(req).await;
    if response.status().is_client_error() {
        let key = recorded.0.lock().unwrap_or_else(|e| e.into_inner()).take();
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
