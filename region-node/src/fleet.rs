//! Fleets at the region (DESIGN §6): frequent functions run in the dedicated fleet, rare
//! ones in a shared on-demand fleet.
//!
//! Which is which is the origin planner's decision (`common::policy::origin`), made with
//! [`PlacementPolicy`], the very code a POP uses for "popular runs at the edge": a decayed
//! request count per function with an enter and an exit bar (hysteresis) and a memory
//! budget for the frequent set. Here "local" means "frequent".
//!
//! - The dedicated fleet is the region's [`crate::admission::Admission`] (execution slots
//!   and a bounded wait) and the sandbox's warm pools, which frequent reactors keep.
//! - The on-demand fleet is a bounded queue (`max_queued` turns, tokio mpsc) drained by
//!   `workers` worker tasks. A rare invocation sends a ticket and runs when a worker hands
//!   it a turn; the turn ends when the invocation is done. A full queue is refused with
//!   503 and `retry-after` (capacity, like a full admission queue; 429 is reserved for a
//!   tenant's own limits).
//!
//! Warm pools: the on-demand fleet runs reactors in the sandbox's on-demand warm lane
//! ([`WarmLane::OnDemand`]): at most `rare_warm_pools` pools kept `rare_idle_ms`, within
//! `sandbox.max_warm_pools`, making room by evicting only its own least recently used
//! pools. So a burst of rare reactors can never evict a frequent function's warm instance,
//! and a rarely called reactor keeps its state between calls while its pool stays within
//! that budget and keep-alive (what a user of a low-traffic reactor expects). A function
//! crossing the bar either way takes its pool, and its state, with it.

use crate::admission::Refusal;
use common::exec::Executor;
use common::model::ResolvedFunction;
use common::policy::{PlacementConfig, PlacementPolicy, WarmConfig};
use common::sandbox::{OnDemandBudget, WarmLane};
use common::warm_loop::WarmPlanner;
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// The on-demand fleet's default pool budget when `sandbox.max_warm_pools` allows it.
const DEFAULT_RARE_WARM_POOLS: usize = 32;

/// The `[fleets]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetsConfig {
    /// Whether rare functions go to the on-demand fleet. Default true; false runs every
    /// function in the one (dedicated) fleet.
    pub enabled: bool,
    /// Workers of the on-demand fleet: rare invocations running at once. Default 8.
    pub workers: usize,
    /// Rare invocations waiting for a worker before new ones get 503. Default 256.
    pub max_queued: usize,
    /// The frequency bar: decay window, enter and exit scores (requests per window),
    /// tracked functions, and the memory budget of the frequent set (MiB of instances).
    pub frequent: PlacementConfig,
    /// Trend-driven pre-warming of the frequent functions' pools (`[fleets.warm]`, the
    /// POP's `[warm]` fields). Only with `enabled`.
    pub warm: WarmConfig,
    /// Most reactor warm pools the on-demand fleet keeps: its own least-recently-used
    /// budget within `sandbox.max_warm_pools` (which it must be below, so frequent
    /// functions always have room). 0 keeps none: rare reactors start cold every call.
    /// Default: half of `sandbox.max_warm_pools`, at most 32 (32 with the defaults).
    #[serde(default)]
    pub rare_warm_pools: Option<usize>,
    /// How long an idle instance of a rare reactor is kept, in milliseconds. Default
    /// 60 000 (the sandbox's `warm_idle_ms` default).
    #[serde(default = "default_rare_idle_ms")]
    pub rare_idle_ms: u64,
}

fn default_rare_idle_ms() -> u64 {
    60_000
}

/// Why a `[fleets]` section was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetsConfigError {
    /// `workers` or `max_queued` is 0.
    #[error("[fleets] workers and max_queued must be at least 1")]
    NoWorkers,
    /// The on-demand pool budget does not leave the frequent functions a pool.
    #[error(
        "[fleets] rare_warm_pools ({rare}) must be below sandbox.max_warm_pools ({max}) so \
         frequent functions always keep room for their warm pools"
    )]
    RareBudgetTooLarge {
        /// The configured budget.
        rare: usize,
        /// `sandbox.max_warm_pools`.
        max: usize,
    },
    /// `[fleets.warm]` is out of range.
    #[error("[fleets.warm] {0}")]
    Warm(String),
    /// The frequency bar's exit is above its entry.
    #[error("[fleets.frequent] exit_score must not be above enter_score")]
    Hysteresis,
}

