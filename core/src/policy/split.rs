//! Splitting a tenant's concurrency limit between the regions that each admit it, so all
//! regions together admit at most the limit (DESIGN §6, "Adaptive concurrency per
//! tenant", across regions).
//!
//! [`RegionSplit`] is the static rule a region applies to its own books: with `R` regions
//! each takes `1/R` of the limit's settings (the remainder to the lowest indices), so the
//! regions' shares add up to exactly the total. [`by_demand`] is the rebalancing rule: the
//! total split in proportion to each region's observed demand (largest remainder), every
//! region keeping at least one slot while the total allows, so a quiet region can take
//! traffic again; its inputs (the other regions' demand) must come from a shared store.
//!
//! Sans-IO: pure arithmetic.

use super::concurrency::LimitConfig;

/// Why a split cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No regions.
    #[error("the number of regions must be at least 1")]
    NoRegions,
    /// An index outside `0..regions`.
    #[error("region index {index} is not below the number of regions {regions}")]
    Index {
        /// The index given.
        index: u32,
        /// The number of regions.
        regions: u32,
    },
}

/// This region's part of every tenant's limit: region `index` of `regions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionSplit {
    regions: u32,
    index: u32,
}

impl Default for RegionSplit {
    /// One region: the whole limit.
    fn default() -> Self {
        Self {
            regions: 1,
            index: 0,
        }
    }
}

impl RegionSplit {
    /// Region `index` (from 0) of `regions`.
    ///
    /// # Errors
    /// [`SplitError`] for zero regions or an index not below them.
    pub fn new(regions: u32, index: u32) -> Result<Self, SplitError> {
        if regions == 0 {
            return Err(SplitError::NoRegions);
        }
        if index >= regions {
            return Err(SplitError::Index { index, regions });
        }
        Ok(Self { regions, index })
    }

    /// This region's share of `total`: `total / R`, plus one for the first `total % R`
    /// regions. The shares of all regions add up to `total`.
    pub fn share(&self, total: u32) -> u32 {
        total / self.regions + u32::from(self.index < total % self.regions)
    }

    /// `config` as this region applies it: its share of the hard maximum, the burst and
    /// the step. A share is at least 1 (a region must be able to admit something), so a
    /// tenant whose hard maximum is below the number of regions may be admitted up to
    /// `R` at once: the one exception to the sum.
    pub fn config(&self, config: LimitConfig) -> LimitConfig {
        LimitConfig {
            hard_max: self.share(config.hard_max).max(1),
            burst: self.share(config.burst).max(1),
            step: self.share(config.step).max(1),
            interval: config.interval,
        }
    }
}

/// `total` split among regions in proportion to their `demands` (e.g. each region's
/// peak in-flight count): each region first gets one slot (while `total` allows, lowest
/// index first), the rest goes by demand with the largest remainders rounded up (ties to
/// the lower index). The result adds up to `total` (or to less when every demand is zero:
/// then evenly), never more.
pub fn by_demand(total: u32, demands: &[u32]) -> Vec<u32> {
    let n = demands.len();
    if n == 0 {
        return Vec::new();
    }
    let sum: u64 = demands.iter().map(|&d| u64::from(d)).sum();
    if sum == 0 {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        return (0..n32)
            .map(|i| total / n32 + u32::from(i < total % n32))
            .collect();
    }
    let floor = u32::from(u64::from(total) >= n as u64);
    let rest = u64::from(total) - u64::from(floor) * n as u64;
    let mut shares: Vec<(u32, u64)> = demands
        .iter()
        .map(|&d| {
            let exact = rest * u64::from(d);
            // Whole part and remainder of rest · d / sum.
            (
                floor + u32::try_from(exact / sum).unwrap_or(u32::MAX),
                exact % sum,
            )
        })
        .collect();
    let given: u64 = shares.iter().map(|&(s, _)| u64::from(s)).sum();
    let mut left = u64::from(total).saturating_sub(given);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| shares[b].1.cmp(&shares[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i].0 += 1;
        left -= 1;
    }
    shares.into_iter().map(|(s, _)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_add_up_to_the_total_for_any_number_of_regions() {
        for regions in 1..=7u32 {
            for total in [0, 1, 2, 5, 99, 100, 1000] {
                let sum: u32 = (0..regions)
                    .map(|i| RegionSplit::new(regions, i).expect("valid").share(total))
                    .sum();
                assert_eq!(sum, total, "{regions} regions, total {total}");
            }
        }
        assert_eq!(RegionSplit::new(3, 0).expect("valid").share(10), 4);
        assert_eq!(RegionSplit::new(3, 2).expect("valid").share(10), 3);
        assert_eq!(RegionSplit::new(0, 0), Err(SplitError::NoRegions));
        assert!(RegionSplit::new(2, 2).is_err());
    }

    #[test]
    fn a_regions_config_is_its_share_and_never_zero() {
        let c = LimitConfig {
            hard_max: 1000,
            burst: 100,
            step: 10,
            interval: Duration::from_secs(1),
        };
        let half = RegionSplit::new(2, 1).expect("valid").config(c);
        assert_eq!((half.hard_max, half.burst, half.step), (500, 50, 5));
        let tiny = RegionSplit::new(4, 3).expect("valid").config(LimitConfig {
            hard_max: 2,
            burst: 1,
            step: 1,
            ..c
        });
        assert_eq!((tiny.hard_max, tiny.burst, tiny.step), (1, 1, 1));
        assert_eq!(RegionSplit::default().config(c), c);
    }

    #[test]
    fn demand_moves_the_split_and_every_region_keeps_a_slot() {
        assert_eq!(by_demand(10, &[30, 10]), vec![7, 3]);
        assert_eq!(by_demand(10, &[100, 0]), vec![9, 1]);
        assert_eq!(by_demand(10, &[0, 0, 0]), vec![4, 3, 3]);
        assert_eq!(by_demand(1, &[0, 5]), vec![0, 1]);
        assert!(by_demand(5, &[]).is_empty());
        for demands in [[1, 2, 3], [7, 7, 7], [0, 1, 1000], [5, 0, 0]] {
            for total in [0, 1, 2, 3, 10, 101] {
                let s = by_demand(total, &demands);
                assert_eq!(s.iter().sum::<u32>(), total, "{demands:?} {total}");
            }
        }
    }
}
