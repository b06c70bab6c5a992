//! Scenario files: the TOML a simulation (and its scaled-down live run) is described by.
//!
//! A file is parsed with `deny_unknown_fields` and validated once into a [`Scenario`];
//! every problem is a [`ScenarioError`] naming the field. Defaults are stated on each
//! field. docs/scenarios.md describes the format with examples.

use crate::sim::arrival::{FlashCrowd, RateProfile};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use strata_core::policy::{PlacementConfig, WarmConfig};

mod leases;
mod live;
pub mod model;
mod validate;

pub use leases::LeaseModel;
pub use live::{LiveSpec, Tolerance};

/// Why a scenario file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a scenario.
    #[error("invalid scenario file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A field has a value outside its range.
    #[error("invalid scenario: `{field}` {reason}")]
    Invalid {
        /// The field, as a TOML path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the default report directory is `target/scenario-reports/<name>/`.
    pub name: String,
    /// One line on what the scenario shows. Default empty.
    #[serde(default)]
    pub description: String,
    /// RNG seed: the same seed gives the same report. Default 1.
    #[serde(default = "one")]
    pub seed: u64,
    /// Simulated seconds. Required (for a trace, the replay stops here too).
    pub duration_s: f64,
    /// Width of a time-series bucket in seconds. Default: `duration_s / 200`, at least 0.1.
    pub sample_interval_s: Option<f64>,
    /// POPs, regions and the RTT between them.
    pub topology: Topology,
    /// The function population.
    #[serde(default)]
    pub functions: Functions,
    /// Cold-start costs.
    #[serde(default)]
    pub cold_start: ColdStart,
    /// POP capacity and placement.
    #[serde(default)]
    pub pop: PopModel,
    /// Region capacity.
    #[serde(default)]
    pub region: RegionModel,
    /// The tenants' concurrency leases POPs hold (the nodes' lease settings).
    #[serde(default)]
    pub leases: LeaseModel,
    /// The arrival process.
    pub arrivals: Arrivals,
    /// Flash crowds at single POPs. Default none.
    #[serde(default)]
    pub flash_crowd: Vec<FlashCrowdSpec>,
    /// Regions that fail (and maybe recover) during the run. Default none.
    #[serde(default)]
    pub region_failure: Vec<RegionFailure>,
    /// A runtime canary rollout. Default none.
    pub canary: Option<Canary>,
    /// Threads the simulation is split across, 1 to 16 (the POPs and regions are dealt
    /// round-robin to shards that advance in lock-step windows of half the smallest RTT).
    /// The same file gives the same report; another shard count gives a statistically
    /// equivalent one. A canary rollout needs 1 (its verdicts are fleet-wide). Default 1.
    #[serde(default = "one_u32")]
    pub shards: u32,
    /// The scaled-down live run (`--live`). Default: see [`LiveSpec`].
    #[serde(default)]
    pub live: LiveSpec,
    /// A cost model written by `scenarios calibrate` (relative to the scenario file): its
    /// measured `pop_overhead_ms`, `region_overhead_ms` and (when measured)
    /// `instantiate_ms` replace `pop.overhead_ms`, `region.overhead_ms` and
    /// `cold_start.instantiate_ms` (and their quantiles when measured). Read when the
    /// scenario is loaded from its file (`Scenario::load_with_model` can replace it).
    /// Default none (the fixed defaults).
    pub model: Option<PathBuf>,
    /// The cost model in effect: the one `model` names, or the one given to
    /// [`Scenario::load_with_model`] in its place. Not part of the file.
    #[serde(skip)]
    pub cost_model: Option<model::CostModel>,
    /// A keep-alive policy comparison on an Azure Functions-shaped workload
    /// ([`crate::keepalive`]), reported next to the simulation. Default none.
    pub keepalive: Option<crate::keepalive::KeepAliveSpec>,
}

fn one() -> u64 {
    1
}

fn one_u32() -> u32 {
    1
}

