//! The ledger's queries as a NATS micro service, `switchyard-ledger`: `svc.ledger.usage`,
//! `svc.ledger.instances`, `svc.ledger.stats` and `svc.ledger.audit`, discoverable in
//! `$SRV.INFO`.
//!
//! Built on the runtime's service builder, so the wire form is the worker services' (a
//! [`Job`] in, a [`JobResult`](switchyard_proto::JobResult) out) and the gateway calls the
//! ledger with its one worker-call path. The ledger does not run the runtime's worker loop:
//! that loop consumes a `JOBS_<KIND>` stream, and ledger queries are not workflow steps, so
//! there is no `JOBS_LEDGER` to consume.

use std::{collections::HashMap, sync::Arc};

use async_nats::service::Service;
use serde_json::Value;
use sqlx::PgPool;
use switchyard_proto::Job;
use switchyard_runtime::worker::{Answer, ServiceSpec, serve};
use switchyard_runtime::{JobFailure, JobInput as _, OperationInfo};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

use crate::{Error, KIND, query};

/// The operations, as `<kind>.<op>`.
pub mod op {
    pub const USAGE: &str = "ledger.usage";
    pub const INSTANCES: &str = "ledger.instances";
    pub const STATS: &str = "ledger.stats";
    pub const AUDIT: &str = "ledger.audit";
}

/// Every operation with its description, as listed in the service registry.
pub const OPERATIONS: [OperationInfo; 4] = [
    OperationInfo {
        name: op::USAGE,
        description: "usage of a tenant per meter, day or workflow over a range of UTC days",
    },
    OperationInfo {
        name: op::INSTANCES,
        description: "a tenant's workflow instances, newest first, filtered, one page at a time",
    },
    OperationInfo {
        name: op::STATS,
        description: "per workflow: counts by status, duration percentiles, SLA breaches",
    },
    OperationInfo {
        name: op::AUDIT,
        description: "a tenant's audit log, newest first, one page at a time",
    },
];

/// The service's name in `$SRV.INFO`.
pub const SERVICE_NAME: &str = "switchyard-ledger";

/// Queries answered at once by one process; more wait for a slot.
const CONCURRENCY: usize = 32;

/// Answers queries from the ledger's tables.
struct Queries {
    pool: PgPool,
}

impl Answer for Queries {
    async fn answer(&self, job: &Job) -> Result<Value, JobFailure> {
        run_query(&self.pool, &job.operation, job).await.map_err(|e| {
            let failure = e.failure();
            if !matches!(failure, JobFailure::InvalidInput { .. }) {
                warn!(operation = %job.operation, correlation_id = %job.correlation_id, error = %e, "ledger query failed");
            }
            failure
        })
    }
}

/// Registers the service and answers until `shutdown`.
pub(crate) async fn start(
    client: &async_nats::Client,
    pool: PgPool,
    worker_id: &str,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Service, Error> {
    let spec = ServiceSpec {
        kind: KIND,
        description: "Switchyard usage ledger, instance history and audit log".into(),
        operations: OPERATIONS.to_vec(),
        worker_id: Arc::from(worker_id),
        metadata: HashMap::new(),
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    Ok(serve(
        client,
        spec,
        Arc::new(Queries { pool }),
        slots,
        tracker,
        shutdown,
    )
    .await?)
}

/// The tenant a query reads: the one the input names (the gateway sets it only for the
/// deployment's operator) or the job's.
fn tenant_of(job: &Job, named: Option<String>) -> Result<String, Error> {
    let tenant = named
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| job.tenant.clone());
    if tenant.is_empty() {
        return Err(Error::invalid("tenant", "no tenant named"));
    }
    Ok(tenant)
}

/// Runs one query.
pub async fn run_query(pool: &PgPool, operation: &str, job: &Job) -> Result<Value, Error> {
    match operation {
        op::USAGE => {
            let mut q: query::UsageQuery = job.input()?;
            let tenant = tenant_of(job, q.tenant.take())?;
            query::usage(pool, &tenant, q).await
        }
        op::INSTANCES => query::instances(pool, &tenant_of(job, None)?, job.input()?).await,
        op::STATS => query::stats(pool, &tenant_of(job, None)?, job.input()?).await,
        op::AUDIT => {
            let mut q: query::AuditQuery = job.input()?;
            let tenant = tenant_of(job, q.tenant.take())?;
            query::audit(pool, &tenant, q).await
        }
        other => Err(Error::invalid(
            "operation",
            format!("{other:?} is not a ledger operation"),
        )),
    }
}
