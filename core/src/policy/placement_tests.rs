//! Unit tests of the placement policy, on a hand-driven clock.

use super::*;
use crate::model::{FunctionName, TenantId};

fn key(name: &str) -> FunctionKey {
    FunctionKey {
        tenant: TenantId::new("t").expect("valid"),
        name: FunctionName::new(name).expect("valid"),
    }
}

const READY: LocalState = LocalState {
    placement: Placement::Auto,
    known: true,
    artifact_ready: true,
    slot_free: true,
    cost_bytes: 0,
};

fn hit(p: &mut PlacementPolicy, now: Instant, k: &FunctionKey) -> Decision {
    p.handle_request(now, k);
    p.decide(now, k, READY)
}

#[test]
fn a_function_seen_once_is_forwarded_as_rare() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let now = Instant::now();
    assert_eq!(
        hit(&mut p, now, &key("f")),
        Decision::Forward(ForwardReason::Rare)
    );
}

#[test]
fn ten_requests_within_a_minute_make_a_function_local() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let t0 = Instant::now();
    let k = key("f");
    let mut last = Decision::Forward(ForwardReason::Rare);
    for i in 0..12 {
        last = hit(&mut p, t0 + Duration::from_millis(100 * i), &k);
    }
    assert_eq!(last, Decision::Local);
}

#[test]
fn requests_spread_thinly_never_become_popular() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let t0 = Instant::now();
    let k = key("f");
    // One request every 30 s: the score settles near 1/(1-e^-0.5) ~ 2.5, under the bar.
    for i in 0..100 {
        let d = hit(&mut p, t0 + Duration::from_secs(30 * i), &k);
        assert_eq!(d, Decision::Forward(ForwardReason::Rare));
    }
}

#[test]
fn hysteresis_keeps_a_popular_function_local_until_it_decays_below_exit() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let t0 = Instant::now();
    let k = key("f");
    for i in 0..12 {
        hit(&mut p, t0 + Duration::from_millis(i), &k);
    }
    // Score ~12: after 40 s it is ~12*e^(-2/3) ~ 6.2: below enter (10) but above exit (5).
    let t1 = t0 + Duration::from_secs(40);
    assert_eq!(p.decide(t1, &k, READY), Decision::Local);
    // After 80 s it is ~3.1: below exit, forwarded again.
    let t2 = t0 + Duration::from_secs(80);
    assert_eq!(
        p.decide(t2, &k, READY),
        Decision::Forward(ForwardReason::Rare)
    );
}

#[test]
fn placement_pins_override_popularity() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let now = Instant::now();
    let k = key("f");
    p.handle_request(now, &k);
    let edge = LocalState {
        placement: Placement::Edge,
        ..READY
    };
    assert_eq!(p.decide(now, &k, edge), Decision::Local);
    for i in 0..20 {
        p.handle_request(now + Duration::from_millis(i), &k);
    }
    let region = LocalState {
        placement: Placement::Region,
        ..READY
    };
    assert_eq!(
        p.decide(now, &k, region),
        Decision::Forward(ForwardReason::Pinned)
    );
}

#[test]
fn popular_but_not_ready_or_full_is_forwarded_with_the_reason() {
    let mut p = PlacementPolicy::new(PlacementConfig::default());
    let now = Instant::now();
    let k = key("f");
    for _ in 0..10 {
        p.handle_request(now, &k);
    }
    let unknown = LocalState {
        known: false,
        artifact_ready: false,
        ..READY
    };
    assert_eq!(
        p.decide(now, &k, unknown),
        Decision::Forward(ForwardReason::Unknown)
    );
    let not_ready = LocalState {
        artifact_ready: false,
        ..READY
    };
    assert_eq!(
        p.decide(now, &k, not_ready),
        Decision::Forward(ForwardReason::NotReady)
    );
    assert!(p.wants_artifact(&k, not_ready));
    let full = LocalState {
        slot_free: false,
        ..READY
    };
    assert_eq!(
        p.decide(now, &k, full),
        Decision::Forward(ForwardReason::OverCapacity)
    );
}

