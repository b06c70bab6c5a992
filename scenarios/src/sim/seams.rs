//! Seams where capacity policies plug into the simulator.
//!
//! Placement is the real `common::policy::PlacementPolicy`, and canary verdicts are the
//! real `common::policy::canary::judge` ([`PolicyJudge`]). The policies that do not exist
//! in `common::policy` yet (region choice) are modelled here behind small traits, so that
//! when they land the simulator drives them through the same seam.
//! Warm pools are keep-alive pools in [`super::node`]; a trend-driven pool would replace
//! `Node::acquire`/`Node::sweep` behind the same calls.

use super::queue::Nanos;
use common::policy::canary::{self, CanaryConfig, Counts};

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
    /// The region for the next forward among `regions` (sorted by RTT), or `None` when
    /// none is usable.
    fn choose(&mut self, now: Nanos, regions: &[RegionView]) -> Option<u32>;
}

/// Today's behaviour: the lowest-RTT region not being avoided.
#[derive(Debug, Default, Clone, Copy)]
pub struct NearestHealthy;

impl RegionChoice for NearestHealthy {
    fn choose(&mut self, now: Nanos, regions: &[RegionView]) -> Option<u32> {
        regions
            .iter()
            .filter(|r| r.avoid_until <= now)
            .min_by_key(|r| (r.rtt, r.region))
            .map(|r| r.region)
    }
}

/// Which runtime an invocation of a function runs on during a canary rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The runtime in production.
    Current,
    /// The runtime being rolled out.
    Next,
}

/// The verdict on one function of a canary rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Still sampling.
    #[default]
    Undecided,
    /// Worse on the next runtime: pinned to the current one.
    Pinned,
    /// No worse: moved to the next runtime.
    Promoted,
}

/// Per-function outcome counts the canary judges on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Invocations on the current runtime.
    pub current: u32,
    /// Of which failed.
    pub current_errors: u32,
    /// Invocations on the next runtime.
    pub next: u32,
    /// Of which failed.
    pub next_errors: u32,
}

/// Decides a function's canary verdict from its outcomes.
pub trait CanaryJudge: std::fmt::Debug {
    /// The verdict once enough outcomes are in, [`Verdict::Undecided`] before.
    fn judge(&self, o: &Outcomes) -> Verdict;
}

/// The nodes' own canary judge, [`common::policy::canary::judge`]: a one-sided
/// two-proportion z-test once both runtimes have `min_samples` outcomes, never pinning on
/// fewer than `min_failures` failures.
#[derive(Debug, Clone, Copy)]
pub struct PolicyJudge {
    /// The policy's knobs (`percent` and `max_tracked` are unused here: the simulator
    /// draws the share itself).
    pub cfg: CanaryConfig,
}

impl CanaryJudge for PolicyJudge {
    fn judge(&self, o: &Outcomes) -> Verdict {
        let counts = Counts {
            current: o.current,
            current_failures: o.current_errors,
            next: o.next,
            next_failures: o.next_errors,
        };
        match canary::judge(&self.cfg, &counts) {
            canary::Verdict::Undecided => Verdict::Undecided,
            canary::Verdict::Pinned => Verdict::Pinned,
            canary::Verdict::Promoted => Verdict::Promoted,
        }
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
        assert_eq!(c.choose(50, &regions), Some(1));
        assert_eq!(c.choose(100, &regions), Some(2));
        let all_avoided = [RegionView {
            region: 0,
            rtt: 1,
            avoid_until: 9,
        }];
        assert_eq!(c.choose(5, &all_avoided), None);
    }

    #[test]
    fn the_judge_pins_a_regression_and_promotes_an_equal_runtime() {
        let j = PolicyJudge {
            cfg: CanaryConfig {
                min_samples: 200,
                ..CanaryConfig::default()
            },
        };
        let early = Outcomes {
            current: 1000,
            current_errors: 1,
            next: 10,
            next_errors: 5,
        };
        assert_eq!(j.judge(&early), Verdict::Undecided);
        let worse = Outcomes {
            current: 4000,
            current_errors: 4,
            next: 200,
            next_errors: 10,
        };
        assert_eq!(j.judge(&worse), Verdict::Pinned);
        let same = Outcomes {
            current: 4000,
            current_errors: 4,
            next: 200,
            next_errors: 0,
        };
        assert_eq!(j.judge(&same), Verdict::Promoted);
    }
}
