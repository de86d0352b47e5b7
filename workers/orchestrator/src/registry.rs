//! The registry: which replicas of each worker kind are there, found with NATS's own service
//! discovery (`$SRV.PING`, asked every `orchestrator.replica_sweep`), which operations each
//! kind serves, and how much work waits for it. The engine routes capabilities by it
//! (`LiveRoutes`), `svc.orchestrator.registry` shows it, a metric tells how long a kind
//! that definitions use has had nobody serving it, and `operations.retire` removes a
//! declared kind that no definition uses.
//!
//! A replica counts as live while it answered one of the last two sweeps, so one lost answer
//! does not move work elsewhere; a replica that stops leaves within two sweeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
    time::Duration,
};

use async_nats::service::PingResponse;
use bytes::Bytes;
use futures::StreamExt as _;
use switchyard_catalog::{Catalog, OperationSpec};
use switchyard_proto::{
    now_ms,
    orchestrator::{
        CapabilityView, DefinitionUse, KindView, OperationView, RegistryView, ReplicaView,
    },
    stream,
};
use switchyard_workflow::{Operations, definition::Definition, store::Scope};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    shared::Shared,
    transition::{Routes, ordered_providers},
};

/// The NATS micro-service discovery subject every service answers.
const PING_SUBJECT: &str = "$SRV.PING";
/// Every worker kind's service is named `switchyard-<kind>`.
const SERVICE_PREFIX: &str = "switchyard-";
/// Replicas not heard from for this long are forgotten (their kind's last answer is kept).
const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;

/// The replicas that answer `$SRV.PING`, by service instance id.
#[derive(Debug)]
pub struct Replicas {
    client: async_nats::Client,
    sweep: Duration,
    seen: RwLock<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Completed sweeps.
    sweeps: u64,
    replicas: BTreeMap<String, Replica>,
    /// When a replica of each kind last answered.
    kind_seen_ms: BTreeMap<String, i64>,
    started_ms: i64,
}

#[derive(Debug, Clone)]
struct Replica {
    kind: String,
    worker_id: Option<String>,
    version: String,
    last_seen_ms: i64,
    /// The sweep it last answered.
    last_sweep: u64,
}

impl Seen {
    fn is_live(&self, r: &Replica) -> bool {
        r.last_sweep + 2 > self.sweeps
    }
}

impl Replicas {
    pub fn new(client: async_nats::Client, sweep: Duration) -> Self {
        Replicas {
            client,
            sweep,
            seen: RwLock::new(Seen {
                started_ms: now_ms(),
                ..Seen::default()
            }),
        }
    }

    fn seen(&self) -> std::sync::RwLockReadGuard<'_, Seen> {
        self.seen.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a replica of `kind` answered one of the last two sweeps.
    pub fn is_live(&self, kind: &str) -> bool {
        let seen = self.seen();
        seen.replicas
            .values()
            .any(|r| r.kind == kind && seen.is_live(r))
    }

    /// The live replicas of `kind`, by id.
    fn live(&self, kind: &str, now: i64) -> Vec<ReplicaView> {
        let seen = self.seen();
        seen.replicas
            .iter()
            .filter(|(_, r)| r.kind == kind && seen.is_live(r))
            .map(|(id, r)| ReplicaView {
                id: id.clone(),
                worker_id: r.worker_id.clone(),
                version: r.version.clone(),
                heartbeat_age_ms: now - r.last_seen_ms,
            })
            .collect()
    }

    /// When a replica of `kind` last answered.
    fn last_seen_ms(&self, kind: &str) -> Option<i64> {
        self.seen().kind_seen_ms.get(kind).copied()
    }

