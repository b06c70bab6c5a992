//! The POP's planner: every rule that decides what a POP does with one invocation, in one
//! place, used by the POP's invoker and by the simulator alike.
//!
//! The shell gathers facts (who is calling, the function's config, whether its module is
//! compiled here, a free node slot and lease slot) and asks; the planner answers
//! [`Plan::RunLocal`], [`Plan::Forward`] or [`Plan::Reject`], and the shell does what it
//! says. The rules, in order:
//! 1. an event is always forwarded: events are queued durably at the region
//!    ([`EdgePlanner::screen`]);
//! 2. a request through an HTTP route runs as the route's owner; a token this POP does not
//!    know is forwarded (the region authenticates it); no credential at all is refused;
//! 3. a function that dead-letters its failed synchronous invocations is pinned to the
//!    region, where the dead-letter queue is;
//! 4. a function over its `rate_limit_rps` is refused (429) before anything else is spent;
//! 5. a function in a `resource_group` is pinned to the region (shared state lives there);
//! 6. a local run needs the module compiled for the chosen release, a node slot and a slot
//!    of the tenant's lease; the placement policy ([`PlacementPolicy`]) weighs popularity
//!    and the memory budget ([`budget_cost`]);
//! 7. a run refused only for want of a lease slot may still run here, uncounted, when the
//!    forward fails because no region is reachable at all ([`run_uncounted`]);
//! 8. the runtime release: the region's decision or the owner's pin, else the canary's
//!    sample of an undecided function, with the region's share and the request's draw
//!    ([`release`]).
//!
//! Never performs I/O and never reads a clock: `now` is passed in, and the slots are
//! drawn through a closure the shell passes, only when the rules get that far (so a
//! pinned or refused invocation never touches the tenant's lease).

use super::canary::{self, Side};
use super::placement::{Decision, ForwardReason, LocalState, PlacementPolicy};
use super::rate::RateLimits;
use crate::model::{FunctionConfig, FunctionKey, Placement};
use std::collections::hash_map::RandomState;
use std::fmt::Display;
use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Who is calling, as far as the POP can tell before looking the function up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The tenant is known: the route's owner, or a token this POP holds.
    Known,
    /// A token this POP does not hold (not pushed yet, or learned and expired).
    UnknownToken,
    /// Neither a route nor a token.
    Anonymous,
}

/// What the POP does with one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan<R> {
    /// Run here on `release`; the slots drawn for the planning are the run's.
    RunLocal {
        /// The runtime release to run on.
        release: R,
    },
    /// Send to a region.
    Forward {
        /// Why (for metrics and logs).
        reason: ForwardReason,
        /// Only the tenant's lease was missing: if the forward fails because no region is
        /// reachable, run here uncounted ([`run_uncounted`]).
        uncounted_fallback: bool,
    },
    /// Refuse at the POP.
    Reject(Refusal),
}

impl<R> Plan<R> {
    /// A forward for `reason` with no local fallback.
    pub fn forward(reason: ForwardReason) -> Self {
        Self::Forward {
            reason,
            uncounted_fallback: false,
        }
    }
}

/// Why the POP refuses an invocation itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route and no token (401).
    Unauthenticated,
    /// The function is over its per-POP rate limit (429).
    RateLimited {
        /// The limit in force, per second.
        rps: NonZeroU32,
        /// When a token is next available.
        retry_after: Duration,
    },
}

/// What the POP knows about a function it found, for [`EdgePlanner::plan`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a, R> {
    /// The function's config; `None` when the POP does not know the function.
    pub function: Option<&'a FunctionConfig>,
    /// The release it would run on here ([`release`]).
    pub release: R,
    /// The size of its module compiled for `release` here, when it is.
    pub module_bytes: Option<u64>,
    /// Warm instances the warm-pool plan wants for it here.
    pub planned_instances: u32,
}

/// The slots a local run draws: one of the node's and one of the tenant's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// A node execution slot is free (and now held).
    pub node: bool,
    /// A slot of the tenant's lease is free (and now held).
    pub lease: bool,
}

/// The planner's answer for a function the POP looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned<R> {
    /// What to do with the invocation.
    pub plan: Plan<R>,
    /// Start fetching and compiling the function's module here (it became popular).
    pub fetch_artifact: bool,
    /// Start compiling the module for this release: the function runs on a release whose
    /// module is not ready here, and is forwarded until it is.
    pub prepare_release: Option<R>,
}

