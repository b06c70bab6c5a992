//! Keep-alive policies on an Azure Functions-shaped workload: the comparison of
//! Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020), Figure 15, with Strata's
//! trend-driven pools added.
//!
//! A scenario's `[keepalive]` section names a workload source: a seeded generator of the
//! 2019 dataset's published shape ([`generate`]), the real 2019 per-minute-count files
//! ([`azure2019`]) or a 2021 per-invocation file ([`crate::sim::trace`]). Every source
//! becomes a [`Workload`]: per application, its memory and its busy periods
//! ([`Block`]s). [`evaluate`] replays it against fixed 10-minute keep-alive, the hybrid
//! histogram policy (`common::policy::HistogramPolicy`) and the POP's trend-driven warm
//! pools (`common::policy::WarmPolicy` plus the POP's idle keep-alive), one instance per
//! application as in the paper, and reports each policy's cold-start share per
//! application and its wasted memory-time (loaded but not executing).
//!
//! Never does I/O beyond reading the source files; a run is a pure function of the
//! scenario and its files.

pub mod azure2019;
pub mod evaluate;
pub mod generate;

use crate::sim::trace::Trace;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use strata_core::policy::HistogramConfig;

/// The `[keepalive]` section of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepAliveSpec {
    /// Where the workload comes from.
    pub source: Source,
    /// The fixed policy's keep-alive, minutes. Default 10 (the paper's baseline).
    #[serde(default = "ten")]
    pub fixed_keep_alive_min: f64,
    /// The hybrid policy's tunables. Default: the paper's (1-minute bins over 4 hours,
    /// 5th and 99th percentiles, 10% margin, CV threshold 2).
    #[serde(default)]
    pub hybrid: HistogramConfig,
    /// The replay on real nodes (`run --live`).
    #[serde(default)]
    pub live: LiveKeepAlive,
}

fn ten() -> f64 {
    10.0
}

/// `[keepalive.live]`: the fixed keep-alive policy checked on a real POP
/// (`scenarios::live::keepalive`). The workload's first `window_s × speedup` seconds are
/// replayed `speedup` times faster, the POP's keep-alive shortened alike (10 minutes at
/// 300× is 2 s), so cold and warm starts fall where the paper's model puts them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveKeepAlive {
    /// Applications replayed: those whose idle gaps fall nearest the keep-alive most
    /// often (the ones the policy decides for). Default 8.
    pub apps: usize,
    /// How much faster than the workload the replay runs. Default 300.
    pub speedup: f64,
    /// Seconds the replay lasts. Default 60.
    pub window_s: f64,
    /// Most requests per application. Default 40.
    pub max_blocks_per_app: usize,
    /// Starts whose idle gap is within this share of the keep-alive of it are too close
    /// to call (timer and scheduling jitter) and not compared. Default 0.1.
    pub guard_ratio: f64,
    /// Agreement: at most this share of the compared starts may differ (cold live, warm
    /// simulated or the reverse). Default 0.05.
    pub tolerance: f64,
}

impl Default for LiveKeepAlive {
    fn default() -> Self {
        Self {
            apps: 8,
            speedup: 300.0,
            window_s: 60.0,
            max_blocks_per_app: 40,
            guard_ratio: 0.1,
            tolerance: 0.05,
        }
    }
}

impl LiveKeepAlive {
    /// Checks ranges.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.apps == 0 || self.max_blocks_per_app < 2 {
            return Err("keepalive.live needs apps >= 1 and max_blocks_per_app >= 2".into());
        }
        if !(positive(self.speedup) && positive(self.window_s)) {
            return Err("keepalive.live.speedup and window_s must be > 0".into());
        }
        if !((0.0..1.0).contains(&self.guard_ratio) && (0.0..=1.0).contains(&self.tolerance)) {
            return Err("keepalive.live.guard_ratio must be in [0, 1), tolerance in [0, 1]".into());
        }
        Ok(())
    }
}

