//! Reports of a scenario run: `report.json` (every number), `report.md` (the same for
//! people, with the plots) and the plots themselves ([`plot`]).
//!
//! The JSON's `run` section (wall time, speed) and its `live`, `live_workload` and
//! `live_keepalive` sections are the only parts that differ between two runs of the same scenario and seed.

pub mod plot;

use crate::scenario::Scenario;
use crate::sim::lease::LeaseCounters;
use crate::sim::stats::{REASONS, Tier};
use crate::sim::{CanaryOutcome, Outcome};
use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Latency percentiles of one tier, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Completed invocations.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            mean: h.mean() / 1000.0,
            max: ms(h.max()),
        }
    }
}

/// A value per tier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerTier<T> {
    /// At POPs.
    pub pop: T,
    /// At regions.
    pub region: T,
}

/// Requests refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Refusals {
    /// 429: the region had no free slot, or no memory for the instance.
    pub region_capacity: u64,
    /// 429: the tenant's concurrency limit at the region.
    pub tenant_concurrency: u64,
    /// 503: no region reachable.
    pub unavailable: u64,
}

/// One point of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Start of the bucket, seconds.
    pub t_s: f64,
    /// Arrivals per second in the bucket.
    pub rate: f64,
    /// Local executions per second.
    pub local_rate: f64,
    /// Forwards per second.
    pub forward_rate: f64,
    /// Cold starts per second.
    pub cold_start_rate: f64,
    /// Refusals (429/503) per second.
    pub refused_rate: f64,
    /// Warm instances at POPs at the end of the bucket.
    pub warm_pop: u64,
    /// Warm instances at regions at the end of the bucket.
    pub warm_region: u64,
}

/// How fast the simulator ran (differs between runs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunInfo {
    /// Wall-clock seconds of the simulation (not of writing the report).
    pub wall_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Threads the simulation ran on (`shards`).
    pub shards: u32,
    /// Simulated invocations per second of wall time.
    pub invocations_per_sec: f64,
}

/// Everything a run reports. See the module docs.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub name: String,
    /// The scenario's description.
    pub description: String,
    /// The seed.
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// POPs.
    pub pops: usize,
    /// Regions.
    pub regions: usize,
    /// Functions in the population.
    pub functions: usize,
    /// Invocations that arrived.
    pub invocations: u64,
    /// Latency percentiles in ms per tier (`pop`, `region`) and over `all`.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// Share of invocations that ran at the POP that received them.
    pub edge_hit_ratio: f64,
    /// Share of executions that were cold starts.
    pub cold_start_ratio: f64,
    /// Cold starts per tier.
    pub cold_starts: PerTier<u64>,
    /// Forwards by reason.
    pub forwards: BTreeMap<String, u64>,
    /// Requests throttled or refused.
    pub refusals: Refusals,
    /// Invocations lost in flight at a failing region.
    pub lost: u64,
    /// Forwards that had to fail over to another region.
    pub failovers: u64,
    /// Artifacts prepared at POPs.
    pub prepares: u64,
    /// Runs at a region that compiled the function's module (its first there since the
    /// region started).
    pub region_compiles: u64,
    /// Function errors (canary scenarios).
    pub errors: u64,
    /// What the tenants' leases did: forwards for want of a lease slot, acquires and
    /// grants.
    pub leases: LeaseCounters,
    /// Warm-instance memory integrated over time, MB·s.
    pub memory_mb_seconds: PerTier<f64>,
    /// The runtime canary's outcome, per runtime.
    pub canary: Option<CanaryOutcome>,
    /// The time series.
    pub series: Vec<SeriesPoint>,
    /// Speed of this run.
    pub run: RunInfo,
    /// Simulated vs live agreement of the paths, with `--live`.
    pub live: Option<crate::live::compare::Comparison>,
    /// Simulated vs live agreement of the workload replay, with `--live`.
    pub live_workload: Option<crate::live::workload::WorkloadComparison>,
    /// The keep-alive policies compared on the scenario's `[keepalive]` workload, in the
    /// order fixed, hybrid histogram, trend.
    pub keepalive: Option<Vec<crate::keepalive::KeepAliveRow>>,
    /// The fixed keep-alive policy replayed on a real POP and compared with its model,
    /// with `--live` on a scenario with `[keepalive]`.
    pub live_keepalive: Option<crate::live::keepalive::KeepAliveReplay>,
}

