//! Judging a gradual alias rollout: is the new version failing more often than the old?
//!
//! An alias split between two versions with `auto_rollback` is watched by one
//! [`RolloutJudge`]. The *old* version is the lower number (published earlier), the *new*
//! one the higher. Outcomes of either version (from every tier: the region's own runs and
//! the POPs' load reports) are counted, a failure being any function error (non-zero exit,
//! trap, out of memory or time: a new version's own bugs are what a rollout guards
//! against, unlike the runtime canary, which counts only the platform's). The test is the
//! runtime canary's ([`super::canary::judge`]: a one-sided two-proportion z-test, with
//! the same minimum samples per side and minimum failures), with old as "current" and new
//! as "next": [`Verdict::Pinned`] means *roll back* (the alias returns to 100% old),
//! [`Verdict::Promoted`] that the new version is no worse, after which this routing is no
//! longer judged (moving the weights starts a new judge with fresh counts).
//!
//! Sans-IO: no clock, no randomness, no I/O; the region stores the alias and notifies.

use super::canary::{CanaryConfig, Counts, Verdict, judge};
use crate::model::AliasRouting;
use std::num::NonZeroU32;

/// The two versions of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// The version rolled back to: the lower number.
    pub old: NonZeroU32,
    /// The version being rolled out: the higher number.
    pub new: NonZeroU32,
}

impl Rollout {
    /// The rollout `routing` describes: `None` when it points at one version only (there
    /// is nothing to compare).
    pub fn of(routing: &AliasRouting) -> Option<Self> {
        match routing.routes() {
            [a, b] => Some(Self {
                old: a.version.min(b.version),
                new: a.version.max(b.version),
            }),
            _ => None,
        }
    }
}

/// Outcome counts and the verdict of one rollout.
#[derive(Debug, Clone)]
pub struct RolloutJudge {
    rollout: Rollout,
    counts: Counts,
    verdict: Verdict,
}

impl RolloutJudge {
    /// A judge of `rollout` with nothing counted.
    pub fn new(rollout: Rollout) -> Self {
        Self {
            rollout,
            counts: Counts::default(),
            verdict: Verdict::Undecided,
        }
    }

    /// The versions judged.
    pub fn rollout(&self) -> Rollout {
        self.rollout
    }

    /// The counts so far: `current` is the old version, `next` the new one.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Counts `n` outcomes of `version`, `failures` of them failed; returns the verdict
    /// when these decided it (once: later outcomes change nothing). Outcomes of a version
    /// outside the rollout are ignored.
    pub fn handle_outcomes(
        &mut self,
        cfg: &CanaryConfig,
        version: NonZeroU32,
        n: u32,
        failures: u32,
    ) -> Option<Verdict> {
        if self.verdict != Verdict::Undecided || n == 0 {
            return None;
        }
        if version == self.rollout.old {
            self.counts.add_current(n, failures);
        } else if version == self.rollout.new {
            self.counts.add_next(n, failures);
        } else {
            return None;
        }
        self.verdict = judge(cfg, &self.counts);
        (self.verdict != Verdict::Undecided).then_some(self.verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteSpec;

    fn v(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn cfg() -> CanaryConfig {
        CanaryConfig {
            min_samples: 10,
            ..CanaryConfig::default()
        }
    }

    fn routing(entries: &[(u32, u32)]) -> AliasRouting {
        AliasRouting::new(
            entries
                .iter()
                .map(|&(version, w)| RouteSpec {
                    version: v(version),
                    weight: Some(w),
                })
                .collect(),
        )
        .expect("routing")
    }

    #[test]
    fn the_higher_version_is_the_new_one_whatever_the_order() {
        let r = Rollout::of(&routing(&[(4, 10), (3, 90)])).expect("two versions");
        assert_eq!((r.old.get(), r.new.get()), (3, 4));
        assert_eq!(Rollout::of(&routing(&[(3, 100)])), None);
    }

    #[test]
    fn a_failing_new_version_is_rolled_back_once_both_have_enough() {
        let mut j = RolloutJudge::new(Rollout {
            old: v(1),
            new: v(2),
        });
        assert_eq!(j.handle_outcomes(&cfg(), v(2), 10, 10), None, "old unseen");
        assert_eq!(j.handle_outcomes(&cfg(), v(7), 50, 0), None, "not in it");
        assert_eq!(
            j.handle_outcomes(&cfg(), v(1), 10, 0),
            Some(Verdict::Pinned)
        );
        // Final.
        assert_eq!(j.handle_outcomes(&cfg(), v(1), 100, 100), None);
        assert_eq!(j.verdict(), Verdict::Pinned);
        assert_eq!(j.counts().next_failures, 10);
    }

    #[test]
    fn a_new_version_as_good_as_the_old_is_kept() {
        let mut j = RolloutJudge::new(Rollout {
            old: v(1),
            new: v(2),
        });
        // One failure in ten on both: no worse.
        j.handle_outcomes(&cfg(), v(1), 10, 1);
        assert_eq!(
            j.handle_outcomes(&cfg(), v(2), 10, 1),
            Some(Verdict::Promoted)
        );
    }

    #[test]
    fn a_few_failures_never_roll_back() {
        let mut j = RolloutJudge::new(Rollout {
            old: v(1),
            new: v(2),
        });
        j.handle_outcomes(&cfg(), v(1), 100, 0);
        // Two failures are below `min_failures` (3) however clean the old version is.
        assert_eq!(
            j.handle_outcomes(&cfg(), v(2), 10, 2),
            Some(Verdict::Promoted)
        );
    }
}