/// A workload source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A seeded workload of the 2019 dataset's published shape.
    Generate(generate::GenerateSpec),
    /// The real 2019 files: per-minute invocation counts per function, one file per day in
    /// day order, with optional per-day duration and memory files.
    Azure2019 {
        /// `invocations_per_function_md.anon.dNN.csv` files, in day order.
        invocations: Vec<PathBuf>,
        /// `function_durations_percentiles.anon.dNN.csv` files. Default none (durations
        /// then come from the generator's distribution).
        #[serde(default)]
        durations: Vec<PathBuf>,
        /// `app_memory_percentiles.anon.dNN.csv` files. Default none (memory then comes
        /// from the generator's distribution).
        #[serde(default)]
        memory: Vec<PathBuf>,
        /// Most rows read over all files. Default 2 000 000.
        #[serde(default = "default_max_rows")]
        max_rows: usize,
    },
    /// A 2021 per-invocation file (`app,func,end_timestamp,duration`); memory per app
    /// from the generator's distribution.
    Azure2021 {
        /// The CSV file.
        file: PathBuf,
        /// Most rows read. Default 2 000 000.
        #[serde(default = "default_max_rows")]
        max_rows: usize,
    },
}

fn default_max_rows() -> usize {
    2_000_000
}

impl Source {
    /// Every file the source reads, for making them relative to the scenario file.
    pub fn files_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            Source::Generate(_) => Vec::new(),
            Source::Azure2019 {
                invocations,
                durations,
                memory,
                ..
            } => invocations
                .iter_mut()
                .chain(durations.iter_mut())
                .chain(memory.iter_mut())
                .collect(),
            Source::Azure2021 { file, .. } => vec![file],
        }
    }
}

impl KeepAliveSpec {
    /// Checks ranges.
    ///
    /// # Errors
    /// A message naming the field out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.fixed_keep_alive_min.is_finite() && self.fixed_keep_alive_min > 0.0) {
            return Err("keepalive.fixed_keep_alive_min must be > 0".into());
        }
        self.hybrid
            .validate()
            .map_err(|e| format!("keepalive.hybrid: {e}"))?;
        self.live.validate()?;
        match &self.source {
            Source::Generate(g) => g.validate(),
            Source::Azure2019 {
                invocations,
                max_rows,
                ..
            } => {
                if invocations.is_empty() || *max_rows == 0 {
                    return Err(
                        "keepalive.source needs at least one invocations file and max_rows >= 1"
                            .into(),
                    );
                }
                Ok(())
            }
            Source::Azure2021 { max_rows, .. } => {
                if *max_rows == 0 {
                    return Err("keepalive.source.max_rows must be >= 1".into());
                }
                Ok(())
            }
        }
    }
}

/// A period during which an application executes without a gap: the first invocation in
/// it may be a cold start, the others find the instance it loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    /// Seconds since the start of the workload.
    pub start: f64,
    /// Seconds since the start of the workload; `>= start`.
    pub end: f64,
    /// Invocations in the block (>= 1).
    pub invocations: u64,
}

/// One application of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct AppActivity {
    /// Memory of its instance, MB.
    pub memory_mb: f64,
    /// Busy periods, by start, not overlapping.
    pub blocks: Vec<Block>,
}

impl AppActivity {
    /// Invocations over the workload.
    pub fn invocations(&self) -> u64 {
        self.blocks.iter().map(|b| b.invocations).sum()
    }
}

/// What a keep-alive comparison replays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Workload {
    /// Applications with at least one invocation.
    pub apps: Vec<AppActivity>,
    /// Invocations per day of each function with at least one.
    pub function_daily_invocations: Vec<f64>,
    /// Seconds the workload spans.
    pub span_s: f64,
}

/// Builds busy blocks from per-minute activity: `(minute, invocations, busy seconds)` in
/// any order. A minute's invocations start at its beginning and keep the instance busy for
/// their summed execution time, at most the minute (one instance, as in the paper's
/// simulation); touching blocks merge.
pub fn blocks_from_minutes(mut minutes: Vec<(u32, u64, f64)>) -> Vec<Block> {
    minutes.sort_by_key(|m| m.0);
    let mut blocks: Vec<Block> = Vec::new();
    for (minute, n, busy) in minutes {
        if n == 0 {
            continue;
        }
        let start = f64::from(minute) * 60.0;
        let end = start + busy.clamp(0.0, 60.0);
        match blocks.last_mut() {
            Some(last) if start <= last.end => {
                last.end = last.end.max(end);
                last.invocations += n;
            }
            _ => blocks.push(Block {
                start,
                end,
                invocations: n,
            }),
        }
    }
    blocks
}

