//! Which functions a region hints its POPs about: those whose aggregate arrival rate is
//! trending up, so POPs fetch and compile the code before their own traffic makes the
//! function popular there.
//!
//! Per function, Holt's double exponential smoothing of the rate over fixed ticks (like
//! [`super::warm`], but a new function's series starts from zero: appearing out of nowhere
//! at some rate *is* a rise). After a tick, a function is hinted when its trend is at
//! least `min_trend` (requests/s gained per tick), its forecast `horizon_ticks` ahead is
//! at least `min_rate`, and it was not hinted within `cooldown`. The table is bounded by
//! `max_tracked` (least recently seen dropped). Sans-IO: time comes in with every call.

use super::recency::RecencyTable;
use serde::Deserialize;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Empty ticks fed after a gap, at most (older history is forgotten by then).
const MAX_CATCH_UP: u32 = 200;

/// Tunables of [`TrendingPolicy`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendingConfig {
    /// Length of one smoothing step, in milliseconds. Default 1000.
    pub tick_ms: u64,
    /// Smoothing of the level, in (0, 1]. Default 0.5.
    pub alpha: f64,
    /// Smoothing of the trend, in [0, 1]. Default 0.5.
    pub beta: f64,
    /// Ticks ahead the forecast looks. Default 3.
    pub horizon_ticks: u32,
    /// Smallest trend that hints, in requests/s per tick. Default 1.
    pub min_trend: f64,
    /// Smallest forecast rate that hints, in requests/s. Default 2.
    pub min_rate: f64,
    /// A function is hinted at most once per this many milliseconds. Default 30 000.
    pub cooldown_ms: u64,
    /// Most functions tracked. Default 4096.
    pub max_tracked: usize,
}

impl Default for TrendingConfig {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            alpha: 0.5,
            beta: 0.5,
            horizon_ticks: 3,
            min_trend: 1.0,
            min_rate: 2.0,
            cooldown_ms: 30_000,
            max_tracked: 4096,
        }
    }
}

impl TrendingConfig {
    /// [`Self::tick_ms`] as a [`Duration`] (at least 1 ms).
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.max(1))
    }
}

#[derive(Debug, Clone)]
struct Series {
    level: f64,
    trend: f64,
    arrivals: u64,
    hinted: Option<Instant>,
}

/// Trend detection over aggregate arrival counts. See the module docs.
#[derive(Debug)]
pub struct TrendingPolicy<K> {
    config: TrendingConfig,
    series: RecencyTable<K, Series>,
    tick_start: Option<Instant>,
}

impl<K: Eq + Hash + Ord + Clone> TrendingPolicy<K> {
    /// A policy with `config` and no history.
    pub fn new(config: TrendingConfig) -> Self {
        Self {
            series: RecencyTable::new(config.max_tracked),
            config,
            tick_start: None,
        }
    }

    /// Records `count` arrivals of `key` (e.g. from one node's load report).
    pub fn handle_arrivals(&mut self, now: Instant, key: &K, count: u64) {
        if count == 0 {
            return;
        }
        self.tick_start.get_or_insert(now);
        let s = self.series.touch(now, key, || Series {
            level: 0.0,
            trend: 0.0,
            arrivals: 0,
            hinted: None,
        });
        s.arrivals = s.arrivals.saturating_add(count);
    }

