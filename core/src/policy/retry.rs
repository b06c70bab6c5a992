//! When to retry a failed async event and when to give up on it (DESIGN §6, "Failures").
//!
//! Exponential backoff with full jitter: after the `n`th failed attempt the next one waits a
//! uniformly drawn time in `[0, min(cap, base * factor^(n-1))]`, which spreads retries of
//! many events that failed together instead of retrying them in lock-step. The random draw
//! is passed in (`jitter` in `[0, 1)`), so schedules are reproducible in tests. Never reads
//! a clock, sleeps or performs I/O: times are milliseconds since the Unix epoch handed in by
//! the caller, because queued events outlive the process and its monotonic clock.

use std::time::Duration;

/// The backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay. Default 1 s.
    pub base: Duration,
    /// Growth of the bound per further failure. Default 2.
    pub factor: u32,
    /// Largest delay. Default 5 minutes.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2,
            cap: Duration::from_secs(300),
        }
    }
}

/// What to do with an event after a failed attempt, or before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run it (again) at this time, in Unix milliseconds.
    RetryAt(u64),
    /// Give up: keep it in the dead-letter queue.
    DeadLetter(GiveUp),
}

/// Why an event is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// It failed `retries + 1` times.
    RetriesExhausted,
    /// It is older than its `max_event_age_s`.
    TooOld,
}

impl GiveUp {
    /// A short label for records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries-exhausted",
            Self::TooOld => "too-old",
        }
    }
}

/// One event's retry budget, as configured for its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Retries after the first attempt.
    pub retries: u32,
    /// Oldest the event may get, from `enqueued_at_ms`.
    pub max_age: Duration,
    /// When the event was accepted, Unix milliseconds.
    pub enqueued_at_ms: u64,
}

impl Budget {
    /// Whether the event is too old to run at `now_ms`. A clock that moved backwards makes
    /// the age zero, never negative: the event is kept rather than dropped early.
    pub fn expired(&self, now_ms: u64) -> bool {
        let age = now_ms.saturating_sub(self.enqueued_at_ms);
        u128::from(age) > self.max_age.as_millis()
    }
}

impl RetryPolicy {
    /// The upper bound of the delay after `failures` failed attempts (`failures >= 1`).
    pub fn bound(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1);
        let mut d = self.base;
        for _ in 0..exp {
            d = d.saturating_mul(self.factor);
            if d >= self.cap {
                return self.cap;
            }
        }
        d.min(self.cap)
    }

    /// The delay after `failures` failed attempts, with `jitter` in `[0, 1)` (values outside
    /// are clamped).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let j = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.bound(failures).mul_f64(j)
    }

    /// What to do after attempt number `attempts` (1-based) failed at `now_ms`.
    pub fn after_failure(
        &self,
        budget: &Budget,
        attempts: u32,
        now_ms: u64,
        jitter: f64,
    ) -> RetryDecision {
        if attempts > budget.retries {
            return RetryDecision::DeadLetter(GiveUp::RetriesExhausted);
        }
        let delay = u64::try_from(self.delay(attempts, jitter).as_millis()).unwrap_or(u64::MAX);
        let at = now_ms.saturating_add(delay);
        // A retry that could only start after the event's age limit is given up now.
        if budget.expired(at) {
            return RetryDecision::DeadLetter(GiveUp::TooOld);
        }
        RetryDecision::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(retries: u32) -> Budget {
        Budget {
            retries,
            max_age: Duration::from_secs(60),
            enqueued_at_ms: 1_000_000,
        }
    }

    #[test]
    fn bound_grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            factor: 2,
            cap: Duration::from_millis(1000),
        };
        let bounds: Vec<u128> = (1..=6).map(|n| p.bound(n).as_millis()).collect();
        assert_eq!(bounds, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.bound(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_bound() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(3, 7.0), Duration::from_secs(4), "clamped");
        assert_eq!(p.delay(3, f64::NAN), Duration::ZERO, "NaN is no delay");
    }

    #[test]
    fn retries_run_until_the_budget_is_spent() {
        let p = RetryPolicy::default();
        let b = budget(2);
        let now = b.enqueued_at_ms + 10;
        assert_eq!(
            p.after_failure(&b, 1, now, 0.5),
            RetryDecision::RetryAt(now + 500)
        );
        assert_eq!(
            p.after_failure(&b, 2, now, 0.5),
            RetryDecision::RetryAt(now + 1000)
        );
        assert_eq!(
            p.after_failure(&b, 3, now, 0.5),
            RetryDecision::DeadLetter(GiveUp::RetriesExhausted)
        );
        assert_eq!(
            p.after_failure(&budget(0), 1, now, 0.0),
            RetryDecision::DeadLetter(GiveUp::RetriesExhausted)
        );
    }

    #[test]
    fn a_retry_past_the_age_limit_is_given_up() {
        let p = RetryPolicy::default();
        let b = budget(10);
        let late = b.enqueued_at_ms + 59_900;
        assert_eq!(
            p.after_failure(&b, 1, late, 0.5),
            RetryDecision::DeadLetter(GiveUp::TooOld)
        );
        assert_eq!(
            p.after_failure(&b, 1, late, 0.0),
            RetryDecision::RetryAt(late),
            "an immediate retry is still within the age"
        );
    }

    #[test]
    fn a_clock_that_jumps_backwards_keeps_the_event() {
        let b = budget(1);
        assert!(!b.expired(0));
        assert!(!b.expired(b.enqueued_at_ms - 5));
        assert!(b.expired(b.enqueued_at_ms + 60_001));
        let p = RetryPolicy::default();
        assert!(matches!(
            p.after_failure(&b, 1, 3, 0.2),
            RetryDecision::RetryAt(_)
        ));
    }
}
