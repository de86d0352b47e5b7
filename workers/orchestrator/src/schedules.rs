//! The definitions' `schedules:`, run by the bus's message scheduler (ADR 19).
//!
//! Each schedule of the latest version of a tenant's definition is one message on
//! `wf.schedule.<tenant>.<workflow>.<name>` in `WF_SCHEDULES`, carrying the `Nats-Schedule`
//! headers; the server fires it to `wf.tick.<tenant>.<workflow>.<name>`, rolling up the tick
//! before it. Every replica keeps the stream in line with the definitions it mirrors (a
//! compare-and-set on the subject's last sequence, so two replicas never both replace a
//! schedule), and the replicas share one durable consumer of the ticks, each tick becoming one
//! start whose instance id is derived from the tick: a tick the server fires twice, or that
//! is delivered twice, starts one instance.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use async_nats::{
    HeaderMap,
    header::{
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID, NATS_SCHEDULE, NATS_SCHEDULE_NEXT,
        NATS_SCHEDULE_ROLLUP, NATS_SCHEDULE_ROLLUP_SUB, NATS_SCHEDULE_TARGET,
        NATS_SCHEDULE_TIME_ZONE,
    },
    jetstream::{self, AckKind, consumer::PullConsumer},
};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_proto::{StartWorkflow, encode_proto, now_ms, stream, subject};
use switchyard_workflow::store::Scope;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Error, shared::Shared};

/// How long a failed reconciliation waits before it tries again.
const RETRY: Duration = Duration::from_secs(5);

/// The label a scheduled instance carries: the schedule's name.
pub const SCHEDULE_LABEL: &str = "schedule";

/// The body of a schedule message, and so of each of its ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tick {
    /// The definition version whose schedule this is; its instances run it.
    version: u32,
    input: Value,
}

/// A schedule message as it should be.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    pattern: String,
    time_zone: Option<String>,
    body: Vec<u8>,
}

/// The schedules of the latest version of every tenant's definition, by subject. Shared
/// definitions have no tenant to start in, so their schedules are not run.
fn wanted(shared: &Shared) -> BTreeMap<String, Wanted> {
    let mut latest: BTreeMap<(String, String), Arc<switchyard_workflow::Definition>> =
        BTreeMap::new();
    for entry in shared.definitions.all() {
        let Scope::Tenant(tenant) = &entry.scope else {
            continue;
        };
        let key = (tenant.clone(), entry.definition.name.clone());
        if latest
            .get(&key)
            .is_none_or(|d| d.version < entry.definition.version)
        {
            latest.insert(key, entry.definition.clone());
        }
    }
    let mut out = BTreeMap::new();
    for ((tenant, name), def) in latest {
        for s in &def.schedules {
            let tick = Tick {
                version: def.version,
                input: s.input.clone(),
            };
            out.insert(
                subject::schedule(&tenant, &name, &s.name),
                Wanted {
                    pattern: s.pattern(),
                    time_zone: s.time_zone().map(str::to_owned),
                    body: serde_json::to_vec(&tick).unwrap_or_default(),
                },
            );
        }
    }
    out
}

/// Keeps `WF_SCHEDULES` in line with the definitions, at start and after every change to
/// them, until `shutdown`.
pub(crate) async fn reconcile_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut changes = shared.definitions.changes();
    loop {
        let pause = match reconcile(&shared).await {
            Ok(()) => None,
            Err(e) => {
                warn!(error = %e, "cannot bring the schedules in line with the definitions; trying again");
                Some(RETRY)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(pause.unwrap_or(Duration::MAX)), if pause.is_some() => {}
        }
    }
}

