//! Deterministic tests of [`RegionChoice`]: time is driven by hand.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn policy(regions: &[u32]) -> (RegionChoice<u32>, Instant) {
    let mut p = RegionChoice::new(RegionChoiceConfig::default());
    p.set_regions(regions);
    (p, Instant::now())
}

#[test]
fn the_lowest_smoothed_rtt_wins() {
    let (mut p, t0) = policy(&[0, 1, 2]);
    p.handle_rtt(&0, 30 * MS);
    p.handle_rtt(&1, 10 * MS);
    p.handle_rtt(&2, 20 * MS);
    assert_eq!(p.choose(t0, &[]), Some(1));
    // One slow sample moves the average only part of the way: 1 stays preferred.
    p.handle_rtt(&1, 40 * MS);
    assert_eq!(p.choose(t0, &[]), Some(1));
    p.handle_rtt(&1, 40 * MS);
    p.handle_rtt(&1, 40 * MS);
    assert_eq!(p.choose(t0, &[]), Some(2));
}

#[test]
fn rtts_within_the_margin_tie_and_go_to_discovery_order() {
    let (mut p, t0) = policy(&[0, 1, 2]);
    // Loopback-like noise: 0.4 ms against 0.1 ms is a tie at the default 5 ms margin.
    p.handle_rtt(&0, Duration::from_micros(400));
    p.handle_rtt(&1, Duration::from_micros(100));
    assert_eq!(
        p.choose(t0, &[]),
        Some(0),
        "within the margin: discovery order"
    );
    // A region clearly nearer wins over the earlier one.
    p.handle_rtt(&2, Duration::from_micros(10));
    assert_eq!(
        p.choose(t0, &[]),
        Some(0),
        "2 is within the margin of the fastest too"
    );
    let (mut p, t0) = policy(&[0, 1, 2]);
    p.handle_rtt(&0, 54 * MS);
    p.handle_rtt(&1, 32 * MS);
    p.handle_rtt(&2, 33 * MS);
    assert_eq!(
        p.choose(t0, &[]),
        Some(1),
        "beyond the margin: the nearer region"
    );
    let zero = RegionChoiceConfig {
        rtt_margin: Duration::ZERO,
        ..RegionChoiceConfig::default()
    };
    let mut p = RegionChoice::new(zero);
    p.set_regions(&[0, 1]);
    p.handle_rtt(&0, Duration::from_micros(400));
    p.handle_rtt(&1, Duration::from_micros(100));
    assert_eq!(p.choose(t0, &[]), Some(1), "no margin: the lowest RTT");
}

#[test]
fn ties_go_to_discovery_order_and_unmeasured_regions_rank_last() {
    let (mut p, t0) = policy(&[5, 3, 9]);
    assert_eq!(
        p.choose(t0, &[]),
        Some(5),
        "nothing measured: discovery order"
    );
    p.handle_rtt(&9, 10 * MS);
    assert_eq!(p.choose(t0, &[]), Some(9), "measured beats unmeasured");
    p.handle_rtt(&3, 10 * MS);
    assert_eq!(p.choose(t0, &[]), Some(3), "equal RTT: earlier in the list");
    assert_eq!(p.choose(t0, &[3]), Some(9), "excluded regions are skipped");
}

#[test]
fn repeated_failures_open_the_circuit_and_a_probe_closes_it() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    for _ in 0..2 {
        p.handle_failure(t0, &0);
    }
    assert_eq!(p.choose(t0, &[]), Some(0), "two failures are not enough");
    p.handle_failure(t0, &0);
    assert_eq!(p.choose(t0, &[]), Some(1), "three quick failures open it");
    // After open_for, exactly one probe goes to 0 per interval.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(p.choose(t1, &[]), Some(0));
    assert_eq!(p.choose(t1, &[]), Some(1), "one probe at a time");
    p.handle_success(t1, &0);
    assert_eq!(p.choose(t1, &[]), Some(0), "the probe succeeded: closed");
}

#[test]
fn a_flapping_region_is_kept_out_longer_each_time() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    p.handle_unreachable(t0, &0);
    let mut t = t0;
    let mut open_times = Vec::new();
    for _ in 0..4 {
        // Wait for the probe, the probe fails: the circuit opens for longer.
        let opened = t;
        while p.choose(t, &[]) != Some(0) {
            t += 10 * MS;
        }
        open_times.push(t - opened);
        p.handle_failure(t, &0);
    }
    assert!(
        open_times.windows(2).all(|w| w[1] > w[0]),
        "each failed probe doubles the open time: {open_times:?}"
    );
    assert!(open_times[3] <= Duration::from_secs(30) + 10 * MS);
}