/// POPs, regions and the RTT matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Number of POPs (>= 1).
    pub pops: usize,
    /// Number of regions (>= 1).
    pub regions: usize,
    /// Explicit RTT in ms, one row per POP, one column per region. When absent, POPs and
    /// regions are placed at seeded random points on a plane and the RTT grows linearly
    /// with distance from `min_rtt_ms` to `max_rtt_ms`.
    pub rtt_ms: Option<Vec<Vec<f64>>>,
    /// Smallest generated RTT. Default 5 ms.
    #[serde(default = "default_min_rtt")]
    pub min_rtt_ms: f64,
    /// Largest generated RTT. Default 150 ms.
    #[serde(default = "default_max_rtt")]
    pub max_rtt_ms: f64,
}

fn default_min_rtt() -> f64 {
    5.0
}
fn default_max_rtt() -> f64 {
    150.0
}

/// The synthetic function population (ignored for trace replay, which brings its own).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Functions {
    /// Number of functions. Default 1000.
    pub count: usize,
    /// Number of tenants; function `i` belongs to tenant `i % tenants`. Default 10.
    pub tenants: usize,
    /// Zipf exponent of popularity by rank. Default 1.0.
    pub zipf_exponent: f64,
    /// Median execution time of the median function, ms. Default 10.
    pub exec_median_ms: f64,
    /// Lognormal shape of one function's execution times. Default 0.5.
    pub exec_sigma: f64,
    /// Lognormal shape of the medians across functions. Default 1.0.
    pub median_spread: f64,
    /// Memory sizes drawn uniformly per function, MB. Default `[128]`.
    pub memory_mb: Vec<u32>,
    /// Share of functions with `placement = "region"`. Default 0.
    pub region_pinned_fraction: f64,
    /// What a guest that waits on a clock overshoots its wait by, ms, at each of
    /// `model::OVERHEAD_LEVELS`: it wakes on the runtime's timer tick, not at the instant
    /// asked. Added to every execution time drawn (the live replays' guests are the
    /// `sleep` reactor, which waits its execution time). Default none (executions take
    /// exactly their draw).
    pub exec_overshoot_quantiles_ms: Option<Vec<f64>>,
}

impl Default for Functions {
    fn default() -> Self {
        Self {
            count: 1000,
            tenants: 10,
            zipf_exponent: 1.0,
            exec_median_ms: 10.0,
            exec_sigma: 0.5,
            median_spread: 1.0,
            memory_mb: vec![128],
            region_pinned_fraction: 0.0,
            exec_overshoot_quantiles_ms: None,
        }
    }
}

/// What a cold start costs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColdStart {
    /// Size of a precompiled artifact, KB. Default 200.
    pub artifact_kb: f64,
    /// Region -> POP artifact transfer rate, Mbit/s. Default 200.
    pub bandwidth_mbps: f64,
    /// Deserializing a precompiled artifact, ms. Default 1.5.
    pub deserialize_ms: f64,
    /// Instantiating (and `_initialize` for reactors), ms. Default 0.3.
    pub instantiate_ms: f64,
    /// Compiling a function's module at a region, ms: charged at each region's first run
    /// of each function since it started (a region compiles a module it has not run yet,
    /// e.g. after a restart or when it takes over a failed region's POPs), on top of the
    /// cold start. Default 0 (no compile cost); `scenarios calibrate` measures it
    /// (`region_compile_ms` in a model file).
    pub region_compile_ms: f64,
}

impl Default for ColdStart {
    fn default() -> Self {
        Self {
            artifact_kb: 200.0,
            bandwidth_mbps: 200.0,
            deserialize_ms: 1.5,
            instantiate_ms: 0.3,
            region_compile_ms: 0.0,
        }
    }
}

