//! How long an idle application stays loaded, and when it is loaded again before its next
//! invocation: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
//! (USENIX ATC 2020), per application.
//!
//! Per application the policy keeps a histogram of its *idle times* (from the end of one
//! execution to the start of the next) in bins of `bin_ms` (1 minute) over `range_bins`
//! bins (4 hours); longer idle times are counted as out of bounds. After each execution it
//! hands out [`KeepAliveWindows`]:
//!
//! - **histogram** (representative: at least `min_samples` idle times in range, the bin
//!   counts' coefficient of variation at least `cv_threshold`, and at most
//!   `oob_threshold` of the idle times out of bounds): unload now and load again after the
//!   `head_percentile` (5th) of the idle times less a `margin` (10%), then keep loaded
//!   until the `tail_percentile` (99th) plus the margin. A head in the first bin means no
//!   unloading: keep alive from the end of the execution.
//! - **forecast** (mostly out of bounds: the app idles longer than the range): pre-warm at
//!   the mean of its last `FORECAST_SAMPLES` out-of-bound idle times less 15% and keep 30%
//!   of it. The paper fits an ARIMA model here; the recent mean is a simpler predictor of
//!   the same quantity, chosen to keep the policy dependency-free.
//! - **fallback** (too little or too spread-out history): no pre-warming, keep alive for
//!   `fallback_keep_alive_ms` (default the histogram's range, as in the paper).
//!
//! Never loads or unloads anything: the caller reports starts and ends and acts on the
//! windows. Never reads a clock. The table is bounded by `max_tracked` (the least
//! recently seen application is forgotten).

use super::recency::RecencyTable;
use serde::Deserialize;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Out-of-bound idle times the forecast averages.
const FORECAST_SAMPLES: usize = 8;
/// The forecast window opens this share before the predicted idle time...
const FORECAST_EARLY: f64 = 0.15;
/// ...and stays open this share of it.
const FORECAST_WIDTH: f64 = 0.30;

/// Tunables of [`HistogramPolicy`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistogramConfig {
    /// Width of one histogram bin, ms. Default 60 000 (1 minute).
    pub bin_ms: u64,
    /// Bins in the histogram; idle times beyond `bin_ms × range_bins` are out of bounds.
    /// Default 240 (4 hours).
    pub range_bins: u32,
    /// Percentile of the idle times the pre-warm window is taken from. Default 5.
    pub head_percentile: f64,
    /// Percentile of the idle times the keep-alive window ends at. Default 99.
    pub tail_percentile: f64,
    /// Safety margin: the pre-warm window shrinks and the keep-alive end grows by this
    /// share. Default 0.1.
    pub margin: f64,
    /// Smallest coefficient of variation of the bin counts for the histogram to be
    /// representative (a spread-out histogram predicts nothing). Default 2.
    pub cv_threshold: f64,
    /// Fewest in-range idle times before the histogram is used. Default 5.
    pub min_samples: u32,
    /// Largest share of out-of-bound idle times for the histogram to be used; above it
    /// (and with `min_samples` of them) the forecast is. Default 0.5.
    pub oob_threshold: f64,
    /// Keep-alive without a usable pattern, ms. Default 14 400 000 (the histogram range).
    pub fallback_keep_alive_ms: u64,
    /// Most applications tracked. Default 65 536.
    pub max_tracked: usize,
}

impl Default for HistogramConfig {
    fn default() -> Self {
        Self {
            bin_ms: 60_000,
            range_bins: 240,
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.1,
            cv_threshold: 2.0,
            min_samples: 5,
            oob_threshold: 0.5,
            fallback_keep_alive_ms: 4 * 3_600_000,
            max_tracked: 65_536,
        }
    }
}

impl HistogramConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.bin_ms == 0 || self.range_bins == 0 {
            return Err("bin_ms and range_bins must be at least 1".into());
        }
        let pct = 0.0..=100.0;
        if !pct.contains(&self.head_percentile)
            || !pct.contains(&self.tail_percentile)
            || self.head_percentile > self.tail_percentile
        {
            return Err(format!(
                "head_percentile ({}) and tail_percentile ({}) must be in [0, 100], head <= tail",
                self.head_percentile, self.tail_percentile
            ));
        }
        if !(0.0..1.0).contains(&self.margin) {
            return Err(format!("margin must be in [0, 1), got {}", self.margin));
        }
        if !(0.0..=1.0).contains(&self.oob_threshold) || !(0.0..).contains(&self.cv_threshold) {
            return Err("oob_threshold must be in [0, 1] and cv_threshold >= 0".into());
        }
        if self.max_tracked == 0 {
            return Err("max_tracked must be at least 1".into());
        }
        Ok(())
    }
}

/// Which rule produced a [`KeepAliveWindows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowBasis {
    /// The idle-time histogram's head and tail.
    Histogram,
    /// The forecast of a long idle time.
    Forecast,
    /// Fixed keep-alive: not enough (or no usable) history.
    Fallback,
}

/// What to do with an application after an execution ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveWindows {
    /// Unload now and load again after this long; zero keeps it loaded.
    pub pre_warm: Duration,
    /// Then keep it loaded for this long.
    pub keep_alive: Duration,
    /// The rule behind the windows.
    pub basis: WindowBasis,
}

impl KeepAliveWindows {
    /// When the application is loaded after an execution that ended at `end`: from the
    /// first instant to the second (an empty range when `keep_alive` is zero).
    pub fn loaded(&self, end: Instant) -> (Instant, Instant) {
        let from = end + self.pre_warm;
        (from, from + self.keep_alive)
    }
}

