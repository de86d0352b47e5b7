//! Registered workflow definitions, kept in the `WF_DEFINITIONS` KV bucket and mirrored in
//! memory by a watch on the bucket, so that resolving a definition is not a round trip.
//!
//! Keys are `shared.<name>.<version>` (shipped templates, visible to every tenant) and
//! `tenant.<tenant>.<name>.<version>` (a tenant's own, which shadow shared ones of the same
//! name). A version is never rewritten; deleting one stores a tombstone that keeps its source,
//! so instances already running it can finish.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    Error, bucket,
    definition::{Definition, Problems, ValidateOptions},
    operations::Operations,
};

/// Where a definition is registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Shared,
    Tenant(String),
}

impl Scope {
    fn key(&self, name: &str, version: u32) -> String {
        match self {
            Scope::Shared => format!("shared.{name}.{version}"),
            Scope::Tenant(t) => format!("tenant.{t}.{name}.{version}"),
        }
    }

    fn parse_key(key: &str) -> Option<(Scope, String, u32)> {
        let parts: Vec<&str> = key.split('.').collect();
        let (scope, name, version) = match parts.as_slice() {
            ["shared", name, version] => (Scope::Shared, *name, *version),
            ["tenant", tenant, name, version] => {
                (Scope::Tenant((*tenant).to_owned()), *name, *version)
            }
            _ => return None,
        };
        Some((scope, name.to_owned(), version.parse().ok()?))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Scope::Shared => "shared",
            Scope::Tenant(_) => "tenant",
        }
    }
}

/// The stored value of one definition version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub source: String,
    pub registered_at_ms: i64,
    #[serde(default)]
    pub deleted: bool,
}

/// One registered version, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub scope: Scope,
    pub definition: Arc<Definition>,
    pub registered_at_ms: i64,
    pub deleted: bool,
}

type Versions = BTreeMap<u32, Entry>;

/// Why a definition could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the definition is invalid: {0}")]
    Invalid(Problems),
    #[error(
        "version {version} of {name} is already registered with different content; register it as a new version"
    )]
    VersionExists { name: String, version: u32 },
    #[error(transparent)]
    Bus(#[from] Error),
}