impl Default for FleetsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 8,
            max_queued: 256,
            frequent: PlacementConfig::default(),
            warm: WarmConfig::default(),
            rare_warm_pools: None,
            rare_idle_ms: default_rare_idle_ms(),
        }
    }
}

impl FleetsConfig {
    /// Checks the bounds against the sandbox's pool bound.
    ///
    /// # Errors
    /// The first offending field.
    pub fn validate(&self, max_warm_pools: usize) -> Result<(), FleetsConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.workers == 0 || self.max_queued == 0 {
            return Err(FleetsConfigError::NoWorkers);
        }
        let rare = self.rare_budget(max_warm_pools).max_pools;
        if rare > 0 && rare >= max_warm_pools {
            return Err(FleetsConfigError::RareBudgetTooLarge {
                rare,
                max: max_warm_pools,
            });
        }
        self.warm.validate().map_err(FleetsConfigError::Warm)?;
        if self.frequent.exit_score > self.frequent.enter_score {
            return Err(FleetsConfigError::Hysteresis);
        }
        Ok(())
    }

    /// The on-demand fleet's warm-pool budget next to a sandbox of `max_warm_pools`.
    pub fn rare_budget(&self, max_warm_pools: usize) -> OnDemandBudget {
        OnDemandBudget {
            max_pools: self
                .rare_warm_pools
                .unwrap_or_else(|| (max_warm_pools / 2).min(DEFAULT_RARE_WARM_POOLS)),
            keep_alive: Duration::from_millis(self.rare_idle_ms),
        }
    }
}

pub use common::policy::origin::Fleet;

/// A worker's turn: the invocation holds it while it runs; dropping it frees the worker.
#[derive(Debug)]
pub struct Turn {
    _done: oneshot::Sender<()>,
}

type Ticket = oneshot::Sender<Turn>;

/// The region's two fleets.
#[derive(Debug)]
pub struct Fleets {
    /// Tells frequent from rare functions; `None` with the on-demand fleet disabled.
    frequent: Option<PlacementConfig>,
    queue: mpsc::Sender<Ticket>,
    /// Taken by [`Fleets::spawn_workers`].
    receiver: Mutex<Option<mpsc::Receiver<Ticket>>>,
    workers: usize,
    /// Pre-warms the frequent functions' pools (only with fleets enabled).
    warm: Option<Arc<WarmPlanner>>,
    /// The warm lane of on-demand runs.
    rare_lane: WarmLane,
}

impl Fleets {
    /// Fleets with `config` over `executor`'s sandbox (workers and the pre-warm loop start
    /// with [`Fleets::spawn_workers`]).
    pub fn new(config: FleetsConfig, executor: &Executor) -> Self {
        let (queue, receiver) = mpsc::channel(config.max_queued.max(1));
        let warm = config
            .enabled
            .then(|| Arc::new(WarmPlanner::new(config.warm.clone(), executor.clone())));
        let max_warm_pools = executor.sandbox().config().max_warm_pools;
        Self {
            rare_lane: WarmLane::OnDemand(config.rare_budget(max_warm_pools)),
            warm,
            frequent: config.enabled.then(|| config.frequent.clone()),
            queue,
            receiver: Mutex::new(Some(receiver)),
            workers: config.workers.max(1),
        }
    }

    /// The policy that tells frequent from rare functions, for the origin planner
    /// (`common::policy::origin`, which chooses each invocation's fleet); `None` without
    /// an on-demand fleet (everything runs in the dedicated one).
    pub fn placement(&self) -> Option<PlacementPolicy> {
        self.frequent.clone().map(PlacementPolicy::new)
    }

    /// The warm lane reactors keep their pools in when they run in `fleet`.
    pub fn lane(&self, fleet: Fleet) -> WarmLane {
        match fleet {
            Fleet::Dedicated => WarmLane::Dedicated,
            Fleet::OnDemand => self.rare_lane,
        }
    }

    /// Records a dedicated-fleet run of `function` that took `exec`, for pre-warming.
    pub fn record(&self, function: &ResolvedFunction, exec: Duration) {
        if let Some(warm) = &self.warm {
            warm.record(function, exec);
        }
    }

