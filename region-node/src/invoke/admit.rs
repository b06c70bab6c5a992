//! Layer 4, admit: takes the plan's steps that can refuse, in the plan's order, before
//! the run (the only step that loads or compiles the module), so a refused invocation
//! costs no compile: the tenant's rate and concurrency (429), the region's capacity
//! (dedicated fleet: every slot busy and the queue full, 503), the tenant's share of the
//! fleet (429), then an execution slot or a worker's turn (may wait; 503 when the wait is
//! full).
//!
//! Touches only the gates; never loads a module or runs a guest.

use super::InvokeError;
use crate::admission::{Admission, Refusal, ShareTicket};
use crate::fleet::{Fleet, Fleets, Turn};
use crate::limits::{Limits, Permit};
use crate::region::Shares;
use common::model::ResolvedFunction;
use common::policy::origin::{Plan, Step};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// The gates an invocation passes before it runs.
#[derive(Debug, Clone, Copy)]
pub struct Gates<'a> {
    /// The tenants' rates and concurrency budgets.
    pub limits: &'a Arc<Limits>,
    /// The execution slots and their queue.
    pub admission: &'a Admission,
    /// Each tenant's share of each fleet.
    pub shares: &'a Shares,
    /// The on-demand fleet's worker turns.
    pub fleets: &'a Fleets,
}

/// What an admitted invocation holds until its run ends (dropping it frees them).
#[derive(Debug, Default)]
#[must_use = "dropping it frees the slot before the run"]
pub struct Admitted {
    _permit: Option<Permit>,
    _share: Option<ShareTicket>,
    _slot: Option<OwnedSemaphorePermit>,
    _turn: Option<Turn>,
}

/// Admits `function` as `plan` says, up to its run step.
///
/// # Errors
/// [`InvokeError::Limited`] (the tenant's limits) or [`InvokeError::Refused`] (the
/// region's capacity) from the first step that refuses; [`InvokeError::NoRunStep`] for a
/// plan without a run.
pub async fn admit(
    gates: Gates<'_>,
    function: &ResolvedFunction,
    plan: &Plan,
) -> Result<Admitted, InvokeError> {
    let key = &function.key;
    let mut held = Admitted::default();
    for step in plan.steps() {
        match step {
            Step::Tenant => {
                let (limits, config) = (gates.limits, &function.config);
                limits.check_rate(key, config.rate_limit_rps)?;
                let permit =
                    limits.admit(&key.tenant, key.name.as_str(), config.max_concurrency)?;
                held._permit = Some(permit);
            }
            Step::Capacity if gates.admission.is_full() => return Err(Refusal::Full.into()),
            Step::Capacity => {}
            Step::Share => held._share = Some(gates.shares.of(plan.fleet).take(&key.tenant)?),
            Step::Slot => match plan.fleet {
                Fleet::Dedicated => held._slot = Some(gates.admission.admit().await?),
                // The on-demand fleet's worker turn is its slot.
                Fleet::OnDemand => held._turn = Some(gates.fleets.turn().await?),
            },
            Step::Run => return Ok(held),
        }
    }
    Err(InvokeError::NoRunStep)
}
