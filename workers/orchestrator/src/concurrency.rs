//! Concurrency keys (ADR 20): per `<tenant>.<workflow>.<digest of the key's value>` in the KV
//! bucket `WF_CONCURRENCY`, the instances holding one of the key's `limit` slots and those
//! waiting for one, in the order they asked. Every change is a compare-and-set on the key's
//! revision, so any number of engine replicas share it. A slot is held by an *instance*, not a
//! process: it is given back by the effect of the transition that finishes the instance, which
//! is stored with the state and published again if its replica dies (ADR 4), so a dead replica
//! leaks no slot. Doing an acquire or a release twice changes nothing.
//!
//! Rate limits per key live beside them in `WF_RATES`: per key, the theoretical arrival time of
//! its next turn (GCRA), moved on by compare-and-set; a turn is a `proceed` timer due when it
//! comes. Taking a turn twice (a redelivery) wastes one: never more than the limit goes.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use switchyard_proto::{Timer, TimerKind};

use crate::{
    Error,
    instance::{Rate, Slot},
    shared::Shared,
};

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
            let empty = next.holders.is_empty() && next.waiting.is_empty();
            let written = match revision {
                // The last one out removes the key: one per key value ever used would pile up.
                Some(rev) if empty => kv
                    .purge_expect_revision(slot.key.as_str(), Some(rev))
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        if e.to_string().contains("wrong last sequence") {
                            None
                        } else {
                            Some(Error::bus("removing a concurrency key", e))
                        }
                    }),
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

/// The stored value of a rate-limited key: when its next turn is, in theory (GCRA).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Turns {
    /// Theoretical arrival time of the next turn, µs since the epoch.
    tat_us: i64,
}

/// The turn a request at `now_us` gets under a limit of `burst` at once and one per
/// `interval_us` after that, and the next theoretical arrival time.
fn next_turn(turns: Turns, now_us: i64, interval_us: u64, burst: u32) -> (i64, Turns) {
    let interval = i64::try_from(interval_us).unwrap_or(i64::MAX);
    let tolerance = interval.saturating_mul(i64::from(burst.saturating_sub(1)));
    let tat = turns.tat_us.max(now_us);
    let at = (tat.saturating_sub(tolerance)).max(now_us);
    (
        at,
        Turns {
            tat_us: tat.saturating_add(interval),
        },
    )
}

/// Takes the next turn under `rate`; returns the `proceed` timer due at it.
pub(crate) async fn reserve(shared: &Shared, rate: &Rate) -> Result<Timer, Error> {
    let kv = &shared.rates;
    for _ in 0..ATTEMPTS {
        let entry = kv
            .entry(rate.key.as_str())
            .await
            .map_err(|e| Error::bus("reading a rate limit", e))?;
        let (turns, revision) = match &entry {
            None => (Turns::default(), None),
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice(&e.value)
                    .map_err(|err| Error::bus("decoding a rate limit", err))?,
                Some(e.revision),
            ),
            Some(e) => (Turns::default(), Some(e.revision)),
        };
        let now_us = switchyard_proto::now_ms().saturating_mul(1000);
        let (at_us, next) = next_turn(turns, now_us, rate.interval_us, rate.burst);
        let bytes = serde_json::to_vec(&next).map_err(|e| Error::Encode {
            what: "a rate limit",
            reason: e.to_string(),
        })?;
        let written = match revision {
            None => kv
                .create(rate.key.as_str(), bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(Error::bus("creating a rate limit", e)),
                }),
            Some(rev) => kv
                .update(rate.key.as_str(), bytes.into(), rev)
                .await
                .map(|_| ())
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => None,
                    _ => Some(Error::bus("updating a rate limit", e)),
                }),
        };
        match written {
            Ok(()) => {}
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
        let workflow = rate.key.split('.').nth(1).unwrap_or_default();
        let waited = if at_us > now_us {
            "delayed"
        } else {
            "immediate"
        };
        shared
            .metrics
            .rate_turns
            .with_label_values(&[workflow, waited])
            .inc();
        return Ok(Timer {
            tenant: rate.tenant.clone(),
            instance_id: rate.instance.clone(),
            step_id: rate.step.clone(),
            kind: TimerKind::Proceed as i32,
            due_at_ms: at_us.div_euclid(1000) + i64::from(at_us.rem_euclid(1000) > 0),
            run: rate.run,
        });
    }
    Err(Error::Bus {
        action: "taking a rate-limit turn",
        reason: format!("{ATTEMPTS} compare-and-set conflicts in a row"),
    })
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_turn_per_interval() {
        // 10 per second: a burst of 10, then one every 100 ms.
        let (mut turns, now) = (Turns::default(), 5_000_000);
        let mut at = Vec::new();
        for _ in 0..25 {
            let (t, next) = next_turn(turns, now, 100_000, 10);
            at.push(t - now);
            turns = next;
        }
        assert!(at[..10].iter().all(|&t| t == 0), "{at:?}");
        assert_eq!(&at[10..13], [100_000, 200_000, 300_000]);
        assert_eq!(at[24], 1_500_000);
        // After a quiet while the burst is back.
        let (t, _) = next_turn(turns, now + 10_000_000, 100_000, 10);
        assert_eq!(t, now + 10_000_000);
    }
}
