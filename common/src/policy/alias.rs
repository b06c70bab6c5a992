//! Choosing which of an alias's versions serves one invocation.
//!
//! A pure function of the routing and a random input the caller draws, so POPs, regions
//! and the simulator make the same choice from the same number and tests are exact.

use crate::model::AliasRouting;
use std::num::NonZeroU32;

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
    fn a_single_version_gets_everything() {
        let r = routing(&[(7, None)]);
        assert!(
            (0..500u64)
                .chain([u64::MAX])
                .all(|i| pick(&r, i).get() == 7)
        );
    }
}
