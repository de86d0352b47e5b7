//! Payloads too large to copy into every message, kept in the `WF_OBJECTS` object store and
//! passed by reference.
//!
//! A reference is a string, `nats-object://WF_OBJECTS/<tenant>/<sha-256>`, so it travels
//! through workflow templates, step outputs and job inputs like any other value, and the
//! instance state holds a few dozen bytes instead of the transcript. Names are derived from
//! the content, so a redelivered job that stores the same output again writes nothing new.
//! A reference only resolves for the tenant in its name: another tenant's reference reads as
//! not found.
//!
//! Text is stored as UTF-8; any other JSON value (an array of segments, say) as JSON, marked
//! in the object's metadata so that resolving gives back the same value.

use std::sync::Arc;

use async_nats::jetstream::{
    self,
    object_store::{GetErrorKind, InfoErrorKind, ObjectMetadata, ObjectStore},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::{io::AsyncReadExt, sync::OnceCell};

use switchyard_proto::stream::{OBJECT_REF_PREFIX, WF_OBJECTS_BUCKET};

/// The size above which a value is better passed by reference: well under NATS's default
/// 1 MiB message limit even when a workflow's state holds several such values.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Metadata key saying how the content is encoded.
const ENCODING: &str = "switchyard-encoding";
/// The content is a JSON document; without the key it is UTF-8 text.
const JSON: &str = "json";

/// Why an object could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Nothing by that name for this tenant (never stored, expired, or another tenant's).
    #[error(
        "{reference}: no such object for this tenant (objects expire after the store's max_age)"
    )]
    NotFound { reference: String },
    /// The object is bigger than the caller accepts.
    #[error("{reference}: {size} bytes is more than the {limit} accepted")]
    TooLarge {
        reference: String,
        size: usize,
        limit: usize,
    },
    /// The content does not decode as its metadata says.
    #[error("{reference}: {message}")]
    Corrupt { reference: String, message: String },
    /// The object store did not answer or refused; worth retrying.
    #[error("object store {WF_OBJECTS_BUCKET}: {0}")]
    Store(String),
}

impl ObjectError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ObjectError::Store(_))
    }
}

/// A handle on the object store, opened on first use; cheap to clone.
#[derive(Clone)]
pub struct Objects {
    js: jetstream::Context,
    store: Arc<OnceCell<ObjectStore>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("bucket", &WF_OBJECTS_BUCKET)
            .field("open", &self.store.initialized())
            .finish()
    }
}

/// The object name in `value` when it is a reference.
pub fn reference_name(value: &str) -> Option<&str> {
    value
        .strip_prefix(OBJECT_REF_PREFIX)
        .filter(|name| !name.is_empty())
}

/// Whether `value` is a reference to a stored object.
pub fn is_reference(value: &Value) -> bool {
    value.as_str().and_then(reference_name).is_some()
}

impl Objects {
    pub fn new(js: jetstream::Context) -> Self {
        Objects {
            js,
            store: Arc::new(OnceCell::new()),
        }
    }

    async fn store(&self) -> Result<&ObjectStore, ObjectError> {
        self.store
            .get_or_try_init(|| async {
                self.js
                    .get_object_store(WF_OBJECTS_BUCKET)
                    .await
                    .map_err(|e| {
                        ObjectError::Store(format!(
                            "cannot open it ({e}); run `switchyard bus apply` to create it"
                        ))
                    })
            })
            .await
    }

    /// Stores `value` for `tenant` and returns its reference: a string as text, anything else
    /// as JSON. Storing the same value again returns the same reference without writing.
    pub async fn put(&self, tenant: &str, value: &Value) -> Result<String, ObjectError> {
        let (bytes, json) = match value {
            Value::String(s) => (s.as_bytes().to_vec(), false),
            other => (serde_json::to_vec(other).unwrap_or_default(), true),
        };
        let digest = Sha256::digest(&bytes);
        let name = format!("{tenant}/{}", hex::encode(digest));
        let reference = format!("{OBJECT_REF_PREFIX}{name}");
        let store = self.store().await?;
        match store.info(&name).await {
            Ok(info) if !info.deleted => return Ok(reference),
            Ok(_) => {}
            Err(e) if e.kind() == InfoErrorKind::NotFound => {}
            Err(e) => return Err(ObjectError::Store(e.to_string())),
        }
        let mut meta = ObjectMetadata::from(name.as_str());
        if json {
            meta.metadata.insert(ENCODING.to_owned(), JSON.to_owned());
        }
        store
            .put(meta, &mut bytes.as_slice())
            .await
            .map_err(|e| ObjectError::Store(e.to_string()))?;
        Ok(reference)
    }

