//! Dead letters through the engine's service (docs/recovery.md): list and show what the `DLQ`
//! stream holds, replay a job — a workflow step's job re-runs its instance from that step, a
//! job published straight to the bus is published again with fresh attempts — and purge.
//!
//! A replayed letter stays in the stream, marked in `WF_DLQ_HANDLED` (created with
//! compare-and-set, so two operators replaying the same letter replay it once); a purge removes
//! letters and their marks. Every replay and purge is audited.

use std::{collections::BTreeMap, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, kv},
};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_proto::{
    ContentType, DeadLetter, DeadLetterReason, Job, audit, decode, header, job_run, now_ms,
    orchestrator::{
        DlqFilter, DlqHandled, DlqLetter, DlqList, DlqPage, DlqPurge, DlqPurgeReply, DlqRef,
        DlqRefused, DlqReplay, DlqReplayReply, DlqReplayed, DlqSummary, ServiceError,
        ServiceErrorCode,
    },
    stream, subject,
};
use switchyard_runtime::audit::Record;
use tracing::{info, warn};

use crate::{
    instance::InstanceStatus,
    service::{self, RerunAsk},
    shared::Shared,
};

/// Letters one page lists at most.
pub const MAX_PAGE: u32 = 500;
/// Letters one bulk replay acts on at most.
pub const MAX_BULK: u32 = 1000;
/// Letters one call reads at most while looking for matches; the page's cursor goes on.
const MAX_SCAN: usize = 10_000;
/// How long reading the next letter may take before the scan stops where it is.
const NEXT_WITHIN: Duration = Duration::from_secs(5);

/// One letter as read from the stream.
struct Stored {
    seq: u64,
    stored_at_ms: i64,
    letter: DeadLetter,
    tenant: Option<String>,
    /// The original message when it was a job.
    job: Option<Job>,
}

/// How a letter was handled, as kept in `WF_DLQ_HANDLED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mark {
    action: String,
    at_ms: i64,
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<u32>,
}

impl From<Mark> for DlqHandled {
    fn from(m: Mark) -> Self {
        DlqHandled {
            action: m.action,
            at_ms: m.at_ms,
            by: m.by,
            run: m.run,
        }
    }
}

fn internal(what: &'static str, e: impl std::fmt::Display) -> ServiceError {
    warn!(error = %e, what, "dead-letter request failed");
    ServiceError::new(
        ServiceErrorCode::Internal,
        format!("the orchestrator could not complete the request ({what})"),
    )
}

fn conflict(message: String) -> ServiceError {
    ServiceError::new(ServiceErrorCode::Conflict, message)
}

fn not_found(seq: u64) -> ServiceError {
    ServiceError::new(
        ServiceErrorCode::NotFound,
        format!("dead letter {seq} not found"),
    )
}

fn reason_name(reason: i32) -> String {
    DeadLetterReason::try_from(reason)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("DEAD_LETTER_REASON_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unspecified".into())
}

