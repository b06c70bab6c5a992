//! Resource resizing: observed peak memory per function, a recommended size, and the
//! memory size learned from out-of-memory retries (DESIGN §6, "Resource resizing").
//!
//! Owns a bounded window of recent peak-memory samples per function (for percentiles and
//! the recommendation) and, per function version, the size an `auto_resize` retry found
//! sufficient. The learned size decays: after [`ResizeConfig::decay_after`] consecutive
//! invocations at the learned size whose peak stayed below half of it, it halves (never
//! below the configured size, where it is forgotten). Never runs anything and never reads
//! a clock: the executor reports each invocation and asks which size to use.
//!
//! Bounds: at most [`ResizeConfig::max_functions`] functions and as many learned versions
//! are tracked; a new one beyond that evicts the least recently used. Each function keeps
//! the last [`ResizeConfig::window`] samples.

use crate::model::FunctionKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const MIB: u64 = 1 << 20;

/// Bounds and thresholds of [`ResizePolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeConfig {
    /// Peak samples kept per function. Default 1024.
    pub window: usize,
    /// Functions (and learned versions) tracked. Default 4096.
    pub max_functions: usize,
    /// Consecutive invocations with a peak under half the learned size before it halves.
    /// Default 20.
    pub decay_after: u32,
}

impl Default for ResizeConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            max_functions: 4096,
            decay_after: 20,
        }
    }
}

/// Observed peak memory in MiB at three percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PeakPercentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// What `GET /v1/functions/{name}` shows about a function's memory.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MemoryReport {
    /// Peak linear memory of recent invocations; `None` before the first.
    pub observed_peak_mb: Option<PeakPercentiles>,
    /// Samples the percentiles are computed from (at most the window).
    pub samples: usize,
    /// p99 peak × 1.25, rounded up to a step of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... MiB;
    /// `None` before the first sample.
    pub recommended_mb: Option<u32>,
    /// The size `auto_resize` learned for this version, when above the configured size.
    pub learned_mb: Option<u32>,
    /// Out-of-memory failures retried at a larger size since tracking began.
    pub oom_retries: u64,
}

#[derive(Debug, Default)]
struct Observed {
    peaks: VecDeque<u64>,
    oom_retries: u64,
    used: u64,
}

#[derive(Debug)]
struct Learned {
    mb: u32,
    /// Consecutive invocations at `mb` that peaked under half of it.
    calm: u32,
    used: u64,
}

/// Peak memory statistics and learned sizes; see the module docs.
#[derive(Debug, Default)]
pub struct ResizePolicy {
    config: ResizeConfig,
    observed: BTreeMap<FunctionKey, Observed>,
    learned: BTreeMap<(FunctionKey, String), Learned>,
    /// A logical clock for least-recently-used eviction.
    tick: u64,
    /// Functions changed since [`ResizePolicy::take_dirty`] last ran.
    dirty: BTreeSet<FunctionKey>,
}

/// What the policy knows of one function, as a node stores it so the percentiles, the
/// recommendation and the learned sizes survive a restart ([`ResizePolicy::take_dirty`],
/// [`ResizePolicy::restore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeRecord {
    /// The peak samples in the window, oldest first, in bytes.
    pub peaks: Vec<u64>,
    /// Out-of-memory retries counted.
    pub oom_retries: u64,
    /// Learned sizes by version, in MiB.
    pub learned: BTreeMap<String, u32>,
}

/// The size step at or above `mb`: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ...
pub fn round_up_to_step(mb: u64) -> u32 {
    let mut step: u64 = 1;
    loop {
        if step >= mb {
            return u32::try_from(step).unwrap_or(u32::MAX);
        }
        // Between 2^k and 2^(k+1) the step 1.5 · 2^k exists from 2 upwards.
        let mid = step + step / 2;
        if step >= 2 && mid >= mb {
            return u32::try_from(mid).unwrap_or(u32::MAX);
        }
        step *= 2;
    }
}

fn evict_lru<K: Ord + Clone, V>(map: &mut BTreeMap<K, V>, bound: usize, used: impl Fn(&V) -> u64) {
    while map.len() >= bound.max(1) {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| used(v))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        map.remove(&oldest);
    }
}