    /// Rare invocations waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Waits for a worker's turn in the on-demand fleet.
    ///
    /// # Errors
    /// [`Refusal::FleetFull`] when the queue is full, [`Refusal::ShuttingDown`] when the
    /// region is shutting down.
    pub async fn turn(&self) -> Result<Turn, Refusal> {
        let (ticket, turn) = oneshot::channel();
        self.queue.try_send(ticket).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refusal::FleetFull,
            mpsc::error::TrySendError::Closed(_) => Refusal::ShuttingDown,
        })?;
        turn.await.map_err(|_| Refusal::ShuttingDown)
    }

    /// Starts the on-demand workers and the pre-warm loop in `tasks` (once; later calls do
    /// nothing).
    pub fn spawn_workers(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let taken = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(receiver) = taken else { return };
        if let Some(warm) = &self.warm {
            tasks.spawn(Arc::clone(warm).run());
        }
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..self.workers {
            let receiver = Arc::clone(&receiver);
            tasks.spawn(async move {
                loop {
                    let next = receiver.lock().await.recv().await;
                    let Some(ticket) = next else { return };
                    let (done, finished) = oneshot::channel();
                    // A waiter that gave up (its client went away) frees the worker at once.
                    if ticket.send(Turn { _done: done }).is_ok() {
                        // Resolves when the invocation drops its turn.
                        let _ = finished.await;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::ErrorKind;

    fn executor() -> Executor {
        let sandbox = common::sandbox::Sandbox::new(common::sandbox::SandboxConfig::default())
            .expect("sandbox");
        Executor::new(sandbox, 1 << 20)
    }

    fn config(workers: usize, max_queued: usize) -> FleetsConfig {
        FleetsConfig {
            enabled: true,
            workers,
            max_queued,
            ..FleetsConfig::default()
        }
    }

    #[tokio::test]
    async fn workers_bound_concurrency_and_a_full_queue_is_refused() {
        let fleets = Arc::new(Fleets::new(config(1, 1), &executor()));
        let mut tasks = JoinSet::new();
        fleets.spawn_workers(&mut tasks);
        let first = fleets.turn().await.expect("the only worker");
        let f2 = Arc::clone(&fleets);
        let second = tokio::spawn(async move { f2.turn().await.map(drop) });
        while fleets.queued() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = fleets
            .turn()
            .await
            .map(drop)
            .expect_err("the queue is full");
        assert_eq!(refused, Refusal::FleetFull);
        assert_eq!(
            common::model::ApiError::from(refused).kind,
            ErrorKind::Unavailable
        );
        drop(first);
        assert!(second.await.expect("joins").is_ok());
        assert_eq!(fleets.queued(), 0);
    }

    #[test]
    fn disabled_fleets_have_no_placement_so_everything_runs_dedicated() {
        let off = FleetsConfig {
            enabled: false,
            ..FleetsConfig::default()
        };
        assert!(Fleets::new(off, &executor()).placement().is_none());
        assert!(Fleets::new(config(1, 1), &executor()).placement().is_some());
    }

    #[test]
    fn validation_keeps_the_rare_budget_below_the_pool_bound() {
        assert_eq!(config(8, 16).validate(64), Ok(()));
        assert_eq!(config(8, 16).rare_budget(64).max_pools, 32);
        // The default budget follows a small pool bound down.
        assert_eq!(config(8, 16).validate(4), Ok(()));
        assert_eq!(config(8, 16).rare_budget(4).max_pools, 2);
        assert_eq!(config(8, 16).validate(1), Ok(()));
        let explicit = |rare| FleetsConfig {
            rare_warm_pools: Some(rare),
            ..config(8, 16)
        };
        assert_eq!(explicit(63).validate(64), Ok(()));
        assert_eq!(
            explicit(64).validate(64),
            Err(FleetsConfigError::RareBudgetTooLarge { rare: 64, max: 64 })
        );
        assert_eq!(explicit(0).validate(0), Ok(()), "no on-demand pools");
        assert_eq!(
            config(0, 16).validate(64),
            Err(FleetsConfigError::NoWorkers)
        );
        let off = FleetsConfig {
            enabled: false,
            ..explicit(100)
        };
        assert_eq!(off.validate(0), Ok(()), "disabled");
    }

    #[test]
    fn on_demand_runs_keep_their_pools_in_the_rare_lane() {
        let fleets = Fleets::new(config(1, 1), &executor());
        assert_eq!(fleets.lane(Fleet::Dedicated), WarmLane::Dedicated);
        let budget = OnDemandBudget {
            max_pools: 32,
            keep_alive: Duration::from_secs(60),
        };
        assert_eq!(fleets.lane(Fleet::OnDemand), WarmLane::OnDemand(budget));
    }
}