    /// Asks every service whether it is there and records who answered.
    async fn sweep_once(&self) -> Result<(), async_nats::Error> {
        let inbox = self.client.new_inbox();
        let mut answers = self.client.subscribe(inbox.clone()).await?;
        self.client
            .publish_with_reply(PING_SUBJECT, inbox, Bytes::new())
            .await?;
        self.client.flush().await?;
        let deadline = tokio::time::Instant::now() + (self.sweep / 2).min(GATHER);
        let mut heard = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
            // "No responders" comes back as an empty message.
            if msg.payload.is_empty() {
                continue;
            }
            match serde_json::from_slice::<PingResponse>(&msg.payload) {
                Ok(ping) => heard.push(ping),
                Err(e) => debug!(error = %e, "ignoring a $SRV.PING answer that does not parse"),
            }
        }
        let now = now_ms();
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        seen.sweeps += 1;
        let sweep = seen.sweeps;
        for ping in heard {
            let Some(kind) = ping
                .metadata
                .get("kind")
                .cloned()
                .or_else(|| ping.name.strip_prefix(SERVICE_PREFIX).map(str::to_owned))
            else {
                continue;
            };
            seen.kind_seen_ms.insert(kind.clone(), now);
            seen.replicas.insert(
                ping.id,
                Replica {
                    kind,
                    worker_id: ping.metadata.get("worker_id").cloned(),
                    version: ping.version,
                    last_seen_ms: now,
                    last_sweep: sweep,
                },
            );
        }
        seen.replicas
            .retain(|_, r| now - r.last_seen_ms < FORGET_AFTER_MS);
        Ok(())
    }
}

/// How long one sweep gathers answers at most.
const GATHER: Duration = Duration::from_millis(250);

/// Sweeps every `replicas.sweep` until `shutdown`, updating the registry's metrics after each.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(shared.replicas.sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = shared.replicas.sweep_once().await {
            warn!(error = %e, "cannot ask the replicas whether they are there");
            continue;
        }
        update_metrics(&shared);
    }
}

/// The live replicas per kind, and for each kind a definition uses, how long it has had none.
fn update_metrics(shared: &Shared) {
    let now = now_ms();
    let catalog = shared.operations.catalog();
    let used = used_kinds(&catalog, &shared.definitions.all());
    let started = shared.replicas.seen().started_ms;
    for kind in kinds(&catalog) {
        let live = shared.replicas.live(&kind, now).len();
        shared
            .metrics
            .kind_replicas
            .with_label_values(&[&kind])
            .set(live as i64);
        let unserved = if live > 0 || !used.contains_key(&kind) {
            0
        } else {
            let since = shared.replicas.last_seen_ms(&kind).unwrap_or(started);
            (now - since.max(started)) / 1000
        };
        shared
            .metrics
            .kind_unserved_seconds
            .with_label_values(&[&kind])
            .set(unserved);
    }
}

/// Every kind the catalog has operations of.
fn kinds(catalog: &Catalog) -> BTreeSet<String> {
    catalog.kinds().into_iter().map(str::to_owned).collect()
}

/// The kinds each definition's steps may run on: an operation's kind, and for a capability
/// every kind that provides it.
fn used_kinds(
    catalog: &Catalog,
    entries: &[switchyard_workflow::store::Entry],
) -> BTreeMap<String, Vec<DefinitionUse>> {
    let mut used: BTreeMap<String, Vec<DefinitionUse>> = BTreeMap::new();
    for entry in entries {
        let d: &Definition = &entry.definition;
        let who = use_of(entry);
        let mut kinds = BTreeSet::new();
        for step in &d.steps {
            if let Some(op) = &step.operation {
                kinds.insert(op.split('.').next().unwrap_or_default().to_owned());
            }
            if let Some(capability) = &step.capability {
                kinds.extend(catalog.providers(capability).map(|op| op.kind.clone()));
            }
        }
        for kind in kinds {
            used.entry(kind).or_default().push(who.clone());
        }
    }
    for list in used.values_mut() {
        list.sort();
    }
    used
}

/// Which definition an entry is, for `used_by` lists.
fn use_of(entry: &switchyard_workflow::store::Entry) -> DefinitionUse {
    DefinitionUse {
        tenant: match &entry.scope {
            Scope::Tenant(t) => Some(t.clone()),
            Scope::Shared => None,
        },
        name: entry.definition.name.clone(),
        version: entry.definition.version,
    }
}