/// One pass: publishes the schedules that are missing or differ, purges those no definition
/// has any more (and their ticks).
async fn reconcile(shared: &Shared) -> Result<(), Error> {
    let wanted = wanted(shared);
    let schedules = shared
        .js
        .get_stream(stream::WF_SCHEDULES)
        .await
        .map_err(|_| Error::NotProvisioned {
            what: format!("stream {}", stream::WF_SCHEDULES),
        })?;
    let present: BTreeSet<String> = schedules
        .info_with_subjects(subject::ALL_SCHEDULES)
        .await
        .map_err(|e| Error::bus("listing the schedules", e))?
        .map_ok(|(subject, _)| subject)
        .try_collect()
        .await
        .map_err(|e| Error::bus("listing the schedules", e))?;
    for (subject, want) in &wanted {
        let last = if present.contains(subject) {
            match schedules.get_last_raw_message_by_subject(subject).await {
                Ok(m) => Some(m),
                Err(e) => return Err(Error::bus("reading a schedule", e)),
            }
        } else {
            None
        };
        if let Some(m) = &last
            && same(m, want)
        {
            continue;
        }
        let mut headers = HeaderMap::new();
        headers.insert(NATS_SCHEDULE, want.pattern.as_str());
        let Some((tenant, workflow, name)) = subject::parse_schedule(subject) else {
            continue;
        };
        headers.insert(
            NATS_SCHEDULE_TARGET,
            subject::tick(tenant, workflow, name).as_str(),
        );
        headers.insert(NATS_SCHEDULE_ROLLUP, NATS_SCHEDULE_ROLLUP_SUB);
        if let Some(zone) = &want.time_zone {
            headers.insert(NATS_SCHEDULE_TIME_ZONE, zone.as_str());
        }
        let expected = last.as_ref().map_or(0, |m| m.sequence);
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        let published = shared
            .js
            .publish_with_headers(subject.clone(), headers, want.body.clone().into())
            .await
            .map_err(|e| Error::bus("publishing a schedule", e))?
            .await;
        match published {
            Ok(_) => info!(%subject, pattern = %want.pattern, "schedule set"),
            // Another replica replaced it first; the next pass compares again.
            Err(e) if e.to_string().contains("wrong last sequence") => {
                debug!(%subject, "another replica set this schedule first");
            }
            Err(e) => return Err(Error::bus("publishing a schedule", e)),
        }
    }
    for subject in present.difference(&wanted.keys().cloned().collect()) {
        let Some((tenant, workflow, name)) = subject::parse_schedule(subject) else {
            continue;
        };
        for purged in [subject.clone(), subject::tick(tenant, workflow, name)] {
            schedules
                .purge()
                .filter(purged)
                .await
                .map_err(|e| Error::bus("removing a schedule", e))?;
        }
        info!(%subject, "schedule removed");
    }
    Ok(())
}

/// Whether the stored schedule message `m` is the one wanted.
fn same(m: &jetstream::message::StreamMessage, want: &Wanted) -> bool {
    let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
    header(NATS_SCHEDULE.as_ref()).as_deref() == Some(want.pattern.as_str())
        && header(NATS_SCHEDULE_TIME_ZONE.as_ref()) == want.time_zone
        && m.payload.as_ref() == want.body.as_slice()
}

/// Turns each tick on `orchestrator-schedules` into a start, until `shutdown`.
pub(crate) async fn ticks(
    shared: Arc<Shared>,
    consumer: PullConsumer,
    shutdown: CancellationToken,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot pull schedule ticks; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    debug!(error = %e, "schedule tick pull interrupted");
                    break;
                }
                None => break,
            };
            let (outcome, ack) = match start_for(&shared, &msg).await {
                Ok(outcome) => (outcome, AckKind::Ack),
                Err(e) => {
                    warn!(subject = %msg.subject, error = %e, "cannot start a scheduled instance; the tick comes back");
                    ("retry", AckKind::Nak(Some(Duration::from_secs(1))))
                }
            };
            shared
                .metrics
                .schedule_ticks
                .with_label_values(&[outcome])
                .inc();
            if let Err(e) = msg.ack_with(ack).await {
                debug!(error = %e, "cannot settle a schedule tick");
            }
        }
    }
}

