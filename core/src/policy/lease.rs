//! One tenant's concurrency lease at a POP, and the rules that change it: drawing a slot, applying
//! a region's grant, and what a renewal round gives back. Sans-IO: every event carries
//! `now`, and the outputs are numbers the I/O shell (the POP's `leases`
//! module) sends on.
//!
//! Never reads a clock, sends a message or spawns; `granted` changes only by a region's
//! reply (to that region's count) and by a renewal round (down, before the return is
//! sent), never otherwise.

use std::time::{Duration, Instant};

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
    pub asking: bool,
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

    /// Nothing held, nothing running, nothing asked: the book may be dropped.
    pub fn empty(&self) -> bool {
        self.granted == 0 && self.in_use == 0 && !self.asking
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
    /// The replying region's count becomes the lease: the shell changes `granted` only
    /// between lease messages (see [`super`]), so no return is in flight and `held` is
    /// exactly what that region counts (it may have reclaimed an expired lease, or kept
    /// slots whose return was lost). When the POP moved to another region, the old lease
    /// is no longer drawn from: its free slots go back to the old region, and those in use
    /// stay counted there until they end (it reclaims them `ttl + grace` after the last
    /// renewal, longer than any invocation); they take slots of the new lease too, so the
    /// new region counts everything drawn from then on.
    pub fn granted(&mut self, region: R, held: u32, valid_until: Instant) -> Option<(R, u32)> {
        let back = match self.region {
            Some(old) if old != region => Some((old, self.free())).filter(|(_, n)| *n > 0),
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

/// Whether regions answer this POP's lease messages: the stall rule. Lease messages go one
/// at a time (see [`super`]), so one clock covers them all: it starts when a message is
/// sent while none is awaiting an answer, and stops at the next reply from any region (a
/// grant, or a region's refusal: it answered). A message that fails without a reply (the
/// connection died, no region could be reached) leaves it running: nothing answered.
///
/// Stalled means the oldest unanswered message was sent at least `after` ago. The shell
/// uses a third of the lease TTL, one renewal period: a renewal sent at `t` extends a
/// lease that is valid until `t + 2/3 ttl` at best, so a region that stops answering is
/// noticed before the lease it counts expires, and a healthy region answers in one
/// round trip, far below it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answers {
    /// When the oldest lease message still without a reply was sent.
    waiting_since: Option<Instant>,
}

impl Answers {
    /// A lease message is sent at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// A region replied: nothing is awaited any more.
    pub fn answered(&mut self) {
        self.waiting_since = None;
    }

    /// Whether, at `now`, the oldest unanswered message was sent at least `after` ago. A
    /// clock that moves backwards is treated as not having moved.
    pub fn stalled(&self, now: Instant, after: Duration) -> bool {
        self.waiting_since
            .is_some_and(|t| now.saturating_duration_since(t) >= after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u8 = 1;
    const B: u8 = 2;
    const S: Duration = Duration::from_secs(1);
    const TTL: Duration = Duration::from_secs(3);

    fn rule(idle_hold: Duration) -> HoldRule {
        HoldRule {
            batch: 4,
            idle_hold,
        }
    }

    /// A book granted `slots` by region `A` at `t0`.
    fn granted(t0: Instant, slots: u32) -> Book<u8> {
        let mut b = Book::new(t0);
        assert_eq!(b.granted(A, slots, t0 + TTL), None);
        b
    }

    /// Renewal rounds every second from `from` for `rounds` rounds, each renewing the lease
    /// at region `A`; returns the instant after the last.
    fn quiet_rounds(b: &mut Book<u8>, rule: &HoldRule, from: Instant, rounds: u32) -> Instant {
        let mut now = from;
        for _ in 0..rounds {
            now += S;
            b.settle(now, rule);
            let held = b.holding().0;
            b.granted(A, held, now + TTL);
        }
        now
    }

    #[test]
    fn without_a_hold_a_quiet_tenant_gives_back_every_free_slot_after_one_round() {
        let t0 = Instant::now();
        let r = rule(Duration::ZERO);
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        b.finish();
        // The round after the draw: busy, keeps a batch.
        assert_eq!(b.settle(t0 + S, &r), 0);
        // The next one: quiet, all back.
        assert_eq!(b.settle(t0 + 2 * S, &r), 4);
        assert_eq!(b.holding(), (0, 0));
    }

    #[test]
    fn a_tenant_that_drew_recently_keeps_its_peak_through_quiet_rounds() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        // Two at once at most.
        assert!(b.draw(t0, &r));
        assert!(b.draw(t0, &r));
        b.finish();
        b.finish();
        assert_eq!(b.settle(t0 + S, &r), 0, "busy round keeps a batch");
        // Quiet rounds within the hold: down to the peak, then steady.
        assert_eq!(b.settle(t0 + 2 * S, &r), 2);
        let now = quiet_rounds(&mut b, &r, t0 + 2 * S, 50);
        assert_eq!(b.holding(), (2, 0));
        // The next request finds a free slot.
        assert!(b.draw(now, &r));
    }

    #[test]
    fn a_tenant_that_ran_one_at_a_time_keeps_one_slot() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        b.finish();
        b.settle(t0 + S, &r);
        assert_eq!(b.settle(t0 + 2 * S, &r), 3);
        assert_eq!(b.holding(), (1, 0));
    }

    #[test]
    fn the_floor_never_exceeds_a_batch() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 10);
        for _ in 0..10 {
            assert!(b.draw(t0, &r));
        }
        for _ in 0..10 {
            b.finish();
        }
        b.settle(t0 + S, &r);
        b.settle(t0 + 2 * S, &r);
        assert_eq!(b.holding(), (4, 0));
    }

    #[test]
    fn after_the_hold_every_free_slot_goes_back() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        let r = rule(hold);
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        b.finish();
        let now = quiet_rounds(&mut b, &r, t0, 9);
        assert_eq!(b.holding(), (1, 0), "still within the hold");
        assert_eq!(b.settle(now + S, &r), 1, "the hold ran out");
        assert_eq!(b.holding(), (0, 0));
        assert!(b.empty());
    }

    #[test]
    fn a_slot_still_running_after_the_hold_is_kept_until_it_ends() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(2));
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        let now = quiet_rounds(&mut b, &r, t0, 5);
        assert_eq!(b.holding(), (1, 1));
        b.finish();
        assert_eq!(b.settle(now + S, &r), 1);
        assert!(b.empty());
    }

    #[test]
    fn the_peak_forgets_a_burst_older_than_two_windows() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(10);
        let r = rule(hold);
        let mut b = granted(t0, 4);
        for _ in 0..4 {
            assert!(b.draw(t0, &r));
        }
        for _ in 0..4 {
            b.finish();
        }
        // One at a time every 5 s: the burst of four leaves the peak after two windows.
        let mut now = t0;
        for _ in 0..6 {
            now += 5 * S;
            b.settle(now, &r);
            b.granted(A, 4, now + TTL);
            assert!(b.draw(now, &r));
            b.finish();
        }
        b.settle(now + S, &r);
        b.settle(now + 2 * S, &r);
        assert_eq!(b.holding(), (1, 0));
    }

    #[test]
    fn a_lease_is_not_drawn_from_once_it_is_no_longer_valid() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        assert!(!b.draw(t0 + TTL, &r));
        assert!(b.draw(t0 + TTL - S, &r));
    }

    #[test]
    fn the_lease_is_what_the_region_counts() {
        let t0 = Instant::now();
        let mut b = granted(t0, 4);
        // The region reclaimed part of it.
        assert_eq!(b.granted(A, 1, t0 + TTL), None);
        assert_eq!(b.holding(), (1, 0));
        // It granted more (or kept slots whose return was lost).
        assert_eq!(b.granted(A, 5, t0 + TTL), None);
        assert_eq!(b.holding(), (5, 0));
    }

    #[test]
    fn a_grant_from_another_region_moves_the_lease_and_gives_the_old_free_slots_back() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        // The POP failed over: its renewal reached B, which counts nothing for it.
        assert_eq!(b.granted(B, 0, t0 + TTL), Some((A, 3)));
        assert_eq!(b.region(), Some(B));
        // Nothing to draw until B grants; the slot in use stays counted at A.
        assert_eq!(b.holding(), (0, 1));
        assert!(!b.draw(t0, &r));
        assert_eq!(b.granted(B, 4, t0 + TTL), None);
        // B's four cover the one still running and three more.
        for _ in 0..3 {
            assert!(b.draw(t0, &r));
        }
        assert!(!b.draw(t0, &r));
    }

    #[test]
    fn after_a_move_returns_never_reach_the_old_region() {
        let t0 = Instant::now();
        let r = rule(Duration::ZERO);
        let mut b = granted(t0, 1);
        assert!(b.draw(t0, &r));
        // B grants 4 while A's slot runs; the lease is B's now.
        assert_eq!(b.granted(B, 4, t0 + TTL), None);
        b.finish();
        b.settle(t0 + S, &r);
        // What a quiet round gives back is B's, and goes to B (the shell sends returns to
        // `region()`), never to A where the slot drawn from A's lease was counted.
        assert_eq!(b.settle(t0 + 2 * S, &r), 4);
        assert_eq!(b.region(), Some(B));
    }

    #[test]
    fn an_ended_hold_gives_every_free_slot_back_at_the_next_round() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        assert!(b.draw(t0, &r));
        b.finish();
        assert!(!b.idle(), "drew this round");
        b.settle(t0 + S, &r);
        assert!(b.idle());
        b.end_hold();
        assert!(!b.idle(), "ended already");
        assert_eq!(b.settle(t0 + 2 * S, &r), 4);
        assert!(b.empty());
    }

    #[test]
    fn lease_messages_stall_once_the_oldest_unanswered_one_is_old_enough() {
        let t0 = Instant::now();
        let after = S;
        let mut a = Answers::default();
        assert!(
            !a.stalled(t0 + 10 * S, after),
            "nothing sent, nothing awaited"
        );
        a.sent(t0);
        assert!(!a.stalled(t0 + after - Duration::from_millis(1), after));
        // A later message does not restart the clock: the oldest one is still unanswered.
        a.sent(t0 + S / 2);
        assert!(a.stalled(t0 + after, after));
        // Any reply ends the stall; the next message starts a new clock.
        a.answered();
        assert!(!a.stalled(t0 + 10 * S, after));
        a.sent(t0 + 10 * S);
        assert!(!a.stalled(t0 + 10 * S + after / 2, after));
        assert!(a.stalled(t0 + 11 * S, after));
    }

    #[test]
    fn a_clock_that_moves_backwards_does_not_stall_lease_messages() {
        let t0 = Instant::now() + 10 * S;
        let mut a = Answers::default();
        a.sent(t0);
        assert!(!a.stalled(t0 - 5 * S, S));
    }

    #[test]
    fn a_stalled_draw_goes_past_the_lease_expiry_up_to_what_the_region_last_counted() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 6);
        let late = t0 + TTL;
        assert!(!b.valid(late));
        assert!(!b.draw(late, &r), "an expired lease is not drawn from");
        for _ in 0..6 {
            assert!(b.draw_stalled(late, &r));
        }
        assert!(
            !b.draw_stalled(late, &r),
            "at most the six the region counted"
        );
        b.finish();
        assert!(b.draw_stalled(late, &r), "a finished run makes room");
        assert_eq!(b.holding(), (6, 6));
    }

    #[test]
    fn a_stalled_tenant_without_a_lease_runs_at_most_a_batch() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b: Book<u8> = Book::new(t0);
        for _ in 0..4 {
            assert!(b.draw_stalled(t0, &r));
        }
        assert!(!b.draw_stalled(t0, &r));
        assert_eq!(b.holding(), (0, 4));
    }

    #[test]
    fn a_stalled_draw_uses_the_valid_lease_first() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 2);
        assert!(b.draw_stalled(t0, &r));
        assert!(b.draw_stalled(t0, &r));
        assert_eq!(b.free(), 0);
        // Beyond the two granted, up to a batch.
        assert!(b.draw_stalled(t0, &r));
        assert!(b.draw_stalled(t0, &r));
        assert!(!b.draw_stalled(t0, &r));
    }

    #[test]
    fn after_a_stall_the_region_count_is_the_lease_again() {
        let t0 = Instant::now();
        let r = rule(Duration::from_secs(60));
        let mut b = granted(t0, 4);
        let late = t0 + TTL;
        for _ in 0..4 {
            assert!(b.draw_stalled(late, &r));
        }
        // The region answers again, having reclaimed all but two: the four still running
        // leave nothing to draw until two of them end.
        assert_eq!(b.granted(A, 2, late + TTL), None);
        assert!(!b.draw(late, &r));
        b.finish();
        b.finish();
        assert!(!b.draw(late, &r));
        b.finish();
        assert!(b.draw(late, &r));
    }
}
