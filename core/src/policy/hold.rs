//! When a held execution slot is next likely to free, for the `retry-after` of a 429: a
//! smoothed mean of how long slots are held, and the expected wait for the first of `n`
//! held slots to end.
//!
//! The estimate treats holds as memoryless: with `n` slots held and a mean hold of `h`,
//! the first ends after about `h / n`. Clamped to [`MIN_WAIT`, `MAX_WAIT`], so a client
//! neither spins nor waits out a minute on a guess. Pure: durations in, durations out.

use std::time::Duration;

/// The shortest wait a 429 names.
pub const MIN_WAIT: Duration = Duration::from_millis(10);
/// The longest wait a 429 names.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// The wait named before any hold was seen.
pub const UNOBSERVED_WAIT: Duration = Duration::from_secs(1);

/// The weight of a new hold in the mean: 1/8, as TCP smooths its round-trip time.
const SHIFT: u32 = 3;

/// A smoothed mean of how long slots are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldTime {
    /// Mean hold in microseconds; `None` before the first.
    mean_us: Option<u64>,
}

impl HoldTime {
    /// Counts one slot held for `held_for`.
    pub fn record(&mut self, held_for: Duration) {
        let us = u64::try_from(held_for.as_micros()).unwrap_or(u64::MAX);
        self.mean_us = Some(match self.mean_us {
            None => us,
            // mean += (us - mean) / 8, in integers.
            Some(m) => m - (m >> SHIFT) + (us >> SHIFT),
        });
    }

    /// The mean hold, once one was recorded.
    pub fn mean(&self) -> Option<Duration> {
        self.mean_us.map(Duration::from_micros)
    }

    /// The expected wait for the first of `held` slots to free.
    pub fn next_free(&self, held: u32) -> Duration {
        match self.mean_us {
            None => UNOBSERVED_WAIT,
            Some(m) => Duration::from_micros(m / u64::from(held.max(1))),
        }
        .clamp(MIN_WAIT, MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_holds_and_the_slots_held() {
        let mut h = HoldTime::default();
        assert_eq!(h.next_free(4), UNOBSERVED_WAIT, "nothing seen yet");
        h.record(Duration::from_millis(800));
        assert_eq!(h.next_free(1), Duration::from_millis(800));
        assert_eq!(h.next_free(4), Duration::from_millis(200));
        for _ in 0..64 {
            h.record(Duration::from_millis(80));
        }
        let mean = h.mean().expect("seen");
        assert!(
            mean < Duration::from_millis(82),
            "{mean:?} converges to 80 ms"
        );
        assert_eq!(h.next_free(1_000), MIN_WAIT, "never below the floor");
        h.record(Duration::from_secs(3600));
        assert_eq!(h.next_free(1), MAX_WAIT, "never above the ceiling");
    }
}