/// One POP's capacity and placement tunables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopModel {
    /// Concurrent local executions. Default 64.
    pub slots: u32,
    /// Memory for warm instances, MB. Default 4096.
    pub memory_mb: u64,
    /// Idle warm instances are retired after this, s. Default 60.
    pub keep_alive_s: f64,
    /// Most prepared artifacts held at once. Default 256.
    pub max_artifacts: usize,
    /// Per-invocation overhead of the POP's HTTP edge, ms. Default 0.2 (the foundation's
    /// live run: POP-local p50 254 us for a trivial guest at one connection).
    pub overhead_ms: f64,
    /// The 99th percentile of the same, ms. With it, each invocation's overhead is drawn
    /// from a lognormal whose median is `overhead_ms` and whose p99 is this (what
    /// `scenarios calibrate` measures: a real edge's cost spreads); without, every
    /// invocation costs `overhead_ms`. Default none.
    pub overhead_p99_ms: Option<f64>,
    /// The same overhead at each of `model::OVERHEAD_LEVELS` (0.01, 0.05, 0.1, 0.25, 0.5,
    /// 0.75, 0.9, 0.95, 0.99, 0.995), ms, non-decreasing: the measured distribution. With
    /// it, each invocation's overhead is drawn from it by inverse CDF (linear between
    /// levels, clamped at the ends), in place of the lognormal. Default none.
    pub overhead_quantiles_ms: Option<Vec<f64>>,
    /// The real placement policy's config (`common::policy::PlacementConfig`).
    pub placement: PlacementConfig,
    /// The real warm-pool policy's config (`common::policy::WarmConfig`, the POP node's
    /// `warm` section): `mode = "trend"` (the default, like the node) pre-warms each
    /// function run here to its forecast once per tick; `"reactive"` is keep-alive only.
    pub warm: WarmConfig,
}

impl Default for PopModel {
    fn default() -> Self {
        Self {
            slots: 64,
            memory_mb: 4096,
            keep_alive_s: 60.0,
            max_artifacts: 256,
            overhead_ms: 0.2,
            overhead_p99_ms: None,
            overhead_quantiles_ms: None,
            placement: PlacementConfig::default(),
            warm: WarmConfig::default(),
        }
    }
}

/// One region's capacity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegionModel {
    /// Concurrent executions. Default 1024; beyond it requests get 429.
    pub slots: u32,
    /// Concurrent executions per tenant: the adaptive limit's hard maximum (the nodes'
    /// `[limits.tenant] hard_max`, `policy::concurrency`). Default: no limit beyond
    /// `slots`.
    pub tenant_concurrency: Option<u32>,
    /// Where a tenant's adaptive limit starts and decays back to (`burst`). Default
    /// `tenant_concurrency`: a fixed limit.
    pub tenant_burst: Option<u32>,
    /// How much the adaptive limit grows (or decays) per `tenant_interval_ms` while
    /// demand presses against it (`step`). Default 10, the node's.
    pub tenant_step: u32,
    /// How often the adaptive limit may change, ms (`interval_ms`). Default 1000.
    pub tenant_interval_ms: u64,
    /// Memory for warm instances, MB. Default 65536.
    pub memory_mb: u64,
    /// Idle warm instances are retired after this, s. Default 300.
    pub keep_alive_s: f64,
    /// Per-invocation overhead of a forward at the region (QUIC stream, execution hand-off),
    /// ms. Default 0.2 (the foundation's live run: a forward adds ~190 us over POP-local).
    pub overhead_ms: f64,
    /// The same overhead at each of `model::OVERHEAD_LEVELS`, ms, non-decreasing: the
    /// measured distribution (`scenarios calibrate`: single forwards take 1-4 ms longer
    /// than the median one). With it, each forwarded invocation's overhead is drawn from
    /// it by inverse CDF (linear between levels, clamped at the ends); without, every
    /// forward costs `overhead_ms`. Default none.
    pub overhead_quantiles_ms: Option<Vec<f64>>,
    /// How long after a region fails silently its POPs notice, ms: the POP's
    /// `region_silence_ms` (a connection that received nothing for that long, while 1 s
    /// keep-alives should have drawn acknowledgements, is dropped and the region marked
    /// down). Forwards sent to it before then are lost (they were sent, so they are not
    /// retried); from then on the POP sends nothing there until it has reconnected (the
    /// node's reconnect schedule, `policy::liveness::Reconnect`, once the region answers
    /// again, plus the handshake's round trip). Default 1000, the node's.
    pub failure_detect_ms: f64,
    /// The region's trending hints (the node's `trending` section: tick, smoothing,
    /// thresholds, cooldown); the node's defaults. A POP prepares a hinted function's code
    /// ahead of its own traffic.
    pub trending: strata_core::policy::TrendingConfig,
}