/// The POP's planner: the placement policy and the per-function rate limits, and the
/// rules around them (module docs).
#[derive(Debug)]
pub struct EdgePlanner<K = FunctionKey, S = RandomState> {
    placement: PlacementPolicy<K, S>,
    rates: RateLimits,
}

impl<K, S> EdgePlanner<K, S>
where
    K: Eq + Hash + Ord + Clone + Display,
    S: BuildHasher,
{
    /// A planner over `placement`, tracking the request rate of at most `max_rate_keys`
    /// functions at once (from `now`).
    pub fn new(placement: PlacementPolicy<K, S>, now: Instant, max_rate_keys: usize) -> Self {
        Self {
            placement,
            rates: RateLimits::new(now, max_rate_keys),
        }
    }

    /// The placement policy (for popularity queries and metrics).
    pub fn placement(&self) -> &PlacementPolicy<K, S> {
        &self.placement
    }

    /// Rules 1 and 2: what happens before the function is looked up; `None` to go on.
    pub fn screen<R>(event: bool, caller: Caller) -> Option<Plan<R>> {
        if event {
            return Some(Plan::forward(ForwardReason::Pinned));
        }
        match caller {
            Caller::Known => None,
            Caller::UnknownToken => Some(Plan::forward(ForwardReason::Unknown)),
            Caller::Anonymous => Some(Plan::Reject(Refusal::Unauthenticated)),
        }
    }

    /// Whether [`EdgePlanner::plan`] draws the slots for `facts` whatever its own state:
    /// the function is known, its module ready, and neither rule 3 nor rule 4 can stop
    /// the planning before the draw. The shell may then draw them before it takes the
    /// planner's lock, and hand them in, so that lock is held for the planner's own work
    /// only (it is the one lock every request at a POP takes).
    pub fn draws_regardless<R>(facts: &Facts<'_, R>) -> bool {
        facts.module_bytes.is_some()
            && facts
                .function
                .is_some_and(|f| !f.dead_letter_sync && f.rate_limit_rps.is_none_or(|r| r == 0))
    }

    /// Rules 3 to 6 for the invocation of `key` at `now`. `draw` takes a node slot and a
    /// lease slot (each only when free, the lease only with a node slot); it is called at
    /// most once, and only when the module is ready here (always when
    /// [`EdgePlanner::draws_regardless`]).
    pub fn plan<R: Copy + PartialEq + Default>(
        &mut self,
        now: Instant,
        key: &K,
        facts: &Facts<'_, R>,
        draw: impl FnOnce() -> Slots,
    ) -> Planned<R> {
        let mut planned = Planned {
            plan: Plan::forward(ForwardReason::Unknown),
            fetch_artifact: false,
            prepare_release: None,
        };
        if let Some(f) = facts.function {
            if f.dead_letter_sync {
                planned.plan = Plan::forward(ForwardReason::Pinned);
                return planned;
            }
            if let Some(rps) = f.rate_limit_rps.and_then(NonZeroU32::new)
                && let Err(limited) = self.rates.check(now, &key.to_string(), rps)
            {
                planned.plan = Plan::Reject(Refusal::RateLimited {
                    rps,
                    retry_after: limited.retry_after,
                });
                return planned;
            }
            if facts.module_bytes.is_none() && facts.release != R::default() {
                planned.prepare_release = Some(facts.release);
            }
        }
        let ready = facts.function.is_some() && facts.module_bytes.is_some();
        let slots = if ready {
            draw()
        } else {
            Slots {
                node: false,
                lease: false,
            }
        };
        let local = LocalState {
            placement: facts.function.map_or(Placement::Auto, placement_of),
            known: facts.function.is_some(),
            artifact_ready: facts.module_bytes.is_some(),
            slot_free: slots.node && slots.lease,
            cost_bytes: facts.function.map_or(0, |f| {
                budget_cost(f, facts.module_bytes, facts.planned_instances)
            }),
        };
        self.placement.handle_request(now, key);
        let decision = self.placement.decide(now, key, local);
        planned.fetch_artifact =
            facts.function.is_some() && self.placement.wants_artifact(key, local);
        planned.plan = match decision {
            Decision::Local if ready => Plan::RunLocal {
                release: facts.release,
            },
            // Local without a function or module cannot be right (the state said both
            // exist); treat it as unknown rather than trusting the policy blindly.
            Decision::Local => Plan::forward(ForwardReason::Unknown),
            Decision::Forward(ForwardReason::OverCapacity) if slots.node && !slots.lease => {
                Plan::Forward {
                    reason: ForwardReason::OverCapacity,
                    uncounted_fallback: true,
                }
            }
            Decision::Forward(reason) => Plan::forward(reason),
        };
        planned
    }
}

