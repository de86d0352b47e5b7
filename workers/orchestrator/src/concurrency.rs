//! Concurrency keys (ADR 20): per `<tenant>.<workflow>.<digest of the key's value>` in the KV
//! bucket `WF_CONCURRENCY`, the instances holding one of the key's `limit` slots and those
//! waiting for one, in the order they asked. Every change is a compare-and-set on the key's
//! revision, so any number of engine replicas share it. A slot is held by an *instance*, not a
//! process: it is given back by the effect of the transition that finishes the instance, which
//! is stored with the state and published again if its replica dies (ADR 4), so a dead replica
//! leaks no slot. Doing an acquire or a release twice changes nothing.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use switchyard_proto::{Timer, TimerKind};

use crate::{Error, instance::Slot, shared::Shared};

/// Compare-and-set attempts before the effect is handed back (the message is redelivered).
const ATTEMPTS: usize = 50;

/// One instance under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    instance: String,
    #[serde(default)]
    run: u32,
}

/// The stored value of a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slots {
    holders: Vec<Holder>,
    waiting: Vec<Holder>,
}

/// What an acquire or release decided: the new value (when it changed) and who to tell they
/// hold a slot.
struct Outcome {
    next: Option<Slots>,
    grant: Vec<Holder>,
    /// What changed, for `switchyard_concurrency_slots_total`: `(outcome, how many)`.
    counts: Vec<(&'static str, u64)>,
}

fn acquire(mut slots: Slots, slot: &Slot) -> Outcome {
    let me = Holder {
        instance: slot.instance.clone(),
        run: slot.run,
    };
    if slots.holders.iter().any(|h| h.instance == me.instance) {
        // Held already (a redelivery): the grant may not have been published.
        return Outcome {
            next: None,
            grant: vec![me],
            counts: Vec::new(),
        };
    }
    if slots.waiting.iter().any(|h| h.instance == me.instance) {
        return Outcome {
            next: None,
            grant: Vec::new(),
            counts: Vec::new(),
        };
    }
    if slots.holders.len() < slot.limit as usize {
        slots.holders.push(me.clone());
        Outcome {
            next: Some(slots),
            grant: vec![me],
            counts: vec![("immediate", 1)],
        }
    } else {
        slots.waiting.push(me);
        Outcome {
            next: Some(slots),
            grant: Vec::new(),
            counts: vec![("queued", 1)],
        }
    }
}

fn release(mut slots: Slots, slot: &Slot) -> Outcome {
    let before = slots.clone();
    slots.holders.retain(|h| h.instance != slot.instance);
    let released = before.holders.len() - slots.holders.len();
    slots.waiting.retain(|h| h.instance != slot.instance);
    let left = before.waiting.len() - slots.waiting.len();
    let mut dequeued = 0;
    while slots.holders.len() < slot.limit as usize && !slots.waiting.is_empty() {
        let next = slots.waiting.remove(0);
        slots.holders.push(next);
        dequeued += 1;
    }
    // Every holder is told again: one granted by a release whose replica died before
    // publishing the grant hears it now (a grant to a running instance changes nothing).
    let grant = slots.holders.clone();
    let counts = [
        ("released", released as u64),
        ("left", left as u64),
        ("dequeued", dequeued),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    Outcome {
        next: (slots != before).then_some(slots),
        grant,
        counts,
    }
}

/// Carries out an acquire (`release == false`) or a release of `slot`; returns the grant
/// timers to publish.
pub(crate) async fn carry_out(
    shared: &Shared,
    slot: &Slot,
    releasing: bool,
) -> Result<Vec<Timer>, Error> {
    let kv = &shared.concurrency;
    for _ in 0..ATTEMPTS {
        let entry = kv
            .entry(slot.key.as_str())
            .await
            .map_err(|e| Error::bus("reading a concurrency key", e))?;
        let (slots, revision) = match &entry {
            None => (Slots::default(), None),
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice(&e.value)
                    .map_err(|err| Error::bus("decoding a concurrency key", err))?,
                Some(e.revision),
            ),
            Some(e) => (Slots::default(), Some(e.revision)),
        };
        let outcome = if releasing {
            release(slots, slot)
        } else {
            acquire(slots, slot)
        };
        if let Some(next) = &outcome.next {
            let bytes = serde_json::to_vec(next).map_err(|e| Error::Encode {
                what: "a concurrency key",
                reason: e.to_string(),
            })?;
            let written = match revision {
                None => kv
                    .create(slot.key.as_str(), bytes.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(Error::bus("creating a concurrency key", e)),
                    }),
                Some(rev) => kv
                    .update(slot.key.as_str(), bytes.into(), rev)
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(Error::bus("updating a concurrency key", e)),
                    }),
            };
            match written {
                Ok(()) => {}
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        let workflow = slot.key.split('.').nth(1).unwrap_or_default();
        for (what, n) in &outcome.counts {
            shared
                .metrics
                .concurrency_slots
                .with_label_values(&[workflow, what])
                .inc_by(*n);
        }
        return Ok(outcome
            .grant
            .into_iter()
            .map(|h| Timer {
                tenant: slot.tenant.clone(),
                instance_id: h.instance,
                step_id: String::new(),
                kind: TimerKind::Grant as i32,
                due_at_ms: 0,
                run: h.run,
            })
            .collect());
    }
    Err(Error::Bus {
        action: "changing a concurrency key",
        reason: format!("{ATTEMPTS} compare-and-set conflicts in a row"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(instance: &str, limit: u32) -> Slot {
        Slot {
            key: "acme.w.k".into(),
            value: "k".into(),
            limit,
            tenant: "acme".into(),
            instance: instance.into(),
            run: 0,
        }
    }

    fn names(holders: &[Holder]) -> Vec<&str> {
        holders.iter().map(|h| h.instance.as_str()).collect()
    }

    #[test]
    fn slots_are_granted_in_order_and_twice_changes_nothing() {
        let mut slots = Slots::default();
        for i in ["a", "b", "c", "d"] {
            let out = acquire(slots.clone(), &slot(i, 2));
            slots = out.next.expect("a change");
        }
        assert_eq!(names(&slots.holders), ["a", "b"]);
        assert_eq!(names(&slots.waiting), ["c", "d"]);
        // Asking again: a holder hears its grant again, a waiter changes nothing.
        let again = acquire(slots.clone(), &slot("a", 2));
        assert!(again.next.is_none());
        assert_eq!(names(&again.grant), ["a"]);
        let again = acquire(slots.clone(), &slot("d", 2));
        assert!(again.next.is_none() && again.grant.is_empty());

        // A holder finishing lets the first waiter in.
        let out = release(slots.clone(), &slot("a", 2));
        assert_eq!(out.counts, [("released", 1), ("dequeued", 1)]);
        slots = out.next.expect("a change");
        assert_eq!(names(&slots.holders), ["b", "c"]);
        assert_eq!(names(&slots.waiting), ["d"]);
        assert_eq!(names(&out.grant), ["b", "c"]);
        // The same release again changes nothing, and tells the holders again.
        let again = release(slots.clone(), &slot("a", 2));
        assert!(again.next.is_none());
        assert_eq!(names(&again.grant), ["b", "c"]);
        // A waiter cancelled leaves the line.
        let out = release(slots.clone(), &slot("d", 2));
        assert_eq!(out.counts, [("left", 1)]);
        slots = out.next.expect("a change");
        assert!(slots.waiting.is_empty());
        assert_eq!(names(&slots.holders), ["b", "c"]);
    }
}