/// One application's history.
#[derive(Debug, Clone)]
struct App {
    bins: Vec<u32>,
    /// Idle times recorded in range.
    in_range: u64,
    /// Sum of the squared bin counts (for the coefficient of variation in O(1)).
    square_sum: u64,
    out_of_bounds: u64,
    /// The last out-of-bound idle times, oldest first.
    recent_oob: Vec<Duration>,
    /// End of the last execution, while idle.
    idle_since: Option<Instant>,
}

/// The hybrid histogram keep-alive policy. See the module docs.
#[derive(Debug)]
pub struct HistogramPolicy<K> {
    config: HistogramConfig,
    apps: RecencyTable<K, App>,
}

impl<K: Eq + Hash + Ord + Clone> HistogramPolicy<K> {
    /// A policy with `config` and no history.
    pub fn new(config: HistogramConfig) -> Self {
        Self {
            apps: RecencyTable::new(config.max_tracked),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HistogramConfig {
        &self.config
    }

    /// An execution of `key` starts: the idle time since its last end (if it was idle) goes
    /// into its histogram.
    pub fn handle_start(&mut self, now: Instant, key: &K) {
        let bin = Duration::from_millis(self.config.bin_ms.max(1));
        let range = self.config.range_bins.max(1);
        let app = self.app(now, key);
        let Some(since) = app.idle_since.take() else {
            return;
        };
        // A clock that went backwards is an idle time of zero.
        let idle = now.saturating_duration_since(since);
        let index = idle.as_nanos() / bin.as_nanos();
        match usize::try_from(index) {
            Ok(i) if i < range as usize => {
                let c = &mut app.bins[i];
                // (c + 1)^2 - c^2 = 2c + 1.
                app.square_sum += 2 * u64::from(*c) + 1;
                *c += 1;
                app.in_range += 1;
            }
            _ => {
                app.out_of_bounds += 1;
                if app.recent_oob.len() == FORECAST_SAMPLES {
                    app.recent_oob.remove(0);
                }
                app.recent_oob.push(idle);
            }
        }
    }

    /// An execution of `key` ended at `now`: returns what to do until its next start.
    pub fn handle_end(&mut self, now: Instant, key: &K) -> KeepAliveWindows {
        let app = self.app(now, key);
        app.idle_since = Some(now);
        self.windows(key)
    }

    /// The windows `key`'s history gives now (fallback for an unknown key).
    pub fn windows(&self, key: &K) -> KeepAliveWindows {
        let c = &self.config;
        let fallback = KeepAliveWindows {
            pre_warm: Duration::ZERO,
            keep_alive: Duration::from_millis(c.fallback_keep_alive_ms),
            basis: WindowBasis::Fallback,
        };
        let Some(app) = self.apps.get(key) else {
            return fallback;
        };
        let total = app.in_range + app.out_of_bounds;
        let oob_share = if total == 0 {
            0.0
        } else {
            app.out_of_bounds as f64 / total as f64
        };
        if oob_share > c.oob_threshold && app.out_of_bounds >= u64::from(c.min_samples) {
            let n = app.recent_oob.len().max(1) as u32;
            let predicted = app.recent_oob.iter().sum::<Duration>() / n;
            return KeepAliveWindows {
                pre_warm: predicted.mul_f64(1.0 - FORECAST_EARLY),
                keep_alive: predicted.mul_f64(FORECAST_WIDTH),
                basis: WindowBasis::Forecast,
            };
        }
        if app.in_range < u64::from(c.min_samples) || self.cv(app) < c.cv_threshold {
            return fallback;
        }
        let bin = Duration::from_millis(c.bin_ms);
        let head = self.percentile_bin(app, c.head_percentile);
        let tail = self.percentile_bin(app, c.tail_percentile);
        // The head bin's lower edge and the tail bin's upper edge: the window covers both.
        let pre_warm = (bin * head).mul_f64(1.0 - c.margin);
        let end = (bin * (tail + 1)).mul_f64(1.0 + c.margin);
        KeepAliveWindows {
            pre_warm,
            keep_alive: end.saturating_sub(pre_warm),
            basis: WindowBasis::Histogram,
        }
    }

    /// How many applications are tracked.
    pub fn tracked(&self) -> usize {
        self.apps.len()
    }

    /// The coefficient of variation of `app`'s bin counts.
    fn cv(&self, app: &App) -> f64 {
        let n = app.in_range as f64;
        if n == 0.0 {
            return 0.0;
        }
        let bins = f64::from(self.config.range_bins.max(1));
        // Var = E[c^2] - E[c]^2 with E[c] = n / bins; CV^2 = Var / E[c]^2.
        let cv2 = bins * app.square_sum as f64 / (n * n) - 1.0;
        cv2.max(0.0).sqrt()
    }

    /// The first bin at which the cumulative in-range count reaches `percentile`.
    fn percentile_bin(&self, app: &App, percentile: f64) -> u32 {
        let wanted = (percentile / 100.0 * app.in_range as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in app.bins.iter().enumerate() {
            seen += u64::from(c);
            if seen >= wanted {
                return i as u32;
            }
        }
        self.config.range_bins.saturating_sub(1)
    }

    fn app(&mut self, now: Instant, key: &K) -> &mut App {
        let bins = self.config.range_bins.max(1) as usize;
        self.apps.touch(now, key, || App {
            bins: vec![0; bins],
            in_range: 0,
            square_sum: 0,
            out_of_bounds: 0,
            recent_oob: Vec::with_capacity(FORECAST_SAMPLES),
            idle_since: None,
        })
    }
}

#[cfg(test)]
#[path = "keepalive_tests.rs"]
mod tests;
