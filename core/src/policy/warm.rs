//! How many warm instances each function should have: a forecast of its arrival rate,
//! turned into concurrency with Little's law.
//!
//! Per function the policy keeps Holt's double exponential smoothing of the arrival rate
//! (a level and a trend, smoothed by `alpha` and `beta`), updated once per fixed `tick`
//! from the arrivals counted during it. The forecast `horizon_ticks` ahead is
//! `level + horizon × trend`; the instances needed are `ceil(forecast × mean duration)`
//! (Little's law: mean concurrency = arrival rate × time in system) plus `headroom` while
//! the function has any traffic, capped by `max_pool`. When the sum of every function's
//! target times its memory passes the budget, functions are served in order of forecast
//! rate (ties by key) and the rest get what is left. A function unseen for `keep_alive`
//! with a forecast under one instance gets target zero and leaves the table.
//!
//! Never creates or drops instances: the node asks for [`WarmPolicy::targets`] after each
//! [`WarmPolicy::tick`] and pre-warms or retires to match. Never reads a clock: every
//! event carries `now`. A clock that goes backwards is treated as no time passing; a gap
//! of many ticks feeds at most `MAX_CATCH_UP` empty ticks (the smoother has forgotten
//! everything older by then).

use super::recency::RecencyTable;
use serde::Deserialize;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

/// Empty ticks fed after a gap, at most: with `alpha` >= 0.1 the level has decayed below
/// 0.1^... of its old value long before 200 ticks.
const MAX_CATCH_UP: u32 = 200;

/// Which warm-pool behaviour a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmMode {
    /// Pre-warm to the forecast (this module).
    #[default]
    Trend,
    /// Keep-alive only: instances are created by requests and retired when idle.
    Reactive,
}

/// Tunables of [`WarmPolicy`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmConfig {
    /// Trend-driven or keep-alive only. Default `trend`.
    pub mode: WarmMode,
    /// Length of one smoothing step, in milliseconds. Default 1000.
    pub tick_ms: u64,
    /// Smoothing of the level, in (0, 1]. Default 0.5.
    pub alpha: f64,
    /// Smoothing of the trend, in [0, 1]. Default 0.3.
    pub beta: f64,
    /// How many ticks ahead the forecast looks (about the time to create an instance and
    /// the tick itself). Default 2.
    pub horizon_ticks: u32,
    /// Instances on top of Little's law while the function has traffic. Default 1.
    pub headroom: u32,
    /// Most instances one function is pre-warmed to. Default 8.
    pub max_pool: u32,
    /// Memory all pre-warmed instances may use together, in MiB. Default 1024.
    pub memory_budget_mb: u64,
    /// A function without arrivals for this long, in milliseconds, and forecast under one
    /// instance is dropped to zero. Default 60 000.
    pub keep_alive_ms: u64,
    /// Most functions tracked; the least recently seen is dropped beyond it. Default 4096.
    pub max_tracked: usize,
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            mode: WarmMode::Trend,
            tick_ms: 1000,
            alpha: 0.5,
            beta: 0.3,
            horizon_ticks: 2,
            headroom: 1,
            max_pool: 8,
            memory_budget_mb: 1024,
            keep_alive_ms: 60_000,
            max_tracked: 4096,
        }
    }
}

impl WarmConfig {
    /// [`Self::tick_ms`] as a [`Duration`] (at least 1 ms).
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(format!("warm.alpha must be in (0, 1], got {}", self.alpha));
        }
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(format!("warm.beta must be in [0, 1], got {}", self.beta));
        }
        Ok(())
    }
}

/// One function's series.
#[derive(Debug, Clone)]
struct Series {
    /// Smoothed arrival rate, per second.
    level: f64,
    /// Smoothed change of the rate per tick, per second.
    trend: f64,
    /// Whether `level` has been seeded by a first tick.
    seeded: bool,
    /// Arrivals in the current tick.
    arrivals: u64,
    /// Smoothed duration of one invocation, seconds.
    mean_duration: f64,
    /// Memory one instance may use, bytes.
    memory_bytes: u64,
    /// The target after the last tick.
    target: u32,
}