/// Reads the letter stored as `msg_headers` and `payload` at `seq`.
fn read(seq: u64, stored_at_ms: i64, msg_headers: Option<&HeaderMap>, payload: &[u8]) -> Stored {
    let letter: DeadLetter = decode(ContentType::Protobuf, payload).unwrap_or_default();
    let job = (letter.subject.starts_with("jobs.") && !letter.payload_truncated)
        .then(|| {
            let ct = ContentType::from_header(
                letter.headers.get(header::CONTENT_TYPE).map(String::as_str),
            );
            decode::<Job>(ct, &letter.payload).ok()
        })
        .flatten();
    let tenant = msg_headers
        .and_then(|h| h.get(header::TENANT))
        .map(|v| v.as_str().to_owned())
        .or_else(|| letter.headers.get(header::TENANT).cloned())
        .or_else(|| job.as_ref().map(|j| j.tenant.clone()))
        .filter(|t| !t.is_empty());
    Stored {
        seq,
        stored_at_ms,
        letter,
        tenant,
        job,
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Stored {
    fn summary(&self, handled: Option<Mark>) -> DlqSummary {
        let l = &self.letter;
        let job = self.job.as_ref();
        DlqSummary {
            seq: self.seq,
            kind: l.kind.clone(),
            subject: l.subject.clone(),
            tenant: self.tenant.clone(),
            reason: reason_name(l.reason),
            error: l.error.clone(),
            attempts: l.attempts,
            job_id: non_empty(&l.job_id).or_else(|| job.and_then(|j| non_empty(&j.job_id))),
            operation: job.and_then(|j| non_empty(&j.operation)),
            instance_id: job.and_then(|j| non_empty(&j.instance_id)),
            step_id: job.and_then(|j| non_empty(&j.step_id)),
            worker_id: l.worker_id.clone(),
            failed_at_ms: if l.failed_at_ms > 0 {
                l.failed_at_ms
            } else {
                self.stored_at_ms
            },
            handled: handled.map(Into::into),
        }
    }

    /// Whether `filter` selects it, apart from `handled` (which needs the bucket).
    fn matches(&self, f: &DlqFilter) -> bool {
        let job = self.job.as_ref();
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_ref().is_none_or(|w| have == Some(w.as_str()))
        };
        eq(&f.tenant, self.tenant.as_deref())
            && eq(&f.kind, Some(self.letter.kind.as_str()))
            && eq(&f.operation, job.map(|j| j.operation.as_str()))
            && eq(&f.instance_id, job.map(|j| j.instance_id.as_str()))
            && f.reason
                .as_ref()
                .is_none_or(|r| *r == reason_name(self.letter.reason))
            && f.from_ms.is_none_or(|t| self.stored_at_ms >= t)
            && f.to_ms.is_none_or(|t| self.stored_at_ms < t)
    }
}

async fn dlq_stream(shared: &Shared) -> Result<jetstream::stream::Stream, ServiceError> {
    shared
        .js
        .get_stream(stream::DLQ)
        .await
        .map_err(|e| internal("the DLQ stream", e))
}

async fn handled_bucket(shared: &Shared) -> Result<kv::Store, ServiceError> {
    shared
        .js
        .get_key_value(stream::DLQ_HANDLED_BUCKET)
        .await
        .map_err(|e| internal("the handled-letters bucket", e))
}

async fn mark_of(bucket: &kv::Store, seq: u64) -> Result<Option<Mark>, ServiceError> {
    let value = bucket
        .get(seq.to_string())
        .await
        .map_err(|e| internal("reading a letter's mark", e))?;
    Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The letters after `after` that `filter` selects, at most `limit`, reading at most
/// [`MAX_SCAN`]; with the sequence to go on from when it stopped before the end.
async fn scan(
    shared: &Shared,
    filter: &DlqFilter,
    after: u64,
    limit: usize,
) -> Result<(Vec<(Stored, Option<Mark>)>, Option<u64>), ServiceError> {
    let mut dlq = dlq_stream(shared).await?;
    let last = dlq
        .info()
        .await
        .map_err(|e| internal("the DLQ stream's state", e))?
        .state
        .last_sequence;
    if last <= after {
        return Ok((Vec::new(), None));
    }
    let bucket = handled_bucket(shared).await?;
    let consumer = dlq
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            filter_subject: filter
                .kind
                .as_deref()
                .map_or_else(|| subject::ALL_DLQ.to_owned(), subject::dlq),
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| internal("reading the DLQ", e))?;
    // Nothing of the kind after `after`: no need to wait for a first message.
    if consumer.cached_info().num_pending == 0 {
        return Ok((Vec::new(), None));
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| internal("reading the DLQ", e))?;
    let mut found = Vec::new();
    let mut read_count = 0;
    loop {
        let next = match tokio::time::timeout(NEXT_WITHIN, messages.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => return Err(internal("reading the DLQ", e)),
            // Nothing more within the wait: the filter matched nothing further.
            Ok(None) | Err(_) => return Ok((found, None)),
        };
        let info = next.info().map_err(|e| internal("reading the DLQ", e))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let stored_at_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        let letter = read(seq, stored_at_ms, next.headers.as_ref(), &next.payload);
        read_count += 1;
        if letter.matches(filter) {
            let mark = mark_of(&bucket, seq).await?;
            if filter.handled.is_none_or(|h| h == mark.is_some()) {
                found.push((letter, mark));
            }
        }
        let at_end = seq >= last || pending == 0;
        if found.len() >= limit || read_count >= MAX_SCAN {
            return Ok((found, (!at_end).then_some(seq)));
        }
        if at_end {
            return Ok((found, None));
        }
    }
}

/// `tenant`'s letter `seq` (any tenant's when `None`).
async fn get(shared: &Shared, tenant: Option<&str>, seq: u64) -> Result<Stored, ServiceError> {
    if seq == 0 {
        return Err(not_found(seq));
    }
    let dlq = dlq_stream(shared).await?;
    let msg = match dlq.get_raw_message(seq).await {
        Ok(m) => m,
        Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
            return Err(not_found(seq));
        }
        Err(e) => return Err(internal("reading a dead letter", e)),
    };
    let stored_at_ms =
        i64::try_from(msg.time.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    let letter = read(seq, stored_at_ms, Some(&msg.headers), &msg.payload);
    // Another tenant's letter is indistinguishable from a missing one.
    if tenant.is_some_and(|t| letter.tenant.as_deref() != Some(t)) {
        return Err(not_found(seq));
    }
    Ok(letter)
}

pub(crate) async fn list(shared: &Shared, req: DlqList) -> Result<DlqPage, ServiceError> {
    let limit = req.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(service::field_error(
            "limit",
            format!("expected 1 to {MAX_PAGE}"),
        ));
    }
    let (found, next_cursor) =
        scan(shared, &req.filter, req.after.unwrap_or(0), limit as usize).await?;
    Ok(DlqPage {
        letters: found.into_iter().map(|(l, m)| l.summary(m)).collect(),
        next_cursor,
    })
}

