//! Where time comes from. Policies take `now` as an argument; the I/O shells that drive
//! them read it from a [`Clock`] they are given, so a test or the simulator can drive a
//! node's decisions by hand ([`ManualClock`]) instead of waiting for real time to pass.
//! Times that outlive the process (the region's queued events: accepted, attempted, due)
//! are Unix milliseconds from a [`WallClock`] instead of a monotonic [`Instant`].
//!
//! Never sleeps and never schedules: a clock only answers "what time is it".

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic time.
pub trait Clock: Debug + Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// A source of wall-clock time, for times stored beyond the process's life.
pub trait WallClock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's clocks: what a node uses unless its embedder gives it another.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

impl WallClock for SystemClock {
    /// Milliseconds since the Unix epoch (0 if the clock is before it).
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clocks a node reads: monotonic time for its policies (limits, leases, popularity,
/// health, staleness) and wall-clock time for what it stores. Durations a node measures
/// for reporting (a request's latency, `server-timing`) stay real time.
#[derive(Debug, Clone)]
pub struct Clocks {
    /// Monotonic time.
    pub mono: Arc<dyn Clock>,
    /// Wall-clock time.
    pub wall: Arc<dyn WallClock>,
}

impl Default for Clocks {
    /// The operating system's.
    fn default() -> Self {
        Self {
            mono: Arc::new(SystemClock),
            wall: Arc::new(SystemClock),
        }
    }
}

impl Clocks {
    /// Monotonic time from `mono`, wall-clock time from the system.
    pub fn with_mono(mono: Arc<dyn Clock>) -> Self {
        Self {
            mono,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let start = Instant::now();
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), start + Duration::from_secs(3));
    }
}
