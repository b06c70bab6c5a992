//! Choosing which of an alias's versions serves one invocation.
//!
//! A pure function of the routing and a random input the caller draws, so POPs, regions
//! and the simulator make the same choice from the same number and tests are exact.
//!
//! Stickiness: [`draw`] takes the number from the invocation's affinity key when it has
//! one (`x-strata-affinity`), so one client stays on one version during a weighted
//! rollout, at both tiers, while distinct keys still split by the weights. Without a key
//! the draw is the request id, random per invocation and kept when a POP forwards.

use crate::model::AliasRouting;
use std::num::NonZeroU32;

/// The draw [`pick`] takes for an invocation: from its affinity key when it has one (the
/// same key always draws the same number, on every node and release), else its random
/// request id.
pub fn draw(request_id: u128, affinity: Option<&str>) -> u64 {
    match affinity {
        Some(key) => super::affinity::score(key.as_bytes(), b"alias-version"),
        // Truncation intended: the low 64 bits of a random id are random.
        None => request_id as u64,
    }
}

/// The version of `routing` that serves an invocation whose random draw is `r`.
///
/// `r % 100` falls into the first target's share (`0..weight`) or the second's; with
/// uniformly random `r` each version gets its weight in percent (the modulo bias of
/// `u64::MAX % 100` is below 1e-17).
pub fn pick(routing: &AliasRouting, r: u64) -> NonZeroU32 {
    let routes = routing.routes();
    let bucket = (r % 100) as u32;
    let mut acc = 0;
    for route in routes {
        acc += route.weight;
        if bucket < acc {
            return route.version;
        }
    }
    // Weights add up to 100 (AliasRouting's invariant), so the loop always returns; the
    // last target is the safe answer should that ever change.
    routes.last().map_or(NonZeroU32::MIN, |r| r.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteSpec;

    fn routing(weights: &[(u32, Option<u32>)]) -> AliasRouting {
        AliasRouting::new(
            weights
                .iter()
                .map(|&(v, w)| RouteSpec {
                    version: NonZeroU32::new(v).expect("non-zero"),
                    weight: w,
                })
                .collect(),
        )
        .expect("valid routing")
    }

    #[test]
    fn weights_split_every_hundred_draws_exactly() {
        let r = routing(&[(3, Some(90)), (4, Some(10))]);
        let fours = (0..1000u64).filter(|&i| pick(&r, i).get() == 4).count();
        assert_eq!(fours, 100);
        assert_eq!(pick(&r, 89).get(), 3);
        assert_eq!(pick(&r, 90).get(), 4);
    }

    #[test]
    fn a_key_stays_on_one_version_and_keys_split_by_the_weights() {
        let r = routing(&[(3, Some(90)), (4, Some(10))]);
        let keys: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
        let fours = keys
            .iter()
            .filter(|k| pick(&r, draw(1, Some(k))).get() == 4)
            .count() as f64;
        // Binomial(10 000, 0.1): sigma = 30; within 4 sigma of 1000.
        assert!((fours - 1000.0).abs() <= 120.0, "{fours} keys on version 4");
        for k in &keys[..100] {
            let first = pick(&r, draw(7, Some(k)));
            assert!(
                (0..20u128).all(|id| pick(&r, draw(id, Some(k))) == first),
                "key {k} moved between versions"
            );
        }
        // Without a key the request id decides, as before.
        assert_eq!(draw(0x1234_5678_9abc_def0_0000_0000_0000_0063, None), 0x63);
    }

    #[test]
    fn a_single_version_gets_everything() {
        let r = routing(&[(7, None)]);
        assert!(
            (0..500u64)
                .chain([u64::MAX])
                .all(|i| pick(&r, i).get() == 7)
        );
    }
}
