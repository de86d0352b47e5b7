//! Rate limits per route group, counted per tenant (per user for research), with the GCRA
//! limiter of `governor`. A request over its group's rate is answered 429 with `Retry-After`.
//!
//! Each replica counts on its own: with N gateways behind a balancer a tenant gets up to N
//! times the configured rate. The limits protect the bus and the workers from one tenant's
//! burst; billing-grade quotas come from the usage ledger instead.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use switchyard_runtime::config::{RateLimit, RateLimits, RatePeriod};

use crate::auth::Caller;

/// Keys tracked per group before idle ones are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// Which limit a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Trigger and execute.
    Start,
    /// Cancel and signal.
    Control,
    /// Status, instances, events, definitions reads, registry.
    Read,
    /// Registering, deleting, validating definitions.
    Definitions,
    /// Research requests, counted per user.
    Research,
    /// Health, readiness, metrics and the OpenAPI document: no token, no limit.
    Open,
    /// Refused credentials, counted per client address before any token is checked.
    Refused,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Start => "start",
            Group::Control => "control",
            Group::Read => "read",
            Group::Definitions => "definitions",
            Group::Research => "research",
            Group::Open => "open",
            Group::Refused => "refused",
        }
    }

    /// The key a request is counted under: the user for research (the product's "10 an hour
    /// per user"), the tenant otherwise.
    fn key(self, caller: &Caller) -> String {
        match self {
            Group::Research => format!("{}\n{}", caller.tenant, caller.subject),
            _ => caller.tenant.clone(),
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
type ByAddress = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

/// One limiter per limited group.
#[derive(Debug)]
pub struct Limits {
    clock: DefaultClock,
    start: Option<Keyed>,
    control: Option<Keyed>,
    read: Option<Keyed>,
    definitions: Option<Keyed>,
    research: Option<Keyed>,
    refused: Option<ByAddress>,
    /// Client addresses over their refused-credentials rate, until when. Read on every
    /// request, written only when an address crosses its rate or its time is up.
    blocked: RwLock<HashMap<IpAddr, Instant>>,
}

impl Limits {
    pub fn new(settings: &RateLimits) -> Self {
        let clock = DefaultClock::default();
        let make = |limit: RateLimit| {
            quota(limit).map(|q| RateLimiter::dashmap_with_clock(q, clock.clone()))
        };
        Limits {
            start: make(settings.start),
            control: make(settings.control),
            read: make(settings.read),
            definitions: make(settings.definitions),
            research: make(settings.research),
            refused: quota(settings.refused)
                .map(|q| RateLimiter::dashmap_with_clock(q, clock.clone())),
            blocked: RwLock::new(HashMap::new()),
            clock,
        }
    }

    /// Whether `address` may be heard at all: not while it is over its rate of refused
    /// credentials (see [`Limits::refused`]).
    pub fn check_address(&self, address: IpAddr) -> Result<(), Limited> {
        if self.refused.is_none() {
            return Ok(());
        }
        let until = self
            .blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&address)
            .copied();
        let Some(until) = until else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            return Err(Limited {
                group: Group::Refused,
                retry_after: until - now,
            });
        }
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&address);
        Ok(())
    }

    /// Counts refused credentials from `address`; over the rate, the address is answered 429
    /// before its token is checked until the rate allows again, and this refusal is too.
    pub fn refused(&self, address: IpAddr) -> Option<Limited> {
        let limiter = self.refused.as_ref()?;
        if limiter.len() > PRUNE_ABOVE {
            limiter.retain_recent();
        }
        let not_until = limiter.check_key(&address).err()?;
        let retry_after = not_until.wait_time_from(self.clock.now());
        let now = Instant::now();
        let mut blocked = self.blocked.write().unwrap_or_else(|p| p.into_inner());
        if blocked.len() > PRUNE_ABOVE {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(address, now + retry_after);
        Some(Limited {
            group: Group::Refused,
            retry_after,
        })
    }

    /// Counts one request of `caller` against `group`; an error says when to come back.
    pub fn check(&self, group: Group, caller: &Caller) -> Result<(), Limited> {
        let limiter = match group {
            Group::Start => &self.start,
            Group::Control => &self.control,
            Group::Read => &self.read,
            Group::Definitions => &self.definitions,
            Group::Research => &self.research,
            Group::Open | Group::Refused => &None,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if limiter.len() > PRUNE_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(&group.key(caller)).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Limited {
                group,
                retry_after: wait,
            }
        })
    }
}

/// A request over its group's rate (the gateway answers 429 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub group: Group,
    /// When the caller may come back.
    pub retry_after: Duration,
}

/// The GCRA quota of a limit: `n` per period, a burst of up to `n`.
fn quota(limit: RateLimit) -> Option<Quota> {
    let RateLimit::Every { requests, period } = limit else {
        return None;
    };
    let n = NonZeroU32::new(requests)?;
    Some(match period {
        RatePeriod::Second => Quota::per_second(n),
        RatePeriod::Minute => Quota::per_minute(n),
        RatePeriod::Hour => Quota::per_hour(n),
    })
}