/// Publishes the start a tick asks for; `started`, or `dropped` for a tick that cannot name
/// an instance (which never gets better by retrying).
async fn start_for(shared: &Shared, msg: &jetstream::Message) -> Result<&'static str, Error> {
    let Some((tenant, workflow, name)) = subject::parse_schedule(&msg.subject) else {
        warn!(subject = %msg.subject, "a tick on a subject that names no schedule; dropped");
        return Ok("dropped");
    };
    let tick: Tick = match serde_json::from_slice(&msg.payload) {
        Ok(t) => t,
        Err(e) => {
            warn!(subject = %msg.subject, error = %e, "a tick whose body is not a schedule's; dropped");
            return Ok("dropped");
        }
    };
    // The next firing names this one: a copy of the same firing carries the same.
    let next = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_SCHEDULE_NEXT))
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v.as_str()).ok())
        .map(|t| t.timestamp_millis());
    let Some(next) = next else {
        warn!(subject = %msg.subject, "a tick without Nats-Schedule-Next; dropped");
        return Ok("dropped");
    };
    let instance_id = instance_id(tenant, workflow, name, next);
    let start = StartWorkflow {
        tenant: tenant.to_owned(),
        workflow: workflow.to_owned(),
        instance_id: instance_id.clone(),
        version: tick.version,
        input: serde_json::to_vec(&tick.input).map_err(|e| Error::Encode {
            what: "a scheduled start's input",
            reason: e.to_string(),
        })?,
        correlation_id: instance_id.clone(),
        requested_at_ms: now_ms(),
        labels: [(SCHEDULE_LABEL.to_owned(), name.to_owned())].into(),
        not_before_ms: 0,
    };
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, instance_id.as_str());
    let ack = shared
        .js
        .publish_with_headers(
            subject::start(tenant, workflow),
            headers,
            encode_proto(&start).into(),
        )
        .await
        .map_err(|e| Error::bus("publishing a scheduled start", e))?
        .await
        .map_err(|e| Error::bus("publishing a scheduled start", e))?;
    if ack.duplicate {
        debug!(%instance_id, "this tick's start was published before");
        return Ok("duplicate");
    }
    info!(%tenant, %workflow, schedule = %name, %instance_id, "scheduled start");
    Ok("started")
}

/// The instance a firing starts: `<workflow>-<schedule>-<tenant digest>-<ms of the next
/// firing>`, or for names too long for a subject token `sched-<digest>-<ms>`. Instance ids
/// are global, so the tenant is part of it: another tenant's schedule of the same names
/// firing at the same tick names another instance.
fn instance_id(tenant: &str, workflow: &str, name: &str, next_ms: i64) -> String {
    let of = |text: String| {
        let uuid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes());
        uuid.simple().to_string()
    };
    let id = format!(
        "{workflow}-{name}-{}-{next_ms}",
        &of(tenant.to_owned())[..12]
    );
    if subject::check_token(&id).is_ok() {
        return id;
    }
    let digest = of(format!("{tenant}\u{1f}{workflow}\u{1f}{name}"));
    format!("sched-{digest}-{next_ms}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instance ids are global (the key in `WF_STATE`): two tenants with a schedule of the
    /// same name on a workflow of the same name fire at the same tick, and neither may take
    /// the other's instance id (a start for an existing id is ignored).
    #[test]
    fn two_tenants_schedules_never_name_the_same_instance() {
        assert_ne!(
            instance_id("acme", "digest", "0", 1_700_000_000_000),
            instance_id("globex", "digest", "0", 1_700_000_000_000)
        );
    }

    #[test]
    fn a_firing_names_its_instance_within_a_subject_token() {
        assert_eq!(
            instance_id("acme", "digest", "mornings", 42),
            instance_id("acme", "digest", "mornings", 42)
        );
        let long = "w".repeat(120);
        let id = instance_id("acme", &long, "mornings", 1_700_000_000_000);
        assert!(subject::check_token(&id).is_ok(), "{id}");
        assert!(
            id.starts_with("sched-") && id.ends_with("-1700000000000"),
            "{id}"
        );
        assert_eq!(
            id,
            instance_id("acme", &long, "mornings", 1_700_000_000_000)
        );
        assert_ne!(
            id,
            instance_id("acme", &long, "evenings", 1_700_000_000_000)
        );
    }
}
