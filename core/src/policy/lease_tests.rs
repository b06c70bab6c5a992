//! The lease book's rules.

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

/// A book granted 4 slots by region `A` at `t0` that ran one call, ended.
fn ran_once(t0: Instant, rule: &HoldRule) -> Book<u8> {
    let mut b = granted(t0, 4);
    assert!(b.draw(t0, rule));
    b.finish();
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
    let mut b = ran_once(t0, &r);
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
    let mut b = ran_once(t0, &r);
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
    let mut b = ran_once(t0, &r);
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
fn a_quiet_lease_that_moves_to_a_region_counting_nothing_is_asked_for_there() {
    let t0 = Instant::now();
    let r = rule(Duration::from_secs(60));
    let mut b = ran_once(t0, &r);
    b.settle(t0 + S, &r);
    // A quiet round within the hold keeps one slot and renews it.
    let step = b.round(t0 + 2 * S, &r);
    assert_eq!(
        step,
        Some(RoundStep {
            give_back: Some((A, 3)),
            renew: true
        })
    );
    // The POP failed over: the renewal reached B, which counts nothing for it.
    assert_eq!(b.granted(B, 0, t0 + 2 * S + TTL), Some((A, 1)));
    assert_eq!(b.holding(), (0, 0));
    // Asked for at B when the renewal ends, so the book is not dropped as empty.
    assert_eq!(b.done(t0 + 2 * S, &r), Some(4));
    assert!(!b.empty(), "the acquire is in flight");
    assert_eq!(b.granted(B, 4, t0 + 2 * S + TTL), None);
    assert_eq!(b.done(t0 + 2 * S, &r), None);
    assert!(b.draw(t0 + 2 * S, &r), "the next call runs here");
}

#[test]
fn a_lease_that_moves_whole_is_not_asked_for_again() {
    let t0 = Instant::now();
    let r = rule(Duration::from_secs(60));
    let mut b = ran_once(t0, &r);
    assert_eq!(b.round(t0 + S, &r).map(|s| s.renew), Some(true));
    // B took the lease over with as many slots (A's go back to A).
    assert_eq!(b.granted(B, 4, t0 + S + TTL), Some((A, 4)));
    assert_eq!(b.done(t0 + S, &r), None);
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
    let mut b = ran_once(t0, &r);
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
    // A reply ends the stall for everything sent before it arrived; the next message
    // starts a new clock.
    a.answered(t0 + S / 2, t0 + S);
    assert!(!a.stalled(t0 + 10 * S, after));
    a.sent(t0 + 10 * S);
    assert!(!a.stalled(t0 + 10 * S + after / 2, after));
    assert!(a.stalled(t0 + 11 * S, after));
}

#[test]
fn a_message_still_unanswered_after_a_reply_to_an_older_one_stalls_on_its_own_clock() {
    // Two tenants' messages in flight together; the region answers the first and dies.
    let t0 = Instant::now();
    let ms = Duration::from_millis(1);
    let mut a = Answers::default();
    a.sent(t0);
    a.sent(t0 + 60 * ms);
    a.answered(t0, t0 + 50 * ms);
    assert!(!a.stalled(t0 + 60 * ms + S - ms, S));
    assert!(
        a.stalled(t0 + 60 * ms + S, S),
        "sent after the last reply, and never answered"
    );
    // One sent before the reply arrived is answered for the stall rule.
    let mut a = Answers::default();
    a.sent(t0);
    a.sent(t0 + 10 * ms);
    a.answered(t0 + 10 * ms, t0 + 50 * ms);
    assert!(!a.stalled(t0 + 10 * S, S));
}

#[test]
fn a_failed_message_keeps_the_clock_running_until_a_reply() {
    let t0 = Instant::now();
    let mut a = Answers::default();
    a.sent(t0);
    a.failed(t0);
    a.sent(t0 + S / 2);
    a.failed(t0 + S / 2);
    assert!(a.stalled(t0 + S, S), "the first failure's clock");
    a.sent(t0 + S);
    a.answered(t0 + S, t0 + S + S / 10);
    assert!(!a.stalled(t0 + 5 * S, S));
    // A failure of a message sent before the last reply is covered by it.
    a.failed(t0 + S / 4);
    assert!(!a.stalled(t0 + 5 * S, S));
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

#[test]
fn a_tenant_asks_for_a_batch_when_it_runs_low_and_once_at_a_time() {
    let t0 = Instant::now();
    let r = rule(Duration::from_secs(60));
    let mut b: Book<u8> = Book::new(t0);
    // No lease yet: the first draw fails and asks for a batch.
    assert!(!b.draw(t0, &r));
    assert_eq!(b.wants(t0, &r), Some(4));
    assert_eq!(b.wants(t0, &r), None, "one acquire in flight");
    assert_eq!(b.granted(A, 8, t0 + TTL), None);
    assert_eq!(b.done(t0, &r), None);
    // Eight free: nothing to ask; after four draws fewer than a batch are free.
    for _ in 0..4 {
        assert!(b.draw(t0, &r));
        assert_eq!(b.wants(t0, &r), None);
    }
    assert!(b.draw(t0, &r));
    // Busy: as many as are in use.
    assert_eq!(b.wants(t0, &r), Some(5));
    // An expired lease asks again even with free slots.
    let mut b = granted(t0, 8);
    assert_eq!(b.wants(t0 + TTL, &r), Some(4));
}

#[test]
fn renewals_come_every_third_of_the_ttl_and_regions_reclaim_after_the_grace() {
    assert_eq!(renew_every(TTL), S);
    assert_eq!(
        renew_every(Duration::from_millis(6)),
        Duration::from_millis(10)
    );
    assert_eq!(reclaim_after(TTL, 20 * S), 23 * S);
}

#[test]
fn a_tenant_has_one_lease_message_in_flight_at_a_time() {
    let t0 = Instant::now();
    let r = rule(Duration::from_secs(60));
    let mut b = granted(t0, 8);
    for _ in 0..5 {
        assert!(b.draw(t0, &r));
    }
    // An acquire in flight: the round leaves the tenant out (the answer renews the lease).
    assert_eq!(b.wants(t0, &r), Some(5));
    assert!(b.sending());
    assert_eq!(b.round(t0 + S, &r), None);
    assert_eq!(b.granted(A, 13, t0 + S + TTL), None);
    assert_eq!(b.done(t0 + S, &r), None);
    assert!(!b.sending());
    // The next round settles and renews; no acquire goes while its renewal is in flight,
    // but one goes when it ends if the tenant ran low meanwhile.
    assert_eq!(
        b.round(t0 + 2 * S, &r),
        Some(RoundStep {
            give_back: Some((A, 3)),
            renew: true
        })
    );
    assert_eq!(b.holding(), (10, 5));
    for _ in 0..2 {
        assert!(b.draw(t0 + 2 * S, &r));
    }
    assert_eq!(
        b.wants(t0 + 2 * S, &r),
        None,
        "the round's messages are in flight"
    );
    assert_eq!(b.granted(A, 10, t0 + 2 * S + TTL), None);
    assert_eq!(
        b.done(t0 + 2 * S, &r),
        Some(7),
        "asked for once the renewal is in"
    );
    assert!(b.sending());
}

#[test]
fn a_book_giving_its_last_slots_back_is_kept_until_the_return_ends() {
    let t0 = Instant::now();
    let r = rule(Duration::ZERO);
    let mut b = granted(t0, 4);
    assert_eq!(
        b.round(t0 + S, &r),
        Some(RoundStep {
            give_back: Some((A, 4)),
            renew: false
        })
    );
    assert!(!b.empty(), "its return is in flight");
    assert_eq!(b.done(t0 + S, &r), None);
    assert!(b.empty());
    // Nothing left: the next round sends nothing.
    assert_eq!(b.round(t0 + 2 * S, &r), None);
    assert!(!b.sending());
}
