//! One tenant's concurrency lease at a POP, and the rules that change it: drawing a slot, applying
//! a region's grant, and what a renewal round gives back. Sans-IO: every event carries
//! `now`, and the outputs are numbers the I/O shell (the POP's `leases`
//! module) sends on.
//!
//! Never reads a clock, sends a message or spawns; `granted` changes only by a region's
//! reply (to that region's count) and by a renewal round (down, before the return is
//! sent), never otherwise.
//!
//! What may be in flight at once is a rule of this module too: at most one lease message
//! of a tenant ([`Book::wants`] and [`Book::round`] start one only when the book has none
//! in flight, [`Book::done`] ends it), so a reply to a tenant's message is never overtaken
//! by another of that tenant's; different tenants' messages go concurrently, a renewal
//! round's at most [`ROUND_CONCURRENCY`] at a time.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

/// How many tenants' messages a renewal round has in flight at once. Each tenant's are
/// sent in order (its return, then its renewal), and different tenants' concurrently, so
/// a round of `n` tenants takes about `n / ROUND_CONCURRENCY` round trips (two for a
/// tenant that gives slots back): at 50 ms RTT and a 1 s renewal period, 64 keep up to
/// about 1 280 tenants per POP renewed in time. A bound, so that a POP with many tenants
/// does not open thousands of streams to its region at once (a region lets a POP have
/// `transport::MAX_CONCURRENT_STREAMS`, shared with its forwards).
pub const ROUND_CONCURRENCY: usize = 64;

/// What the renewal rule needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRule {
    /// Slots asked for at a time; a busy tenant keeps at least this many free, an idle
    /// one at most this many.
    pub batch: u32,
    /// How long after its last draw an idle tenant keeps its floor of free slots; zero
    /// gives every free slot back after one quiet round.
    pub idle_hold: Duration,
}

/// The highest value seen over the last one to two `window`s: two buckets, the open one
/// and the one before it, rotated when the open one is a window old.
#[derive(Debug, Clone, Copy)]
struct WindowPeak {
    since: Instant,
    open: u32,
    before: u32,
}

impl WindowPeak {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            open: 0,
            before: 0,
        }
    }

    fn rotate(&mut self, now: Instant, window: Duration) {
        // A clock that moves backwards is treated as not having moved.
        let age = now.saturating_duration_since(self.since);
        if window.is_zero() || age < window {
            return;
        }
        self.before = if age < window.saturating_mul(2) {
            self.open
        } else {
            0
        };
        self.open = 0;
        self.since = now;
    }

    fn observe(&mut self, now: Instant, window: Duration, value: u32) {
        self.rotate(now, window);
        self.open = self.open.max(value);
    }

    fn peak(&mut self, now: Instant, window: Duration) -> u32 {
        self.rotate(now, window);
        self.open.max(self.before)
    }
}

/// One tenant's lease, tagged with the region whose books count it (`R`: its address).
#[derive(Debug, Clone)]
pub struct Book<R> {
    /// Slots `region` counts as leased to this POP (as far as this POP knows).
    granted: u32,
    /// Running invocations that drew a slot (from this lease or an earlier region's).
    in_use: u32,
    /// Which region granted `granted`; `None` before the first grant.
    region: Option<R>,
    /// Draws stop at this instant unless a renewal moves it.
    valid_until: Option<Instant>,
    /// An acquire is in flight.
    asking: bool,
    /// A lease message of this tenant is in flight (an acquire, or a round's return or
    /// renewal, and a lease move's return after either): no other is sent until it ends.
    sending: bool,
    /// A draw ran low while a message that was not an acquire was in flight: ask when it
    /// ends ([`Book::done`]).
    wanted: bool,
    /// Something was drawn since the last renewal round.
    drew: bool,
    /// When something was last drawn.
    last_draw: Option<Instant>,
    /// The most slots in use at once over the last one to two hold windows.
    peak: WindowPeak,
}