#[test]
fn the_error_score_decays_so_old_failures_do_not_add_up() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    let mut t = t0;
    for _ in 0..10 {
        p.handle_failure(t, &0);
        t += Duration::from_secs(30);
    }
    assert_eq!(
        p.choose(t, &[]),
        Some(0),
        "one failure per 3 half-lives never opens"
    );
}

#[test]
fn pressure_backs_off_exponentially_up_to_the_cap() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    p.handle_pressure(t0, &0, true, 3);
    assert_eq!(p.choose(t0, &[]), Some(1));
    assert_eq!(
        p.choose(t0 + 500 * MS, &[]),
        Some(0),
        "first back-off: 500 ms"
    );
    p.handle_pressure(t0 + 500 * MS, &0, true, 3);
    assert_eq!(
        p.choose(t0 + 1400 * MS, &[]),
        Some(1),
        "second back-off: 1 s"
    );
    assert_eq!(p.choose(t0 + 1500 * MS, &[]), Some(0));
    let mut t = t0 + 1500 * MS;
    for _ in 0..20 {
        p.handle_pressure(t, &0, true, 3);
    }
    assert_eq!(
        p.choose(t + Duration::from_secs(10), &[]),
        Some(0),
        "capped at 10 s"
    );
    // A calm reply after the back-off resets the doubling.
    t += Duration::from_secs(10);
    p.handle_pressure(t, &0, false, 3);
    p.handle_pressure(t, &0, true, 3);
    assert_eq!(p.choose(t + 500 * MS, &[]), Some(0));
}

#[test]
fn a_region_without_spare_capacity_is_avoided_briefly() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    p.handle_pressure(t0, &0, false, 0);
    assert_eq!(p.choose(t0, &[]), Some(1));
    assert_eq!(
        p.choose(t0 + 500 * MS, &[]),
        Some(0),
        "the report goes stale"
    );
    // Full again: the same short avoidance, no doubling.
    p.handle_pressure(t0 + 500 * MS, &0, false, 0);
    assert_eq!(p.choose(t0 + 900 * MS, &[]), Some(1));
    assert_eq!(p.choose(t0 + 1000 * MS, &[]), Some(0));
    p.handle_pressure(t0 + 1000 * MS, &0, false, 2);
    assert_eq!(p.choose(t0 + 1000 * MS, &[]), Some(0));
}

#[test]
fn when_all_regions_are_bad_the_least_bad_is_tried() {
    let (mut p, t0) = policy(&[0, 1, 2]);
    p.handle_unreachable(t0, &0);
    p.handle_unreachable(t0, &0);
    p.handle_unreachable(t0 + 100 * MS, &1);
    p.handle_pressure(t0, &2, true, 0);
    p.handle_pressure(t0, &2, true, 0);
    // 0: open 2 s, 1: open until 1.1 s, 2: backed off until 1 s.
    assert_eq!(p.choose(t0, &[]), Some(2), "usable soonest");
    assert_eq!(p.choose(t0, &[2]), Some(1));
    assert_eq!(p.choose(t0, &[0, 1, 2]), None, "nothing left to try");
}

#[test]
fn regions_recover_after_all_were_down() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    p.handle_unreachable(t0, &0);
    p.handle_unreachable(t0, &1);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(p.choose(t1, &[]), Some(0), "probe the nearest first");
    p.handle_success(t1, &0);
    assert_eq!(p.choose(t1, &[]), Some(0));
    assert_eq!(p.poll_timeout(t0), Some(t1), "1 is due for its probe at t1");
}

#[test]
fn a_clock_that_jumps_backwards_neither_panics_nor_forgives() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    let later = t0 + Duration::from_secs(100);
    for _ in 0..3 {
        p.handle_failure(later, &0);
    }
    // Time goes back: the circuit opened "in the future" stays open.
    assert_eq!(p.choose(t0, &[]), Some(1));
    p.handle_failure(t0, &1);
    p.handle_pressure(t0, &1, true, 1);
    assert_eq!(
        p.choose(t0, &[]),
        Some(1),
        "the least bad: its back-off ends first"
    );
    // And forwards again: everything recovers in time.
    let much_later = later + Duration::from_secs(600);
    assert_eq!(p.choose(much_later, &[]), Some(0));
    p.handle_success(much_later, &0);
    assert_eq!(p.choose(much_later, &[]), Some(0));
}

#[test]
fn a_clock_that_jumps_forwards_expires_everything() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, MS);
    p.handle_rtt(&1, 5 * MS);
    p.handle_unreachable(t0, &0);
    p.handle_pressure(t0, &0, true, 0);
    let far = t0 + Duration::from_secs(86_400);
    p.handle_pressure(far, &0, false, 4);
    assert_eq!(p.choose(far, &[]), Some(0));
}