impl ResizePolicy {
    /// An empty policy.
    pub fn new(config: ResizeConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The memory, in MiB, to run `version` of `key` with when the request asks for
    /// nothing: the learned size if any, else `configured_mb`.
    pub fn memory_for(&self, key: &FunctionKey, version: &str, configured_mb: u32) -> u32 {
        self.learned
            .get(&(key.clone(), version.to_owned()))
            .map_or(configured_mb, |l| l.mb.max(configured_mb))
    }

    /// One invocation of `version` of `key` ran with `limit_mb` and peaked at
    /// `peak_bytes`; `configured_mb` is the function's configured size.
    pub fn record(
        &mut self,
        key: &FunctionKey,
        version: &str,
        limit_mb: u32,
        configured_mb: u32,
        peak_bytes: u64,
    ) {
        let tick = self.observe(key, peak_bytes);
        if self.learned.is_empty() {
            // Nothing learned anywhere (the usual case): no key to build.
            return;
        }
        let id = (key.clone(), version.to_owned());
        let Some(learned) = self.learned.get_mut(&id) else {
            return;
        };
        learned.used = tick;
        if limit_mb != learned.mb {
            // An explicit x-strata-memory-mb run says nothing about the learned size.
            return;
        }
        if peak_bytes < u64::from(learned.mb) * MIB / 2 {
            learned.calm += 1;
        } else {
            learned.calm = 0;
        }
        if learned.calm >= self.config.decay_after {
            learned.mb /= 2;
            learned.calm = 0;
            if learned.mb <= configured_mb {
                self.learned.remove(&id);
            }
        }
    }

    /// One invocation of `key` peaked at `peak_bytes` (run here, or at a POP that
    /// reported it): a sample for the percentiles and the recommendation only, never for
    /// the learned size (another node's limit is not known here). Returns the tick used.
    pub fn observe(&mut self, key: &FunctionKey, peak_bytes: u64) -> u64 {
        let tick = self.next_tick();
        // The key is cloned only for a function not seen yet (this runs on every
        // invocation).
        if !self.observed.contains_key(key) {
            evict_lru(&mut self.observed, self.config.max_functions, |o| o.used);
            self.observed.insert(key.clone(), Observed::default());
        }
        let Some(observed) = self.observed.get_mut(key) else {
            return tick;
        };
        observed.used = tick;
        if observed.peaks.len() >= self.config.window.max(1) {
            observed.peaks.pop_front();
        }
        observed.peaks.push_back(peak_bytes);
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
        tick
    }

    /// The records of the functions changed since the last call (each once), for the
    /// node to store; a function evicted since is left out.
    pub fn take_dirty(&mut self) -> Vec<(FunctionKey, SizeRecord)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|key| {
                let observed = self.observed.get(&key);
                let learned: BTreeMap<String, u32> = self
                    .learned
                    .range((key.clone(), String::new())..)
                    .take_while(|((k, _), _)| k == &key)
                    .map(|((_, v), l)| (v.clone(), l.mb))
                    .collect();
                if observed.is_none() && learned.is_empty() {
                    return None;
                }
                let record = SizeRecord {
                    peaks: observed.map_or_else(Vec::new, |o| o.peaks.iter().copied().collect()),
                    oom_retries: observed.map_or(0, |o| o.oom_retries),
                    learned,
                };
                Some((key, record))
            })
            .collect()
    }

    /// Restores what was stored of `key` (at start-up), within this policy's bounds.
    pub fn restore(&mut self, key: &FunctionKey, record: SizeRecord) {
        let tick = self.next_tick();
        if !record.peaks.is_empty() || record.oom_retries > 0 {
            if !self.observed.contains_key(key) {
                evict_lru(&mut self.observed, self.config.max_functions, |o| o.used);
            }
            let window = self.config.window.max(1);
            let skip = record.peaks.len().saturating_sub(window);
            self.observed.insert(
                key.clone(),
                Observed {
                    peaks: record.peaks.into_iter().skip(skip).collect(),
                    oom_retries: record.oom_retries,
                    used: tick,
                },
            );
        }
        for (version, mb) in record.learned {
            let id = (key.clone(), version);
            if !self.learned.contains_key(&id) {
                evict_lru(&mut self.learned, self.config.max_functions, |l| l.used);
            }
            self.learned.insert(
                id,
                Learned {
                    mb,
                    calm: 0,
                    used: tick,
                },
            );
        }
    }

    /// An out-of-memory failure of `version` of `key` was retried with `mb` and the retry
    /// succeeded: run it with `mb` from now on (until it decays).
    pub fn learn(&mut self, key: &FunctionKey, version: &str, mb: u32) {
        let tick = self.next_tick();
        let id = (key.clone(), version.to_owned());
        if !self.learned.contains_key(&id) {
            evict_lru(&mut self.learned, self.config.max_functions, |l| l.used);
        }
        let learned = self.learned.entry(id).or_insert(Learned {
            mb,
            calm: 0,
            used: tick,
        });
        learned.mb = learned.mb.max(mb);
        learned.calm = 0;
        learned.used = tick;
        self.dirty.insert(key.clone());
    }

    /// Counts an out-of-memory retry of `key` (successful or not).
    pub fn retried(&mut self, key: &FunctionKey) {
        let tick = self.next_tick();
        if !self.observed.contains_key(key) {
            evict_lru(&mut self.observed, self.config.max_functions, |o| o.used);
        }
        let observed = self.observed.entry(key.clone()).or_default();
        observed.oom_retries += 1;
        observed.used = tick;
        self.dirty.insert(key.clone());
    }

    /// The memory report of `key`, with the learned size of `version`.
    pub fn report(&self, key: &FunctionKey, version: &str) -> MemoryReport {
        let learned_mb = self
            .learned
            .get(&(key.clone(), version.to_owned()))
            .map(|l| l.mb);
        let Some(observed) = self.observed.get(key).filter(|o| !o.peaks.is_empty()) else {
            return MemoryReport {
                observed_peak_mb: None,
                samples: 0,
                recommended_mb: None,
                learned_mb,
                oom_retries: self.observed.get(key).map_or(0, |o| o.oom_retries),
            };
        };
        let mut sorted: Vec<u64> = observed.peaks.iter().copied().collect();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least p of the samples at or below it.
        let rank = |p: f64| {
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        let mb = |bytes: u64| (bytes as f64 / MIB as f64 * 100.0).round() / 100.0;
        let p99 = rank(0.99);
        MemoryReport {
            observed_peak_mb: Some(PeakPercentiles {
                p50: mb(rank(0.5)),
                p90: mb(rank(0.9)),
                p99: mb(p99),
            }),
            samples: sorted.len(),
            recommended_mb: Some(round_up_to_step((p99 * 5 / 4).div_ceil(MIB).max(1))),
            learned_mb,
            oom_retries: observed.oom_retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionName, TenantId};

    fn key(name: &str) -> FunctionKey {
        FunctionKey {
            tenant: TenantId::new("t").expect("tenant"),
            name: FunctionName::new(name).expect("name"),
        }
    }

    #[test]
    fn steps_are_powers_of_two_and_one_and_a_half_times_them() {
        let got: Vec<u32> = [0, 1, 2, 3, 4, 5, 6, 7, 9, 13, 17, 100]
            .into_iter()
            .map(round_up_to_step)
            .collect();
        assert_eq!(got, vec![1, 1, 2, 3, 4, 6, 6, 8, 12, 16, 24, 128]);
    }

    #[test]
    fn percentiles_and_recommendation_follow_the_samples() {
        let mut p = ResizePolicy::new(ResizeConfig::default());
        let f = key("f");
        assert_eq!(p.report(&f, "$LATEST").samples, 0);
        for i in 1..=100u64 {
            p.record(&f, "$LATEST", 128, 128, i * MIB);
        }
        let r = p.report(&f, "$LATEST");
        assert_eq!(r.samples, 100);
        let peaks = r.observed_peak_mb.expect("samples");
        assert_eq!((peaks.p50, peaks.p90, peaks.p99), (50.0, 90.0, 99.0));
        // 99 × 1.25 = 123.75 → 128.
        assert_eq!(r.recommended_mb, Some(128));
    }

    #[test]
    fn the_window_keeps_only_recent_samples() {
        let mut p = ResizePolicy::new(ResizeConfig {
            window: 10,
            ..ResizeConfig::default()
        });
        let f = key("f");
        for _ in 0..50 {
            p.record(&f, "1", 128, 128, 100 * MIB);
        }
        for _ in 0..10 {
            p.record(&f, "1", 128, 128, MIB);
        }
        let r = p.report(&f, "1");
        assert_eq!(r.samples, 10);
        assert_eq!(r.recommended_mb, Some(2));
    }

    #[test]
    fn a_learned_size_is_used_and_decays_when_peaks_stay_low() {
        let mut p = ResizePolicy::new(ResizeConfig {
            decay_after: 3,
            ..ResizeConfig::default()
        });
        let f = key("f");
        assert_eq!(p.memory_for(&f, "1", 2), 2);
        p.learn(&f, "1", 8);
        assert_eq!(p.memory_for(&f, "1", 2), 8);
        assert_eq!(p.memory_for(&f, "2", 2), 2, "per version");
        // A high peak resets the count; three low ones in a row halve it.
        p.record(&f, "1", 8, 2, MIB);
        p.record(&f, "1", 8, 2, 5 * MIB);
        p.record(&f, "1", 8, 2, MIB);
        p.record(&f, "1", 8, 2, MIB);
        assert_eq!(p.memory_for(&f, "1", 2), 8);
        p.record(&f, "1", 8, 2, MIB);
        assert_eq!(p.memory_for(&f, "1", 2), 4);
        // Runs with an explicit other size do not count.
        for _ in 0..10 {
            p.record(&f, "1", 64, 2, MIB / 2);
        }
        assert_eq!(p.memory_for(&f, "1", 2), 4);
        for _ in 0..3 {
            p.record(&f, "1", 4, 2, MIB / 2);
        }
        assert_eq!(
            p.report(&f, "1").learned_mb,
            None,
            "back at the configured size"
        );
        assert_eq!(p.memory_for(&f, "1", 2), 2);
    }

    #[test]
    fn tracking_is_bounded_by_evicting_the_least_recently_used() {
        let mut p = ResizePolicy::new(ResizeConfig {
            max_functions: 2,
            ..ResizeConfig::default()
        });
        let (a, b, c) = (key("a"), key("b"), key("c"));
        p.record(&a, "1", 1, 1, MIB);
        p.record(&b, "1", 1, 1, MIB);
        p.record(&a, "1", 1, 1, MIB);
        p.record(&c, "1", 1, 1, MIB);
        assert_eq!(p.report(&b, "1").samples, 0, "b was least recently used");
        assert_eq!(p.report(&a, "1").samples, 2);
        p.learn(&a, "1", 4);
        p.learn(&b, "1", 4);
        p.learn(&c, "1", 4);
        assert_eq!(p.memory_for(&a, "1", 1), 1, "a's learned size was evicted");
        assert_eq!(p.memory_for(&c, "1", 1), 4);
    }

    #[test]
    fn what_was_taken_restores_the_same_report() {
        let mut p = ResizePolicy::new(ResizeConfig::default());
        let (f, g) = (key("f"), key("g"));
        for i in 1..=100u64 {
            p.record(&f, "$LATEST", 128, 128, i * MIB);
        }
        p.observe(&g, 3 * MIB);
        p.learn(&f, "$LATEST", 256);
        p.retried(&f);
        let taken = p.take_dirty();
        assert_eq!(taken.len(), 2);
        assert!(p.take_dirty().is_empty(), "each change is taken once");
        let mut restored = ResizePolicy::new(ResizeConfig::default());
        for (k, r) in taken {
            restored.restore(&k, r);
        }
        assert_eq!(restored.report(&f, "$LATEST"), p.report(&f, "$LATEST"));
        assert_eq!(restored.report(&g, "1"), p.report(&g, "1"));
        assert_eq!(restored.memory_for(&f, "$LATEST", 128), 256);
    }
}