/// The definitions, in memory, kept current by [`Store::watch`].
#[derive(Debug)]
pub struct Store {
    kv: kv::Store,
    options: ValidateOptions,
    by_name: RwLock<HashMap<(Scope, String), Versions>>,
    /// The operations declared at run time; without it, only the built-in catalog.
    operations: Option<Arc<Operations>>,
    /// Counts the changes to the mirror, for whoever tells others that definitions changed.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Store {
    pub fn new(kv: kv::Store, options: ValidateOptions) -> Self {
        Store {
            kv,
            options,
            by_name: RwLock::new(HashMap::new()),
            operations: None,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that sees a new value each time a definition version is added, changed or
    /// marked deleted in the mirror.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Checks definitions against the built-in operations and those declared at run time.
    pub fn with_operations(mut self, operations: Arc<Operations>) -> Self {
        self.operations = Some(operations);
        self
    }

    /// The operations declared at run time, when this store follows them.
    pub fn operations(&self) -> Option<&Arc<Operations>> {
        self.operations.as_ref()
    }

    pub fn validate_options(&self) -> &ValidateOptions {
        &self.options
    }

    /// Parses and checks a definition against the catalog.
    pub fn parse(&self, source: &str) -> Result<Definition, Problems> {
        crate::operations::parse_with(self.operations.as_deref(), source, &self.options)
    }

    /// Like [`Store::parse`], but when the definition names an operation the mirror of
    /// declarations has not caught up with (a kind declared a moment ago), the declarations
    /// are read again and the definition checked once more.
    pub async fn parse_fresh(&self, source: &str) -> Result<Definition, Problems> {
        match (self.parse(source), &self.operations) {
            (Err(_), Some(operations)) => {
                if let Err(e) = operations.refresh().await {
                    warn!(error = %e, "cannot read the declared operations again");
                }
                self.parse(source)
            }
            (parsed, _) => parsed,
        }
    }

    /// Registers the shipped templates that are not registered yet.
    pub async fn register_shipped(&self, shipped: &[(&str, &str)]) -> Result<(), Error> {
        for (name, source) in shipped {
            match self.put(&Scope::Shared, source).await {
                Ok(_) => {}
                Err(PutError::VersionExists { .. }) => {
                    warn!(
                        workflow = name,
                        "a shipped template's version differs from the registered one; keeping the registered one"
                    );
                }
                Err(PutError::Invalid(p)) => {
                    return Err(Error::Definition(format!("shipped template {name}: {p}")));
                }
                Err(PutError::Bus(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stores a new version. Storing the same text again is a no-op (`Ok(false)`).
    pub async fn put(
        &self,
        scope: &Scope,
        source: &str,
    ) -> Result<(bool, Arc<Definition>), PutError> {
        let def = Arc::new(self.parse_fresh(source).await.map_err(PutError::Invalid)?);
        let key = scope.key(&def.name, def.version);
        let record = Record {
            source: source.to_owned(),
            registered_at_ms: switchyard_proto::now_ms(),
            deleted: false,
        };
        let value = serde_json::to_vec(&record).map_err(|e| Error::Definition(e.to_string()))?;
        match self.kv.create(&key, value.into()).await {
            Ok(_) => {
                self.insert(scope.clone(), def.clone(), record.registered_at_ms, false);
                Ok((true, def))
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let existing = self.load_key(&key).await?;
                match existing {
                    Some(entry) if entry.definition.source == source && !entry.deleted => {
                        Ok((false, entry.definition))
                    }
                    _ => Err(PutError::VersionExists {
                        name: def.name.clone(),
                        version: def.version,
                    }),
                }
            }
            Err(e) => Err(PutError::Bus(Error::bus("storing a definition", e))),
        }
    }

    /// Marks a version deleted (or every version when `version` is `None`). Returns how many
    /// versions were deleted.
    pub async fn delete(
        &self,
        scope: &Scope,
        name: &str,
        version: Option<u32>,
    ) -> Result<usize, Error> {
        let versions: Vec<Entry> = {
            let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
            map.get(&(scope.clone(), name.to_owned()))
                .map(|v| {
                    v.iter()
                        .filter(|(n, e)| !e.deleted && version.is_none_or(|want| want == **n))
                        .map(|(_, e)| e.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for entry in &versions {
            let record = Record {
                source: entry.definition.source.clone(),
                registered_at_ms: entry.registered_at_ms,
                deleted: true,
            };
            let value =
                serde_json::to_vec(&record).map_err(|e| Error::Definition(e.to_string()))?;
            self.kv
                .put(scope.key(name, entry.definition.version), value.into())
                .await
                .map_err(|e| Error::bus("deleting a definition", e))?;
            self.insert(
                scope.clone(),
                entry.definition.clone(),
                entry.registered_at_ms,
                true,
            );
        }
        Ok(versions.len())
    }

    /// The definition a start should run: the tenant's own of that name, else the shared one;
    /// `version` 0 means the latest version that is not deleted.
    pub fn resolve(&self, tenant: &str, name: &str, version: u32) -> Option<Entry> {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        for scope in [Scope::Tenant(tenant.to_owned()), Scope::Shared] {
            let Some(versions) = map.get(&(scope, name.to_owned())) else {
                continue;
            };
            let found = if version == 0 {
                versions.values().rev().find(|e| !e.deleted)
            } else {
                versions.get(&version).filter(|e| !e.deleted)
            };
            if let Some(e) = found {
                return Some(e.clone());
            }
        }
        None
    }

    /// The exact version an instance started with, deleted or not, loading it from the bucket
    /// when the watch has not delivered it yet.
    pub async fn exact(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<Arc<Definition>>, Error> {
        for scope in [Scope::Tenant(tenant.to_owned()), Scope::Shared] {
            let cached = {
                let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
                map.get(&(scope.clone(), name.to_owned()))
                    .and_then(|v| v.get(&version))
                    .map(|e| e.definition.clone())
            };
            if let Some(def) = cached {
                return Ok(Some(def));
            }
        }
        for scope in [Scope::Tenant(tenant.to_owned()), Scope::Shared] {
            if let Some(entry) = self.load_key(&scope.key(name, version)).await? {
                return Ok(Some(entry.definition));
            }
        }
        Ok(None)
    }

    /// Every registered version of every tenant that is not deleted.
    pub fn all(&self) -> Vec<Entry> {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .flat_map(BTreeMap::values)
            .filter(|e| !e.deleted)
            .cloned()
            .collect()
    }

    /// Every registered version visible to `tenant` (its own and the shared ones).
    pub fn list(&self, tenant: &str, include_deleted: bool) -> Vec<Entry> {
        let map = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Entry> = map
            .iter()
            .filter(|((scope, _), _)| match scope {
                Scope::Shared => true,
                Scope::Tenant(t) => t == tenant,
            })
            .flat_map(|(_, versions)| versions.values())
            .filter(|e| include_deleted || !e.deleted)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.definition.name, &a.scope, a.definition.version).cmp(&(
                &b.definition.name,
                &b.scope,
                b.definition.version,
            ))
        });
        out
    }

    async fn load_key(&self, key: &str) -> Result<Option<Entry>, Error> {
        let Some(bytes) = self
            .kv
            .get(key)
            .await
            .map_err(|e| Error::bus("reading a definition", e))?
        else {
            return Ok(None);
        };
        Ok(self.entry_from(key, &bytes).await.inspect(|e| {
            self.insert(
                e.scope.clone(),
                e.definition.clone(),
                e.registered_at_ms,
                e.deleted,
            );
        }))
    }

    async fn entry_from(&self, key: &str, bytes: &[u8]) -> Option<Entry> {
        let (scope, _, _) = Scope::parse_key(key)?;
        let record: Record = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                warn!(key, error = %e, "unreadable definition record");
                return None;
            }
        };
        match self.parse_fresh(&record.source).await {
            Ok(def) => Some(Entry {
                scope,
                definition: Arc::new(def),
                registered_at_ms: record.registered_at_ms,
                deleted: record.deleted,
            }),
            Err(problems) => {
                warn!(key, %problems, "a registered definition no longer validates");
                None
            }
        }
    }

    fn insert(&self, scope: Scope, def: Arc<Definition>, registered_at_ms: i64, deleted: bool) {
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        map.entry((scope.clone(), def.name.clone()))
            .or_default()
            .insert(
                def.version,
                Entry {
                    scope,
                    definition: def,
                    registered_at_ms,
                    deleted,
                },
            );
        drop(map);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Loads every definition, then follows changes until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let watch = self
            .kv
            .watch_all()
            .await
            .map_err(|e| Error::bus("watching definitions", e))?;
        // Read what exists before returning, so a start right after boot finds its definition.
        for key in bucket::keys(&self.kv, "listing definitions").await? {
            self.load_key(&key).await?;
        }
        let store = self.clone();
        Ok(bucket::follow(
            watch,
            shutdown,
            "definitions",
            move |entry| {
                let store = store.clone();
                async move {
                    // Definitions are marked deleted by a put, never removed.
                    if entry.operation != kv::Operation::Put {
                        return;
                    }
                    if let Some(e) = store.entry_from(&entry.key, &entry.value).await {
                        debug!(key = %entry.key, "definition changed");
                        store.insert(e.scope, e.definition, e.registered_at_ms, e.deleted);
                    }
                }
            },
        ))
    }
}