impl<R: Copy + PartialEq> Book<R> {
    /// An empty book opened at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            granted: 0,
            in_use: 0,
            region: None,
            valid_until: None,
            asking: false,
            sending: false,
            wanted: false,
            drew: false,
            last_draw: None,
            peak: WindowPeak::new(now),
        }
    }

    /// Granted slots not drawn.
    pub fn free(&self) -> u32 {
        self.granted.saturating_sub(self.in_use)
    }

    /// (granted, in use).
    pub fn holding(&self) -> (u32, u32) {
        (self.granted, self.in_use)
    }

    /// The region counting this lease.
    pub fn region(&self) -> Option<R> {
        self.region
    }

    /// Whether the lease may be drawn from at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }

    /// Nothing held, nothing running, no message in flight: the book may be dropped. (A
    /// book whose last slots are on their way back is kept until the return ends, so that
    /// a new book of the tenant cannot send an acquire alongside it.)
    pub fn empty(&self) -> bool {
        self.granted == 0 && self.in_use == 0 && !self.sending
    }

    /// Whether a lease message of this tenant is in flight.
    pub fn sending(&self) -> bool {
        self.sending
    }

    /// Whether the book is in its idle hold: nothing in use, nothing drawn this round nor
    /// asked for. Its hold may be ended to make room for a tenant that draws now.
    pub fn idle(&self) -> bool {
        self.in_use == 0 && !self.asking && !self.drew && self.last_draw.is_some()
    }

    /// When something was last drawn (eviction picks the oldest).
    pub fn last_draw(&self) -> Option<Instant> {
        self.last_draw
    }

    /// Draws one slot at `now` if the lease is valid and has one free.
    pub fn draw(&mut self, now: Instant, rule: &HoldRule) -> bool {
        if !self.valid(now) || self.free() == 0 {
            return false;
        }
        self.record_draw(now, rule);
        true
    }

    /// Draws one slot at `now` while lease messages are stalled ([`Answers::stalled`]):
    /// from the lease as [`Book::draw`] does if it can, else beyond its validity and its
    /// free slots, as long as fewer than `max(granted, batch)` are in use. Such a draw is
    /// uncounted once the region reclaims the lease (or if it never granted one), so the
    /// cap bounds what this POP can add to the tenant's global count while its region does
    /// not answer: the lease the region last counted, at least a batch.
    pub fn draw_stalled(&mut self, now: Instant, rule: &HoldRule) -> bool {
        if self.draw(now, rule) {
            return true;
        }
        if self.in_use >= self.granted.max(rule.batch) {
            return false;
        }
        self.record_draw(now, rule);
        true
    }

    /// After a draw at `now`: whether to ask the region for more, and how many. Asks when
    /// the lease is not valid or has fewer than a batch free, and no message of this
    /// tenant is in flight; it then marks an acquire in flight, which the shell ends with
    /// [`Book::done`] when the answer or the failure is in. While a round's message is in
    /// flight it asks nothing but remembers, and [`Book::done`] asks then. A busy tenant's
    /// lease grows geometrically: it asks for as many as are in use, at least a batch.
    pub fn wants(&mut self, now: Instant, rule: &HoldRule) -> Option<u32> {
        let low = !self.valid(now) || self.free() < rule.batch;
        if !low || self.asking {
            return None;
        }
        if self.sending {
            self.wanted = true;
            return None;
        }
        self.asking = true;
        self.sending = true;
        Some(rule.batch.max(self.in_use))
    }

    /// The tenant's message in flight (and any return a lease move added after it) ended
    /// at `now`, answered or not: the next may go. Returns the acquire to send now when a
    /// draw ran low meanwhile and the lease is still low ([`Book::wants`]).
    pub fn done(&mut self, now: Instant, rule: &HoldRule) -> Option<u32> {
        self.sending = false;
        self.asking = false;
        if std::mem::take(&mut self.wanted) {
            self.wants(now, rule)
        } else {
            None
        }
    }

    /// This tenant's part of a renewal round at `now`: settles the book ([`Book::settle`])
    /// and says what to send, in order, marking it in flight until [`Book::done`]; `None`
    /// when there is nothing to send, or when a message of the tenant is in flight (an
    /// acquire: its answer renews the lease, as a renewal would, and the next round
    /// settles the book).
    pub fn round(&mut self, now: Instant, rule: &HoldRule) -> Option<RoundStep<R>> {
        if self.sending {
            return None;
        }
        let surplus = self.settle(now, rule);
        let step = RoundStep {
            give_back: self.region.filter(|_| surplus > 0).map(|r| (r, surplus)),
            renew: self.granted > 0,
        };
        if step.give_back.is_none() && !step.renew {
            return None;
        }
        self.sending = true;
        Some(step)
    }

    fn record_draw(&mut self, now: Instant, rule: &HoldRule) {
        self.in_use += 1;
        self.drew = true;
        self.last_draw = Some(now);
        self.peak.observe(now, rule.idle_hold, self.in_use);
    }

    /// A drawn slot's invocation ended.
    pub fn finish(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// Applies a reply of `region`, which counts `held` slots as leased to this POP after
    /// handling the request, valid until `valid_until`. Returns the slots to give back to
    /// the region that counted the lease before, when `region` is another one.
    ///
    /// The replying region's count becomes the lease: a tenant has one lease message in
    /// flight at a time and `granted` changes only in a round before its return is sent
    /// (see the module docs), so none of this tenant's returns is in flight and `held` is
    /// exactly what that region counts (it may have reclaimed an expired lease, or kept
    /// slots whose return was lost). When the POP moved to another region, the old lease
    /// is no longer drawn from: its free slots go back to the old region, and those in use
    /// stay counted there until they end (it reclaims them `ttl + grace` after the last
    /// renewal, longer than any invocation); they take slots of the new lease too, so the
    /// new region counts everything drawn from then on.
    ///
    /// A lease that moved to a region counting fewer slots than the book kept (a failover:
    /// the renewal reached a region that counts nothing for this POP) is asked for when
    /// the message ends ([`Book::done`]), so a quiet tenant's idle hold moves with it:
    /// left at zero, the book would be dropped after the round and the tenant's next call
    /// forwarded while a lease is fetched again.
    pub fn granted(&mut self, region: R, held: u32, valid_until: Instant) -> Option<(R, u32)> {
        let back = match self.region {
            Some(old) if old != region => {
                self.wanted |= held < self.granted;
                Some((old, self.free())).filter(|(_, n)| *n > 0)
            }
            _ => None,
        };
        self.granted = held;
        self.region = Some(region);
        self.valid_until = Some(valid_until);
        back
    }

    /// One renewal round at `now`: removes the slots to give back from the local count
    /// (before they are sent, so the region's count never drops below what is drawn) and
    /// returns how many.
    ///
    /// - Drew this round (busy): keeps free slots as many as are in use, at least a batch,
    ///   so a steady load is not forwarded while the lease regrows after each round.
    /// - Quiet, but drew within `idle_hold`: keeps a floor of free slots, the peak in use
    ///   over the last one to two hold windows, at least 1 and at most a batch, so the
    ///   next request (or burst of that size) runs here instead of being forwarded while
    ///   a new lease is fetched.
    /// - Quiet for longer: gives back every free slot.
    pub fn settle(&mut self, now: Instant, rule: &HoldRule) -> u32 {
        let holding = self
            .last_draw
            .is_some_and(|t| now.saturating_duration_since(t) < rule.idle_hold);
        let keep = if self.drew {
            rule.batch.max(self.in_use)
        } else if holding {
            self.peak
                .peak(now, rule.idle_hold)
                .clamp(1, rule.batch.max(1))
        } else {
            0
        };
        let surplus = self.free().saturating_sub(keep);
        self.granted -= surplus;
        self.drew = false;
        surplus
    }

    /// Ends the idle hold now (to make room for another tenant): the next round gives
    /// every free slot back, and the book is dropped once nothing runs on it.
    pub fn end_hold(&mut self) {
        self.last_draw = None;
    }
}