pub(crate) async fn show(shared: &Shared, req: DlqRef) -> Result<DlqLetter, ServiceError> {
    let stored = get(shared, req.tenant.as_deref(), req.seq).await?;
    let mark = mark_of(&handled_bucket(shared).await?, req.seq).await?;
    let l = &stored.letter;
    let (payload, payload_hex) = match &stored.job {
        Some(job) => (serde_json::to_value(job).unwrap_or(Value::Null), None),
        None => match std::str::from_utf8(&l.payload) {
            Ok(text) => (
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
                None,
            ),
            Err(_) => (Value::Null, Some(hex::encode(&l.payload))),
        },
    };
    Ok(DlqLetter {
        summary: stored.summary(mark),
        headers: l
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        payload,
        payload_hex,
        payload_truncated: l.payload_truncated,
    })
}

/// Claims letter `seq` for `mark`; a letter already claimed is refused with who did it.
async fn claim(bucket: &kv::Store, seq: u64, mark: &Mark) -> Result<(), ServiceError> {
    let value = serde_json::to_vec(mark).map_err(|e| internal("encoding a mark", e))?;
    match bucket.create(seq.to_string(), value.into()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let earlier = mark_of(bucket, seq).await?;
            Err(conflict(match earlier {
                Some(m) => format!(
                    "dead letter {seq} was already replayed ({}, by {})",
                    m.action, m.by
                ),
                None => format!("dead letter {seq} was already replayed"),
            }))
        }
        Err(e) => Err(internal("marking a letter", e)),
    }
}

async fn unclaim(bucket: &kv::Store, seq: u64) {
    if let Err(e) = bucket.purge(seq.to_string()).await {
        warn!(seq, error = %e, "cannot release a letter's mark");
    }
}