/// What decides the release a function runs on at this POP, for [`release`].
#[derive(Debug, Clone, Copy)]
pub struct ReleaseFacts<'a, R> {
    /// The release the region named for the function (its canary's decision), if any.
    pub named: Option<&'a str>,
    /// The owner's `runtime` pin (a pushed function names none), if any.
    pub pinned: Option<&'a str>,
    /// The share, in percent, the region's canary samples undecided functions with (0:
    /// it samples none).
    pub canary_percent: u8,
    /// The next release, when this POP hosts it.
    pub next: Option<R>,
    /// The request's id (the draw's source without an affinity key).
    pub request_id: u128,
    /// The request's affinity key, if any.
    pub affinity: Option<&'a str>,
}

/// The release a function runs on at this POP, by [`release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseChoice<R> {
    /// The release to run on.
    pub release: R,
    /// The release the runtime canary sampled, whose outcome is reported to the region.
    pub sampled: Option<R>,
    /// The canary sampled the next release, which is known to refuse the module: report
    /// one platform failure of it, and run on the current release, unsampled (no guest
    /// code ran on next, so nothing is repeated): the region's rule,
    /// [`super::origin::after_run`].
    pub refused_by_next: bool,
}

/// The release a function runs on at this POP: the one the region named (its canary's
/// decision), else the owner's `runtime` pin, if `hosted` here, else the current release
/// (`R::default()`): never a release the region did not pick or this POP does not host.
/// A function with neither is undecided: while the region canaries it (a share above
/// zero) and this POP hosts the next release, the request's draw ([`canary::draw`])
/// samples the side exactly as the region would ([`canary::sample`]). `refuses` says
/// whether the next release is known to refuse the module; it is asked only when the
/// draw picked the next release.
pub fn release<R: Copy + Default>(
    facts: &ReleaseFacts<'_, R>,
    hosted: impl Fn(&str) -> Option<R>,
    refuses: impl FnOnce() -> bool,
) -> ReleaseChoice<R> {
    let decided = |release| ReleaseChoice {
        release,
        sampled: None,
        refused_by_next: false,
    };
    if let Some(name) = facts.named.or(facts.pinned) {
        return decided(hosted(name).unwrap_or_default());
    }
    let Some(next) = facts.next.filter(|_| facts.canary_percent > 0) else {
        return decided(R::default());
    };
    let draw = canary::draw(facts.request_id, facts.affinity);
    match canary::sample(facts.canary_percent, draw) {
        Side::Current => ReleaseChoice {
            release: R::default(),
            sampled: Some(R::default()),
            refused_by_next: false,
        },
        Side::Next if refuses() => {
            // The region's rule for a link refusal: the sample's failure, run on current.
            let after = super::origin::after_run(Side::Next, true, super::origin::Ran::LinkRefused);
            ReleaseChoice {
                refused_by_next: after.count.is_some(),
                ..decided(R::default())
            }
        }
        Side::Next => ReleaseChoice {
            release: next,
            sampled: Some(next),
            refused_by_next: false,
        },
    }
}

/// Rule 7: after a plan with `uncounted_fallback` was forwarded and the forward failed,
/// whether to run the invocation here after all, uncounted by any region: only when the
/// failure was "unavailable" and no region connection is up (no region is reachable, so
/// no lease can be granted; the global limit holds while a region is). A region that
/// stops answering lease messages is caught earlier, by the lease book's stalled draws.
pub fn run_uncounted(unavailable: bool, region_connected: bool) -> bool {
    unavailable && !region_connected
}

/// Where a function may run as far as its config says: shared state (a resource group)
/// lives at the region, so such functions are pinned there.
pub fn placement_of(f: &FunctionConfig) -> Placement {
    if f.resource_group.is_some() {
        Placement::Region
    } else {
        f.placement
    }
}

/// What running a function here costs against the POP's memory budget: its module's bytes
/// once it is compiled here, plus the memory limits of its instances: the warm instances
/// the warm-pool plan wants, at least one (a command module's instance per run).
pub fn budget_cost(f: &FunctionConfig, module_bytes: Option<u64>, planned: u32) -> u64 {
    let instances = u64::from(planned.max(1));
    module_bytes
        .unwrap_or(0)
        .saturating_add(instances.saturating_mul(f.memory_bytes()))
}

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