#[test]
fn a_policy_keyed_by_dense_ids_decides_like_one_keyed_by_function_keys() {
    use std::hash::BuildHasherDefault;
    let mut by_key = PlacementPolicy::new(PlacementConfig::default());
    let mut by_id =
        PlacementPolicy::<u32, BuildHasherDefault<std::hash::DefaultHasher>>::with_hasher(
            PlacementConfig::default(),
            BuildHasherDefault::default(),
        );
    let t0 = Instant::now();
    let names = [key("a"), key("b")];
    for i in 0..60u32 {
        let f = i % 3 % 2;
        let now = t0 + Duration::from_millis(700 * u64::from(i));
        by_key.handle_request(now, &names[f as usize]);
        by_id.handle_request(now, &f);
        assert_eq!(
            by_key.decide(now, &names[f as usize], READY),
            by_id.decide(now, &f, READY)
        );
    }
}

#[test]
fn the_tracked_table_is_bounded_and_keeps_the_popular() {
    let mut p = PlacementPolicy::new(PlacementConfig {
        max_tracked: 3,
        ..PlacementConfig::default()
    });
    let now = Instant::now();
    let hot = key("hot");
    for _ in 0..20 {
        p.handle_request(now, &hot);
    }
    for i in 0..100 {
        p.handle_request(now, &key(&format!("rare{i}")));
    }
    assert_eq!(p.entries.len(), 3);
    assert_eq!(p.decide(now, &hot, READY), Decision::Local);
}

const MB: u64 = 1 << 20;

fn budgeted(budget_mb: u64) -> PlacementPolicy {
    PlacementPolicy::new(PlacementConfig {
        memory_budget_mb: budget_mb,
        ..PlacementConfig::default()
    })
}

fn costing(mb: u64) -> LocalState {
    LocalState {
        cost_bytes: mb * MB,
        ..READY
    }
}

/// `n` requests of `k` spread over `span`, ending at `end`; returns the last decision.
fn burst(
    p: &mut PlacementPolicy,
    end: Instant,
    span: Duration,
    n: u32,
    k: &FunctionKey,
    state: LocalState,
) -> Decision {
    let mut last = Decision::Forward(ForwardReason::Rare);
    for i in 0..n {
        let at = end - span.mul_f64(f64::from(n - 1 - i) / f64::from(n.max(1)));
        p.handle_request(at, k);
        last = p.decide(at, k, state);
    }
    last
}

#[test]
fn only_the_highest_rate_functions_that_fit_the_budget_are_local() {
    // 300 MiB budget, 128 MiB each: two fit.
    let mut p = budgeted(300);
    let t0 = Instant::now() + Duration::from_secs(1000);
    let s = Duration::from_secs(1);
    assert_eq!(
        burst(&mut p, t0, s, 40, &key("a"), costing(128)),
        Decision::Local
    );
    assert_eq!(
        burst(&mut p, t0, s, 30, &key("b"), costing(128)),
        Decision::Local
    );
    // c is over the bar but not 25 % above a or b: no room.
    assert_eq!(
        burst(&mut p, t0, s, 32, &key("c"), costing(128)),
        Decision::Forward(ForwardReason::OverCapacity)
    );
    assert!(p.is_popular(&key("a")) && p.is_popular(&key("b")));
    assert!(!p.wants_artifact(
        &key("c"),
        LocalState {
            artifact_ready: false,
            ..costing(128)
        }
    ));
    // d is well above b (the lowest): it displaces b, not a.
    assert_eq!(
        burst(&mut p, t0, s, 60, &key("d"), costing(128)),
        Decision::Local
    );
    assert!(p.is_popular(&key("a")) && !p.is_popular(&key("b")));
    assert!(p.committed_bytes() <= p.budget_bytes());
    assert_eq!(p.committed_bytes(), 256 * MB);
}