/// The definitions that need `kind`: a step names one of its operations, or a capability
/// that no other kind provides.
pub(crate) fn needed_by(shared: &Shared, kind: &str) -> Vec<DefinitionUse> {
    let catalog = shared.operations.catalog();
    let mut out = Vec::new();
    for entry in shared.definitions.all() {
        let needs = entry.definition.steps.iter().any(|step| {
            step.operation
                .as_deref()
                .is_some_and(|op| op.split('.').next() == Some(kind))
                || step
                    .capability
                    .as_deref()
                    .is_some_and(|c| catalog.providers(c).all(|op| op.kind == kind))
        });
        if needs {
            out.push(use_of(&entry));
        }
    }
    out.sort();
    out
}

/// The registry as `svc.orchestrator.registry` answers it; `tenant` limits `used_by` to that
/// tenant's definitions and the shared ones.
pub(crate) async fn view(shared: &Shared, tenant: Option<&str>) -> RegistryView {
    let now = now_ms();
    let catalog = shared.operations.catalog();
    let used = used_kinds(&catalog, &shared.definitions.all());
    let mut versions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for record in shared.operations.records() {
        versions
            .entry(record.operation.name)
            .or_default()
            .push(record.operation.version);
    }
    let mut kinds_out = Vec::new();
    for kind in kinds(&catalog) {
        let operations = catalog
            .of_kind(&kind)
            .map(|op| OperationView {
                name: op.name.clone(),
                version: op.version,
                versions: versions
                    .get(&op.name)
                    .cloned()
                    .unwrap_or_else(|| vec![op.version]),
                description: op.description.clone(),
                capabilities: op.capabilities.clone(),
            })
            .collect();
        let (pending, ack_pending) = waiting(shared, &kind).await;
        let builtin = Catalog::builtin().of_kind(&kind).next().is_some();
        kinds_out.push(KindView {
            builtin,
            operations,
            replicas: shared.replicas.live(&kind, now),
            heartbeat_age_ms: shared.replicas.last_seen_ms(&kind).map(|t| now - t),
            pending,
            ack_pending,
            used_by: used
                .get(&kind)
                .into_iter()
                .flatten()
                .filter(|u| tenant.is_none() || u.tenant.is_none() || u.tenant.as_deref() == tenant)
                .cloned()
                .collect(),
            kind,
        });
    }
    let capabilities = catalog
        .capabilities()
        .map(|name| CapabilityView {
            name: name.to_owned(),
            contract: catalog
                .contract(name)
                .map(|op| op.name.clone())
                .unwrap_or_default(),
            providers: catalog.providers(name).map(|op| op.name.clone()).collect(),
        })
        .collect();
    RegistryView {
        kinds: kinds_out,
        capabilities,
        sweep_ms: u64::try_from(shared.replicas.sweep.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Jobs not yet delivered and delivered but unacknowledged on the kind's stream.
async fn waiting(shared: &Shared, kind: &str) -> (Option<u64>, Option<u64>) {
    let info = async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = shared
            .js
            .get_consumer_from_stream(stream::worker_consumer(kind), stream::jobs(kind))
            .await
            .ok()?;
        consumer.info().await.ok().cloned()
    };
    match tokio::time::timeout(Duration::from_secs(2), info).await {
        Ok(Some(info)) => (
            Some(info.num_pending),
            u64::try_from(info.num_ack_pending).ok(),
        ),
        _ => (None, None),
    }
}

/// The live catalog and registry, as the transition sees them.
#[derive(Debug)]
pub(crate) struct LiveRoutes {
    pub(crate) operations: Arc<Operations>,
    pub(crate) replicas: Arc<Replicas>,
}

impl Routes for LiveRoutes {
    fn route(&self, capability: &str, prefer: &[String]) -> Option<OperationSpec> {
        let catalog = self.operations.catalog();
        let ordered = ordered_providers(&catalog, capability, prefer);
        ordered
            .iter()
            .find(|op| self.replicas.is_live(&op.kind))
            .or(ordered.first())
            .map(|op| (*op).clone())
    }

    fn version(&self, operation: &str) -> Option<u32> {
        self.operations
            .catalog()
            .get(operation)
            .map(|op| op.version)
    }

    fn declared(&self, operation: &str) -> Option<OperationSpec> {
        if Catalog::builtin().get(operation).is_some() {
            return None;
        }
        self.operations.catalog().get(operation).cloned()
    }
}
