//! Unit tests of the recency-bounded table, on a hand-driven clock.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn keys(t: &RecencyTable<u32, u32>) -> Vec<u32> {
    let mut k: Vec<u32> = t.iter().map(|(k, _, _)| *k).collect();
    k.sort_unstable();
    k
}

/// A table of at most `max` holding `keys`, each seen `k` ms after `t0`.
fn filled(t0: Instant, max: usize, keys: &[u32]) -> RecencyTable<u32, u32> {
    let mut t = RecencyTable::new(max);
    for &k in keys {
        t.touch(at(t0, u64::from(k)), &k, || k);
    }
    t
}

#[test]
fn a_new_key_in_a_full_table_drops_the_least_recently_seen() {
    let t0 = Instant::now();
    let mut t = filled(t0, 3, &[1, 2, 3]);
    for (k, left) in [(4u32, [2, 3, 4]), (5, [3, 4, 5])] {
        t.touch(at(t0, u64::from(k)), &k, || k);
        assert_eq!(keys(&t), left);
    }
}

#[test]
fn a_touch_moves_the_entry_and_keeps_its_value() {
    let t0 = Instant::now();
    let mut t = filled(t0, 3, &[1, 2, 3]);
    *t.touch(at(t0, 10), &1, || 0) += 100;
    t.touch(at(t0, 11), &4, || 4);
    assert_eq!(keys(&t), [1, 3, 4]);
    assert_eq!(t.get(&1), Some(&101));
    assert_eq!(t.seen(&1), Some(at(t0, 10)));
    t.touch(at(t0, 12), &5, || 5);
    assert_eq!(keys(&t), [1, 4, 5]);
}

#[test]
fn ties_are_broken_by_key() {
    let t0 = Instant::now();
    let mut t = RecencyTable::new(3);
    for k in [3u32, 1, 2] {
        t.touch(t0, &k, || k);
    }
    t.touch(t0, &9, || 9);
    assert_eq!(keys(&t), [2, 3, 9]);
    t.touch(t0, &8, || 8);
    assert_eq!(keys(&t), [3, 8, 9]);
}

#[test]
fn a_backwards_clock_keeps_the_later_instant() {
    let t0 = Instant::now();
    let mut t = filled(t0, 2, &[1, 2]);
    t.touch(t0, &1, || 0);
    assert_eq!(t.seen(&1), Some(at(t0, 1)));
    t.touch(at(t0, 3), &3, || 3);
    assert_eq!(keys(&t), [2, 3]);
}

#[test]
fn a_removed_key_comes_back_fresh() {
    let t0 = Instant::now();
    let mut t = filled(t0, 2, &[1, 2]);
    assert_eq!(t.remove(&1), Some(1));
    assert_eq!(t.remove(&1), None);
    // Back earlier than its old candidate: that candidate is stale, not its place.
    t.touch(t0, &1, || 10);
    assert_eq!(t.get(&1), Some(&10));
    t.touch(at(t0, 3), &3, || 3);
    assert_eq!(keys(&t), [2, 3]);
}

#[test]
fn the_bound_is_at_least_one() {
    let t0 = Instant::now();
    let mut t = RecencyTable::new(0);
    t.touch(t0, &1u32, || 1u32);
    t.touch(t0, &2, || 2);
    assert_eq!(keys(&t), [2]);
}

#[test]
fn removals_leave_bounded_garbage_in_the_index() {
    let t0 = Instant::now();
    let mut t = RecencyTable::new(4);
    t.touch(t0, &0u32, || 0u32);
    // Never full, so no eviction ever pops the removed keys' candidates.
    for i in 1..1_000u32 {
        t.touch(at(t0, u64::from(i)), &i, || i);
        t.remove(&i);
    }
    assert_eq!(keys(&t), [0]);
    assert!(t.order.len() <= 2 + SLACK, "{} candidates", t.order.len());
}

/// The O(n) scan the table replaces: drops the least recently seen entry (ties by key)
/// when `key` is new and the table full.
fn reference_evict(model: &mut BTreeMap<u32, Instant>, key: u32, max: usize) {
    if model.contains_key(&key) || model.len() < max.max(1) {
        return;
    }
    let oldest = model
        .iter()
        .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(k, _)| *k);
    if let Some(k) = oldest {
        model.remove(&k);
    }
}

#[test]
fn random_operations_match_the_linear_scan() {
    let t0 = Instant::now() + Duration::from_secs(1000);
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let max = rng.random_range(1..12usize);
        let mut t: RecencyTable<u32, u32> = RecencyTable::new(max);
        let mut model: BTreeMap<u32, Instant> = BTreeMap::new();
        let mut clock = 0u64;
        for step in 0..5_000 {
            let key = rng.random_range(0..30u32);
            // Mostly forward, sometimes standing still (ties) or backwards.
            clock = match rng.random_range(0..10) {
                0 => clock.saturating_sub(rng.random_range(0..5)),
                1..=3 => clock,
                _ => clock + rng.random_range(1..4),
            };
            let now = at(t0, clock);
            if rng.random_range(0..8) == 0 {
                assert_eq!(t.remove(&key).is_some(), model.remove(&key).is_some());
            } else {
                reference_evict(&mut model, key, max);
                let seen = model.entry(key).or_insert(now);
                *seen = (*seen).max(now);
                t.touch(now, &key, || key);
            }
            let got: BTreeMap<u32, Instant> = t.iter().map(|(k, _, s)| (*k, s)).collect();
            assert_eq!(got, model, "seed {seed}, step {step}");
            assert!(t.len() <= max);
            assert!(
                t.order.len() <= 2 * max + SLACK + 1,
                "{} candidates",
                t.order.len()
            );
        }
    }
}
