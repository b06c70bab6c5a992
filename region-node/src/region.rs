//! The region's services, built once by the node ([`crate::node`]) and shared by the
//! invoke pipeline ([`crate::invoke`]), the control API ([`crate::api`]), the QUIC service
//! ([`crate::quic`]) and the outcome folding ([`crate::outcomes`]). Each of them takes the
//! services it needs from [`Region`]'s fields; none reaches them through the invoker.
//!
//! Holds no logic beyond what several of those users ask of the services together (the
//! canary while it is live, the gauges, the pressure reported to POPs).

use crate::admission::{Admission, TenantShares};
use crate::artifacts::Artifacts;
use crate::canary::RuntimeCanary;
use crate::events::Events;
use crate::fleet::{Fleet, Fleets};
use crate::limits::Limits;
use crate::registry::{AuthError, Registry};
use crate::rollout::Rollouts;
use crate::routes::Routes;
use common::clock::Clock;
use common::exec::Executor;
use common::model::{ApiError, ErrorKind, InvokeResponse, NodeId, ResolvedFunction, TenantId};
use common::sandbox::Release;
use common::wire::Pressure;
use std::sync::Arc;

/// The region's services. Built once per node; shared behind an `Arc`.
#[derive(Debug)]
pub struct Region {
    /// This node's id (the `executed_at` of its runs).
    pub node: NodeId,
    /// Tenants, tokens, functions, versions and aliases.
    pub registry: Arc<Registry>,
    /// Precompiled artifacts (prepared on deploy, served to POPs).
    pub artifacts: Arc<Artifacts>,
    /// Loads, compiles and runs modules (current and next runtime release).
    pub executor: Executor,
    /// The durable async queue and dead-letter queue.
    pub events: Arc<Events>,
    /// Per-tenant rates, concurrency budgets and POP leases: every execution here,
    /// forwarded ones included, is charged to the region's own in-flight.
    pub limits: Arc<Limits>,
    /// The dedicated and on-demand fleets (DESIGN §6).
    pub fleets: Arc<Fleets>,
    /// Picks each invocation's runtime release and judges the next one.
    pub canary: Arc<RuntimeCanary>,
    /// Judges alias rollouts with `auto_rollback` (see [`crate::rollout`]).
    pub rollouts: Arc<Rollouts>,
    /// Tenants' HTTP routes (host claims): who a route invocation runs as.
    pub routes: Arc<Routes>,
    /// The execution slots and their bounded queue.
    pub admission: Admission,
    /// Each tenant's share of the slots and of the on-demand workers.
    pub shares: Shares,
    /// Where policies read the time (the origin planner's fleet choice).
    pub clock: Arc<dyn Clock>,
    /// Largest payload an invocation may carry (the HTTP edge enforces the same while
    /// streaming; this also covers what POPs forward).
    pub max_payload_bytes: usize,
}

/// Each tenant's share of a fleet's capacity.
#[derive(Debug, Clone)]
pub struct Shares {
    /// Of the dedicated fleet's execution slots.
    pub slots: Arc<TenantShares>,
    /// Of the on-demand fleet's workers.
    pub workers: Arc<TenantShares>,
}

impl Shares {
    /// Shares of at most `percent` of `slots` execution slots and of `workers` on-demand
    /// workers.
    pub fn new(slots: usize, workers: usize, percent: u8) -> Self {
        Self {
            slots: Arc::new(TenantShares::new("execution slots", slots, percent)),
            workers: Arc::new(TenantShares::new("on-demand workers", workers, percent)),
        }
    }

    /// The shares of `fleet`'s capacity.
    pub fn of(&self, fleet: Fleet) -> &Arc<TenantShares> {
        match fleet {
            Fleet::Dedicated => &self.slots,
            Fleet::OnDemand => &self.workers,
        }
    }
}

impl Region {
    /// The runtime canary while it is live: this region hosts the next release.
    pub fn live_canary(&self) -> Option<&Arc<RuntimeCanary>> {
        Some(&self.canary).filter(|_| self.executor.sandbox_on(Release::Next).is_some())
    }

    /// The release POPs should run `function` on (set in the [`ResolvedFunction`] a POP
    /// learns with each forwarded result): the canary's decision, or `None` while it is
    /// undecided (the POP samples it with the canary's share) or when this region does
    /// not host the next release.
    pub fn release_for_pops(&self, function: &ResolvedFunction) -> Option<String> {
        let release = self
            .live_canary()?
            .decided(&function.key, function.config.runtime.as_deref())?;
        Some(release.name().to_owned())
    }

    /// The executor's, admission's and the queue's gauges.
    pub fn levels(&self) -> common::metrics::Levels {
        common::metrics::Levels {
            queue_depth: (self.admission.waiting() + self.fleets.queued()) as u64
                + self.events.queue_depth(),
            dlq_depth: self.events.dlq_depth(),
            ..self.executor.levels()
        }
    }

    /// The region's load as reported to POPs with a result: busy when the admission queue
    /// is past its threshold or `result` was refused for capacity.
    pub fn pressure(&self, result: &Result<InvokeResponse, ApiError>) -> Pressure {
        let refused = matches!(result, Err(e) if e.kind == ErrorKind::Unavailable);
        Pressure {
            busy: refused || self.admission.under_pressure(),
            spare_slots: u32::try_from(self.admission.spare()).unwrap_or(u32::MAX),
        }
    }

    /// The tenant a token belongs to, checked on the blocking pool (a store read).
    ///
    /// # Errors
    /// [`AuthError`] for a missing, unknown or expired token, a failing store or task.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<TenantId, AuthError> {
        let token = token.map(str::to_owned);
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || registry.authenticate(token.as_deref())).await?
    }
}
