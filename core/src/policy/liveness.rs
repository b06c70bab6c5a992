//! Liveness of a POP's region connections: when a silent region is suspected dead, and
//! when to try reconnecting to one that is.
//!
//! Owns two small state machines, one per region connection:
//! - [`Silence`]: the transport keeps every connection chatty (keep-alives every fraction
//!   of [`LivenessConfig::suspect_after`], answered by the peer's acknowledgements), so a
//!   peer from which nothing at all arrived for `suspect_after` is suspected dead, long
//!   before the transport's idle timeout. The driver feeds it the connection's running
//!   count of received datagrams; any increase is "heard".
//! - [`Reconnect`]: after a region was found dead (or could not be reached), attempts to
//!   connect again start at once, then after a back-off that starts at
//!   [`LivenessConfig::first_backoff`] and doubles up to [`LivenessConfig::max_backoff`],
//!   so a returning region is used within about `max_backoff` of listening again.
//!   Attempts may overlap (a handshake to a dead address only ends at its timeout); the
//!   driver bounds how many are in flight.
//!
//! The failover rule that goes with them lives in [`super::region::RegionChoice`]: a region
//! marked down ([`super::region::RegionChoice::handle_down`]) is never chosen until it is
//! up again, so new forwards go to another region or fail fast with 503 instead of waiting
//! on a dead connection or a handshake.
//!
//! Never performs I/O and never reads a clock: the POP passes `now` in.

use std::time::{Duration, Instant};

/// Tuning of region liveness at a POP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How long a connection may hear nothing from its region before the region is
    /// suspected dead and the connection dropped. Default 1 s.
    pub suspect_after: Duration,
    /// Wait between the first and the second reconnect attempt. Default 50 ms.
    pub first_backoff: Duration,
    /// Longest wait between reconnect attempts. Default 400 ms.
    pub max_backoff: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            suspect_after: Duration::from_secs(1),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
        }
    }
}

impl LivenessConfig {
    /// The keep-alive interval that keeps a healthy connection audible: a quarter of
    /// `suspect_after` (at least 10 ms), so three lost keep-alives in a row are tolerated
    /// before a live region is suspected.
    pub fn keep_alive(&self) -> Duration {
        (self.suspect_after / 4).max(Duration::from_millis(10))
    }

    /// How often the driver should sample a connection: often enough that a silence is
    /// noticed within a tenth of `suspect_after` (at least every 5 ms).
    pub fn sample_every(&self) -> Duration {
        (self.suspect_after / 10).max(Duration::from_millis(5))
    }
}

/// Silence detector for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    suspect_after: Duration,
    /// When the received count last increased (or the connection was established).
    heard_at: Instant,
    /// The received count seen last.
    received: u64,
}

impl Silence {
    /// A detector for a connection established at `now`, whose transport had received
    /// `received` datagrams then.
    pub fn new(config: &LivenessConfig, now: Instant, received: u64) -> Self {
        Self {
            suspect_after: config.suspect_after,
            heard_at: now,
            received,
        }
    }

    /// The connection's running count of received datagrams at `now`. Any increase means
    /// the peer was heard from. A count that went down (a new connection's counter) is
    /// taken as heard too, never as silence.
    pub fn handle_received(&mut self, now: Instant, received: u64) {
        if received != self.received {
            self.received = received;
            self.heard_at = self.heard_at.max(now);
        }
    }

    /// Whether nothing has been heard for `suspect_after` at `now`.
    pub fn is_suspect(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.heard_at) >= self.suspect_after
    }

    /// When the peer becomes suspect if nothing is heard before.
    pub fn poll_timeout(&self) -> Instant {
        self.heard_at + self.suspect_after
    }
}

/// Reconnect schedule for one region that is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    max: Duration,
    /// The wait after the next attempt.
    delay: Duration,
    /// When the next attempt is due.
    next_at: Instant,
}

impl Reconnect {
    /// A schedule for a region found down at `now`: the first attempt is due at once.
    pub fn new(config: &LivenessConfig, now: Instant) -> Self {
        let first = config.first_backoff.max(Duration::from_millis(1));
        Self {
            max: config.max_backoff.max(first),
            delay: first,
            next_at: now,
        }
    }

    /// Whether an attempt is due at `now`; when it is, the next one is scheduled after the
    /// current back-off, which then doubles (up to the cap).
    pub fn poll_attempt(&mut self, now: Instant) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + self.delay;
        self.delay = self.delay.saturating_mul(2).min(self.max);
        true
    }

    /// When the next attempt is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_chatty_peer_is_never_suspected() {
        let config = LivenessConfig::default();
        let t0 = Instant::now();
        let mut s = Silence::new(&config, t0, 10);
        for i in 1..=100u64 {
            let now = t0 + ms(250 * i);
            s.handle_received(now, 10 + i);
            assert!(!s.is_suspect(now), "suspected at {i}");
        }
    }

    #[test]
    fn a_silent_peer_is_suspected_after_suspect_after_not_before() {
        let config = LivenessConfig::default();
        let t0 = Instant::now();
        let mut s = Silence::new(&config, t0, 5);
        s.handle_received(t0 + ms(300), 6);
        // The same count again is not "heard".
        s.handle_received(t0 + ms(900), 6);
        assert!(!s.is_suspect(t0 + ms(1299)));
        assert_eq!(s.poll_timeout(), t0 + ms(1300));
        assert!(s.is_suspect(t0 + ms(1300)));
    }

    #[test]
    fn a_clock_going_back_never_extends_or_shortens_silence_wrongly() {
        let config = LivenessConfig::default();
        let t0 = Instant::now();
        let mut s = Silence::new(&config, t0 + ms(500), 0);
        s.handle_received(t0, 1);
        assert_eq!(s.poll_timeout(), t0 + ms(1500));
        assert!(!s.is_suspect(t0));
    }

    #[test]
    fn reconnect_attempts_start_at_once_and_back_off_to_the_cap() {
        let config = LivenessConfig::default();
        let t0 = Instant::now();
        let mut r = Reconnect::new(&config, t0);
        assert!(r.poll_attempt(t0));
        assert!(!r.poll_attempt(t0 + ms(49)));
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..6 {
            let next = r.poll_timeout();
            gaps.push(next.duration_since(now));
            now = next;
            assert!(r.poll_attempt(now));
        }
        assert_eq!(
            gaps,
            vec![ms(50), ms(100), ms(200), ms(400), ms(400), ms(400)]
        );
    }

    #[test]
    fn keep_alives_and_samples_fit_inside_the_suspicion_window() {
        let config = LivenessConfig::default();
        assert_eq!(config.keep_alive(), ms(250));
        assert_eq!(config.sample_every(), ms(100));
        let tiny = LivenessConfig {
            suspect_after: ms(1),
            ..config
        };
        assert_eq!(tiny.keep_alive(), ms(10));
        assert_eq!(tiny.sample_every(), ms(5));
    }

    #[test]
    fn a_zero_first_backoff_never_spins() {
        let config = LivenessConfig {
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..LivenessConfig::default()
        };
        let t0 = Instant::now();
        let mut r = Reconnect::new(&config, t0);
        assert!(r.poll_attempt(t0));
        assert!(!r.poll_attempt(t0));
        assert!(r.poll_attempt(t0 + ms(1)));
    }
}
