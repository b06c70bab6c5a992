//! Splitting a tenant's concurrency limit between the regions that each admit it, so all
//! regions together admit at most the limit (DESIGN §6, "Adaptive concurrency per
//! tenant", across regions).
//!
//! [`RegionSplit`] is the static rule a region applies to its own books: with `R` regions
//! each takes `1/R` of the limit's settings (the remainder to the lowest indices), so the
//! regions' shares add up to exactly the total. [`by_demand`] is the rebalancing rule: the
//! total split in proportion to each region's observed demand (largest remainder), every
//! region keeping at least one slot while the total allows, so a quiet region can take
//! traffic again; its inputs (the other regions' demand) come from a shared store, where
//! [`Allocation`] is the record the regions read and compare-and-set.
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

/// One tenant's limit as the regions sharing a store have divided it: the record every
/// region reads and rewrites (compare-and-set) to rebalance by demand.
///
/// Invariant: `shares` add up to at most `total`. A region only ever raises its own share
/// into slots no region holds, and lowers it before writing the lower value, so the
/// regions' limits in force never add up to more than the total, whatever order their
/// writes land in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// The tenant's whole limit (its `hard_max`) these shares divide.
    pub total: u32,
    /// Each region's share, by region index.
    pub shares: Vec<u32>,
    /// Each region's last reported demand (peak concurrency wanted in its last period,
    /// refused requests included), by region index.
    pub demand: Vec<u32>,
}

impl Allocation {
    /// The static split of `total` among `regions`: where every region starts, and what
    /// a changed total (an operator override) resets to.
    pub fn even(total: u32, regions: u32) -> Self {
        let shares = (0..regions)
            .map(|i| RegionSplit { regions, index: i }.share(total))
            .collect();
        Self {
            total,
            shares,
            demand: vec![0; regions as usize],
        }
    }

    /// This region's next record, from the stored one (`None`: none yet), after it
    /// observed `demand` and holds `charged` slots now: its demand recorded, its share
    /// moved towards [`by_demand`]'s target: up only into unheld slots, down never below
    /// what it holds now (so no slot in use is handed to another region). A stored record
    /// for another total or number of regions is replaced by [`Allocation::even`].
    pub fn rebalanced(
        stored: Option<&Allocation>,
        split: RegionSplit,
        total: u32,
        demand: u32,
        charged: u32,
    ) -> Allocation {
        let n = split.regions as usize;
        let mut next = match stored {
            Some(a) if a.total == total && a.shares.len() == n && a.demand.len() == n => a.clone(),
            _ => Allocation::even(total, split.regions),
        };
        let me = split.index as usize;
        next.demand[me] = demand;
        let target = by_demand(total, &next.demand)[me];
        let held: u32 = next.shares.iter().sum();
        let current = next.shares[me];
        next.shares[me] = if target >= current {
            target.min(current + total.saturating_sub(held))
        } else {
            target.max(charged.min(current))
        };
        next
    }

    /// `index`'s share (0 for an index the record does not have).
    pub fn share(&self, index: u32) -> u32 {
        self.shares.get(index as usize).copied().unwrap_or(0)
    }
}

impl RegionSplit {
    /// The number of regions.
    pub fn regions(&self) -> u32 {
        self.regions
    }