impl Report {
    /// Builds the report of `outcome`, a run of `s` that took `wall_seconds`.
    pub fn new(s: &Scenario, outcome: &Outcome, wall_seconds: f64) -> Self {
        let rec = &outcome.recorder;
        let c = &rec.counters;
        let mut all = rec.latency[0].clone();
        // Both histograms have the same bounds, so adding cannot fail; if it ever did, the
        // `all` row would only miss the region's samples.
        let _ = all.add(&rec.latency[1]);
        let mut latency_ms = BTreeMap::new();
        for tier in Tier::ALL {
            latency_ms.insert(
                tier.as_str().to_owned(),
                Percentiles::of(&rec.latency[tier.index()]),
            );
        }
        latency_ms.insert("all".to_owned(), Percentiles::of(&all));
        let completed: u64 = c.completed.iter().sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let interval = rec.interval as f64 / 1e9;
        let series = rec
            .series
            .iter()
            .enumerate()
            .map(|(i, b)| SeriesPoint {
                t_s: i as f64 * interval,
                rate: b.arrivals as f64 / interval,
                local_rate: b.local as f64 / interval,
                forward_rate: b.forwarded as f64 / interval,
                cold_start_rate: b.cold_starts as f64 / interval,
                refused_rate: b.refused as f64 / interval,
                warm_pop: b.warm_pop,
                warm_region: b.warm_region,
            })
            .collect();
        Self {
            name: s.name.clone(),
            description: s.description.clone(),
            seed: s.seed,
            duration_s: s.duration_s,
            pops: s.topology.pops,
            regions: s.topology.regions,
            functions: outcome.functions,
            invocations: c.invocations,
            latency_ms,
            edge_hit_ratio: ratio(c.completed[0], c.invocations),
            cold_start_ratio: ratio(c.cold_starts.iter().sum(), completed),
            cold_starts: PerTier {
                pop: c.cold_starts[0],
                region: c.cold_starts[1],
            },
            forwards: REASONS
                .iter()
                .zip(c.forwards)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect(),
            refusals: Refusals {
                region_capacity: c.throttled_region_capacity,
                tenant_concurrency: c.throttled_tenant,
                unavailable: c.unavailable,
            },
            lost: c.lost,
            failovers: c.failovers,
            prepares: c.prepares,
            region_compiles: c.region_compiles,
            errors: c.errors,
            leases: outcome.leases.clone(),
            memory_mb_seconds: PerTier {
                pop: outcome.memory_mb_seconds[0],
                region: outcome.memory_mb_seconds[1],
            },
            canary: outcome.canary.clone(),
            series,
            run: RunInfo {
                wall_seconds,
                events: outcome.events,
                shards: outcome.shards,
                invocations_per_sec: ratio(c.invocations, 1).max(0.0) / wall_seconds.max(1e-9),
            },
            live: None,
            live_workload: None,
            keepalive: None,
            live_keepalive: None,
        }
    }

    /// The report as Markdown, linking the plots written next to it.
    pub fn markdown(&self) -> String {
        let mut md = format!("# Scenario `{}`\n\n", self.name);
        if !self.description.is_empty() {
            md.push_str(&format!("{}\n\n", self.description));
        }
        md.push_str(&format!(
            "{} POPs, {} regions, {} functions, {} s simulated, seed {}: **{} invocations**.\n\n",
            self.pops, self.regions, self.functions, self.duration_s, self.seed, self.invocations
        ));
        md.push_str("## Latency (ms, POP edge to response)\n\n");
        md.push_str("| tier | count | p50 | p90 | p99 | p99.9 | mean | max |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (tier, p) in &self.latency_ms {
            md.push_str(&format!(
                "| {tier} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                p.count, p.p50, p.p90, p.p99, p.p999, p.mean, p.max
            ));
        }
        md.push_str("\n## Capacity\n\n| metric | value |\n|---|---:|\n");
        let rows = [
            ("edge hit ratio", format!("{:.4}", self.edge_hit_ratio)),
            ("cold-start ratio", format!("{:.4}", self.cold_start_ratio)),
            ("cold starts at POPs", self.cold_starts.pop.to_string()),
            (
                "cold starts at regions",
                self.cold_starts.region.to_string(),
            ),
            ("artifacts prepared at POPs", self.prepares.to_string()),
            ("compiles at regions", self.region_compiles.to_string()),
            (
                "429 region capacity (slots or memory)",
                self.refusals.region_capacity.to_string(),
            ),
            (
                "429 tenant concurrency",
                self.refusals.tenant_concurrency.to_string(),
            ),
            ("503 no region", self.refusals.unavailable.to_string()),
            ("lost in a failed region", self.lost.to_string()),
            ("failovers", self.failovers.to_string()),
            (
                "forwarded for want of a lease slot",
                self.leases.forwards.to_string(),
            ),
            (
                "lease acquires (granted, slots)",
                format!(
                    "{} ({}, {})",
                    self.leases.acquires, self.leases.grants, self.leases.slots_granted
                ),
            ),
            (
                "run uncounted (no lease, no region)",
                self.leases.uncounted_runs.to_string(),
            ),
            (
                "memory MB·s at POPs",
                format!("{:.0}", self.memory_mb_seconds.pop),
            ),
            (
                "memory MB·s at regions",
                format!("{:.0}", self.memory_mb_seconds.region),
            ),
        ];
        for (k, v) in rows {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        md.push_str("\n## Forwards by reason\n\n| reason | forwards |\n|---|---:|\n");
        for (reason, n) in &self.forwards {
            md.push_str(&format!("| {reason} | {n} |\n"));
        }
        if let Some(c) = &self.canary {
            md.push_str(
                "\n## Runtime canary\n\n| runtime | invocations | errors |\n|---|---:|---:|\n",
            );
            md.push_str(&format!(
                "| current | {} | {} |\n| next | {} | {} |\n\n",
                c.current_invocations, c.current_errors, c.next_invocations, c.next_errors
            ));
            md.push_str(&format!(
                "Verdicts: {} promoted ({} of them regressed), {} pinned ({} of them regressed), {} undecided.\n",
                c.promoted, c.promoted_regressed, c.pinned, c.pinned_regressed, c.undecided
            ));
        }
        if let Some(live) = &self.live {
            md.push_str(&live.markdown());
        }
        if let Some(live) = &self.live_workload {
            md.push_str(&live.markdown());
        }
        if let Some(rows) = &self.keepalive {
            md.push_str(&keepalive_markdown(rows));
        }
        if let Some(live) = &self.live_keepalive {
            md.push_str(&live.markdown());
        }
        md.push_str("\n## Plots\n\n");
        let keepalive_plot = self.keepalive.is_some().then_some(plot::KEEPALIVE);
        for (title, file) in plot::FILES.into_iter().chain(keepalive_plot) {
            md.push_str(&format!("![{title}]({file}.svg) ([PNG]({file}.png))\n\n"));
        }
        md.push_str(&format!(
            "## Run\n\n{} events on {} thread(s) in {:.2} s of wall time: {:.0} simulated invocations/s.\n",
            self.run.events, self.run.shards, self.run.wall_seconds, self.run.invocations_per_sec
        ));
        md
    }

    /// Writes `report.json`, `report.md` and the plots into `dir` (created if missing).
    ///
    /// # Errors
    /// When the directory or a file cannot be written.
    pub fn write(&self, dir: &Path, outcome: &Outcome) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(dir.join("report.json"), json).context("writing report.json")?;
        std::fs::write(dir.join("report.md"), self.markdown()).context("writing report.md")?;
        plot::write_all(dir, self, outcome)
    }
}