    /// When [`Self::tick`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tick_start
            .and_then(|t| t.checked_add(self.config.tick()))
    }

    /// Closes every tick that ended by `now`; returns the functions to hint about, in key
    /// order.
    pub fn tick(&mut self, now: Instant) -> Vec<K> {
        let Some(start) = self.tick_start else {
            return Vec::new();
        };
        let tick = self.config.tick();
        let elapsed = now.saturating_duration_since(start);
        let ticks = u32::try_from(elapsed.as_nanos() / tick.as_nanos()).unwrap_or(u32::MAX);
        if ticks == 0 {
            return Vec::new();
        }
        let c = &self.config;
        let secs = tick.as_secs_f64();
        let cooldown = Duration::from_millis(c.cooldown_ms);
        let mut hints = Vec::new();
        let mut gone = Vec::new();
        for (k, s) in self.series.iter_mut() {
            // After a gap the arrivals are counted in the last closed tick, the empty ones
            // before it.
            let steps = ticks.min(MAX_CATCH_UP);
            for i in 0..steps {
                let rate = if i + 1 == steps {
                    s.arrivals as f64 / secs
                } else {
                    0.0
                };
                let level = c.alpha * rate + (1.0 - c.alpha) * (s.level + s.trend);
                s.trend = c.beta * (level - s.level) + (1.0 - c.beta) * s.trend;
                s.level = level;
            }
            s.arrivals = 0;
            let forecast = s.level + f64::from(c.horizon_ticks) * s.trend;
            let cooled = s
                .hinted
                .is_none_or(|at| now.saturating_duration_since(at) >= cooldown);
            if s.trend >= c.min_trend && forecast >= c.min_rate && cooled {
                s.hinted = Some(now);
                hints.push(k.clone());
            }
            if s.level < 1e-3 && s.trend.abs() < 1e-3 {
                gone.push(k.clone());
            }
        }
        for k in gone {
            self.series.remove(&k);
        }
        self.tick_start = start.checked_add(tick * ticks).or(Some(now));
        hints.sort();
        hints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    fn drive(p: &mut TrendingPolicy<u32>, t0: Instant, per_tick: &[(u32, u64)]) -> Vec<u32> {
        let mut hinted = Vec::new();
        for (i, &(key, n)) in per_tick.iter().enumerate() {
            let at = t0 + TICK * i as u32;
            p.handle_arrivals(at, &key, n);
            hinted.extend(p.tick(at + TICK));
        }
        hinted
    }

    #[test]
    fn a_ramp_is_hinted_once_within_the_cooldown() {
        let mut p = TrendingPolicy::new(TrendingConfig::default());
        let t0 = Instant::now();
        let ramp: Vec<(u32, u64)> = (0..10).map(|i| (1, 2u64 << (i / 2))).collect();
        assert_eq!(drive(&mut p, t0, &ramp), vec![1]);
    }

    #[test]
    fn a_steady_trickle_is_never_hinted() {
        let mut p = TrendingPolicy::new(TrendingConfig::default());
        let t0 = Instant::now();
        let trickle: Vec<(u32, u64)> = (0..60).map(|_| (1, 1)).collect();
        assert!(drive(&mut p, t0, &trickle).is_empty());
    }

    #[test]
    fn a_falling_rate_is_never_hinted_again() {
        let mut p = TrendingPolicy::new(TrendingConfig {
            cooldown_ms: 0,
            ..TrendingConfig::default()
        });
        let t0 = Instant::now();
        let mut shape: Vec<(u32, u64)> = vec![(1, 50); 5];
        let first = drive(&mut p, t0, &shape);
        assert!(!first.is_empty());
        shape = (0..10).map(|i| (1, 40 - 4 * i)).collect();
        assert!(drive(&mut p, t0 + TICK * 5, &shape).is_empty());
    }

    #[test]
    fn the_cooldown_expires_and_a_new_rise_hints_again() {
        let mut p = TrendingPolicy::new(TrendingConfig {
            cooldown_ms: 5_000,
            ..TrendingConfig::default()
        });
        let t0 = Instant::now();
        let rise: Vec<(u32, u64)> = (0..4).map(|i| (1, 10 * (i + 1))).collect();
        assert_eq!(drive(&mut p, t0, &rise), vec![1]);
        let later: Vec<(u32, u64)> = (0..4).map(|i| (1, 100 * (i + 1))).collect();
        assert_eq!(drive(&mut p, t0 + TICK * 10, &later), vec![1]);
    }

    #[test]
    fn ties_come_out_in_key_order_and_a_backwards_clock_closes_nothing() {
        let mut p = TrendingPolicy::new(TrendingConfig::default());
        let t0 = Instant::now() + Duration::from_secs(100);
        for k in [3u32, 1, 2] {
            p.handle_arrivals(t0, &k, 20);
        }
        assert!(p.tick(t0 - Duration::from_secs(10)).is_empty());
        assert_eq!(p.tick(t0 + TICK), vec![1, 2, 3]);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut p = TrendingPolicy::new(TrendingConfig {
            max_tracked: 8,
            ..TrendingConfig::default()
        });
        let t0 = Instant::now();
        for k in 0..100u32 {
            p.handle_arrivals(t0 + Duration::from_millis(u64::from(k)), &k, 1);
        }
        assert_eq!(p.series.len(), 8);
    }
}