    /// Reads the value `reference` names, for `tenant`, refusing more than `limit` bytes.
    pub async fn get(
        &self,
        tenant: &str,
        reference: &str,
        limit: usize,
    ) -> Result<Value, ObjectError> {
        let not_found = || ObjectError::NotFound {
            reference: reference.to_owned(),
        };
        let name = reference_name(reference).ok_or_else(not_found)?;
        // A tenant reads only under its own prefix; anything else looks like a miss.
        if name.split_once('/').map(|(t, _)| t) != Some(tenant) {
            return Err(not_found());
        }
        let store = self.store().await?;
        let mut object = match store.get(name).await {
            Ok(object) => object,
            Err(e) if matches!(e.kind(), GetErrorKind::NotFound | GetErrorKind::InvalidName) => {
                return Err(not_found());
            }
            Err(e) => return Err(ObjectError::Store(e.to_string())),
        };
        let size = object.info().size;
        if size > limit {
            return Err(ObjectError::TooLarge {
                reference: reference.to_owned(),
                size,
                limit,
            });
        }
        let json = object.info().metadata.get(ENCODING).map(String::as_str) == Some(JSON);
        let mut bytes = Vec::with_capacity(size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ObjectError::Store(format!("reading {name}: {e}")))?;
        let corrupt = |message: String| ObjectError::Corrupt {
            reference: reference.to_owned(),
            message,
        };
        if json {
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))
        } else {
            String::from_utf8(bytes)
                .map(Value::String)
                .map_err(|e| corrupt(format!("not UTF-8 text: {e}")))
        }
    }

    /// Replaces every reference inside `value` with what it names (and references inside
    /// that), reading at most `limit` bytes in all; returns how many were replaced.
    pub async fn resolve(
        &self,
        tenant: &str,
        value: &mut Value,
        limit: usize,
    ) -> Result<usize, ObjectError> {
        let mut budget = limit;
        let mut replaced = 0;
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) if reference_name(s).is_some() => {
                    let found = self.get(tenant, s, budget).await?;
                    budget = budget.saturating_sub(encoded_len(&found));
                    *v = found;
                    replaced += 1;
                    stack.push(v);
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => stack.extend(map.values_mut()),
                _ => {}
            }
        }
        Ok(replaced)
    }

    /// Stores each top-level field of the object `value` whose JSON is over `threshold` bytes
    /// and puts its reference in its place; returns how many were moved out.
    pub async fn offload(
        &self,
        tenant: &str,
        value: &mut Value,
        threshold: usize,
    ) -> Result<usize, ObjectError> {
        let Value::Object(map) = value else {
            return Ok(0);
        };
        let mut moved = 0;
        for field in map.values_mut() {
            if encoded_len(field) > threshold {
                *field = Value::String(self.put(tenant, field).await?);
                moved += 1;
            }
        }
        Ok(moved)
    }
}

/// The size of `value` as stored: a string's bytes, anything else's JSON.
fn encoded_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        other => serde_json::to_vec(other).map_or(0, |v| v.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_recognised_by_their_prefix_only() {
        assert_eq!(
            reference_name("nats-object://WF_OBJECTS/acme/ab12"),
            Some("acme/ab12")
        );
        assert_eq!(reference_name("nats-object://WF_OBJECTS/"), None);
        assert_eq!(reference_name("Ann: nats-object://WF_OBJECTS/x"), None);
        assert!(is_reference(&Value::String(format!(
            "{OBJECT_REF_PREFIX}t/1"
        ))));
        assert!(!is_reference(&serde_json::json!({"a": 1})));
    }

    #[test]
    fn sizes_count_text_bytes_and_json_otherwise() {
        assert_eq!(encoded_len(&Value::String("héllo".into())), 6);
        assert_eq!(encoded_len(&serde_json::json!([1, 2])), 5);
    }
}
