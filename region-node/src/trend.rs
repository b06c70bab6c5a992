//! Trending hints: the region watches aggregate per-function arrival rates across its POPs
//! and, when one trends up ([`TrendingPolicy`]), pushes a [`Message::Trending`] on every
//! POP's push stream so the POPs prepare its code ahead of their own traffic.
//!
//! Rates come from the POPs' load reports (each function's requests in the report window
//! at that POP's edge, local and forwarded alike), so a forwarded request is counted once.
//! The code digest comes from the region's own resolutions of forwarded invocations: a
//! function every POP runs locally from the start is not hinted (they have its code).
//!
//! Bounds: the policy's table (`max_tracked`), the digest map (the same bound, oldest
//! dropped), and the hint channel (a broadcast of `HINT_CHANNEL` messages: a POP that
//! lags behind skips hints, which are advisory).

use common::clock::{Clock, SystemClock};
use common::model::{
    ArtifactDigest, FunctionKey, FunctionName, NodeLoad, ResolvedFunction, TenantId,
};
use common::policy::{TrendingConfig, TrendingPolicy};
use common::wire::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::debug;

/// Hints buffered per POP stream before a slow one starts skipping.
const HINT_CHANNEL: usize = 256;

/// The region's trend watcher and hint sender.
#[derive(Debug)]
pub struct TrendWatch {
    tick: Duration,
    max_tracked: usize,
    state: Mutex<State>,
    hints: broadcast::Sender<Message>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct State {
    policy: TrendingPolicy<FunctionKey>,
    /// Latest code of functions the region resolved, with when it was learned.
    digests: HashMap<FunctionKey, (ArtifactDigest, Instant)>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Critical sections are map updates and arithmetic that cannot panic half-way.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TrendWatch {
    /// A watcher with `config`.
    pub fn new(config: TrendingConfig) -> Self {
        let (hints, _) = broadcast::channel(HINT_CHANNEL);
        Self {
            tick: config.tick(),
            max_tracked: config.max_tracked,
            state: Mutex::new(State {
                policy: TrendingPolicy::new(config),
                digests: HashMap::new(),
            }),
            hints,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same watcher reading the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A receiver of every hint sent from now on (one per push stream).
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.hints.subscribe()
    }

    /// Remembers the code `function` resolved to (the region ran it for a POP).
    pub fn resolved(&self, function: &ResolvedFunction) {
        let mut state = lock(&self.state);
        let now = self.clock.now();
        if !state.digests.contains_key(&function.key) && state.digests.len() >= self.max_tracked {
            let oldest = state
                .digests
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                state.digests.remove(&k);
            }
        }
        state
            .digests
            .insert(function.key.clone(), (function.digest, now));
    }

    /// Counts the arrivals a POP reported in its last window.
    pub fn reported(&self, load: &NodeLoad) {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        for f in &load.functions {
            if let Some(key) = parse_key(&f.function) {
                state.policy.handle_arrivals(now, &key, f.in_window);
            }
        }
    }

    /// Runs the tick loop until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for hint in self.poll(self.clock.now()) {
                // No subscriber (no POP connected) is not an error: the hint is dropped.
                let _ = self.hints.send(hint);
            }
        }
    }

    /// Closes the policy's ticks; returns the hints to send.
    fn poll(&self, now: Instant) -> Vec<Message> {
        let mut state = lock(&self.state);
        let trending = state.policy.tick(now);
        trending
            .into_iter()
            .filter_map(|function| {
                let digest = state.digests.get(&function).map(|(d, _)| *d)?;
                debug!(%function, %digest, "function trending up; hinting POPs");
                Some(Message::Trending { function, digest })
            })
            .collect()
    }
}

/// A `tenant/name` label from a load report as a key; `None` when malformed.
fn parse_key(label: &str) -> Option<FunctionKey> {
    let (tenant, name) = label.split_once('/')?;
    Some(FunctionKey {
        tenant: TenantId::new(tenant).ok()?,
        name: FunctionName::new(name).ok()?,
    })
}
