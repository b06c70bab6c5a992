//! The wall clock of the async queue. Queued events outlive the process, so their times
//! (accepted, attempted, due) are Unix milliseconds rather than a monotonic [`Instant`];
//! the queue reads time only through a [`WallClock`] handed to it, so a test moves time by
//! hand (an event "an hour old" without waiting an hour) instead of sleeping. Never
//! performs I/O.
//!
//! [`Instant`]: std::time::Instant

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the async queue reads the time.
pub trait WallClock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock: what a region uses unless its embedder gives it another.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    /// Milliseconds since the Unix epoch (0 if the clock is before it).
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