impl Series {
    fn step(&mut self, rate: f64, alpha: f64, beta: f64) {
        if !self.seeded {
            self.level = rate;
            self.trend = 0.0;
            self.seeded = true;
            return;
        }
        let level = alpha * rate + (1.0 - alpha) * (self.level + self.trend);
        self.trend = beta * (level - self.level) + (1.0 - beta) * self.trend;
        self.level = level;
    }

    fn forecast(&self, horizon: u32) -> f64 {
        (self.level + f64::from(horizon) * self.trend).max(0.0)
    }
}

/// Weight of the newest invocation in a function's mean duration: it is smoothed over
/// about 20 invocations.
const DURATION_WEIGHT: f64 = 1.0 / 20.0;

/// Invocations of one function gathered between two visits to the policy (a node records
/// them on its request path without locking the policy, and hands them over in one
/// [`WarmPolicy::handle_arrivals`]). Folds the mean duration's smoothing exactly: after
/// `n` invocations `mean = keep * mean_before + added`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrivals {
    /// When the first and the latest of them arrived.
    first: Instant,
    last: Instant,
    /// How many.
    count: u64,
    /// The first one's duration, seconds (a new function's mean starts there).
    first_duration: f64,
    /// `(1 - w)^count`: what is left of the mean before them.
    keep: f64,
    /// Their weighted contribution to the mean.
    added: f64,
}

impl Arrivals {
    /// One invocation at `now` that took `duration`.
    pub fn new(now: Instant, duration: Duration) -> Self {
        let d = duration.as_secs_f64();
        Self {
            first: now,
            last: now,
            count: 1,
            first_duration: d,
            keep: 1.0 - DURATION_WEIGHT,
            added: DURATION_WEIGHT * d,
        }
    }

    /// Adds one more invocation at `now` that took `duration`.
    pub fn push(&mut self, now: Instant, duration: Duration) {
        self.last = self.last.max(now);
        self.count += 1;
        self.keep *= 1.0 - DURATION_WEIGHT;
        self.added =
            self.added * (1.0 - DURATION_WEIGHT) + DURATION_WEIGHT * duration.as_secs_f64();
    }

