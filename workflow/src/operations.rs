//! The operations worker kinds declared at run time, kept in the `WF_OPERATIONS` KV bucket
//! and mirrored in memory by a watch on it, so that definitions are type-checked against the
//! live catalog (the built-in operations plus the latest version of each declared one)
//! without a round trip.
//!
//! Keys are `<operation>.v<version>`. A version is never rewritten: declaring it again with the
//! same schemas is a no-op, with other schemas an error; a new version becomes the one
//! definitions are checked against.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use switchyard_catalog::{
    Catalog,
    capability::CapabilityError,
    declare::{Declaration, DeclarationError, DeclaredOperation},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{Definition, Error, Problems, ValidateOptions, bucket};

/// Parses and checks `source` against the live catalog of `operations`, or against the
/// built-in catalog when there is none.
pub fn parse_with(
    operations: Option<&Operations>,
    source: &str,
    options: &ValidateOptions,
) -> Result<Definition, Problems> {
    match operations {
        Some(operations) => Definition::parse(source, &operations.catalog(), options),
        None => Definition::parse(source, Catalog::builtin(), options),
    }
}

/// The stored value of one declared operation version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: String,
    pub operation: DeclaredOperation,
    pub declared_at_ms: i64,
}

/// Why a declaration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    #[error("{0}")]
    Invalid(#[from] DeclarationError),
    /// The version is stored with other schemas.
    #[error(
        "{name} version {version} is already declared with other schemas; declare the change as version {next}"
    )]
    VersionChanged {
        name: String,
        version: u32,
        next: u32,
    },
    /// An operation claims a capability with schemas that do not fit its contract.
    #[error("{0}")]
    Incompatible(#[from] CapabilityError),
    #[error(transparent)]
    Bus(#[from] Error),
}

/// One operation version a declaration named, and whether it stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub version: u32,
    pub created: bool,
}

type Versions = BTreeMap<u32, Record>;

/// The declared operations, in memory, kept current by [`Operations::watch`].
#[derive(Debug)]
pub struct Operations {
    kv: kv::Store,
    declared: RwLock<BTreeMap<String, Versions>>,
    live: RwLock<Arc<Live>>,
}

/// What the declarations amount to, rebuilt when one is added.
#[derive(Debug)]
struct Live {
    catalog: Arc<Catalog>,
    /// The kinds declared at run time, not built in (consulted for every job the engine
    /// publishes).
    kinds: BTreeSet<String>,
}

fn key(name: &str, version: u32) -> String {
    format!("{name}.v{version}")
}

impl Operations {
    pub fn new(kv: kv::Store) -> Self {
        Operations {
            kv,
            declared: RwLock::new(BTreeMap::new()),
            live: RwLock::new(Arc::new(Live {
                catalog: Arc::new(Catalog::builtin().clone()),
                kinds: BTreeSet::new(),
            })),
        }
    }

