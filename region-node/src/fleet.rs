//! Fleets at the region (DESIGN §6): frequent functions run in the dedicated fleet, rare
//! ones in a shared on-demand fleet.
//!
//! Which is which is [`PlacementPolicy`]'s decision, the very code a POP uses for "popular
//! runs at the edge": a decayed request count per function with an enter and an exit bar
//! (hysteresis) and a memory budget for the frequent set. Here "local" means "frequent".
//!
//! - The dedicated fleet is the region's [`crate::admission::Admission`] (execution slots
//!   and a bounded wait) and the sandbox's warm pools, which frequent reactors keep.
//! - The on-demand fleet is a bounded queue (`max_queued` turns, tokio mpsc) drained by
//!   `workers` worker tasks. A rare invocation sends a ticket and runs when a worker hands
//!   it a turn; the turn ends when the invocation is done. A full queue is refused with
//!   503 and `retry-after` (capacity, like a full admission queue; 429 is reserved for a
//!   tenant's own limits).
//!
//! Why rare reactors cannot evict frequent ones' warm instances: after a rare reactor ran,
//! its pools are dropped before its worker takes the next ticket, so the on-demand fleet
//! holds at most `workers` pools at any moment. As long as `sandbox.max_warm_pools` exceeds
//! the frequent set plus `workers`, the pool LRU never has to drop a frequent pool for a
//! rare one. Rare reactors start cold each time, which is what "on demand" means.