/// What a renewal round sends for one tenant, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundStep<R> {
    /// Slots to give back, already removed from the local count, and the region counting
    /// them.
    pub give_back: Option<(R, u32)>,
    /// Whether to renew the lease (it still holds slots).
    pub renew: bool,
}

/// How often a POP renews its leases, and how long a lease message may go unanswered
/// before its leases stall ([`Answers::stalled`]): a third of the lease TTL, at least
/// 10 ms. A renewal sent at `t` keeps a lease valid until `t + ttl`, so one missed
/// renewal period is noticed before the lease it counts expires.
pub fn renew_every(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

/// How long a region keeps counting a lease that was not renewed before reclaiming it:
/// the TTL plus a grace longer than any invocation may run, so nothing drawn from a lease
/// runs uncounted while its region answers.
pub fn reclaim_after(ttl: Duration, grace: Duration) -> Duration {
    ttl.saturating_add(grace)
}

/// Whether regions answer this POP's lease messages: the stall rule. A reply from any
/// region (a grant, or a region's refusal: it answered) shows that regions answered
/// everything sent before it arrived; what counts is the oldest message sent since the last
/// reply that has none of its own: still in flight, or failed without a reply (the
/// connection died, no region could be reached: nothing answered).
///
/// Stalled means that message was sent at least `after` ago. The shell uses a third of the
/// lease TTL, one renewal period: a renewal sent at `t` extends a lease that is valid until
/// `t + 2/3 ttl` at best, so a region that stops answering is noticed before the lease it
/// counts expires, and a healthy region answers in one round trip, far below it. Messages
/// of different tenants go concurrently ([`ROUND_CONCURRENCY`]), so a region that dies
/// while a round is in flight is noticed `after` the first message it left unanswered,
/// even when it answered some sent before that.
///
/// Bounded: one entry per message in flight (at most one per tenant with a book), and one
/// instant for all failures.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// When each message still in flight was sent (how many at each instant).
    in_flight: BTreeMap<Instant, u32>,
    /// When the oldest message that failed since the last reply was sent.
    failed_since: Option<Instant>,
    /// When the last reply arrived.
    last_reply: Option<Instant>,
}