/// Replays letter `seq`.
async fn replay_one(
    shared: &Shared,
    bucket: &kv::Store,
    tenant: Option<&str>,
    seq: u64,
    by: &str,
) -> Result<DlqReplayed, ServiceError> {
    let stored = get(shared, tenant, seq).await?;
    if let Some(m) = mark_of(bucket, seq).await? {
        return Err(conflict(format!(
            "dead letter {seq} was already replayed ({}, by {})",
            m.action, m.by
        )));
    }
    if stored.letter.payload_truncated {
        return Err(conflict(format!(
            "dead letter {seq} keeps only the first {} of {} bytes of its message, which \
             cannot be replayed",
            stored.letter.payload.len(),
            stored.letter.payload_size
        )));
    }
    let Some(job) = stored.job.as_ref() else {
        return Err(conflict(format!(
            "dead letter {seq} holds a message to {:?}: only jobs are replayed",
            stored.letter.subject
        )));
    };
    let letter_tenant = stored.tenant.clone().unwrap_or_default();
    let replayed = if job.instance_id.is_empty() {
        None
    } else {
        match service::tenants_instance(shared, &job.tenant, &job.instance_id).await {
            Ok(state) => Some(state),
            Err(e) if e.code == ServiceErrorCode::NotFound => None,
            Err(e) => return Err(e),
        }
    };
    let done = match replayed {
        // A step's job: its instance re-runs from that step, once it failed because of it.
        Some(state) => {
            let failed_here = state.status == InstanceStatus::Failed
                && state.run == job_run(&job.job_id)
                && state
                    .error
                    .as_ref()
                    .and_then(|e| e.step.as_deref())
                    .is_some_and(|s| s == job.step_id);
            if !failed_here {
                return Err(conflict(format!(
                    "instance {:?} is {} (run {}) and did not fail because of this job: \
                     replaying it would not resume the instance",
                    state.id,
                    state.status.as_str(),
                    state.run
                )));
            }
            let mark = Mark {
                action: "rerun".into(),
                at_ms: now_ms(),
                by: by.to_owned(),
                run: Some(state.run + 1),
            };
            claim(bucket, seq, &mark).await?;
            let ask = RerunAsk {
                version: None,
                from_step: Some(job.step_id.clone()),
                requested_by: by.to_owned(),
                reason: Some(format!("replay of dead letter {seq}")),
                correlation_id: None,
            };
            match service::rerun(shared, state, ask).await {
                Ok(reply) => DlqReplayed {
                    seq,
                    action: mark.action,
                    instance_id: Some(reply.instance_id),
                    run: Some(reply.run),
                    subject: None,
                },
                Err(e) => {
                    unclaim(bucket, seq).await;
                    return Err(e);
                }
            }
        }
        // A job published straight to the bus: again, as a new message with fresh attempts;
        // its result goes where the original asked.
        None => {
            let mark = Mark {
                action: "republished".into(),
                at_ms: now_ms(),
                by: by.to_owned(),
                run: None,
            };
            claim(bucket, seq, &mark).await?;
            if let Err(e) = republish(shared, &stored).await {
                unclaim(bucket, seq).await;
                return Err(e);
            }
            DlqReplayed {
                seq,
                action: mark.action,
                instance_id: non_empty(&job.instance_id),
                run: None,
                subject: Some(stored.letter.subject.clone()),
            }
        }
    };
    service::audit(
        shared,
        &Record {
            tenant: tenant_token(&letter_tenant),
            actor: by,
            action: audit::DLQ_REPLAY,
            target: &seq.to_string(),
            outcome: audit::OK,
            correlation_id: &job.correlation_id,
            attributes: [
                ("action".to_owned(), done.action.clone()),
                ("job_id".to_owned(), job.job_id.clone()),
                ("operation".to_owned(), job.operation.clone()),
                ("instance_id".to_owned(), job.instance_id.clone()),
            ]
            .into(),
        },
    )
    .await;
    info!(seq, action = %done.action, by, "dead letter replayed");
    Ok(done)
}

/// The tenant an audit record of a letter goes under.
fn tenant_token(tenant: &str) -> &str {
    if tenant.is_empty() || subject::check_token(tenant).is_err() {
        audit::ANONYMOUS_TENANT
    } else {
        tenant
    }
}

/// Publishes a letter's job again to its subject, with its headers and a new message id.
async fn republish(shared: &Shared, stored: &Stored) -> Result<(), ServiceError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &stored.letter.headers {
        if name.starts_with("Nats-") {
            continue;
        }
        headers.insert(name.as_str(), value.as_str());
    }
    headers.insert(
        header::MSG_ID,
        format!("dlq-replay-{}", stored.seq).as_str(),
    );
    shared
        .js
        .publish_with_headers(
            stored.letter.subject.clone(),
            headers,
            stored.letter.payload.clone().into(),
        )
        .await
        .map_err(|e| internal("republishing a job", e))?
        .await
        .map_err(|e| internal("republishing a job", e))?;
    Ok(())
}