    /// This region's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `config` with this region's part of it being `share` of the hard maximum (burst
    /// and step scaled alike, each at least 1): the limit a rebalanced region applies.
    pub fn config_for_share(config: LimitConfig, share: u32) -> LimitConfig {
        let scale = |v: u32| {
            let scaled = u64::from(v) * u64::from(share) / u64::from(config.hard_max.max(1));
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        };
        LimitConfig {
            hard_max: share.max(1),
            burst: scale(config.burst).min(share.max(1)),
            step: scale(config.step),
            interval: config.interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn split(index: u32) -> RegionSplit {
        RegionSplit::new(2, index).expect("valid")
    }

    #[test]
    fn a_busy_region_takes_only_slots_the_quiet_one_gave_up() {
        // Both start at 2 of 4. A sees demand 4; B none and holds nothing.
        let start = Allocation::even(4, 2);
        let a1 = Allocation::rebalanced(Some(&start), split(0), 4, 4, 2);
        assert_eq!(a1.shares, [2, 2], "no unheld slot yet: A stays at 2");
        assert_eq!(a1.demand, [4, 0]);
        let b1 = Allocation::rebalanced(Some(&a1), split(1), 4, 0, 0);
        assert_eq!(b1.shares, [2, 1], "B gives up what it does not need");
        let a2 = Allocation::rebalanced(Some(&b1), split(0), 4, 4, 2);
        assert_eq!(a2.shares, [3, 1]);
        assert!(a2.shares.iter().sum::<u32>() <= 4);
    }

    #[test]
    fn a_region_never_gives_up_slots_it_holds() {
        let busy = Allocation {
            total: 4,
            shares: vec![3, 1],
            demand: vec![3, 0],
        };
        // Demand moves to B while A still runs 3: A keeps 3 until they end.
        let b = Allocation::rebalanced(Some(&busy), split(1), 4, 5, 1);
        assert_eq!(b.shares, [3, 1]);
        let a = Allocation::rebalanced(Some(&b), split(0), 4, 0, 3);
        assert_eq!(a.shares, [3, 1]);
        let a = Allocation::rebalanced(Some(&a), split(0), 4, 0, 0);
        assert_eq!(a.shares, [1, 1]);
        let b = Allocation::rebalanced(Some(&a), split(1), 4, 5, 1);
        assert_eq!(b.shares, [1, 3]);
    }

    #[test]
    fn any_interleaving_of_rebalances_keeps_the_sum_within_the_total() {
        // Regions apply a lower share before writing it and a higher one after: the
        // record's sum bounds what is in force, and it never exceeds the total.
        let mut record = Allocation::even(10, 3);
        let regions = [
            RegionSplit::new(3, 0),
            RegionSplit::new(3, 1),
            RegionSplit::new(3, 2),
        ]
        .map(|r| r.expect("valid"));
        let mut charged = [0u32; 3];
        for step in 0u32..300 {
            let i = (step * 7 % 3) as usize;
            let demand = (step * 13 + i as u32 * 5) % 12;
            let next = Allocation::rebalanced(Some(&record), regions[i], 10, demand, charged[i]);
            assert!(next.shares.iter().sum::<u32>() <= 10, "{next:?}");
            assert!(next.shares[i] >= charged[i].min(record.shares[i]));
            charged[i] = demand.min(next.shares[i]);
            record = next;
        }
    }

    #[test]
    fn a_changed_total_or_region_count_starts_from_the_even_split() {
        let old = Allocation {
            total: 4,
            shares: vec![3, 1],
            demand: vec![3, 0],
        };
        let next = Allocation::rebalanced(Some(&old), split(1), 6, 0, 0);
        assert_eq!((next.total, next.shares.clone()), (6, vec![3, 3]));
        let three = RegionSplit::new(3, 0).expect("valid");
        assert_eq!(
            Allocation::rebalanced(Some(&old), three, 4, 0, 0)
                .shares
                .len(),
            3
        );
        assert_eq!(next.share(5), 0);
    }

    #[test]
    fn a_share_scales_burst_and_step_and_never_reaches_zero() {
        let c = LimitConfig {
            hard_max: 10,
            burst: 4,
            step: 2,
            interval: Duration::from_secs(1),
        };
        let nine = RegionSplit::config_for_share(c, 9);
        assert_eq!((nine.hard_max, nine.burst, nine.step), (9, 3, 1));
        let none = RegionSplit::config_for_share(c, 0);
        assert_eq!((none.hard_max, none.burst, none.step), (1, 1, 1));
    }

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