/// A 2021 per-invocation trace as a workload: each invocation is busy from its arrival
/// for its duration; overlapping invocations of one app merge into a block. Memory per
/// app is drawn from the 2019 dataset's distribution (the 2021 trace has none).
pub fn from_trace(trace: &Trace, seed: u64) -> Workload {
    use rand::SeedableRng as _;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut per_app: Vec<Vec<Block>> = vec![Vec::new(); trace.apps];
    let mut per_function = vec![0u64; trace.functions.len()];
    for inv in &trace.invocations {
        per_function[inv.function as usize] += 1;
        let app = trace.functions[inv.function as usize].app as usize;
        let (start, end) = (inv.arrival, inv.arrival + inv.duration);
        let blocks = &mut per_app[app];
        match blocks.last_mut() {
            Some(last) if start <= last.end => {
                last.end = last.end.max(end);
                last.invocations += 1;
            }
            _ => blocks.push(Block {
                start,
                end,
                invocations: 1,
            }),
        }
    }
    let span_s = trace
        .invocations
        .iter()
        .map(|i| i.arrival + i.duration)
        .fold(0.0, f64::max);
    let days = (span_s / 86_400.0).max(1.0 / 1440.0);
    Workload {
        apps: per_app
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(|blocks| AppActivity {
                memory_mb: generate::memory_mb(&mut rng),
                blocks,
            })
            .collect(),
        function_daily_invocations: per_function
            .into_iter()
            .filter(|&n| n > 0)
            .map(|n| n as f64 / days)
            .collect(),
        span_s,
    }
}

/// One policy's row of the report (`report.json`'s `keepalive` list).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeepAliveRow {
    /// `fixed-10min`, `hybrid-histogram` or `trend`.
    pub policy: String,
    /// Median over applications of the share of their invocations that were cold, %.
    pub cold_start_pct_p50: f64,
    /// 75th percentile of the same, %.
    pub cold_start_pct_p75: f64,
    /// Memory loaded but not executing, integrated over the workload, GB·s.
    pub wasted_memory_gb_s: f64,
    /// Invocations replayed.
    pub invocations: u64,
    /// Cold starts.
    pub cold_starts: u64,
    /// Applications.
    pub apps: usize,
    /// Each application's cold-start share, %, ascending (the CDF plot).
    #[serde(skip)]
    pub per_app_cold_pct: Vec<f64>,
}

/// Loads or generates the workload of `spec` (seeded by `seed`) and compares the policies.
///
/// # Errors
/// When a source file cannot be read or parsed.
pub fn compare(
    spec: &KeepAliveSpec,
    trend: &evaluate::TrendModel,
    seed: u64,
) -> anyhow::Result<Vec<KeepAliveRow>> {
    let workload = load(spec, seed)?;
    Ok(evaluate::all(&workload, spec, trend))
}

/// The workload of `spec`.
///
/// # Errors
/// When a source file cannot be read or parsed.
pub fn load(spec: &KeepAliveSpec, seed: u64) -> anyhow::Result<Workload> {
    Ok(match &spec.source {
        Source::Generate(g) => generate::workload(g, seed),
        Source::Azure2019 {
            invocations,
            durations,
            memory,
            max_rows,
        } => azure2019::load(invocations, durations, memory, *max_rows, seed)?,
        Source::Azure2021 { file, max_rows } => from_trace(&Trace::load(file, *max_rows)?, seed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_become_merged_busy_blocks() {
        let b = blocks_from_minutes(vec![(3, 1, 0.5), (0, 2, 60.0), (1, 1, 1.0), (5, 0, 1.0)]);
        assert_eq!(
            b,
            vec![
                Block {
                    start: 0.0,
                    end: 61.0,
                    invocations: 3
                },
                Block {
                    start: 180.0,
                    end: 180.5,
                    invocations: 1
                },
            ]
        );
    }

    #[test]
    fn the_shipped_2021_sample_becomes_a_workload() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../traces")
            .join("azure-2021-sample.csv");
        let trace = Trace::load(&path, 10_000).expect("sample loads");
        let w = from_trace(&trace, 1);
        let total: u64 = w.apps.iter().map(AppActivity::invocations).sum();
        assert_eq!(total, trace.invocations.len() as u64);
        assert_eq!(w.apps.len(), trace.apps);
        for app in &w.apps {
            assert!(app.memory_mb > 0.0);
            assert!(app.blocks.windows(2).all(|p| p[0].end < p[1].start));
        }
    }
}