    /// How many invocations are gathered.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Trend-driven warm-pool planning. See the module docs.
#[derive(Debug)]
pub struct WarmPolicy<K, S = RandomState> {
    config: WarmConfig,
    /// Per function; the table keeps each one's last arrival.
    series: RecencyTable<K, Series, S>,
    /// Start of the current tick; `None` before the first event.
    tick_start: Option<Instant>,
}

impl<K: Eq + Hash + Ord + Clone> WarmPolicy<K> {
    /// A policy with `config` and no history.
    pub fn new(config: WarmConfig) -> Self {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<K: Eq + Hash + Ord + Clone, S: BuildHasher> WarmPolicy<K, S> {
    /// A policy with `config`, hashing keys with `hasher`.
    pub fn with_hasher(config: WarmConfig, hasher: S) -> Self {
        Self {
            series: RecencyTable::with_hasher(config.max_tracked, hasher),
            config,
            tick_start: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WarmConfig {
        &self.config
    }

    /// Records one invocation of `key` that took `duration`, on instances limited to
    /// `memory_bytes`.
    pub fn handle_invocation(
        &mut self,
        now: Instant,
        key: &K,
        duration: Duration,
        memory_bytes: u64,
    ) {
        self.handle_arrivals(key, &Arrivals::new(now, duration), memory_bytes);
    }

    /// Records the invocations of `key` gathered in `batch` (in their order, as if each
    /// were handled on its own), on instances limited to `memory_bytes`.
    pub fn handle_arrivals(&mut self, key: &K, batch: &Arrivals, memory_bytes: u64) {
        self.tick_start.get_or_insert(batch.first);
        // A clock that went backwards keeps the later instant as the last arrival.
        let s = self.series.touch(batch.last, key, || Series {
            level: 0.0,
            trend: 0.0,
            seeded: false,
            arrivals: 0,
            mean_duration: batch.first_duration,
            memory_bytes,
            target: 0,
        });
        s.arrivals += batch.count;
        s.memory_bytes = memory_bytes;
        s.mean_duration = s.mean_duration * batch.keep + batch.added;
    }

    /// When [`Self::tick`] next has work, if anything is tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tick_start
            .and_then(|t| t.checked_add(self.config.tick()))
    }

    /// Closes every tick that ended by `now` and recomputes the targets. Returns whether
    /// any tick closed (the targets may have changed).
    pub fn tick(&mut self, now: Instant) -> bool {
        let Some(start) = self.tick_start else {
            return false;
        };
        let tick = self.config.tick();
        let elapsed = now.saturating_duration_since(start);
        let ticks = u32::try_from(elapsed.as_nanos() / tick.as_nanos()).unwrap_or(u32::MAX);
        if ticks == 0 {
            return false;
        }
        let (alpha, beta) = (self.config.alpha, self.config.beta);
        let secs = tick.as_secs_f64();
        for (_, s) in self.series.iter_mut() {
            // After a gap the arrivals are counted in the last closed tick, the empty ones
            // before it.
            for _ in 1..ticks.min(MAX_CATCH_UP) {
                s.step(0.0, alpha, beta);
            }
            s.step(s.arrivals as f64 / secs, alpha, beta);
            s.arrivals = 0;
        }
        self.tick_start = start.checked_add(tick * ticks).or(Some(now));
        self.plan(now);
        true
    }

    /// The instances `key` should have warm now.
    pub fn target(&self, key: &K) -> u32 {
        self.series.get(key).map_or(0, |s| s.target)
    }

    /// Every tracked function with its target (zero for ones to retire entirely).
    pub fn targets(&self) -> impl Iterator<Item = (&K, u32)> {
        self.series.iter().map(|(k, s, _)| (k, s.target))
    }

    /// The forecast arrival rate of `key`, per second, `horizon_ticks` ahead.
    pub fn forecast(&self, key: &K) -> f64 {
        self.series
            .get(key)
            .map_or(0.0, |s| s.forecast(self.config.horizon_ticks))
    }

    /// The smoothed trend of `key`'s rate, per second per tick.
    pub fn trend(&self, key: &K) -> f64 {
        self.series.get(key).map_or(0.0, |s| s.trend)
    }

    fn plan(&mut self, now: Instant) {
        let c = &self.config;
        let keep_alive = Duration::from_millis(c.keep_alive_ms);
        let mut wanted: Vec<(f64, K, u32, u64)> = Vec::with_capacity(self.series.len());
        let mut gone = Vec::new();
        for (k, s, seen) in self.series.iter() {
            let rate = s.forecast(c.horizon_ticks);
            let concurrency = rate * s.mean_duration;
            let idle = now.saturating_duration_since(seen) >= keep_alive;
            // A forecast under 1 % of an instance is the smoother's tail, not traffic.
            let need = match (concurrency < 0.01, idle) {
                (true, true) => 0,
                (true, false) => c.headroom,
                // Saturating float-to-int: a huge forecast is capped by max_pool anyway.
                (false, _) => (concurrency.ceil() as u32).saturating_add(c.headroom),
            };
            let need = need.min(c.max_pool);
            if need == 0 && idle {
                gone.push(k.clone());
            }
            wanted.push((rate, k.clone(), need, s.memory_bytes));
        }
        // Highest forecast first, ties by key: deterministic.
        wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut left = c.memory_budget_mb.saturating_mul(1 << 20);
        for (_, k, need, mem) in wanted {
            // An instance without a memory limit costs nothing against the budget.
            let fits = left
                .checked_div(mem)
                .map_or(need, |n| u32::try_from(n).unwrap_or(u32::MAX).min(need));
            left -= u64::from(fits) * mem;
            if let Some(s) = self.series.get_mut(&k) {
                s.target = fits;
            }
        }
        for k in gone {
            self.series.remove(&k);
        }
    }
}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