impl Answers {
    /// A lease message is sent at `now`; the shell reports its end with `now` as `sent`.
    pub fn sent(&mut self, now: Instant) {
        *self.in_flight.entry(now).or_default() += 1;
    }

    /// The message sent at `sent` got a reply at `now`: everything sent before is answered
    /// for the stall rule.
    pub fn answered(&mut self, sent: Instant, now: Instant) {
        self.end(sent);
        self.last_reply = Some(self.last_reply.map_or(now, |r| r.max(now)));
        self.failed_since = None;
    }

    /// The message sent at `sent` failed without a reply: it stays unanswered until a
    /// reply arrives.
    pub fn failed(&mut self, sent: Instant) {
        self.end(sent);
        if self.last_reply.is_none_or(|r| sent >= r) {
            self.failed_since = Some(self.failed_since.map_or(sent, |f| f.min(sent)));
        }
    }

    fn end(&mut self, sent: Instant) {
        if let Some(n) = self.in_flight.get_mut(&sent) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&sent);
            }
        }
    }

    /// Whether, at `now`, the oldest message sent since the last reply and without a reply
    /// of its own was sent at least `after` ago. A clock that moves backwards is treated as
    /// not having moved.
    pub fn stalled(&self, now: Instant, after: Duration) -> bool {
        let from = self.last_reply.map_or(Bound::Unbounded, Bound::Included);
        let in_flight = self.in_flight.range((from, Bound::Unbounded)).next();
        let oldest = match (in_flight.map(|(t, _)| *t), self.failed_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        oldest.is_some_and(|t| now.saturating_duration_since(t) >= after)
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
