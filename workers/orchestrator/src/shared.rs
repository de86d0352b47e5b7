//! What every shard of the engine and the query service share: the connection, the buckets,
//! the definitions, the metrics. In a module of its own so that the engine (which starts the
//! service) and the service (which reads through it) do not import each other.

use std::{collections::BTreeMap, sync::Arc};

use async_nats::jetstream::{self, kv};
use switchyard_runtime::metrics::ConsumerLag;
use switchyard_workflow::{Operations, Store, definition::Definition};

use crate::{
    instance::Instance,
    metrics::Metrics,
    registry::{LiveRoutes, Replicas},
};

/// What every shard and the query service share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) state: kv::Store,
    /// `WF_CONCURRENCY`: the concurrency keys' slots.
    pub(crate) concurrency: kv::Store,
    /// `WF_RATES`: the rate limits' turns.
    pub(crate) rates: kv::Store,
    pub(crate) definitions: Arc<Store>,
    /// The operations worker kinds declared at run time (also behind `definitions`).
    pub(crate) operations: Arc<Operations>,
    /// The replicas of each kind that answer `$SRV.PING`.
    pub(crate) replicas: Arc<Replicas>,
    /// The two above, as the transition reads them.
    pub(crate) routes: LiveRoutes,
    pub(crate) metrics: Metrics,
    pub(crate) lag: ConsumerLag,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) replica_id: String,
    /// The largest stored state: the server's largest message, less room for the subject
    /// and headers.
    pub(crate) max_state_bytes: usize,
    /// Deliveries of a failing inbox message before it is dead-lettered.
    pub(crate) max_deliveries: i64,
}

impl Shared {
    /// The definition an instance runs, for the query service (any version, deleted or not).
    pub(crate) async fn definition_of(&self, state: &Instance) -> Option<Arc<Definition>> {
        self.definitions
            .exact(&state.tenant, &state.workflow, state.version)
            .await
            .ok()
            .flatten()
    }
}
