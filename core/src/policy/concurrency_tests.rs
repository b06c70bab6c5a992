use super::*;

const SEC: Duration = Duration::from_secs(1);

fn config() -> LimitConfig {
    LimitConfig {
        hard_max: 10,
        burst: 4,
        step: 2,
        interval: SEC,
    }
}

#[test]
fn starts_at_the_burst_value() {
    let t0 = Instant::now();
    let l = AdaptiveLimit::new(config(), t0);
    assert_eq!(l.current(), 4);
}

#[test]
fn burst_above_hard_max_is_clamped() {
    let t0 = Instant::now();
    let l = AdaptiveLimit::new(
        LimitConfig {
            burst: 50,
            ..config()
        },
        t0,
    );
    assert_eq!(l.current(), 10);
}

#[test]
fn ramps_by_step_per_pressed_interval_up_to_the_hard_max() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(config(), t0);
    let mut seen = vec![];
    for i in 0..5 {
        let now = t0 + SEC * i + Duration::from_millis(500);
        let demand = l.current();
        l.observe(now, demand, false);
        l.tick(t0 + SEC * (i + 1));
        seen.push(l.current());
    }
    assert_eq!(seen, vec![6, 8, 10, 10, 10]);
}

#[test]
fn demand_equal_to_the_limit_presses_but_one_below_does_not() {
    let t0 = Instant::now();
    let mut tie = AdaptiveLimit::new(config(), t0);
    tie.observe(t0, 4, false);
    tie.tick(t0 + SEC);
    assert_eq!(tie.current(), 6);
    let mut below = AdaptiveLimit::new(config(), t0);
    below.observe(t0, 3, false);
    below.tick(t0 + SEC);
    assert_eq!(below.current(), 4);
}

#[test]
fn a_refusal_presses_even_with_low_demand() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(config(), t0);
    l.observe(t0, 0, true);
    l.tick(t0 + SEC);
    assert_eq!(l.current(), 6);
}

#[test]
fn decays_by_step_per_quiet_interval_to_the_burst_value() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(config(), t0);
    for i in 0..3 {
        l.observe(t0 + SEC * i, 100, false);
    }
    l.tick(t0 + SEC * 3);
    assert_eq!(l.current(), 10);
    l.tick(t0 + SEC * 4);
    assert_eq!(l.current(), 8);
    l.tick(t0 + SEC * 5);
    assert_eq!(l.current(), 6);
    l.tick(t0 + SEC * 9);
    assert_eq!(l.current(), 4, "never below the burst value");
}

#[test]
fn a_forward_clock_jump_grows_once_then_decays_for_the_empty_intervals() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(config(), t0);
    l.observe(t0, 100, false);
    l.observe(t0 + SEC, 100, false); // closes the first interval: 6
    assert_eq!(l.current(), 6);
    // Pressed in the second interval, then a jump of a day: +2 then decays to the floor.
    l.tick(t0 + Duration::from_secs(86_400));
    assert_eq!(l.current(), 4);
    // The interval grid continues from the jump.
    assert!(l.poll_timeout() > t0 + Duration::from_secs(86_400));
}

#[test]
fn a_backwards_clock_changes_nothing() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut l = AdaptiveLimit::new(config(), t0);
    l.observe(t0 - Duration::from_secs(5), 100, false);
    l.tick(t0 - Duration::from_secs(9));
    assert_eq!(l.current(), 4);
    // The pressure recorded still counts when the interval really closes.
    l.tick(t0 + SEC);
    assert_eq!(l.current(), 6);
}

#[test]
fn reconfigure_clamps_the_current_limit() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(config(), t0);
    l.observe(t0, 100, false);
    l.tick(t0 + SEC);
    l.observe(t0 + SEC, 100, false);
    l.tick(t0 + SEC * 2);
    assert_eq!(l.current(), 8);
    l.reconfigure(LimitConfig {
        hard_max: 5,
        ..config()
    });
    assert_eq!(l.current(), 5);
    l.reconfigure(LimitConfig {
        burst: 7,
        hard_max: 9,
        ..config()
    });
    assert_eq!(l.current(), 7);
}

fn budget(now: Instant) -> Budget {
    Budget::new(
        LimitConfig {
            hard_max: 6,
            burst: 4,
            step: 1,
            interval: SEC,
        },
        Duration::from_secs(10),
        now,
    )
}

#[test]
fn leases_and_region_admissions_never_exceed_the_limit() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert_eq!(b.acquire_lease(t0, "pop-1", 2), 2);
    assert_eq!(b.acquire_lease(t0, "pop-2", 2), 2);
    assert_eq!(
        b.acquire_lease(t0, "pop-3", 2),
        0,
        "the limit is all leased"
    );
    assert_eq!(b.admit(t0, "f").map_err(|r| r.limit), Err(4));
    assert_eq!(b.charged(), 4);
    b.return_lease(t0, "pop-1", 1);
    assert_eq!(b.admit(t0, "f"), Ok(Charge::Shared));
    assert_eq!(b.charged(), 4);
}

#[test]
fn a_partial_grant_when_little_is_free() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert_eq!(b.admit(t0, "f"), Ok(Charge::Shared));
    assert_eq!(b.acquire_lease(t0, "pop-1", 5), 3);
    assert_eq!(b.held_by("pop-1"), 3);
}

