//! Request-rate limits (`rate_limit_rps`) per key (a tenant or a function), on governor's
//! GCRA: each key may burst up to its rate and then refills at that rate per second.
//!
//! Sans-IO: governor runs on its [`FakeRelativeClock`], which [`RateLimits::check`]
//! advances to the injected `now` (never backwards: a clock that moves back is treated as
//! not having moved). Bounded: at most `max_keys` keys are tracked; when full, keys idle
//! for a second or more (whose bucket is full again, so forgetting them changes nothing)
//! are dropped, and if none is, a new key is refused (fails closed).

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

type Limiter =
    RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<governor::nanos::Nanos>>;

#[derive(Debug)]
struct Entry {
    rps: NonZeroU32,
    limiter: Limiter,
    last_seen: Instant,
}

/// Rate limiters keyed by name.
#[derive(Debug)]
pub struct RateLimits {
    clock: FakeRelativeClock,
    origin: Instant,
    /// Nanoseconds since `origin` the clock reads.
    at: u64,
    max_keys: usize,
    entries: HashMap<String, Entry>,
}

/// How long a refused caller should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Until the next request would conform.
    pub retry_after: Duration,
}

impl RateLimits {
    /// Limiters for at most `max_keys` keys; `origin` is the earliest `now` expected.
    pub fn new(origin: Instant, max_keys: usize) -> Self {
        Self {
            clock: FakeRelativeClock::default(),
            origin,
            at: 0,
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
        }
    }

    fn advance(&mut self, now: Instant) {
        let target = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        if target > self.at {
            self.clock.advance(Duration::from_nanos(target - self.at));
            self.at = target;
        }
    }

    /// Counts one request for `key` limited to `rps` per second at `now`.
    ///
    /// # Errors
    /// [`RateLimited`] when `key` is over its rate, or when no key can be tracked.
    pub fn check(&mut self, now: Instant, key: &str, rps: NonZeroU32) -> Result<(), RateLimited> {
        self.advance(now);
        if !self.entries.contains_key(key) && self.entries.len() >= self.max_keys {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last_seen) < Duration::from_secs(1));
            if self.entries.len() >= self.max_keys {
                return Err(RateLimited {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let clock = &self.clock;
        let entry = self.entries.entry(key.to_owned()).or_insert_with(|| Entry {
            rps,
            limiter: RateLimiter::direct_with_clock(Quota::per_second(rps), clock.clone()),
            last_seen: now,
        });
        if entry.rps != rps {
            // A changed rate starts a fresh bucket.
            entry.rps = rps;
            entry.limiter = RateLimiter::direct_with_clock(Quota::per_second(rps), clock.clone());
        }
        entry.last_seen = entry.last_seen.max(now);
        entry.limiter.check().map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(clock.now()),
        })
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rps(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn a_burst_up_to_the_rate_passes_then_is_refused_with_a_wait() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(t0, 8);
        for _ in 0..5 {
            assert!(r.check(t0, "t", rps(5)).is_ok());
        }
        let err = r.check(t0, "t", rps(5)).expect_err("over");
        assert!(err.retry_after > Duration::ZERO && err.retry_after <= Duration::from_millis(200));
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(t0, 8);
        for _ in 0..2 {
            r.check(t0, "t", rps(2)).expect("burst");
        }
        assert!(r.check(t0, "t", rps(2)).is_err());
        let later = t0 + Duration::from_millis(500);
        assert!(r.check(later, "t", rps(2)).is_ok());
        assert!(r.check(later, "t", rps(2)).is_err());
    }

    #[test]
    fn a_backwards_clock_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut r = RateLimits::new(t0, 8);
        r.check(t0 + Duration::from_secs(1), "t", rps(1))
            .expect("first");
        assert!(r.check(t0, "t", rps(1)).is_err());
        assert!(r.check(t0 + Duration::from_secs(2), "t", rps(1)).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(t0, 8);
        r.check(t0, "a", rps(1)).expect("a");
        assert!(r.check(t0, "a", rps(1)).is_err());
        assert!(r.check(t0, "b", rps(1)).is_ok());
    }

    #[test]
    fn when_full_idle_keys_make_room_and_busy_ones_refuse_new_keys() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(t0, 2);
        r.check(t0, "a", rps(1)).expect("a");
        r.check(t0, "b", rps(1)).expect("b");
        assert!(r.check(t0, "c", rps(1)).is_err(), "both busy");
        let later = t0 + Duration::from_secs(1);
        assert!(r.check(later, "c", rps(1)).is_ok(), "a and b idle");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_changed_rate_takes_effect() {
        let t0 = Instant::now();
        let mut r = RateLimits::new(t0, 8);
        r.check(t0, "t", rps(1)).expect("first");
        assert!(r.check(t0, "t", rps(1)).is_err());
        assert!(r.check(t0, "t", rps(3)).is_ok());
    }
}
