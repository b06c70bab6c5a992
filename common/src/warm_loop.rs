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
//! Bounds: the functions remembered here are exactly those the policy tracks (its own
//! `max_tracked`); pre-warming runs `_initialize` on this loop's task (yielding its worker
//! at every epoch tick like any guest) one function at a time, never more instances than
//! the sandbox's pool size per function.

use crate::clock::{Clock, SystemClock};
use crate::exec::Executor;
use crate::model::{Abi, FunctionKey, ResolvedFunction};
use crate::policy::{WarmConfig, WarmMode, WarmPolicy};
use crate::sandbox::WarmKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct State {
    policy: WarmPolicy<FunctionKey>,
    /// The latest resolution of each planned function (what to pre-warm).
    functions: HashMap<FunctionKey, ResolvedFunction>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Critical sections are map updates and arithmetic that cannot panic half-way.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WarmPlanner {
    /// A planner over `executor`'s sandbox with `config`.
    pub fn new(config: WarmConfig, executor: Executor) -> Self {
        Self {
            mode: config.mode,
            tick: config.tick(),
            executor,
            state: Mutex::new(State {
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
        let mut state = lock(&self.state);
        state.policy.handle_invocation(
            self.clock.now(),
            &function.key,
            exec,
            function.config.memory_bytes(),
        );
        // Kept for the loop to prepare instances of; copied only when it changed (this
        // runs on every invocation of a reactor).
        if state.functions.get(&function.key) != Some(function) {
            state
                .functions
                .insert(function.key.clone(), function.clone());
        }
    }

    /// The warm instances planned for `key` (what placement charges against the budget).
    pub fn planned(&self, key: &FunctionKey) -> u32 {
        lock(&self.state).policy.target(key)
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
        let mut state = lock(&self.state);
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