#[test]
fn refusals_grow_the_limit_and_quiet_shrinks_it_without_overgranting() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert_eq!(b.acquire_lease(t0, "pop-1", 4), 4);
    assert_eq!(b.acquire_lease(t0, "pop-2", 1), 0);
    assert_eq!(b.current(t0 + SEC), 5);
    assert_eq!(b.acquire_lease(t0 + SEC, "pop-2", 1), 1);
    assert_eq!(b.charged(), 5);
    // That grant filled the limit, so it grows once more (6); then quiet intervals decay
    // it by a step each, to 4 while 5 are still leased. Nothing more is granted until
    // enough comes back.
    let later = t0 + SEC * 4 + Duration::from_millis(500);
    assert_eq!(b.current(t0 + SEC * 2), 6);
    assert_eq!(b.current(later), 4);
    b.return_lease(later, "pop-1", 1);
    assert_eq!(b.acquire_lease(later, "pop-1", 1), 0);
    assert!(b.charged() <= 4);
}

#[test]
fn a_lease_that_is_not_renewed_expires_and_its_slots_come_back() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert_eq!(b.acquire_lease(t0, "dead", 4), 4);
    assert_eq!(b.acquire_lease(t0, "live", 1), 0);
    // "live" keeps renewing; "dead" vanished.
    assert_eq!(b.acquire_lease(t0 + SEC * 9, "live", 0), 0);
    assert_eq!(b.acquire_lease(t0 + SEC * 10, "live", 2), 2);
    assert_eq!(b.held_by("dead"), 0);
}

#[test]
fn renewal_keeps_a_lease_alive() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert_eq!(b.acquire_lease(t0, "pop-1", 2), 2);
    for s in 1..10 {
        b.acquire_lease(t0 + SEC * s, "pop-1", 0);
    }
    assert_eq!(b.held_by("pop-1"), 2);
}

#[test]
fn returning_more_than_held_returns_all() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    b.acquire_lease(t0, "pop-1", 2);
    b.return_lease(t0, "pop-1", 9);
    assert_eq!(b.leased(), 0);
    b.return_lease(t0, "nobody", 1);
    assert_eq!(b.leased(), 0);
}

#[test]
fn a_reserved_function_always_gets_its_reservation() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    b.reserve("vip", Some(2));
    // The shared pool is 4 - 2 = 2.
    assert_eq!(b.acquire_lease(t0, "pop-1", 4), 2);
    assert_eq!(b.admit(t0, "other").map_err(|r| r.limit), Err(4));
    assert_eq!(b.admit(t0, "vip"), Ok(Charge::Reserved));
    assert_eq!(b.admit(t0, "vip"), Ok(Charge::Reserved));
    // Beyond its reservation it competes for the shared pool like anyone else.
    assert_eq!(b.admit(t0, "vip").map_err(|r| r.limit), Err(4));
    assert_eq!(b.charged(), 4);
    b.release("vip", Charge::Reserved, Duration::from_millis(5));
    assert_eq!(b.admit(t0, "vip"), Ok(Charge::Reserved));
}

#[test]
fn reservations_never_take_more_than_the_limit() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    b.reserve("a", Some(3));
    b.reserve("b", Some(3));
    assert_eq!(b.acquire_lease(t0, "pop-1", 1), 0);
    assert_eq!(b.admit(t0, "c").map_err(|r| r.limit), Err(4));
    b.reserve("b", None);
    assert_eq!(b.acquire_lease(t0, "pop-1", 5), 1);
}

#[test]
fn a_budget_with_nothing_charged_at_the_floor_is_idle() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    assert!(b.idle(t0));
    let c = b.admit(t0, "f").expect("admitted");
    assert!(!b.idle(t0));
    b.release("f", c, Duration::from_millis(5));
    assert!(b.idle(t0));
}

#[test]
fn a_refusal_says_when_a_slot_is_likely_free() {
    let t0 = Instant::now();
    let mut b = budget(t0);
    // The region's own invocations hold every slot; each is held about 400 ms.
    let first = b.admit(t0, "f").expect("admitted");
    b.release("f", first, Duration::from_millis(400));
    for _ in 0..4 {
        b.admit(t0, "f").expect("admitted");
    }
    // Four running for ~400 ms each: the first ends in ~100 ms, before the limit's
    // interval (1 s) closes.
    let at = t0 + Duration::from_millis(500);
    assert_eq!(
        b.admit(at, "f").map_err(|r| r.retry_after),
        Err(Duration::from_millis(100))
    );
    // Leased slots: the wait is the lease's lapse or the limit's next interval, whichever
    // is sooner (here the interval, 1 s after the start).
    let mut b = budget(t0);
    assert_eq!(b.acquire_lease(t0, "pop-1", 4), 4);
    assert_eq!(
        b.admit(at, "f").map_err(|r| r.retry_after),
        Err(Duration::from_millis(500))
    );
}

#[test]
fn demand_is_the_peak_wanted_in_a_period_refusals_included() {
    let t0 = Instant::now();
    let mut b = Budget::new(
        LimitConfig {
            hard_max: 2,
            burst: 2,
            ..config()
        },
        SEC,
        t0,
    );
    assert_eq!(b.take_demand(), 0);
    let one = b.admit(t0, "f").expect("room");
    let _two = b.admit(t0, "f").expect("room");
    assert!(b.admit(t0, "f").is_err());
    assert_eq!(b.take_demand(), 3, "two running and one refused");
    b.release("f", one, SEC);
    assert_eq!(
        b.take_demand(),
        2,
        "the period starts from what was charged"
    );
    assert_eq!(b.take_demand(), 1);
    assert_eq!(b.acquire_lease(t0, "pop", 5), 1);
    assert_eq!(b.take_demand(), 6, "a lease's unmet rest is demand too");
}
