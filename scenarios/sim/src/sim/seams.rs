//! Seams where capacity policies plug into the simulator.
//!
//! Placement is the real `strata_core::policy::PlacementPolicy`, region choice the real
//! `strata_core::policy::region::RegionChoice` ([`PolicyChoice`], one per POP), the
//! runtime canary the real `strata_core::policy::canary::Canary` driven by the region's
//! planner (`strata_core::policy::origin`, see `super::dispatch`), and a POP's warm
//! pools follow the real `strata_core::policy::WarmPolicy` (trend mode, per POP, ticked like
//! the node's `common::warm_loop`; `super::shard`): the simulator drives the same policy
//! code as the nodes. Instances themselves are keep-alive pools
//! ([`super::edge::EdgeNode`] at POPs, [`super::node::Node`] at regions), which the warm
//! policy pre-warms and retires.

use super::queue::Nanos;
use std::time::{Duration, Instant};
use strata_core::policy::region::{self, RegionChoiceConfig};

/// A POP's view of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionView {
    /// The region's index.
    pub region: u32,
    /// Smoothed RTT from this POP, ns.
    pub rtt: Nanos,
    /// The POP avoids the region until then (it saw it fail).
    pub avoid_until: Nanos,
}

/// How a POP picks the region to forward to.
pub trait RegionChoice: std::fmt::Debug {
    /// The region for `pop`'s next forward among `regions` (indexed by region), or `None`
    /// when none is usable.
    fn choose(&mut self, now: Nanos, pop: u32, regions: &[RegionView]) -> Option<u32>;

    /// `pop` found `region` unreachable (it waited out the detection timeout).
    fn unreachable(&mut self, _now: Nanos, _pop: u32, _region: u32) {}
}

/// The POPs' real policy: a [`region::RegionChoice`] per POP, created on its first forward
/// with the RTTs of its views, told about every unreachable region; regions the
/// simulator marks as avoided are excluded. Simulated time maps
/// onto an [`Instant`] taken once as the epoch; only differences of it are ever used.
///
/// While a POP's policy is settled (no circuit open, no back-off: nothing has failed) its
/// choice depends on the RTTs alone, so it is remembered until the policy is told that a
/// region is unreachable; a fleet-scale run forwards millions of times and this saves
/// asking each time.
#[derive(Debug)]
pub struct PolicyChoice {
    epoch: Instant,
    pops: Vec<Option<region::RegionChoice<u32>>>,
    /// Per POP, the settled policy's pick.
    settled: Vec<Option<u32>>,
}

impl Default for PolicyChoice {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            pops: Vec::new(),
            settled: Vec::new(),
        }
    }
}

impl PolicyChoice {
    fn at(&self, now: Nanos) -> Instant {
        self.epoch + Duration::from_nanos(now)
    }
}

impl RegionChoice for PolicyChoice {
    fn choose(&mut self, now: Nanos, pop: u32, regions: &[RegionView]) -> Option<u32> {
        let at = self.at(now);
        let i = pop as usize;
        if self.pops.len() <= i {
            self.pops.resize_with(i + 1, || None);
            self.settled.resize(i + 1, None);
        }
        let avoiding = regions.iter().any(|r| r.avoid_until > now);
        if !avoiding && let Some(pick) = self.settled[i] {
            return Some(pick);
        }
        let policy = self.pops[i].get_or_insert_with(|| {
            let mut p = region::RegionChoice::new(RegionChoiceConfig::default());
            let listed: Vec<u32> = regions.iter().map(|r| r.region).collect();
            p.set_regions(&listed);
            for r in regions {
                p.handle_rtt(&r.region, Duration::from_nanos(r.rtt));
            }
            p
        });
        // The simulator's own avoidance (`retry_after_s`) still applies on top.
        if !avoiding {
            let pick = policy.choose(at, &[]);
            if policy.is_settled(at) {
                self.settled[i] = pick;
            }
            return pick;
        }
        let avoided: Vec<u32> = regions
            .iter()
            .filter(|r| r.avoid_until > now)
            .map(|r| r.region)
            .collect();
        policy.choose(at, &avoided)
    }

    fn unreachable(&mut self, now: Nanos, pop: u32, region: u32) {
        let at = self.at(now);
        if let Some(Some(p)) = self.pops.get_mut(pop as usize) {
            p.handle_unreachable(at, &region);
        }
        if let Some(pick) = self.settled.get_mut(pop as usize) {
            *pick = None;
        }
    }
}

/// The behaviour before the real policy: the lowest-RTT region not being avoided.
#[derive(Debug, Default, Clone, Copy)]
pub struct NearestHealthy;

impl RegionChoice for NearestHealthy {
    fn choose(&mut self, now: Nanos, _pop: u32, regions: &[RegionView]) -> Option<u32> {
        regions
            .iter()
            .filter(|r| r.avoid_until <= now)
            .min_by_key(|r| (r.rtt, r.region))
            .map(|r| r.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_region_not_avoided_is_chosen() {
        let regions = [
            RegionView {
                region: 2,
                rtt: 10,
                avoid_until: 100,
            },
            RegionView {
                region: 0,
                rtt: 30,
                avoid_until: 0,
            },
            RegionView {
                region: 1,
                rtt: 20,
                avoid_until: 0,
            },
        ];
        let mut c = NearestHealthy;
        assert_eq!(c.choose(50, 0, &regions), Some(1));
        assert_eq!(c.choose(100, 0, &regions), Some(2));
        let all_avoided = [RegionView {
            region: 0,
            rtt: 1,
            avoid_until: 9,
        }];
        assert_eq!(c.choose(5, 0, &all_avoided), None);
    }

    #[test]
    fn the_policy_fails_over_per_pop_and_probes_again_later() {
        let regions = [
            RegionView {
                region: 0,
                rtt: 10,
                avoid_until: 0,
            },
            RegionView {
                region: 1,
                rtt: 20,
                avoid_until: 0,
            },
        ];
        let mut c = PolicyChoice::default();
        assert_eq!(c.choose(0, 0, &regions), Some(0));
        assert_eq!(c.choose(0, 1, &regions), Some(0));
        c.unreachable(0, 0, 0);
        assert_eq!(c.choose(1, 0, &regions), Some(1), "POP 0 avoids region 0");
        let mut avoided = regions;
        avoided[1].avoid_until = 5;
        assert_eq!(
            c.choose(1, 1, &avoided),
            Some(0),
            "the simulator's avoidance applies"
        );
        assert_eq!(c.choose(1, 1, &regions), Some(0), "POP 1 saw nothing");
        assert_eq!(
            c.choose(2_000_000_000, 0, &regions),
            Some(0),
            "probe after 1 s"
        );
    }
}