pub(crate) async fn replay(
    shared: &Shared,
    req: DlqReplay,
) -> Result<DlqReplayReply, ServiceError> {
    let bucket = handled_bucket(shared).await?;
    let tenant = req.tenant.as_deref();
    match (req.seq, req.filter) {
        (Some(seq), None) => {
            let done = replay_one(shared, &bucket, tenant, seq, &req.requested_by).await?;
            Ok(DlqReplayReply {
                replayed: vec![done],
                refused: Vec::new(),
                more: false,
            })
        }
        (None, Some(mut filter)) => {
            let limit = req.limit.unwrap_or(MAX_BULK);
            if !(1..=MAX_BULK).contains(&limit) {
                return Err(service::field_error(
                    "limit",
                    format!("expected 1 to {MAX_BULK}"),
                ));
            }
            filter.handled = Some(false);
            if let Some(t) = tenant {
                filter.tenant = Some(t.to_owned());
            }
            let (found, next) = scan(shared, &filter, 0, limit as usize).await?;
            let mut reply = DlqReplayReply {
                more: next.is_some(),
                ..DlqReplayReply::default()
            };
            for (letter, _) in found {
                match replay_one(
                    shared,
                    &bucket,
                    filter.tenant.as_deref(),
                    letter.seq,
                    &req.requested_by,
                )
                .await
                {
                    Ok(done) => reply.replayed.push(done),
                    Err(e) if e.code == ServiceErrorCode::Internal => return Err(e),
                    Err(e) => reply.refused.push(DlqRefused {
                        seq: letter.seq,
                        reason: e.message,
                    }),
                }
            }
            Ok(reply)
        }
        _ => Err(service::field_error(
            "seq",
            "name one letter (seq) or a filter, not both".into(),
        )),
    }
}

pub(crate) async fn purge(shared: &Shared, req: DlqPurge) -> Result<DlqPurgeReply, ServiceError> {
    let bucket = handled_bucket(shared).await?;
    let dlq = dlq_stream(shared).await?;
    let mut filter = req.filter;
    let letters: Vec<Stored> = if req.seqs.is_empty() {
        if filter.handled.is_none() {
            filter.handled = Some(true);
        }
        let (found, _) = scan(shared, &filter, 0, MAX_BULK as usize).await?;
        found.into_iter().map(|(l, _)| l).collect()
    } else {
        if req.seqs.len() > MAX_BULK as usize {
            return Err(service::field_error(
                "seqs",
                format!("at most {MAX_BULK} letters per call"),
            ));
        }
        let mut letters = Vec::with_capacity(req.seqs.len());
        for seq in &req.seqs {
            letters.push(get(shared, filter.tenant.as_deref(), *seq).await?);
        }
        letters
    };
    let mut by_tenant: BTreeMap<String, u64> = BTreeMap::new();
    let mut purged = 0;
    for letter in &letters {
        match dlq.delete_message(letter.seq).await {
            Ok(_) => {}
            Err(e) => return Err(internal("deleting a dead letter", e)),
        }
        unclaim(&bucket, letter.seq).await;
        purged += 1;
        *by_tenant
            .entry(letter.tenant.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for (tenant, count) in by_tenant {
        service::audit(
            shared,
            &Record {
                tenant: tenant_token(&tenant),
                actor: &req.requested_by,
                action: audit::DLQ_PURGE,
                target: "dlq",
                outcome: audit::OK,
                correlation_id: "",
                attributes: [("purged".to_owned(), count.to_string())].into(),
            },
        )
        .await;
    }
    info!(purged, by = %req.requested_by, "dead letters purged");
    Ok(DlqPurgeReply { purged })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_as_in_the_api() {
        assert_eq!(
            reason_name(DeadLetterReason::RetriesExhausted as i32),
            "retries_exhausted"
        );
        assert_eq!(reason_name(DeadLetterReason::Decode as i32), "decode");
        assert_eq!(reason_name(999), "unspecified");
    }

    #[test]
    fn a_job_letter_names_its_tenant_instance_and_operation() {
        let job = Job {
            job_id: "i-1.s~r1".into(),
            tenant: "acme".into(),
            instance_id: "i-1".into(),
            step_id: "s".into(),
            operation: "test.fail".into(),
            ..Job::default()
        };
        let letter = DeadLetter {
            kind: "test".into(),
            subject: "jobs.test.fail".into(),
            payload: switchyard_proto::encode_proto(&job),
            reason: DeadLetterReason::Permanent as i32,
            ..DeadLetter::default()
        };
        let stored = read(7, 1_000, None, &switchyard_proto::encode_proto(&letter));
        assert_eq!(stored.tenant.as_deref(), Some("acme"));
        let s = stored.summary(None);
        assert_eq!(
            (
                s.instance_id.as_deref(),
                s.step_id.as_deref(),
                s.reason.as_str()
            ),
            (Some("i-1"), Some("s"), "permanent")
        );
        let mut filter = DlqFilter {
            tenant: Some("acme".into()),
            operation: Some("test.fail".into()),
            ..DlqFilter::default()
        };
        assert!(stored.matches(&filter));
        filter.tenant = Some("globex".into());
        assert!(!stored.matches(&filter));
    }
}