#[test]
fn a_flood_of_rare_functions_never_evicts_the_popular_set_nor_passes_the_budget() {
    let mut p = PlacementPolicy::new(PlacementConfig {
        memory_budget_mb: 512,
        max_tracked: 64,
        ..PlacementConfig::default()
    });
    let t0 = Instant::now();
    let hot = [key("hot1"), key("hot2")];
    for (i, k) in hot.iter().enumerate() {
        let end = t0 + Duration::from_secs(1);
        assert_eq!(
            burst(
                &mut p,
                end,
                Duration::from_secs(1),
                50 + i as u32,
                k,
                costing(200)
            ),
            Decision::Local
        );
    }
    // 10 000 distinct functions, a few requests each, while the hot ones keep going.
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_secs(1) + Duration::from_millis(u64::from(i));
        let rare = key(&format!("rare{i}"));
        for _ in 0..(i % 4) {
            p.handle_request(now, &rare);
        }
        p.decide(now, &rare, costing(100));
        if i % 10 == 0 {
            for k in &hot {
                assert_eq!(hit_with(&mut p, now, k, costing(200)), Decision::Local);
            }
        }
        assert!(p.committed_bytes() <= p.budget_bytes());
        assert!(p.entries.len() <= 64);
    }
}

fn hit_with(p: &mut PlacementPolicy, now: Instant, k: &FunctionKey, s: LocalState) -> Decision {
    p.handle_request(now, k);
    p.decide(now, k, s)
}

#[test]
fn a_function_bigger_than_the_whole_budget_is_never_local() {
    let mut p = budgeted(100);
    let t0 = Instant::now();
    assert_eq!(
        burst(
            &mut p,
            t0,
            Duration::from_secs(1),
            50,
            &key("big"),
            costing(101)
        ),
        Decision::Forward(ForwardReason::OverCapacity)
    );
    assert_eq!(p.committed_bytes(), 0);
}

#[test]
fn equal_rates_at_the_budget_edge_do_not_take_turns() {
    let mut p = budgeted(128);
    let t0 = Instant::now();
    let (a, b) = (key("a"), key("b"));
    assert_eq!(
        burst(&mut p, t0, Duration::from_secs(1), 20, &a, costing(128)),
        Decision::Local
    );
    // Interleave a and b at the same rate for a while: a keeps the budget, b never flaps in.
    for i in 0..200u64 {
        let now = t0 + Duration::from_millis(100 * i);
        assert_eq!(hit_with(&mut p, now, &a, costing(128)), Decision::Local);
        assert_ne!(hit_with(&mut p, now, &b, costing(128)), Decision::Local);
    }
    assert!(p.is_popular(&a) && !p.is_popular(&b));
}

#[test]
fn ties_between_victims_are_broken_by_key() {
    let mut p = budgeted(256);
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    // b and a have identical histories; c needs one slot: the lower key (a) goes first.
    burst(&mut p, t0, s, 20, &key("b"), costing(128));
    burst(&mut p, t0, s, 20, &key("a"), costing(128));
    assert_eq!(
        burst(&mut p, t0, s, 60, &key("c"), costing(128)),
        Decision::Local
    );
    assert!(!p.is_popular(&key("a")) && p.is_popular(&key("b")));
}

#[test]
fn a_stale_local_function_gives_its_budget_to_a_newcomer() {
    let mut p = budgeted(128);
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    burst(&mut p, t0, s, 30, &key("old"), costing(128));
    // Ten minutes later old has decayed to nothing; new crosses the bar and takes its place.
    let later = t0 + Duration::from_secs(600);
    assert_eq!(
        burst(&mut p, later, s, 12, &key("new"), costing(128)),
        Decision::Local
    );
    assert!(!p.is_popular(&key("old")));
    assert_eq!(p.committed_bytes(), 128 * MB);
}

