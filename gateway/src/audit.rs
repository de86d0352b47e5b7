//! Audit events: who changed a definition, cancelled or signalled an instance, or was refused.
//! Each goes to `audit.<tenant>.<action>` on the `AUDIT` stream, which the ledger keeps as the
//! audit log (ADR 0006).
//!
//! An action is audited after it was accepted, without holding up the response: the record is
//! published from a task that waits for the PubAck and logs (and counts) a failure. Refused
//! credentials are sampled: per tenant and reason, the first refusal of every
//! [`REFUSAL_SAMPLE_EVERY`] is written, with how many there were since the last one written
//! (`refusals`); every refusal is counted in `switchyard_auth_failures_total`. A flood of bad
//! tokens therefore adds a bounded number of entries to the audit log, and those without
//! waiting for an ack.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use switchyard_proto::audit;
use tracing::warn;

use crate::AppState;

pub(crate) use switchyard_runtime::audit::Record;

/// Records an accepted action; the PubAck is awaited in the background.
pub(crate) fn accepted(state: &AppState, record: Record<'_>) {
    let (subject, headers, payload) = record.message();
    let js = state.bus().js.clone();
    let failures = state.metrics().audit_failures.clone();
    let action = record.action;
    state.spawn(async move {
        let stored = match js
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = stored {
            failures.inc();
            warn!(action, %error, "audit event not stored");
        }
    });
}

/// How often refused credentials of one tenant and reason are written to the audit log.
pub const REFUSAL_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Most (tenant, reason) pairs remembered; the map starts over when full.
const MAX_SAMPLED_KEYS: usize = 10_000;

/// When a key's last refusal was written, and how many came since that were not.
type Sampled = (Option<Instant>, u64);

/// Which refusals are written: per (tenant, reason), when the last was written and how many
/// came since that were not.
#[derive(Debug, Default)]
pub(crate) struct RefusalSampler {
    keys: Mutex<HashMap<(String, String), Sampled>>,
}

impl RefusalSampler {
    /// `Some(n)` when this refusal is to be written, `n` counting it and every refusal of the
    /// same key not written since the last one.
    fn sample(&self, tenant: &str, reason: &str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_SAMPLED_KEYS && !keys.contains_key(&(tenant.into(), reason.into())) {
            keys.clear();
        }
        let (last, pending) = keys
            .entry((tenant.to_owned(), reason.to_owned()))
            .or_insert((None, 0));
        *pending += 1;
        if last.is_some_and(|at| now.duration_since(at) < REFUSAL_SAMPLE_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(pending))
    }
}

/// Records refused credentials, sampled (see the module's documentation). `tenant` is
/// [`audit::ANONYMOUS_TENANT`] unless a verified token named one (a permission refusal).
pub(crate) fn refused(state: &AppState, mut record: Record<'_>) {
    debug_assert_eq!(record.action, audit::AUTH_FAILED);
    let Some(refusals) = state
        .refusals()
        .sample(record.tenant, record.outcome, Instant::now())
    else {
        return;
    };
    record
        .attributes
        .insert("refusals".to_owned(), refusals.to_string());
    let (subject, headers, payload) = record.message();
    let client = state.bus().client.clone();
    let failures = state.metrics().audit_failures.clone();
    state.spawn(async move {
        if let Err(error) = client
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            failures.inc();
            warn!(%error, "audit event not sent");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refusal_per_key_and_window_is_written_with_the_count_since_the_last() {
        let sampler = RefusalSampler::default();
        let t0 = Instant::now();
        assert_eq!(sampler.sample("_anonymous", "missing", t0), Some(1));
        for _ in 0..99 {
            assert_eq!(sampler.sample("_anonymous", "missing", t0), None);
        }
        // Another reason or tenant is its own key.
        assert_eq!(sampler.sample("_anonymous", "expired", t0), Some(1));
        assert_eq!(sampler.sample("acme", "missing", t0), Some(1));
        let later = t0 + REFUSAL_SAMPLE_EVERY;
        assert_eq!(sampler.sample("_anonymous", "missing", later), Some(100));
        assert_eq!(sampler.sample("_anonymous", "missing", later), None);
    }
}
