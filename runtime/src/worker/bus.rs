//! Publishing what the worker loop produces: results, dead letters and usage events, each
//! with a deterministic message id and the trace headers of the job it came from.

use async_nats::{HeaderMap, jetstream};
use switchyard_proto::{
    ContentType, DeadLetterReason, Job, JobResult, UsageEvent, WorkflowEvent, encode_proto, header,
    now_ms, subject,
};

use crate::{Error, dlq::carried_headers, objects::Objects, telemetry};

#[derive(Debug, Clone)]
pub(crate) struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    kind: &'static str,
    objects: Objects,
}

impl Bus {
    pub(crate) fn new(client: async_nats::Client, kind: &'static str) -> Self {
        let js = jetstream::new(client.clone());
        Bus {
            objects: Objects::new(js.clone()),
            js,
            client,
            kind,
        }
    }

    pub(crate) fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Publishes a job's result to its reply subject (default `wf.result.<instance>`) and
    /// waits for the PubAck. A reply subject that no stream captures (a direct caller waiting
    /// on an inbox) gets a plain publish, flushed: a JetStream publish there would be received
    /// by the caller and never acknowledged. A job with neither instance nor reply subject has
    /// nowhere to report.
    pub(crate) async fn publish_result(
        &self,
        msg: &jetstream::Message,
        job: &Job,
        result: &JobResult,
    ) -> Result<(), Error> {
        let (destination, stored) = if !job.reply_subject.is_empty() {
            let stored = self
                .js
                .stream_by_subject(job.reply_subject.as_str())
                .await
                .is_ok();
            (job.reply_subject.clone(), stored)
        } else if !job.instance_id.is_empty() {
            (subject::result(&job.instance_id), true)
        } else {
            tracing::debug!("job has no instance and no reply subject: result not published");
            return Ok(());
        };
        let mut headers = carried_headers(msg);
        if !job.tenant.is_empty() {
            headers.insert(header::TENANT, job.tenant.as_str());
        }
        let msg_id = format!("result-{}", job.job_id);
        let payload = encode_proto(result);
        if stored {
            self.publish_stored(destination, headers, &msg_id, payload)
                .await
        } else {
            headers.insert(header::MSG_ID, msg_id.as_str());
            headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
            self.client
                .publish_with_headers(destination, headers, payload.into())
                .await
                .map_err(Error::jetstream)?;
            self.client.flush().await.map_err(Error::jetstream)
        }
    }

    /// Copies the original message to `dlq.<kind>` with why it was given up on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
        job_id: &str,
        worker_id: &str,
    ) -> Result<(), Error> {
        let why = crate::dlq::Reason {
            kind: self.kind,
            reason,
            error,
            attempts,
            job_id,
            worker_id,
        };
        crate::dlq::publish(&self.js, msg, why).await
    }

    pub(crate) async fn publish_event(&self, event: &WorkflowEvent) -> Result<(), Error> {
        let subject_name = subject::event(
            tenant_token(&event.tenant),
            &event.instance_id,
            &event.r#type,
        );
        self.publish_stored(
            subject_name,
            tenant_headers(&event.tenant),
            &event.event_id,
            encode_proto(event),
        )
        .await
    }

    /// Tells followers of an instance that a job started or will be retried. Best effort: it
    /// does not wait for the PubAck, so progress reporting never slows a job down; the step's
    /// result, which the orchestrator records, is what is guaranteed.
    pub(crate) async fn lifecycle_event(
        &self,
        job: &Job,
        event_type: &str,
        attempt: u32,
        data: serde_json::Value,
    ) {
        if job.instance_id.is_empty() {
            return;
        }
        let event = WorkflowEvent {
            event_id: format!("{}.{event_type}.{attempt}", job.job_id),
            tenant: job.tenant.clone(),
            instance_id: job.instance_id.clone(),
            r#type: event_type.to_owned(),
            step_id: job.step_id.clone(),
            data: serde_json::to_vec(&data).unwrap_or_default(),
            at_ms: now_ms(),
            correlation_id: job.correlation_id.clone(),
        };
        let mut headers = tenant_headers(&event.tenant);
        headers.insert(header::MSG_ID, event.event_id.as_str());
        headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
        let subject_name =
            subject::event(tenant_token(&event.tenant), &event.instance_id, event_type);
        if let Err(e) = self
            .js
            .publish_with_headers(subject_name, headers, encode_proto(&event).into())
            .await
        {
            tracing::debug!(error = %e, "cannot publish a lifecycle event");
        }
    }

    /// Publishes a usage event; `false` when the stream dropped it as a duplicate of one it
    /// already stored (a redelivered job's event).
    pub(crate) async fn publish_usage(&self, event: &UsageEvent) -> Result<bool, Error> {
        let subject_name = subject::usage(tenant_token(&event.tenant), &event.meter);
        self.publish_stored_new(
            subject_name,
            tenant_headers(&event.tenant),
            &event.event_id,
            encode_proto(event),
        )
        .await
    }

    /// Publishes a protobuf envelope to a stream under `msg_id` and waits for the PubAck.
    async fn publish_stored(
        &self,
        subject_name: String,
        headers: HeaderMap,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), Error> {
        self.publish_stored_new(subject_name, headers, msg_id, payload)
            .await
            .map(drop)
    }

    /// [`Bus::publish_stored`], saying whether the stream stored the message (`false`: a
    /// duplicate of `msg_id` within its duplicate window).
    async fn publish_stored_new(
        &self,
        subject_name: String,
        mut headers: HeaderMap,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<bool, Error> {
        headers.insert(header::MSG_ID, msg_id);
        headers.insert(header::CONTENT_TYPE, ContentType::Protobuf.header_value());
        let ack = self
            .js
            .publish_with_headers(subject_name, headers, payload.into())
            .await
            .map_err(Error::jetstream)?
            .await
            .map_err(Error::jetstream)?;
        Ok(!ack.duplicate)
    }
}

fn tenant_headers(tenant: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::TENANT, tenant);
    telemetry::inject(&tracing::Span::current(), &mut headers);
    headers
}

/// The subject token for a tenant; messages of jobs without one go under `_`.
fn tenant_token(tenant: &str) -> &str {
    if tenant.is_empty() { "_" } else { tenant }
}