/// `Retry-After` in whole seconds, rounded up and at least 1, so a client that waits that
/// long is let through.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Open event streams, capped per tenant and in all: each holds a consumer on the server
/// for as long as its client stays connected, so a rate limit alone does not bound them.
#[derive(Debug)]
pub struct StreamSlots {
    per_tenant: usize,
    total: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_tenant: HashMap<String, usize>,
}

/// One open event stream, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    tenant: String,
}

/// An event stream over a cap (the gateway answers 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsFull {
    /// `true` for the tenant's cap, `false` for the gateway's.
    pub tenant: bool,
    pub limit: usize,
}

impl StreamSlots {
    pub fn new(per_tenant: usize, total: usize) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            per_tenant,
            total,
            open: Mutex::new(OpenStreams::default()),
        })
    }

    /// A slot for one more of `tenant`'s streams, unless a cap is reached.
    pub fn acquire(self: &Arc<Self>, tenant: &str) -> Result<StreamSlot, StreamsFull> {
        let mut open = self.lock();
        let mine = open.by_tenant.get(tenant).copied().unwrap_or(0);
        if mine >= self.per_tenant {
            return Err(StreamsFull {
                tenant: true,
                limit: self.per_tenant,
            });
        }
        if open.total >= self.total {
            return Err(StreamsFull {
                tenant: false,
                limit: self.total,
            });
        }
        open.total += 1;
        open.by_tenant.insert(tenant.to_owned(), mine + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        // Counters stay consistent even if a holder panicked.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn caller(tenant: &str, subject: &str) -> Caller {
        Caller {
            tenant: tenant.into(),
            subject: subject.into(),
            roles: vec![Role::Operator],
        }
    }

    #[test]
    fn a_burst_over_the_rate_is_refused_per_tenant_with_a_retry_time() {
        let limits = Limits::new(&RateLimits {
            start: RateLimit::per(3, RatePeriod::Minute),
            ..RateLimits::default()
        });
        let a = caller("a", "u1");
        for _ in 0..3 {
            limits.check(Group::Start, &a).expect("within the burst");
        }
        match limits.check(Group::Start, &a) {
            Err(Limited { group, retry_after }) => {
                assert_eq!(group, Group::Start);
                // One request in 20 s is the steady rate of 3/min.
                assert!(retry_after <= Duration::from_secs(20), "{retry_after:?}");
                assert!(retry_after >= Duration::from_secs(19), "{retry_after:?}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        limits
            .check(Group::Start, &caller("b", "u1"))
            .expect("another tenant has its own budget");
        limits
            .check(Group::Read, &a)
            .expect("another group has its own budget");
    }

    #[test]
    fn every_group_has_its_own_rate_and_budget() {
        let one = || RateLimit::per(1, RatePeriod::Hour);
        let limits = Limits::new(&RateLimits {
            start: one(),
            control: one(),
            read: one(),
            definitions: one(),
            research: one(),
            ..RateLimits::default()
        });
        let a = caller("a", "u1");
        let groups = [
            Group::Start,
            Group::Control,
            Group::Read,
            Group::Definitions,
            Group::Research,
        ];
        for group in groups {
            limits.check(group, &a).expect("the first in its group");
        }
        for group in groups {
            let refused = limits
                .check(group, &a)
                .expect_err("the second in its group");
            assert_eq!(refused.group, group);
        }
        for group in [Group::Open, Group::Refused] {
            for _ in 0..100 {
                limits.check(group, &a).expect("not limited per tenant");
            }
        }
    }

    #[test]
    fn research_counts_per_user_and_off_means_unlimited() {
        let limits = Limits::new(&RateLimits {
            research: RateLimit::per(1, RatePeriod::Hour),
            read: RateLimit::Off,
            ..RateLimits::default()
        });
        limits
            .check(Group::Research, &caller("a", "u1"))
            .expect("first");
        assert!(limits.check(Group::Research, &caller("a", "u1")).is_err());
        limits
            .check(Group::Research, &caller("a", "u2"))
            .expect("another user of the same tenant");
        for _ in 0..10_000 {
            limits.check(Group::Read, &caller("a", "u1")).expect("off");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn event_streams_are_capped_per_tenant_and_in_all_and_given_back_on_drop() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.acquire("a").unwrap();
        let _a2 = slots.acquire("a").unwrap();
        assert_eq!(
            slots.acquire("a").unwrap_err(),
            StreamsFull {
                tenant: true,
                limit: 2
            }
        );
        let _b1 = slots.acquire("b").unwrap();
        assert_eq!(
            slots.acquire("b").unwrap_err(),
            StreamsFull {
                tenant: false,
                limit: 3
            }
        );
        drop(a1);
        let _b2 = slots.acquire("b").unwrap();
        assert!(slots.acquire("a").is_err(), "the gateway is full again");
    }
}
