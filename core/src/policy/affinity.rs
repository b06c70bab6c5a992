//! Affinity routing: which of several candidates (warm instances in a pool, regions known
//! to a POP) serves an `x-strata-affinity` key.
//!
//! Rendezvous (highest-random-weight) hashing: every candidate gets a score from the key
//! and the candidate's own identity, and the highest score wins. Adding or removing one
//! candidate only moves the keys that candidate won, which is what keeps a key on "its"
//! instance or region while that one lives. Pure functions over their inputs: no clock, no
//! randomness, no I/O. The hash is spelled out here (FNV-1a, then a splitmix64 finaliser)
//! so that the choice does not depend on std's hasher, which may change between releases.

/// FNV-1a over `bytes`, seeded with `seed`.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The score of `candidate` (its stable identity, as bytes) for `key`.
pub fn score(key: &[u8], candidate: &[u8]) -> u64 {
    let k = fnv1a(OFFSET_BASIS, key);
    mix(fnv1a(k ^ 0x9e37_79b9_7f4a_7c15, candidate))
}

/// The index in `candidates` that serves `key`, or `None` when there are none. Ties (which
/// need a 64-bit collision) go to the earlier candidate, so the result is deterministic.
pub fn choose<C: AsRef<[u8]>>(key: &[u8], candidates: &[C]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let s = score(key, c.as_ref());
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// The slot among `slots` numbered slots (`0..slots`) that serves `key`: [`choose`] over
/// the slot numbers. `None` when `slots` is zero.
pub fn choose_slot(key: &[u8], slots: usize) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for i in 0..slots {
        let s = score(key, &(i as u64).to_le_bytes());
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_candidates_means_no_choice() {
        assert_eq!(choose::<&str>(b"k", &[]), None);
        assert_eq!(choose_slot(b"k", 0), None);
    }

    #[test]
    fn the_same_key_always_gets_the_same_candidate() {
        let regions = ["10.0.0.1:4433", "10.0.0.2:4433", "10.0.0.3:4433"];
        for k in 0..100 {
            let key = format!("user-{k}");
            assert_eq!(
                choose(key.as_bytes(), &regions),
                choose(key.as_bytes(), &regions)
            );
        }
    }

    #[test]
    fn keys_spread_over_all_candidates() {
        let mut hits = [0usize; 4];
        for k in 0..4000 {
            let slot = choose_slot(format!("k{k}").as_bytes(), 4).expect("four slots");
            hits[slot] += 1;
        }
        assert!(hits.iter().all(|&h| h > 700), "{hits:?}");
    }

    #[test]
    fn removing_a_candidate_moves_only_the_keys_it_served() {
        let all = ["a", "b", "c", "d", "e"];
        let without_c = ["a", "b", "d", "e"];
        for k in 0..1000 {
            let key = format!("key-{k}");
            let before = all[choose(key.as_bytes(), &all).expect("some")];
            let after = without_c[choose(key.as_bytes(), &without_c).expect("some")];
            if before != "c" {
                assert_eq!(before, after, "{key} moved although its region stayed");
            }
        }
    }

    #[test]
    fn order_of_candidates_does_not_matter() {
        let a = ["r1", "r2", "r3"];
        let b = ["r3", "r1", "r2"];
        for k in 0..200 {
            let key = format!("{k}");
            assert_eq!(
                a[choose(key.as_bytes(), &a).expect("some")],
                b[choose(key.as_bytes(), &b).expect("some")]
            );
        }
    }
}
