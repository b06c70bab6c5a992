//! The region's planner: every rule that decides how a region runs one invocation, in one
//! place, used by the region's invoker and by the simulator alike (the POP's counterpart is
//! [`super::edge`]).
//!
//! The shell gathers facts (the function's config, the request's id and affinity key, the
//! runtime canary's state when this region hosts the next release) and asks
//! [`OriginPlanner::plan`]; the [`Plan`] names the fleet, the runtime release, whether the
//! outcome is counted by the canary, and the [`Step`]s to take, in order. The shell takes
//! them one by one, stopping at the first refusal, and reports how the run went to
//! [`after_run`]. The rules, in order:
//! 1. **fleet**: a frequent function runs in the dedicated fleet, a rare one in the
//!    on-demand fleet; which is which is [`PlacementPolicy`]'s decision ("local" means
//!    "frequent"), a function's warm instance costing its memory against the frequent
//!    set's budget. Without an on-demand fleet, everything is dedicated ([`fleet`]);
//! 2. **release**: the owner's `runtime` pin wins (a release this region does not know is
//!    the current one) and is not counted; else the runtime canary's choice: the verdict,
//!    or a sample of an undecided function with the canary's share and the request's
//!    draw ([`canary::draw`], the same at both tiers), counted while undecided and the
//!    share is not zero ([`release`]);
//! 3. **admission**, every step that can refuse, before anything is prepared: the
//!    tenant's own limits (rate and concurrency, 429, never queued), the region's capacity
//!    (dedicated fleet: every slot busy and the queue full, 503, whoever asks), the
//!    tenant's share of the fleet (429), then a slot or a worker's turn (a bounded wait);
//! 4. **run**: only then is the module loaded (compiled when it is not cached) for the
//!    release, and run. So a refused invocation never costs a compile;
//! 5. **after the run**: a module the next release refuses to link is a platform failure
//!    of that release, and the invocation runs again on the current one (no guest code
//!    ran, so nothing is repeated); the outcome is counted by the canary when the plan
//!    said so ([`after_run`]);
//! 6. **out of memory**: with `auto_resize`, a run that ran out of memory below the
//!    function's ceiling is retried once with double the memory ([`memory_retry`]; the
//!    executor applies it at both tiers).
//!
//! Never performs I/O and never reads a clock: `now` is passed in.

use super::canary::{self, Canary, Side, Verdict};
use super::placement::{Decision, LocalState, PlacementPolicy};
use crate::model::{FunctionConfig, Placement};
use std::collections::hash_map::RandomState;
use std::fmt::Display;
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// Which of the region's fleets runs an invocation (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fleet {
    /// Execution slots with a bounded wait, and kept warm pools: frequent functions.
    Dedicated,
    /// A worker's turn from a bounded queue: rare functions.
    OnDemand,
}

/// One step of running an invocation at the region, in the order of [`Plan::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The tenant's own limits: its rate, then its concurrency (429, never queued).
    Tenant,
    /// The region's capacity: every execution slot busy and the queue full (503).
    Capacity,
    /// The tenant's share of the fleet's slots or workers (429).
    Share,
    /// An execution slot or a worker's turn (may wait; 503 when the wait is full).
    Slot,
    /// Load the module for the plan's release (compiling it when it is not cached) and
    /// run it.
    Run,
}

/// The steps of a dedicated-fleet run.
const DEDICATED: [Step; 5] = [
    Step::Tenant,
    Step::Capacity,
    Step::Share,
    Step::Slot,
    Step::Run,
];
/// The steps of an on-demand run: its queue is its capacity (a full one refuses the turn).
const ON_DEMAND: [Step; 4] = [Step::Tenant, Step::Share, Step::Slot, Step::Run];

/// How the region runs one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The fleet it runs in.
    pub fleet: Fleet,
    /// The runtime release it runs on.
    pub release: Side,
    /// Whether the canary counts its outcome.
    pub counted: bool,
}

impl Plan {
    /// The steps to take, in order: every one that can refuse comes before
    /// [`Step::Run`], the only one that loads or compiles the module.
    pub fn steps(&self) -> &'static [Step] {
        match self.fleet {
            Fleet::Dedicated => &DEDICATED,
            Fleet::OnDemand => &ON_DEMAND,
        }
    }
}

/// What the region knows about one invocation, for [`OriginPlanner::plan`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a, K> {
    /// The function's config.
    pub config: &'a FunctionConfig,
    /// The request's id (random; a POP keeps it when it forwards).
    pub request_id: u128,
    /// The request's affinity key, if any.
    pub affinity: Option<&'a str>,
    /// The runtime canary, when this region hosts the next release and canaries it.
    pub canary: Option<&'a Canary<K>>,
}

/// The region's planner: the fleet placement, and the rules around it (module docs).
#[derive(Debug)]
pub struct OriginPlanner<K, S = RandomState> {
    /// Which functions are frequent; `None` without an on-demand fleet.
    fleets: Option<PlacementPolicy<K, S>>,
}