/// The keep-alive comparison as a Markdown section.
fn keepalive_markdown(rows: &[crate::keepalive::KeepAliveRow]) -> String {
    let mut md = String::from(
        "\n## Keep-alive policies (one instance per application)\n\n\
         | policy | apps | invocations | cold starts | app cold-start % p50 | p75 | wasted memory (GB·s) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.0} |\n",
            r.policy,
            r.apps,
            r.invocations,
            r.cold_starts,
            r.cold_start_pct_p50,
            r.cold_start_pct_p75,
            r.wasted_memory_gb_s
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::simulate;

    #[test]
    fn a_report_writes_markdown_json_and_every_plot() {
        let s = Scenario::parse(
            r#"
            name = "r"
            duration_s = 20
            [topology]
            pops = 2
            regions = 1
            [functions]
            count = 100
            [arrivals]
            kind = "poisson"
            rate_per_pop = 100
            [canary]
            share = 0.1
            "#,
        )
        .expect("valid");
        let o = simulate(&s, None, &mut |_| {}).expect("runs");
        let r = Report::new(&s, &o, 0.5);
        let dir = tempfile::tempdir().expect("tempdir");
        r.write(dir.path(), &o).expect("writes");
        for (_, stem) in plot::FILES {
            for ext in ["svg", "png"] {
                let f = dir.path().join(format!("{stem}.{ext}"));
                let len = std::fs::metadata(&f).expect("plot exists").len();
                assert!(len > 1000, "{} is {len} bytes", f.display());
            }
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("json"))
                .expect("valid JSON");
        for tier in ["pop", "region", "all"] {
            for p in ["p50", "p90", "p99", "p999"] {
                assert!(json["latency_ms"][tier][p].is_number(), "{tier}.{p}");
            }
        }
        for field in ["edge_hit_ratio", "cold_start_ratio", "invocations"] {
            assert!(json[field].is_number(), "{field}");
        }
        for reason in ["rare", "pinned", "unknown", "not_ready", "over_capacity"] {
            assert!(json["forwards"][reason].is_u64(), "{reason}");
        }
        assert!(json["memory_mb_seconds"]["pop"].is_number());
        assert!(json["refusals"]["region_capacity"].is_u64());
        assert!(json["canary"]["next_invocations"].is_u64());
        assert_eq!(json["series"].as_array().map(Vec::len), Some(200));
        let md = std::fs::read_to_string(dir.path().join("report.md")).expect("md");
        assert!(md.contains("| pop |") && md.contains("latency-cdf.svg"));
        assert!(md.contains("## Runtime canary"));
    }
}