#[test]
fn a_cost_that_grows_past_the_budget_is_checked_again() {
    let mut p = budgeted(200);
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    assert_eq!(
        burst(&mut p, t0, s, 30, &key("a"), costing(100)),
        Decision::Local
    );
    assert_eq!(
        burst(&mut p, t0, s, 29, &key("b"), costing(100)),
        Decision::Local
    );
    // a's artifact turns out to add 50 MiB: it no longer fits beside b, and does not beat
    // b by the margin.
    assert_eq!(
        hit_with(&mut p, t0, &key("a"), costing(150)),
        Decision::Forward(ForwardReason::OverCapacity)
    );
    assert_eq!(p.committed_bytes(), 100 * MB);
    // Shrinking is always fine.
    assert_eq!(
        hit_with(&mut p, t0, &key("b"), costing(60)),
        Decision::Local
    );
    assert_eq!(p.committed_bytes(), 60 * MB);
}

#[test]
fn a_clock_that_jumps_backwards_counts_as_no_time() {
    let mut p = budgeted(1024);
    let t0 = Instant::now() + Duration::from_secs(100);
    let k = key("f");
    burst(&mut p, t0, Duration::from_secs(1), 12, &k, costing(1));
    let earlier = t0 - Duration::from_secs(50);
    assert_eq!(p.decide(earlier, &k, costing(1)), Decision::Local);
    assert!(p.score(earlier, &k) >= 11.0);
}

#[test]
fn repinning_to_the_region_releases_the_budget() {
    let mut p = budgeted(1024);
    let t0 = Instant::now();
    let k = key("f");
    burst(&mut p, t0, Duration::from_secs(1), 12, &k, costing(64));
    assert_eq!(p.committed_bytes(), 64 * MB);
    let region = LocalState {
        placement: Placement::Region,
        ..costing(64)
    };
    assert_eq!(
        p.decide(t0, &k, region),
        Decision::Forward(ForwardReason::Pinned)
    );
    assert_eq!(p.committed_bytes(), 0);
}

#[test]
fn leaving_the_popular_set_keeps_the_other_members_scores_and_costs() {
    let mut p = budgeted(1024);
    let t0 = Instant::now();
    let (a, b, c) = (key("a"), key("b"), key("c"));
    for (k, n) in [(&a, 12), (&b, 20), (&c, 30)] {
        burst(&mut p, t0, Duration::ZERO, n, k, costing(64));
    }
    assert_eq!(p.committed_bytes(), 3 * 64 * MB);
    let region = LocalState {
        placement: Placement::Region,
        ..costing(64)
    };
    // `a` leaves first, so the last member moves into its place.
    p.decide(t0, &a, region);
    assert!(!p.is_popular(&a) && p.is_popular(&b) && p.is_popular(&c));
    assert_eq!(p.committed_bytes(), 2 * 64 * MB);
    assert!((p.score(t0, &a) - 12.0).abs() < 1e-9, "a keeps its score");
    assert!((p.score(t0, &b) - 20.0).abs() < 1e-9);
    assert!((p.score(t0, &c) - 30.0).abs() < 1e-9);
    // A request to `c` counts for `c`, not for whoever took its old place.
    p.handle_request(t0, &c);
    assert!((p.score(t0, &c) - 31.0).abs() < 1e-9);
    assert!((p.score(t0, &b) - 20.0).abs() < 1e-9);
    p.decide(t0, &c, region);
    p.decide(t0, &b, region);
    assert_eq!(p.committed_bytes(), 0);
    assert!(p.local.is_empty());
}

#[test]
fn a_full_table_forgets_its_least_popular_sixteenth_at_once() {
    let mut p = PlacementPolicy::new(PlacementConfig {
        max_tracked: 32,
        ..PlacementConfig::default()
    });
    let now = Instant::now();
    // f0 is requested once, f1 twice, ...: the lowest scores are the lowest indices.
    for i in 0..32u32 {
        for _ in 0..=i {
            p.handle_request(now, &key(&format!("f{i}")));
        }
    }
    assert_eq!(p.tracked(), 32);
    p.handle_request(now, &key("newcomer"));
    // 32 / 16 = 2 evicted, then the newcomer is added.
    assert_eq!(p.tracked(), 31);
    assert_eq!(p.score(now, &key("f0")), 0.0);
    assert_eq!(p.score(now, &key("f1")), 0.0);
    assert!(p.score(now, &key("f2")) > 0.0);
    assert_eq!(p.score(now, &key("newcomer")), 1.0);
}
