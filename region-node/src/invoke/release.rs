//! Layer 3, release: asks the origin planner (`common::policy::origin`, where the rules
//! live) how to run an invocation: its fleet (frequent -> dedicated, rare -> on-demand),
//! its runtime release (the owner's pin, else the runtime canary's verdict or its sample
//! by the request's draw while this region hosts the next release) and whether the
//! canary counts its outcome. The plan's steps are what the admit layer takes.
//!
//! Holds the planner's state (the fleets' placement); never refuses, loads or runs.

use crate::canary::RuntimeCanary;
use crate::fleet::Fleets;
use common::exec::Executor;
use common::model::{FunctionKey, InvokeRequest, ResolvedFunction};
use common::policy::canary::Side;
use common::policy::origin::{Facts, OriginPlanner, Plan};
use common::sandbox::Release;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The origin planner of one region.
#[derive(Debug)]
pub struct Planner {
    planner: Mutex<OriginPlanner<FunctionKey>>,
}

impl Planner {
    /// A planner placing functions between `fleets`.
    pub fn new(fleets: &Fleets) -> Self {
        Self {
            planner: Mutex::new(OriginPlanner::new(fleets.placement())),
        }
    }

    /// The plan for `req` as `function` at `now`; `canary` is the runtime canary while it
    /// is live, and a pinned release counts only if `executor` hosts it.
    pub fn plan(
        &self,
        now: Instant,
        executor: &Executor,
        canary: Option<&RuntimeCanary>,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Plan {
        let facts = Facts {
            config: &function.config,
            request_id: req.request_id.0,
            affinity: req.affinity.as_deref(),
            canary: None,
        };
        let side_of = |name: &str| {
            Release::from_name(name)
                .filter(|r| executor.sandbox_on(*r).is_some())
                .map(Side::from)
        };
        let mut planner = self.planner.lock().unwrap_or_else(PoisonError::into_inner);
        match canary {
            Some(canary) => canary.with_policy(|policy| {
                let facts = Facts {
                    canary: Some(policy),
                    ..facts
                };
                planner.plan(now, &function.key, &facts, side_of)
            }),
            None => planner.plan(now, &function.key, &facts, side_of),
        }
    }
}
