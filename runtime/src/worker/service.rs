//! Registration as a NATS micro service: `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer
//! for every replica, and the service's metadata lists the kind's operations. Each operation
//! also answers request/reply on `svc.<kind>.<op>` (a job in, a job result out), which is how
//! the gateway queries a worker without going through a stream.

use std::{collections::HashMap, sync::Arc, time::Instant};

use async_nats::service::{Service, ServiceExt as _};
use futures::StreamExt as _;
use switchyard_proto::{ContentType, Job, JobResult, JobStatus, decode, header, now_ms, subject};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Handler, Inner};
use crate::Error;

/// Every worker kind's service is named `switchyard-<kind>`.
pub const SERVICE_PREFIX: &str = "switchyard-";

pub(crate) async fn start<H: Handler>(
    client: &async_nats::Client,
    inner: &Arc<Inner<H>>,
    slots: Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Service, Error> {
    let operations: Vec<&str> = inner.operations.iter().map(|o| o.name).collect();
    let metadata = HashMap::from([
        ("kind".to_owned(), inner.kind.to_owned()),
        ("operations".to_owned(), operations.join(",")),
        ("worker_id".to_owned(), inner.worker_id.to_string()),
        (
            "concurrency".to_owned(),
            inner.settings.concurrency.to_string(),
        ),
    ]);
    let service = client
        .service_builder()
        .description(format!("Switchyard {} worker", inner.kind))
        .metadata(metadata)
        .start(
            format!("{SERVICE_PREFIX}{}", inner.kind),
            env!("CARGO_PKG_VERSION"),
        )
        .await
        .map_err(Error::jetstream)?;
    let group = service.group(subject::service_group(inner.kind));
    for op in &inner.operations {
        let suffix = op
            .name
            .strip_prefix(inner.kind)
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
        let inner = inner.clone();
        let slots = slots.clone();
        let shutdown = shutdown.clone();
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
                let inner = inner.clone();
                requests.spawn(async move {
                    let _permit = permit;
                    inner.answer(operation, request).await;
                });
            }
        });
    }
    Ok(service)
}

impl<H: Handler> Inner<H> {
    async fn answer(&self, operation: &'static str, request: async_nats::service::Request) {
        let started = Instant::now();
        let content_type = ContentType::from_header(
            request
                .message
                .headers
                .as_ref()
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
        crate::telemetry::continue_trace(
            &span,
            &crate::telemetry::NatsExtractor(request.message.headers.as_ref()),
        );
        // A request is answered once: no redelivery, so one attempt. It goes through the same
        // input check and reference resolution as a job from the stream, and its failure
        // crosses the bus through the same mapping.
        let outcome = async {
            let resolved = self.admit(&job).await?;
            let job = resolved.as_ref().unwrap_or(&job);
            let ctx = self.context(job, 1, 1, self.hard_stop.child_token());
            self.handler.handle(ctx, job).await
        };
        let outcome = tracing::Instrument::instrument(outcome, span).await;
        let (status, output, error) = match outcome {
            Ok(output) => (JobStatus::Succeeded, Some(output), None),
            Err(failure) => (JobStatus::Failed, None, Some(failure.to_job_error())),
        };
        let mut result: JobResult =
            self.bus
                .result(&job, status, output, error, 1, &self.worker_id);
        result.started_at_ms = now_ms() - i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
        let body = match content_type {
            ContentType::Json => switchyard_proto::encode_json(&result).unwrap_or_default(),
            ContentType::Protobuf => switchyard_proto::encode_proto(&result),
        };
        if let Err(e) = request.respond(Ok(body.into())).await {
            tracing::warn!(error = %e, "cannot answer a service request");
        }
    }
}