impl<K, S> OriginPlanner<K, S>
where
    K: Eq + Hash + Ord + Clone + Display,
    S: BuildHasher,
{
    /// A planner placing functions in fleets with `fleets`, or in the dedicated fleet
    /// only when `None`.
    pub fn new(fleets: Option<PlacementPolicy<K, S>>) -> Self {
        Self { fleets }
    }

    /// Plans the invocation of `key` at `now` (rules 1 and 2). `side_of` names the
    /// release a `runtime` pin means, `None` for a name this region does not know.
    pub fn plan(
        &mut self,
        now: Instant,
        key: &K,
        facts: &Facts<'_, K>,
        side_of: impl Fn(&str) -> Option<Side>,
    ) -> Plan {
        let fleet = match &mut self.fleets {
            Some(placement) => fleet(placement, now, key, facts.config),
            None => Fleet::Dedicated,
        };
        let pin = pinned(facts.config.runtime.as_deref(), side_of);
        let (release, counted) = match facts.canary {
            Some(canary) => release(
                canary,
                key,
                pin,
                canary::draw(facts.request_id, facts.affinity),
            ),
            None => (pin.unwrap_or(Side::Current), false),
        };
        Plan {
            fleet,
            release,
            counted,
        }
    }
}

/// Rule 1: records one invocation of `key` at `now` in `placement` and says which fleet
/// runs it.
pub fn fleet<K, S>(
    placement: &mut PlacementPolicy<K, S>,
    now: Instant,
    key: &K,
    config: &FunctionConfig,
) -> Fleet
where
    K: Eq + Hash + Ord + Clone + Display,
    S: BuildHasher,
{
    placement.handle_request(now, key);
    let local = LocalState {
        placement: Placement::Auto,
        known: true,
        artifact_ready: true,
        slot_free: true,
        // A frequent function's warm pool costs its memory against the frequent budget.
        cost_bytes: config.memory_bytes(),
    };
    match placement.decide(now, key, local) {
        Decision::Local => Fleet::Dedicated,
        Decision::Forward(_) => Fleet::OnDemand,
    }
}

/// The release a function's `runtime` pin names: `side_of(pin)`, the current release for
/// a name this region does not know, `None` without a pin.
pub fn pinned(pin: Option<&str>, side_of: impl Fn(&str) -> Option<Side>) -> Option<Side> {
    pin.map(|name| side_of(name).unwrap_or(Side::Current))
}

/// Rule 2 with a canary: the release an invocation of `key` with `draw` runs on, and
/// whether its outcome is counted. A `pin` wins and is not counted; otherwise the
/// canary chooses ([`Canary::choose`]), counting while the function is undecided and the
/// share is not zero (with no share on the next release there is nothing to compare).
pub fn release<K: Hash + Eq + Clone>(
    canary: &Canary<K>,
    key: &K,
    pin: Option<Side>,
    draw: u64,
) -> (Side, bool) {
    if let Some(side) = pin {
        return (side, false);
    }
    let counted = canary.verdict(key) == Verdict::Undecided && canary.config().percent > 0;
    (canary.choose(key, draw), counted)
}

/// The release POPs run a function on, as the region tells them: a `pin` wins; otherwise
/// the canary's verdict, `None` while undecided (a POP samples it itself with the same
/// share and draw, and reports the outcomes).
pub fn decided(verdict: Verdict, pin: Option<Side>) -> Option<Side> {
    pin.or(match verdict {
        Verdict::Promoted => Some(Side::Next),
        Verdict::Pinned => Some(Side::Current),
        Verdict::Undecided => None,
    })
}

/// How a planned run went, for [`after_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// The guest ran; `platform_fault` when it failed for the platform's reasons (a trap,
    /// out of memory or time; not the guest's own non-zero exit).
    Done {
        /// A platform failure.
        platform_fault: bool,
    },
    /// The release refused to link the module (an import it dropped): no guest code ran.
    LinkRefused,
    /// Anything else went wrong before the guest ran (the error is the answer).
    Failed,
}

/// What follows a run, by [`after_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// Run again on the current release (uncounted): the next one refused the module.
    pub rerun_on_current: bool,
    /// The outcome the canary counts: the release, and whether it was a platform failure.
    pub count: Option<(Side, bool)>,
}

/// Rule 5: what follows a run on `release` that went `ran`, `counted` when the canary
/// counts it (a [`Plan`]'s fields; a POP asks the same for a sample it knows the next
/// release refuses, `super::edge::release`). A link refusal by the next release is a
/// platform failure of it (counted when the run is), and the invocation runs again on
/// the current release; a guest run is counted when the run is; a failure before the
/// guest ran is the answer, and not counted (the release is not to blame for what was
/// never run).
pub fn after_run(release: Side, counted: bool, ran: Ran) -> After {
    let count = |failed| counted.then_some((release, failed));
    match ran {
        Ran::LinkRefused if release == Side::Next => After {
            rerun_on_current: true,
            count: count(true),
        },
        Ran::Done { platform_fault } => After {
            rerun_on_current: false,
            count: count(platform_fault),
        },
        Ran::LinkRefused | Ran::Failed => After {
            rerun_on_current: false,
            count: None,
        },
    }
}

/// Rule 6: the memory, in MiB, to retry a run of a function with `config` that used a
/// `limit_mb` limit, when it ran `out_of_memory`: double the limit, at most the
/// function's `max_memory_mb` ceiling, once, and only with `auto_resize` (a guest with
/// side effects sees them twice, which is what `auto_resize` opts into). `None`: no
/// retry.
pub fn memory_retry(config: &FunctionConfig, out_of_memory: bool, limit_mb: u32) -> Option<u32> {
    let ceiling = config.memory_ceiling_mb();
    (config.auto_resize && out_of_memory && limit_mb < ceiling)
        .then(|| limit_mb.saturating_mul(2).min(ceiling))
}

#[cfg(test)]
#[path = "origin_tests.rs"]
mod tests;