impl Default for RegionModel {
    fn default() -> Self {
        Self {
            slots: 1024,
            tenant_concurrency: None,
            tenant_burst: None,
            tenant_step: 10,
            tenant_interval_ms: 1000,
            memory_mb: 65536,
            keep_alive_s: 300.0,
            overhead_ms: 0.2,
            overhead_quantiles_ms: None,
            failure_detect_ms: 1000.0,
            trending: strata_core::policy::TrendingConfig::default(),
        }
    }
}

/// The arrival process.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Arrivals {
    /// Poisson arrivals at a constant rate per POP, functions by Zipf popularity.
    Poisson {
        /// Requests per second per POP.
        rate_per_pop: f64,
    },
    /// Poisson arrivals with a sinusoidal rate: `rate * (1 + amplitude * sin(2πt/period))`.
    Diurnal {
        /// Mean requests per second per POP.
        rate_per_pop: f64,
        /// Relative amplitude in [0, 1).
        amplitude: f64,
        /// Period in seconds.
        period_s: f64,
    },
    /// Replay of an Azure Functions 2021 trace; each app's traffic enters at one POP
    /// (app index modulo POPs), each app is a tenant.
    Trace {
        /// CSV file, relative to the scenario file.
        file: PathBuf,
        /// Most rows read. Default 10 000 000.
        #[serde(default = "default_max_rows")]
        max_rows: usize,
    },
}

fn default_max_rows() -> usize {
    10_000_000
}

/// A flash crowd: one POP sees `factor` times its rate for a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashCrowdSpec {
    /// The POP's index.
    pub pop: usize,
    /// Window start, s.
    pub start_s: f64,
    /// Window length, s.
    pub duration_s: f64,
    /// Rate multiplier (>= 1).
    pub factor: f64,
    /// Popularity rank of a function that receives all the extra load. Default: the extra
    /// load follows the usual popularity.
    pub function: Option<usize>,
}

/// A region that stops answering at `at_s` and optionally comes back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFailure {
    /// The region's index.
    pub region: usize,
    /// When it fails, s.
    pub at_s: f64,
    /// When it is back, s. Default: never.
    pub recover_s: Option<f64>,
}

/// A runtime canary rollout: a share of invocations runs on the next runtime.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Share of invocations on the next runtime while a function is undecided, in (0, 1).
    pub share: f64,
    /// Error rate of every function on the current runtime. Default 0.001.
    #[serde(default = "default_base_error")]
    pub base_error_rate: f64,
    /// Share of functions that get worse on the next runtime. Default 0.05.
    #[serde(default = "default_regressed")]
    pub regressed_fraction: f64,
    /// Error rate of a regressed function on the next runtime. Default 0.05.
    #[serde(default = "default_regressed_error")]
    pub regressed_error_rate: f64,
    /// Execution-time factor of the next runtime. Default 1.0.
    #[serde(default = "default_exec_factor")]
    pub exec_factor: f64,
    /// Canary invocations of a function before it is judged. Default 200.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
}

fn default_base_error() -> f64 {
    0.001
}
fn default_regressed() -> f64 {
    0.05
}
fn default_regressed_error() -> f64 {
    0.05
}
fn default_exec_factor() -> f64 {
    1.0
}
fn default_min_samples() -> u32 {
    200
}