    /// The built-in operations and the latest version of each declared one.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.live().catalog.clone()
    }

    /// Whether `kind` declared its operations at run time (rather than being built in).
    pub fn is_declared_kind(&self, kind: &str) -> bool {
        self.live().kinds.contains(kind)
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every stored version of every declared operation, by name then version.
    pub fn records(&self) -> Vec<Record> {
        let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
        declared
            .values()
            .flat_map(|v| v.values().cloned())
            .collect()
    }

    /// Checks `declaration`, sent for `kind`, and stores the operation versions that are new.
    /// Nothing is stored when any operation is refused.
    pub async fn declare(
        &self,
        kind: &str,
        declaration: &Declaration,
    ) -> Result<Vec<Declared>, DeclareError> {
        declaration.check(kind)?;
        let catalog = self.catalog();
        for op in &declaration.operations {
            catalog.check_capabilities(&op.spec(kind))?;
        }
        // Refuse before storing anything: a changed schema under a stored version.
        let mut existing = Vec::with_capacity(declaration.operations.len());
        for op in &declaration.operations {
            let stored = self.load(&key(&op.name, op.version)).await?;
            if let Some(stored) = &stored
                && !stored.operation.same_contract(op)
            {
                let next = self.latest_version(&op.name).max(op.version) + 1;
                return Err(DeclareError::VersionChanged {
                    name: op.name.clone(),
                    version: op.version,
                    next,
                });
            }
            existing.push(stored.is_some());
        }
        let mut out = Vec::with_capacity(declaration.operations.len());
        for (op, exists) in declaration.operations.iter().zip(existing) {
            let mut created = false;
            if !exists {
                let record = Record {
                    kind: kind.to_owned(),
                    operation: op.clone(),
                    declared_at_ms: switchyard_proto::now_ms(),
                };
                let value = serde_json::to_vec(&record)
                    .map_err(|e| Error::Definition(format!("encoding a declaration: {e}")))?;
                match self
                    .kv
                    .create(key(&op.name, op.version), value.into())
                    .await
                {
                    Ok(_) => {
                        self.insert(record);
                        created = true;
                    }
                    // Another replica stored it first: the same contract, or refused.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        let stored = self.load(&key(&op.name, op.version)).await?;
                        if stored.is_none_or(|s| !s.operation.same_contract(op)) {
                            return Err(DeclareError::VersionChanged {
                                name: op.name.clone(),
                                version: op.version,
                                next: op.version + 1,
                            });
                        }
                    }
                    Err(e) => return Err(Error::bus("storing a declaration", e).into()),
                }
            }
            out.push(Declared {
                name: op.name.clone(),
                version: op.version,
                created,
            });
        }
        Ok(out)
    }

    fn latest_version(&self, name: &str) -> u32 {
        let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
        declared
            .get(name)
            .and_then(|v| v.keys().next_back().copied())
            .unwrap_or(0)
    }

    /// Reads one stored version (and mirrors it).
    async fn load(&self, key: &str) -> Result<Option<Record>, Error> {
        let Some(bytes) = self
            .kv
            .get(key)
            .await
            .map_err(|e| Error::bus("reading a declaration", e))?
        else {
            return Ok(None);
        };
        let record = record_from(key, &bytes);
        if let Some(r) = &record {
            self.insert(r.clone());
        }
        Ok(record)
    }

    fn insert(&self, record: Record) {
        {
            let mut declared = self.declared.write().unwrap_or_else(|p| p.into_inner());
            declared
                .entry(record.operation.name.clone())
                .or_default()
                .insert(record.operation.version, record);
        }
        self.rebuild();
    }

    fn remove(&self, key: &str) {
        {
            let mut declared = self.declared.write().unwrap_or_else(|p| p.into_inner());
            for versions in declared.values_mut() {
                versions.retain(|v, r| self::key(&r.operation.name, *v) != key);
            }
            declared.retain(|_, versions| !versions.is_empty());
        }
        self.rebuild();
    }

    /// Removes every declaration of `kind` from the bucket (and from this mirror); the
    /// caller checks first that no definition uses them. Returns the operation versions
    /// removed.
    pub async fn retire(&self, kind: &str) -> Result<Vec<(String, u32)>, Error> {
        let keys: Vec<(String, u32)> = self
            .records()
            .into_iter()
            .filter(|r| r.kind == kind)
            .map(|r| (r.operation.name, r.operation.version))
            .collect();
        for (name, version) in &keys {
            let k = key(name, *version);
            self.kv
                .purge(&k)
                .await
                .map_err(|e| Error::bus("retiring a declaration", e))?;
            self.remove(&k);
        }
        Ok(keys)
    }

    fn rebuild(&self) {
        let live = {
            let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
            // In the order they were declared: the first claim of a capability defines it.
            let mut latest: Vec<&Record> = declared
                .values()
                .filter_map(|v| v.values().next_back())
                .collect();
            latest.sort_by_key(|r| (r.declared_at_ms, &r.operation.name));
            Live {
                catalog: Arc::new(
                    Catalog::builtin()
                        .with_declared(latest.iter().map(|r| r.operation.spec(&r.kind))),
                ),
                // Built-in kinds declare themselves too, and keep their protobuf jobs.
                kinds: latest
                    .iter()
                    .filter(|r| Catalog::builtin().of_kind(&r.kind).next().is_none())
                    .map(|r| r.kind.clone())
                    .collect(),
            }
        };
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }

    /// Reads every stored declaration again, for a definition that names an operation this
    /// mirror has not seen yet (the watch of another bucket can run ahead of this one).
    pub async fn refresh(&self) -> Result<(), Error> {
        let all = bucket::keys(&self.kv, "listing declarations").await?;
        let known: BTreeSet<String> = {
            let declared = self.declared.read().unwrap_or_else(|p| p.into_inner());
            declared
                .values()
                .flat_map(|v| v.values())
                .map(|r| key(&r.operation.name, r.operation.version))
                .collect()
        };
        for k in all.iter().filter(|k| !known.contains(*k)) {
            self.load(k).await?;
        }
        Ok(())
    }

    /// Loads every declaration, then follows changes until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let watch = self
            .kv
            .watch_all()
            .await
            .map_err(|e| Error::bus("watching declarations", e))?;
        self.refresh().await?;
        let operations = self.clone();
        Ok(bucket::follow(
            watch,
            shutdown,
            "declarations",
            move |entry| {
                if entry.operation != kv::Operation::Put {
                    debug!(key = %entry.key, "declaration retired");
                    operations.remove(&entry.key);
                } else if let Some(record) = record_from(&entry.key, &entry.value) {
                    debug!(key = %entry.key, "operation declared");
                    operations.insert(record);
                }
                std::future::ready(())
            },
        ))
    }
}

fn record_from(key: &str, bytes: &[u8]) -> Option<Record> {
    match serde_json::from_slice(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(key, error = %e, "unreadable declaration record");
            None
        }
    }
}
