//! The ledger's queries as a NATS micro service, `switchyard-ledger`: `svc.ledger.usage`,
//! `svc.ledger.instances`, `svc.ledger.stats` and `svc.ledger.audit`, discoverable in
//! `$SRV.INFO`.
//!
//! The wire form is the worker services' (a [`Job`] in, a [`JobResult`] out), so the
//! gateway calls the ledger with its one worker-call path. The ledger does not run the
//! runtime's worker loop: that loop consumes a `JOBS_<KIND>` stream, and ledger queries are
//! not workflow steps, so there is no `JOBS_LEDGER` to consume.

use std::{collections::HashMap, sync::Arc};

use async_nats::service::{Service, ServiceExt as _};
use futures::StreamExt as _;
use serde_json::Value;
use sqlx::PgPool;
use switchyard_proto::{
    ContentType, Job, JobResult, JobStatus, decode, encode_json, encode_proto, header, now_ms,
    subject,
};
use switchyard_runtime::JobFailure;
use switchyard_runtime::JobInput as _;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, info_span, warn};

use crate::{Error, KIND, query};

/// The operations, as `<kind>.<op>`.
pub mod op {
    pub const USAGE: &str = "ledger.usage";
    pub const INSTANCES: &str = "ledger.instances";
    pub const STATS: &str = "ledger.stats";
    pub const AUDIT: &str = "ledger.audit";
}

/// Every operation with its description, as listed in the service registry.
pub const OPERATIONS: [(&str, &str); 4] = [
    (
        op::USAGE,
        "usage of a tenant per meter, day or workflow over a range of UTC days",
    ),
    (
        op::INSTANCES,
        "a tenant's workflow instances, newest first, filtered, one page at a time",
    ),
    (
        op::STATS,
        "per workflow: counts by status, duration percentiles, SLA breaches",
    ),
    (
        op::AUDIT,
        "a tenant's audit log, newest first, one page at a time",
    ),
];

/// The service's name in `$SRV.INFO`.
pub const SERVICE_NAME: &str = "switchyard-ledger";

/// Queries answered at once by one process; more wait for a slot.
const CONCURRENCY: usize = 32;

/// Registers the service and answers until `shutdown`.
pub(crate) async fn start(
    client: &async_nats::Client,
    pool: PgPool,
    worker_id: &str,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Service, Error> {
    let names: Vec<&str> = OPERATIONS.iter().map(|(n, _)| *n).collect();
    let metadata = HashMap::from([
        ("kind".to_owned(), KIND.to_owned()),
        ("operations".to_owned(), names.join(",")),
        ("worker_id".to_owned(), worker_id.to_owned()),
    ]);
    let service = client
        .service_builder()
        .description("Switchyard usage ledger, instance history and audit log")
        .metadata(metadata)
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| Error::bus("cannot register the ledger service", e))?;
    let group = service.group(subject::service_group(KIND));
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let worker_id: Arc<str> = Arc::from(worker_id);
    for (operation, description) in OPERATIONS {
        let suffix = operation.trim_start_matches("ledger.");
        let mut endpoint = group
            .endpoint_builder()
            .name(suffix)
            .metadata(HashMap::from([
                ("operation".to_owned(), operation.to_owned()),
                ("description".to_owned(), description.to_owned()),
            ]))
            .add(suffix)
            .await
            .map_err(|e| Error::bus("cannot add a ledger endpoint", e))?;
        let (pool, slots, shutdown, worker_id) = (
            pool.clone(),
            slots.clone(),
            shutdown.clone(),
            worker_id.clone(),
        );
        let requests = tracker.clone();
        tracker.spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = endpoint.next() => match r { Some(r) => r, None => break },
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (pool, worker_id) = (pool.clone(), worker_id.clone());
                requests.spawn(async move {
                    let _permit = permit;
                    answer(&pool, operation, &worker_id, request).await;
                });
            }
        });
    }
    Ok(service)
}

/// The tenant a query reads: the one the input names (the gateway sets it only for an
/// admin) or the job's.
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

async fn answer(
    pool: &PgPool,
    operation: &'static str,
    worker_id: &str,
    request: async_nats::service::Request,
) {
    let content_type = ContentType::from_header(
        request
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(header::CONTENT_TYPE))
            .map(|v| v.as_str()),
    );
    let job: Job = match decode(content_type, &request.message.payload) {
        Ok(job) => job,
        Err(e) => {
            let err = async_nats::service::error::Error {
                status: e.to_string(),
                code: 400,
            };
            let _ = request.respond(Err(err)).await;
            return;
        }
    };
    let started_at_ms = now_ms();
    let span = info_span!("ledger_query", operation, correlation_id = %job.correlation_id);
    let outcome = run_query(pool, operation, &job).instrument(span).await;
    let (status, output, error) = match outcome {
        Ok(v) => (
            JobStatus::Succeeded,
            serde_json::to_vec(&v).unwrap_or_default(),
            None,
        ),
        Err(e) => {
            let failure = e.failure();
            if !matches!(failure, JobFailure::InvalidInput { .. }) {
                warn!(operation, correlation_id = %job.correlation_id, error = %e, "ledger query failed");
            }
            (JobStatus::Failed, Vec::new(), Some(failure.to_job_error()))
        }
    };
    let result = JobResult {
        job_id: job.job_id.clone(),
        tenant: job.tenant.clone(),
        operation: operation.to_owned(),
        status: status as i32,
        output,
        error,
        attempts: 1,
        worker_id: worker_id.to_owned(),
        started_at_ms,
        finished_at_ms: now_ms(),
        correlation_id: job.correlation_id.clone(),
        ..JobResult::default()
    };
    let body = match content_type {
        ContentType::Json => encode_json(&result).unwrap_or_default(),
        ContentType::Protobuf => encode_proto(&result),
    };
    if let Err(e) = request.respond(Ok(body.into())).await {
        warn!(error = %e, "cannot answer a ledger query");
    }
}