impl Scenario {
    /// Reads, parses and validates a scenario file; a trace path becomes absolute.
    ///
    /// # Errors
    /// [`ScenarioError`] for an unreadable, unparsable or invalid file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        Self::load_with_model(path, None)
    }

    /// As [`Scenario::load`], with `model` (when given) in place of the model file the
    /// scenario names: `scenarios agree` judges each scenario against a model calibrated
    /// minutes before its live run, not the committed one. Without `model`, the file's.
    ///
    /// # Errors
    /// As [`Scenario::load`]; the file's model is not read when `model` replaces it.
    pub fn load_with_model(
        path: &Path,
        model: Option<model::CostModel>,
    ) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut s = Self::parse(&text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&mut PathBuf> = Vec::new();
        if let Arrivals::Trace { file, .. } = &mut s.arrivals {
            files.push(file);
        }
        if let Some(k) = &mut s.keepalive {
            files.extend(k.source.files_mut());
        }
        files.extend(s.model.as_mut());
        for file in files {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        let model = match (model, &s.model) {
            (Some(m), _) => Some(m),
            (None, Some(file)) => {
                Some(
                    model::CostModel::load(file).map_err(|e| ScenarioError::Invalid {
                        field: "model",
                        reason: format!("{e:#}"),
                    })?,
                )
            }
            (None, None) => None,
        };
        if let Some(m) = model {
            s.apply_model(m)?;
        }
        Ok(s)
    }

    /// Puts a cost model's measured parameters in place of the scenario's: `pop.overhead_ms`
    /// (its p99 and quantiles), `region.overhead_ms` (its quantiles), the sleep guest's
    /// overshoot, `cold_start.instantiate_ms` and `cold_start.region_compile_ms` when
    /// measured; keeps the model as
    /// [`Scenario::cost_model`] (the paths comparison's guest runs its `exec_ms`).
    ///
    /// # Errors
    /// When the result is not a valid scenario (e.g. quantiles out of order).
    pub fn apply_model(&mut self, m: model::CostModel) -> Result<(), ScenarioError> {
        self.pop.overhead_ms = m.pop_overhead_ms;
        self.pop.overhead_p99_ms = m.pop_overhead_p99_ms;
        self.pop.overhead_quantiles_ms = m.pop_overhead_quantiles_ms.clone();
        if m.sleep_overshoot_quantiles_ms.is_some() {
            self.functions.exec_overshoot_quantiles_ms = m.sleep_overshoot_quantiles_ms.clone();
        }
        self.region.overhead_ms = m.region_overhead_ms;
        self.region.overhead_quantiles_ms = m.region_overhead_quantiles_ms.clone();
        if let Some(i) = m.instantiate_ms {
            self.cold_start.instantiate_ms = i;
        }
        if let Some(c) = m.region_compile_ms {
            self.cold_start.region_compile_ms = c;
        }
        self.validate()?;
        self.cost_model = Some(m);
        Ok(())
    }

    /// Parses and validates scenario TOML.
    ///
    /// # Errors
    /// [`ScenarioError`] for invalid TOML or any field out of range.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// The time-series bucket width in seconds.
    pub fn sample_interval(&self) -> f64 {
        self.sample_interval_s
            .unwrap_or((self.duration_s / 200.0).max(0.1))
    }

    /// The synthetic arrival rate curve per POP (zero for a trace, whose arrivals are its
    /// rows), flash crowds included.
    pub fn rate_profile(&self) -> RateProfile {
        let (base, amplitude, period) = match self.arrivals {
            Arrivals::Poisson { rate_per_pop } => (rate_per_pop, 0.0, 1.0),
            Arrivals::Diurnal {
                rate_per_pop,
                amplitude,
                period_s,
            } => (rate_per_pop, amplitude, period_s),
            Arrivals::Trace { .. } => (0.0, 0.0, 1.0),
        };
        RateProfile {
            base,
            amplitude,
            period,
            flashes: self.flashes(),
        }
    }

    /// The flash crowds as the arrival model sees them.
    pub fn flashes(&self) -> Vec<FlashCrowd> {
        self.flash_crowd
            .iter()
            .map(|f| FlashCrowd {
                pop: f.pop,
                start: f.start_s,
                end: f.start_s + f.duration_s,
                factor: f.factor,
                function: f.function,
            })
            .collect()
    }
}
