//! Registration as a NATS micro service: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer
//! for every replica, and the service's metadata lists the kind's operations. Each operation
//! also answers request/reply on `svc.<kind>.<op>` (a job in, a job result out), which is how
//! the gateway queries a worker without going through a stream.
//!
//! [`serve`] is the one service builder: a worker registers its operations through it, and so
//! does a component whose operations are queries rather than workflow steps (the ledger), with
//! its own [`Answer`].

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use async_nats::service::{Service, ServiceExt as _};
use futures::StreamExt as _;
use switchyard_proto::{
    ContentType, Job, JobError, JobResult, JobStatus, decode, header, now_ms, subject,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Handler, Inner, JobFailure, OperationInfo};
use crate::Error;

/// Every worker kind's service is named `switchyard-<kind>`.
pub const SERVICE_PREFIX: &str = "switchyard-";

/// What a service registers as.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The kind: the service `switchyard-<kind>` and the subjects `svc.<kind>.<op>`.
    pub kind: &'static str,
    /// Shown in `$SRV.INFO`.
    pub description: String,
    /// One endpoint each; every name starts with `<kind>.`.
    pub operations: Vec<OperationInfo>,
    /// The replica, in the metadata and in every job result.
    pub worker_id: Arc<str>,
    /// More metadata beside `kind`, `operations` and `worker_id`.
    pub metadata: HashMap<String, String>,
}

/// How a service answers one request.
pub trait Answer: Send + Sync + 'static {
    /// The output for `job`, whose `operation` is the endpoint's. A request is answered once
    /// (no redelivery), so it is one attempt; the failure crosses the bus as its typed code.
    fn answer(
        &self,
        job: &Job,
    ) -> impl Future<Output = Result<serde_json::Value, JobFailure>> + Send;
}

/// Registers `spec` and answers requests with `answerer` until `shutdown`, at most as many
/// at once as `slots` has permits (a worker shares them with its stream). The endpoint loops
/// and every request run on `tracker`.
pub async fn serve<A: Answer>(
    client: &async_nats::Client,
    spec: ServiceSpec,
    answerer: Arc<A>,
    slots: Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Service, Error> {
    let kind = spec.kind;
    let names: Vec<&str> = spec.operations.iter().map(|o| o.name).collect();
    let mut metadata = spec.metadata;
    metadata.extend([
        ("kind".to_owned(), kind.to_owned()),
        ("operations".to_owned(), names.join(",")),
        ("worker_id".to_owned(), spec.worker_id.to_string()),
    ]);
    let service = client
        .service_builder()
        .description(spec.description)
        .metadata(metadata)
        .start(format!("{SERVICE_PREFIX}{kind}"), env!("CARGO_PKG_VERSION"))
        .await
        .map_err(Error::jetstream)?;
    let group = service.group(subject::service_group(kind));
    for op in spec.operations {
        let suffix = op
            .name
            .strip_prefix(kind)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(op.name);
        let mut endpoint = group
            .endpoint_builder()
            .name(suffix.replace('.', "-"))
            .metadata(HashMap::from([
                ("operation".to_owned(), op.name.to_owned()),
                ("description".to_owned(), op.description.to_owned()),
            ]))
            .add(suffix)
            .await
            .map_err(Error::jetstream)?;
        let (answerer, slots, shutdown) = (answerer.clone(), slots.clone(), shutdown.clone());
        let worker_id = spec.worker_id.clone();
        let operation = op.name;
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
                let (answerer, worker_id) = (answerer.clone(), worker_id.clone());
                requests.spawn(async move {
                    let _permit = permit;
                    respond(&*answerer, operation, &worker_id, request).await;
                });
            }
        });
    }
    Ok(service)
}

/// Decodes the job, answers it in a span that continues the caller's trace, and replies with
/// the job result in the request's content type (a body that is no job gets a 400).
async fn respond<A: Answer>(
    answerer: &A,
    operation: &'static str,
    worker_id: &str,
    request: async_nats::service::Request,
) {
    let started = Instant::now();
    let headers = request.message.headers.as_ref();
    let content_type = ContentType::from_header(
        headers
            .and_then(|h| h.get(header::CONTENT_TYPE))
            .map(|v| v.as_str()),
    );
    let mut job: Job = match decode(content_type, &request.message.payload) {
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
    job.operation = operation.to_owned();
    let span = tracing::info_span!(
        "service_request",
        job_id = %job.job_id,
        operation,
        correlation_id = %job.correlation_id,
        trace_id = tracing::field::Empty,
        tenant = %job.tenant,
    );
    crate::telemetry::continue_trace(&span, &crate::telemetry::NatsExtractor(headers));
    let outcome = tracing::Instrument::instrument(answerer.answer(&job), span).await;
    let (status, output, error) = match outcome {
        Ok(output) => (JobStatus::Succeeded, Some(output), None),
        Err(failure) => (JobStatus::Failed, None, Some(failure.to_job_error())),
    };
    let mut result = job_result(&job, status, output, error, 1, worker_id);
    result.started_at_ms = now_ms() - i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    let body = match content_type {
        ContentType::Json => switchyard_proto::encode_json(&result).unwrap_or_default(),
        ContentType::Protobuf => switchyard_proto::encode_proto(&result),
    };
    if let Err(e) = request.respond(Ok(body.into())).await {
        tracing::warn!(error = %e, "cannot answer a service request");
    }
}

/// The result of `job` after `attempts`, finished now.
pub(crate) fn job_result(
    job: &Job,
    status: JobStatus,
    output: Option<serde_json::Value>,
    error: Option<JobError>,
    attempts: u32,
    worker_id: &str,
) -> JobResult {
    JobResult {
        job_id: job.job_id.clone(),
        tenant: job.tenant.clone(),
        instance_id: job.instance_id.clone(),
        step_id: job.step_id.clone(),
        operation: job.operation.clone(),
        status: status as i32,
        output: output
            .map(|o| serde_json::to_vec(&o).unwrap_or_default())
            .unwrap_or_default(),
        error,
        attempts,
        worker_id: worker_id.to_owned(),
        started_at_ms: 0,
        finished_at_ms: now_ms(),
        correlation_id: job.correlation_id.clone(),
    }
}

/// A worker answers a request as it runs a job from its stream: the same input check and
/// reference resolution, then its handler.
impl<H: Handler> Answer for Inner<H> {
    async fn answer(&self, job: &Job) -> Result<serde_json::Value, JobFailure> {
        let resolved = self.admit(job).await?;
        let job = resolved.as_ref().unwrap_or(job);
        let ctx = self.context(job, 1, 1, self.hard_stop.child_token());
        self.handler.handle(ctx, job).await
    }
}

/// The spec a worker kind registers with: its operations, worker id and concurrency.
pub(crate) fn worker_spec<H: Handler>(inner: &Inner<H>) -> ServiceSpec {
    ServiceSpec {
        kind: inner.kind,
        description: format!("Switchyard {} worker", inner.kind),
        operations: inner.operations.clone(),
        worker_id: inner.worker_id.clone(),
        metadata: HashMap::from([(
            "concurrency".to_owned(),
            inner.settings.concurrency.to_string(),
        )]),
    }
}
