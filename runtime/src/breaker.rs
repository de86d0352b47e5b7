//! A circuit breaker per external system (an AI provider, an MCP server): after `failures`
//! consecutive faults it opens and fails calls at once for `open_for`; then it lets one probe
//! call through (half-open). The probe's success closes it, its failure opens it again.
//!
//! Time is passed in (`now`) rather than read, so the state machine is tested without
//! sleeping. The lock is a plain mutex held for a few instructions, never across an await.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The breaker's state as exported in a gauge (`ai_circuit_breaker_state`, `mcp_circuit_breaker_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since `since`; every other call fails fast until it reports back.
    /// A probe that never reports (its call was dropped) is replaced after `open_for`.
    HalfOpen {
        since: Instant,
    },
}

/// One provider's breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// Permission to make one call; report how it went with [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Permit {
    probe: bool,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves a consistent enum; keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        match *self.lock() {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// A permit to call now, or how long until the breaker will let a probe through.
    pub fn acquire(&self, now: Instant) -> Result<Permit, Duration> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(Permit { probe: false }),
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen { since: now };
                Ok(Permit { probe: true })
            }
            Inner::Open { until } => Err(until - now),
            Inner::HalfOpen { since } if now >= since + self.open_for => {
                *inner = Inner::HalfOpen { since: now };
                Ok(Permit { probe: true })
            }
            // The probe's outcome decides; until then, fail fast.
            Inner::HalfOpen { since } => Err(since + self.open_for - now),
        }
    }

    /// Reports a call's outcome: `fault` is a provider fault (5xx, timeout, connection);
    /// other outcomes (success, a 4xx, a 429) count as the provider being up.
    pub fn record(&self, permit: Permit, fault: bool, now: Instant) {
        let mut inner = self.lock();
        if !fault {
            *inner = Inner::Closed { failures: 0 };
            return;
        }
        *inner = match *inner {
            _ if permit.probe => Inner::Open {
                until: now + self.open_for,
            },
            Inner::Closed { failures } if failures + 1 >= self.threshold => Inner::Open {
                until: now + self.open_for,
            },
            Inner::Closed { failures } => Inner::Closed {
                failures: failures + 1,
            },
            // A call let through before the breaker opened: the breaker stays as it is.
            Inner::Open { until } => Inner::Open { until },
            Inner::HalfOpen { since } => Inner::HalfOpen { since },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    fn fail(b: &Breaker, now: Instant) {
        let permit = b.acquire(now).expect("permitted");
        b.record(permit, true, now);
    }

    #[test]
    fn opens_after_the_configured_consecutive_failures_and_fails_fast() {
        let t0 = Instant::now();
        let b = Breaker::new(3, OPEN_FOR);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), State::Open);
        let wait = b.acquire(t0 + Duration::from_secs(10)).expect_err("open");
        assert_eq!(wait, Duration::from_secs(20));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let b = Breaker::new(3, OPEN_FOR);
        fail(&b, t0);
        fail(&b, t0);
        let permit = b.acquire(t0).expect("closed");
        b.record(permit, false, t0);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes() {
        let t0 = Instant::now();
        let b = Breaker::new(1, OPEN_FOR);
        fail(&b, t0);
        let later = t0 + OPEN_FOR;
        let probe = b.acquire(later).expect("probe allowed");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(
            b.acquire(later).is_err(),
            "a second call waits for the probe"
        );
        b.record(probe, false, later);
        assert_eq!(b.state(), State::Closed);
        assert!(b.acquire(later).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_again_for_the_full_period() {
        let t0 = Instant::now();
        let b = Breaker::new(2, OPEN_FOR);
        fail(&b, t0);
        fail(&b, t0);
        let later = t0 + OPEN_FOR + Duration::from_secs(1);
        let probe = b.acquire(later).expect("probe allowed");
        b.record(probe, true, later);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.acquire(later).expect_err("open"), OPEN_FOR);
    }

    #[test]
    fn an_abandoned_probe_is_replaced_after_the_open_period() {
        let t0 = Instant::now();
        let b = Breaker::new(1, OPEN_FOR);
        fail(&b, t0);
        let _dropped_probe = b.acquire(t0 + OPEN_FOR).expect("probe allowed");
        assert!(b.acquire(t0 + OPEN_FOR + Duration::from_secs(1)).is_err());
        assert!(b.acquire(t0 + OPEN_FOR * 2).is_ok(), "a new probe");
    }
}
