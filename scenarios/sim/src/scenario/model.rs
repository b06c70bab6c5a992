//! The simulator's cost model file: the per-hop costs `scenarios calibrate` measures on
//! real nodes (its module docs say where each comes from), read by a scenario with
//! `model = "FILE"`.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The cumulative probabilities at which a calibration records the POP's and the region's
/// overheads (`pop.overhead_quantiles_ms` and `region.overhead_quantiles_ms` have one value
/// per level, in this order).
pub const OVERHEAD_LEVELS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995];

/// The calibrated parameters, as written to and read from a model file (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// Per-invocation overhead at the POP's edge, ms (the scenario's `pop.overhead_ms`).
    pub pop_overhead_ms: f64,
    /// Its 99th percentile, ms (`pop.overhead_p99_ms`); absent in models written before it
    /// was measured.
    #[serde(default)]
    pub pop_overhead_p99_ms: Option<f64>,
    /// The same overhead at each of [`OVERHEAD_LEVELS`], ms
    /// (`pop.overhead_quantiles_ms`): its measured distribution, which the simulator draws
    /// from by inverse CDF; absent in models written before it was measured.
    #[serde(default)]
    pub pop_overhead_quantiles_ms: Option<Vec<f64>>,
    /// How much later than asked the `sleep` guest's wait ends, ms, at each of
    /// [`OVERHEAD_LEVELS`] (`functions.exec_overshoot_quantiles_ms`); absent in models
    /// written before it was measured.
    #[serde(default)]
    pub sleep_overshoot_quantiles_ms: Option<Vec<f64>>,
    /// Per-forward overhead at the region beyond the RTT, ms (`region.overhead_ms`).
    pub region_overhead_ms: f64,
    /// The same overhead at each of [`OVERHEAD_LEVELS`], ms
    /// (`region.overhead_quantiles_ms`): the forwards' measured distribution, drawn from
    /// per forwarded invocation; absent in models written before it was measured.
    #[serde(default)]
    pub region_overhead_quantiles_ms: Option<Vec<f64>>,
    /// Instantiation of a warm-pool miss, ms (`cold_start.instantiate_ms`), when measured.
    pub instantiate_ms: Option<f64>,
    /// A region's compile of a module it has not run since it started, ms
    /// (`cold_start.region_compile_ms`); absent in models written before it was measured.
    #[serde(default)]
    pub region_compile_ms: Option<f64>,
    /// Execution time of the calibration guest (`echo`), ms.
    pub exec_ms: f64,
    /// The POP's HTTP edge on forwarded calls, ms (a cross-check of `pop_overhead_ms`).
    pub forward_edge_ms: f64,
    /// How it was measured.
    pub run: CalibrationRun,
}

/// The conditions of a calibration run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationRun {
    /// Calls over the forwarded path (over each path in models written before the local
    /// path had its own count).
    pub requests: u64,
    /// Calls over the local path (the POP overhead's samples); absent in models written
    /// before it had its own count.
    #[serde(default)]
    pub local_requests: Option<u64>,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// One-way delay injected between POP and region, ms.
    pub one_way_delay_ms: f64,
    /// Calls that failed or ran at the wrong tier.
    pub errors: u64,
    /// `release` or `debug`: the build that measured (a debug build's overheads are not a
    /// model of production).
    pub build: String,
}

impl CostModel {
    /// Reads a model file.
    ///
    /// # Errors
    /// When the file cannot be read or is not a model.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading cost model {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing cost model {}", path.display()))
    }

    /// Writes the model file, with a header saying where each number comes from.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let body = toml::to_string(self)?;
        let text = format!(
            "# Strata simulator cost model, written by `scenarios calibrate`.\n\
             # Each parameter's source: scenarios/src/live/calibrate.rs (module docs).\n{body}"
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}
