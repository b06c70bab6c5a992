//! A node's warm-pool loop (the POP's, and the region's dedicated fleet's): feeds
//! [`WarmPolicy`] with the reactor invocations the node ran, and once per tick pre-warms
//! each function's pool up to the policy's target and retires instances beyond it.
//!
//! Only reactor functions are planned: a command module gets a fresh instance per
//! invocation by design, so there is nothing to pre-warm beyond its compiled code (which
//! placement and the prefetcher already keep). In `reactive` mode nothing is recorded and
//! the loop does nothing: pools fill on demand and empty by keep-alive alone, the baseline
//! the trend-driven mode is compared with.
//!
//! A local run records its invocation without the policy's lock: into its function's
//! shard of a pending table ([`crate::sharded`]), handed to the policy (exactly, see
//! [`crate::policy::Arrivals`]) before each tick; the per-run read of the function's
//! target takes the read side of the policy's lock.
//!
//! Bounds: the functions remembered here are those the policy tracks (its own
//! `max_tracked`), plus at most as many pending since the last tick (a shard that fills
//! is handed over at once); pre-warming runs `_initialize` on this loop's task (yielding its worker
//! at every epoch tick like any guest) one function at a time, never more instances than
//! the sandbox's pool size per function.

use crate::clock::{Clock, SystemClock};
use crate::exec::Executor;
use crate::model::{Abi, FunctionKey, ResolvedFunction};
use crate::policy::{Arrivals, WarmConfig, WarmMode, WarmPolicy};
use crate::sandbox::WarmKey;
use crate::sharded::{SHARDS, Sharded, read, write};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Ticks an instance beyond the target must sit idle before it is retired.
const RETIRE_AFTER_TICKS: u32 = 10;

/// Plans and carries out warm pools at this node.
#[derive(Debug)]
pub struct WarmPlanner {
    mode: WarmMode,
    tick: Duration,
    executor: Executor,
    /// The policy: read by every local run (its function's target), written once per
    /// tick.
    state: RwLock<State>,
    /// The reactor invocations run since the loop last looked, by function: recorded
    /// without touching the policy, handed to it before each tick.
    pending: Sharded<HashMap<FunctionKey, Pending>>,
    /// Functions a shard of `pending` holds at most before it is handed over at once.
    pending_max: usize,
    clock: Arc<dyn Clock>,
}

/// One function's invocations since the loop last looked.
#[derive(Debug)]
struct Pending {
    /// Its latest resolution (what to pre-warm).
    function: ResolvedFunction,
    arrivals: Arrivals,
}

#[derive(Debug)]
struct State {
    policy: WarmPolicy<FunctionKey>,
    /// The latest resolution of each planned function (what to pre-warm).
    functions: HashMap<FunctionKey, ResolvedFunction>,
}

impl WarmPlanner {
    /// A planner over `executor`'s sandbox with `config`.
    pub fn new(config: WarmConfig, executor: Executor) -> Self {
        Self {
            mode: config.mode,
            tick: config.tick(),
            executor,
            pending: Sharded::default(),
            pending_max: config.max_tracked.div_ceil(SHARDS).max(1),
            state: RwLock::new(State {
                policy: WarmPolicy::new(config),
                functions: HashMap::new(),
            }),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same planner reading the time (its ticks, the invocations it records) from
    /// `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records one local invocation of `function` that took `exec`.
    pub fn record(&self, function: &ResolvedFunction, exec: Duration) {
        if self.mode == WarmMode::Reactive || function.config.abi != Abi::Reactor {
            return;
        }
        let now = self.clock.now();
        let mut pending = self.pending.by_key(&function.key);
        if let Some(p) = pending.get_mut(&function.key) {
            p.arrivals.push(now, exec);
            // Kept for the loop to prepare instances of; copied only when it changed
            // (this runs on every invocation of a reactor).
            if p.function != *function {
                p.function = function.clone();
            }
            return;
        }
        let full = pending.len() >= self.pending_max;
        pending.insert(
            function.key.clone(),
            Pending {
                function: function.clone(),
                arrivals: Arrivals::new(now, exec),
            },
        );
        if full {
            // A flood of distinct functions: hand this shard over now rather than grow.
            let taken: Vec<Pending> = pending.drain().map(|(_, p)| p).collect();
            drop(pending);
            self.hand_over(&mut write(&self.state), taken);
        }
    }

    /// Gives the invocations in `taken` to the policy.
    fn hand_over(&self, state: &mut State, taken: Vec<Pending>) {
        for p in taken {
            let key = &p.function.key;
            let memory = p.function.config.memory_bytes();
            state.policy.handle_arrivals(key, &p.arrivals, memory);
            if state.functions.get(key) != Some(&p.function) {
                state.functions.insert(key.clone(), p.function);
            }
        }
    }

    /// The warm instances planned for `key` (what placement charges against the budget).
    pub fn planned(&self, key: &FunctionKey) -> u32 {
        read(&self.state).policy.target(key)
    }

    /// Runs the loop until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        if self.mode == WarmMode::Reactive {
            return;
        }
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for (function, target) in self.plan(self.clock.now()) {
                self.apply(function, target).await;
            }
        }
    }

    /// Closes the policy's ticks and returns every planned function with its target.
    fn plan(&self, now: Instant) -> Vec<(ResolvedFunction, u32)> {
        // Taken shard by shard, each lock released before the policy's is taken.
        let mut taken = Vec::new();
        self.pending
            .each(|shard| taken.extend(shard.drain().map(|(_, p)| p)));
        let mut state = write(&self.state);
        self.hand_over(&mut state, taken);
        if !state.policy.tick(now) {
            return Vec::new();
        }
        let targets: HashMap<FunctionKey, u32> = state
            .policy
            .targets()
            .map(|(k, t)| (k.clone(), t))
            .collect();
        // Functions the policy dropped are retired to zero once, then forgotten.
        let mut plan = Vec::with_capacity(state.functions.len());
        state.functions.retain(|k, f| {
            let target = targets.get(k).copied().unwrap_or(0);
            plan.push((f.clone(), target));
            targets.contains_key(k)
        });
        plan
    }

    /// Pre-warms or retires `function`'s pool to `target` instances.
    async fn apply(&self, function: ResolvedFunction, target: u32) {
        let Some(module) = self.executor.cached(&function.digest) else {
            // Not compiled here (evicted, or moved version): nothing to warm from.
            return;
        };
        let key = WarmKey {
            function: function.key.clone(),
            version: function.version.clone(),
            digest: module.digest(),
            memory_bytes: function.config.memory_bytes(),
        };
        let sandbox = self.executor.sandbox();
        let target = target as usize;
        // Surplus goes only once it has sat idle for a while: a forecast that dips for a
        // tick must not throw away instances the next tick needs again.
        let idle_for = self.tick * RETIRE_AFTER_TICKS;
        let retired = sandbox.retire_warm(&key, target, idle_for);
        let timeout = function.config.timeout();
        let prewarmed = sandbox
            .prewarm(&key, &module, target, timeout, function.config.fuel)
            .await;
        match prewarmed {
            Ok(created) if created + retired > 0 => {
                debug!(function = %function.key, target, created, retired, "warm pool resized");
            }
            Ok(_) => {}
            Err(e) => warn!(function = %function.key, error = %e, "pre-warming failed"),
        }
    }
}