#[test]
fn relisting_keeps_what_is_known_and_forgets_dropped_regions() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&1, MS);
    p.handle_rtt(&0, 9 * MS);
    p.set_regions(&[2, 1, 2]);
    assert_eq!(p.regions().copied().collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(p.choose(t0, &[]), Some(1), "1 kept its RTT");
    p.handle_rtt(&0, MS);
    p.set_regions(&[0]);
    assert_eq!(p.choose(t0, &[]), Some(0));
}

#[test]
fn a_settled_policy_stays_settled_until_a_region_fails_or_pushes_back() {
    let (mut p, t0) = policy(&[0, 1]);
    p.handle_rtt(&0, 10 * MS);
    p.handle_rtt(&1, 20 * MS);
    assert!(p.is_settled(t0));
    for s in [0, 1, 60, 3600] {
        let t = t0 + Duration::from_secs(s);
        assert_eq!(
            p.choose(t, &[]),
            Some(0),
            "settled: the same answer at any time"
        );
        assert!(p.is_settled(t));
    }
    p.handle_unreachable(t0, &0);
    assert!(!p.is_settled(t0), "a circuit is open");
    assert!(
        !p.is_settled(t0 + Duration::from_secs(3600)),
        "a half-open circuit is not settled either: the next choice is a probe"
    );
    let (mut q, t0) = policy(&[0, 1]);
    q.handle_pressure(t0, &0, true, 0);
    assert!(!q.is_settled(t0), "backing off");
    assert!(
        q.is_settled(t0 + Duration::from_secs(60)),
        "the back-off ended"
    );
}

#[test]
fn a_down_region_is_skipped_until_it_is_up_again() {
    let (mut p, t0) = policy(&[1, 2]);
    p.handle_rtt(&1, Duration::from_millis(5));
    p.handle_rtt(&2, Duration::from_millis(50));
    assert_eq!(p.choose(t0, &[]), Some(1));
    p.handle_down(&1);
    assert!(p.is_down(&1));
    // The slower region takes every new forward, however long region 1 stays down.
    for s in [0, 1, 60] {
        assert_eq!(p.choose(t0 + Duration::from_secs(s), &[]), Some(2));
    }
    p.handle_up(&1);
    assert!(!p.is_down(&1));
    assert_eq!(p.choose(t0, &[]), Some(1));
}

#[test]
fn when_every_region_is_down_there_is_no_choice_so_the_pop_fails_fast() {
    let (mut p, t0) = policy(&[1, 2]);
    p.handle_down(&1);
    p.handle_down(&2);
    assert_eq!(p.choose(t0, &[]), None);
    p.handle_up(&2);
    assert_eq!(p.choose(t0, &[]), Some(2));
}

#[test]
fn a_region_back_up_has_a_closed_circuit() {
    let (mut p, t0) = policy(&[1, 2]);
    p.handle_rtt(&1, Duration::from_millis(5));
    p.handle_rtt(&2, Duration::from_millis(50));
    p.handle_unreachable(t0, &1);
    p.handle_down(&1);
    p.handle_up(&1);
    assert_eq!(p.choose(t0, &[]), Some(1));
}

#[test]
fn a_key_goes_to_its_region_not_the_fastest_and_moves_only_when_that_one_is_gone() {
    let (mut p, t0) = policy(&[1, 2, 3]);
    p.handle_rtt(&1, MS);
    p.handle_rtt(&2, 50 * MS);
    p.handle_rtt(&3, 90 * MS);
    let id = |r: &u32| r.to_le_bytes().to_vec();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let home: Vec<u32> = keys
        .iter()
        .map(|k| p.choose_keyed(t0, &[], k.as_bytes(), id).expect("a region"))
        .collect();
    for r in [1, 2, 3] {
        let n = home.iter().filter(|&&h| h == r).count();
        assert!((60..=140).contains(&n), "region {r} won {n} of 300 keys");
    }
    // The same key, asked again, goes to the same region.
    for (k, h) in keys.iter().zip(&home) {
        assert_eq!(p.choose_keyed(t0, &[], k.as_bytes(), id), Some(*h));
    }
    // Region 2 goes down: its keys move, every other key stays.
    p.handle_down(&2);
    for (k, h) in keys.iter().zip(&home) {
        let now = p.choose_keyed(t0, &[], k.as_bytes(), id).expect("a region");
        if *h == 2 {
            assert_ne!(now, 2);
        } else {
            assert_eq!(now, *h, "key {k} moved although its region is up");
        }
    }
    // A failed try (excluded) moves the key to another region, as failover does.
    let k = keys
        .iter()
        .zip(&home)
        .find(|(_, h)| **h == 1)
        .map(|(k, _)| k);
    let k = k.expect("region 1 won a key");
    assert_eq!(p.choose_keyed(t0, &[1], k.as_bytes(), id), Some(3));
    // With every region down there is no choice, as without a key.
    p.handle_down(&1);
    p.handle_down(&3);
    assert_eq!(p.choose_keyed(t0, &[], b"k0", id), None);
}