use common::exec::Executor;
use common::model::{ApiError, FunctionKey, Placement, ResolvedFunction};
use common::policy::placement::Decision;
use common::policy::{LocalState, PlacementConfig, PlacementPolicy, WarmConfig};
use common::warm_loop::WarmPlanner;
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// How long a refused rare invocation is told to wait.
const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `[fleets]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetsConfig {
    /// Whether rare functions go to the on-demand fleet. Default false: every function
    /// runs in the one (dedicated) fleet, as before fleets existed.
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
}

impl Default for FleetsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            workers: 8,
            max_queued: 256,
            frequent: PlacementConfig::default(),
            warm: WarmConfig::default(),
        }
    }
}

impl FleetsConfig {
    /// Checks the bounds against the sandbox's pool bound.
    ///
    /// # Errors
    /// A message naming the offending field.
    pub fn validate(&self, max_warm_pools: usize) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.workers == 0 || self.max_queued == 0 {
            return Err("[fleets] workers and max_queued must be at least 1".into());
        }
        if self.workers >= max_warm_pools {
            return Err(format!(
                "[fleets] workers ({}) must be below sandbox.max_warm_pools ({max_warm_pools}) \
                 so rare reactors never push frequent ones' pools out",
                self.workers
            ));
        }
        self.warm
            .validate()
            .map_err(|e| format!("[fleets.warm] {e}"))?;
        if self.frequent.exit_score > self.frequent.enter_score {
            return Err("[fleets.frequent] exit_score must not be above enter_score".into());
        }
        Ok(())
    }
}

/// Which fleet an invocation runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fleet {
    /// Admission slots and kept warm pools.
    Dedicated,
    /// A worker turn; reactor pools dropped afterwards.
    OnDemand,
}

/// A worker's turn: the invocation holds it while it runs; dropping it frees the worker.
#[derive(Debug)]
pub struct Turn {
    _done: oneshot::Sender<()>,
}

type Ticket = oneshot::Sender<Turn>;

/// The region's two fleets.
#[derive(Debug)]
pub struct Fleets {
    enabled: bool,
    policy: Mutex<PlacementPolicy>,
    queue: mpsc::Sender<Ticket>,
    /// Taken by [`Fleets::spawn_workers`].
    receiver: Mutex<Option<mpsc::Receiver<Ticket>>>,
    workers: usize,
    /// Pre-warms the frequent functions' pools (only with fleets enabled).
    warm: Option<Arc<WarmPlanner>>,
}

impl Fleets {
    /// Fleets with `config` over `executor`'s sandbox (workers and the pre-warm loop start
    /// with [`Fleets::spawn_workers`]).
    pub fn new(config: FleetsConfig, executor: &Executor) -> Self {
        let (queue, receiver) = mpsc::channel(config.max_queued.max(1));
        let warm = config
            .enabled
            .then(|| Arc::new(WarmPlanner::new(config.warm.clone(), executor.clone())));
        Self {
            warm,
            enabled: config.enabled,
            policy: Mutex::new(PlacementPolicy::new(config.frequent)),
            queue,
            receiver: Mutex::new(Some(receiver)),
            workers: config.workers.max(1),
        }
    }

    /// Records one invocation of `function` at `now` and says which fleet runs it.
    pub fn choose(&self, now: Instant, function: &ResolvedFunction) -> Fleet {
        if !self.enabled {
            return Fleet::Dedicated;
        }
        let key: &FunctionKey = &function.key;
        // A frequent function costs its warm pool's memory against the frequent budget.
        let cost = function.config.memory_bytes();
        let mut policy = self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        policy.handle_request(now, key);
        let local = LocalState {
            placement: Placement::Auto,
            known: true,
            artifact_ready: true,
            slot_free: true,
            cost_bytes: cost,
        };
        match policy.decide(now, key, local) {
            Decision::Local => Fleet::Dedicated,
            Decision::Forward(_) => Fleet::OnDemand,
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
    /// 503 with `retry-after` when the queue is full or the region is shutting down.
    pub async fn turn(&self) -> Result<Turn, ApiError> {
        let (ticket, turn) = oneshot::channel();
        self.queue.try_send(ticket).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::unavailable(
                "the region's on-demand fleet is full: every worker is busy and its queue is full",
                QUEUE_FULL_RETRY_AFTER,
            ),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("region is shutting down", QUEUE_FULL_RETRY_AFTER)
            }
        })?;
        turn.await
            .map_err(|_| ApiError::unavailable("region is shutting down", QUEUE_FULL_RETRY_AFTER))
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
        assert_eq!(
            fleets.turn().await.map(drop).map_err(|e| e.kind),
            Err(ErrorKind::Unavailable)
        );
        drop(first);
        assert!(second.await.expect("joins").is_ok());
        assert_eq!(fleets.queued(), 0);
    }

    fn function(name: &str) -> ResolvedFunction {
        ResolvedFunction {
            key: FunctionKey {
                tenant: common::model::TenantId::new("t").expect("tenant"),
                name: common::model::FunctionName::new(name).expect("name"),
            },
            version: "$LATEST".into(),
            digest: common::model::ArtifactDigest::of(name.as_bytes()),
            config: common::model::FunctionConfig::default(),
            revision: 1,
            release: None,
        }
    }

    #[test]
    fn a_function_is_frequent_above_the_bar_and_stays_until_below_the_exit() {
        let mut c = config(1, 1);
        c.frequent = PlacementConfig {
            window: Duration::from_secs(10),
            enter_score: 3.0,
            exit_score: 1.5,
            ..PlacementConfig::default()
        };
        let fleets = Fleets::new(c, &executor());
        let (f, t0) = (function("f"), Instant::now());
        let seen: Vec<Fleet> = (0..4).map(|_| fleets.choose(t0, &f)).collect();
        use Fleet::{Dedicated, OnDemand};
        assert_eq!(seen, [OnDemand, OnDemand, Dedicated, Dedicated]);
        // Score 4 decays to ~1.5 after 10 s, plus this request ~2.5: below the entry bar,
        // above the exit, so it stays.
        assert_eq!(fleets.choose(t0 + Duration::from_secs(10), &f), Dedicated);
        // Long idle: ~0 plus this request is below the exit bar, back to on demand.
        assert_eq!(fleets.choose(t0 + Duration::from_secs(60), &f), OnDemand);
        // Another function is judged on its own rate.
        assert_eq!(fleets.choose(t0, &function("g")), OnDemand);
    }

    #[test]
    fn disabled_fleets_run_everything_dedicated() {
        let fleets = Fleets::new(FleetsConfig::default(), &executor());
        assert_eq!(
            fleets.choose(Instant::now(), &function("f")),
            Fleet::Dedicated
        );
    }

    #[test]
    fn validation_keeps_workers_below_the_pool_bound() {
        assert!(config(8, 16).validate(64).is_ok());
        assert!(config(8, 16).validate(8).is_err());
        assert!(config(0, 16).validate(64).is_err());
        assert!(FleetsConfig::default().validate(0).is_ok(), "disabled");
    }
}
