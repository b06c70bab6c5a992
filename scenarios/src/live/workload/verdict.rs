//! The workload replay's verdict: each compared quantity, simulated beside live, judged by
//! the scenario's `[live]` tolerances (per-tier latency percentiles, the edge hit ratio,
//! the 429 and 503-or-lost shares) or shown for context (cold starts, compiles), and the
//! report's Markdown section. Pure: never runs a node nor the simulator.

use super::observed::Observed;
use crate::report::{Percentiles, Report};
use crate::scenario::Scenario;
use serde::Serialize;
use std::collections::BTreeMap;

/// One compared (or shown) quantity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What is compared, e.g. `pop p50 (ms)`.
    pub metric: String,
    /// Simulated.
    pub sim: f64,
    /// Measured.
    pub live: f64,
    /// Allowed absolute difference; `None` for rows shown, not judged.
    pub tolerance: Option<f64>,
    /// Within tolerance (always true for rows not judged).
    pub agrees: bool,
}

/// The workload replay's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadComparison {
    /// Seconds replayed.
    pub duration_s: f64,
    /// POPs and regions of the replay.
    pub pops: usize,
    /// Regions of the replay.
    pub regions: usize,
    /// Functions deployed.
    pub functions: usize,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Scheduled requests not sent because `max_in_flight` were outstanding.
    pub shed: u64,
    /// Forwards by reason, summed over the live POPs (their `strata_forwards_total`).
    pub live_forwards: BTreeMap<String, u64>,
    /// Forwards by reason in the simulator.
    pub sim_forwards: BTreeMap<String, u64>,
    /// The live runs at regions at or above the region p99: (how many compiled their
    /// module, how many there are).
    pub slowest_region_runs_compiled: (u64, u64),
    /// The rows.
    pub rows: Vec<Row>,
    /// Every judged row agrees.
    pub agrees: bool,
}

pub(super) fn judge(
    m: &Scenario,
    sim: &Report,
    live: &Observed,
    scheduled: u64,
    live_forwards: BTreeMap<String, u64>,
) -> WorkloadComparison {
    let l = &m.live;
    let mut rows = Vec::new();
    let tolerance = l.tolerance();
    for (tier, name) in [(0, "pop"), (1, "region")] {
        let s = &sim.latency_ms[name];
        let v = Percentiles::of(&live.latency[tier]);
        if s.count == 0 && v.count == 0 {
            continue;
        }
        for (q, sim_ms, live_ms) in [
            ("p50", s.p50, v.p50),
            ("p90", s.p90, v.p90),
            ("p99", s.p99, v.p99),
        ] {
            let (sim_ms, live_ms) = if s.count == 0 || v.count == 0 {
                // One side never ran there: that alone is a disagreement.
                (f64::NAN, f64::NAN)
            } else {
                (sim_ms, live_ms)
            };
            rows.push(judged(
                format!("{name} {q} (ms)"),
                sim_ms,
                live_ms,
                tolerance.of(q, sim_ms),
            ));
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    rows.push(judged(
        "edge hit ratio".into(),
        sim.edge_hit_ratio,
        ratio(live.completed(0), scheduled),
        l.hit_ratio_tolerance,
    ));
    let completed = live.completed(0) + live.completed(1);
    rows.push(shown(
        "cold-start ratio",
        sim.cold_start_ratio,
        ratio(live.cold[0] + live.cold[1], completed),
    ));
    // A region's first run of a function it did not compile at deploy compiles it
    // (docs/performance.md, region-failure's region p99): shown per tier.
    for (tier, name) in [(0, "cold starts at POPs"), (1, "cold starts at regions")] {
        let sim_n = [sim.cold_starts.pop, sim.cold_starts.region][tier];
        rows.push(shown(name, sim_n as f64, live.cold[tier] as f64));
    }
    // The runs that compiled at a region, and what a compile took (the model's
    // `cold_start.region_compile_ms` beside the live median).
    rows.push(shown(
        "compiles at regions",
        sim.region_compiles as f64,
        live.compiles.len() as f64,
    ));
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    rows.push(shown(
        "region compile p50 (ms)",
        m.cold_start.region_compile_ms,
        median(&live.compiles),
    ));
    let refused = sim.refusals.region_capacity + sim.refusals.tenant_concurrency;
    rows.push(judged(
        "throttled (429) share".into(),
        ratio(refused, sim.invocations),
        ratio(live.throttled, scheduled),
        l.share_tolerance,
    ));
    rows.push(judged(
        "unavailable (503) or lost share".into(),
        ratio(sim.refusals.unavailable + sim.lost, sim.invocations),
        ratio(live.unavailable + live.failed, scheduled),
        l.share_tolerance,
    ));
    let agrees = rows.iter().all(|r| r.agrees);
    WorkloadComparison {
        duration_s: m.duration_s,
        pops: m.topology.pops,
        regions: m.topology.regions,
        functions: m.functions.count,
        scheduled,
        shed: live.shed,
        live_forwards,
        sim_forwards: sim.forwards.clone(),
        slowest_region_runs_compiled: live.slowest_compiled(),
        rows,
        agrees,
    }
}

fn judged(metric: String, sim: f64, live: f64, tolerance: f64) -> Row {
    Row {
        metric,
        sim,
        live,
        tolerance: Some(tolerance),
        agrees: (live - sim).abs() <= tolerance,
    }
}

fn shown(metric: &str, sim: f64, live: f64) -> Row {
    Row {
        metric: metric.to_owned(),
        sim,
        live,
        tolerance: None,
        agrees: true,
    }
}

impl WorkloadComparison {
    /// The comparison as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "\n## Simulated vs live: workload replay\n\n{} s of the scenario scaled down to {} \
             POPs, {} regions and {} functions on real nodes, WAN latency injected per \
             (POP, region); {} requests scheduled, {} shed; of the live runs at regions at or \
             above their p99, {} of {} compiled their module. Verdict: **{}**.\n\n\
             | metric | sim | live | tolerance | agrees |\n|---|---:|---:|---:|---|\n",
            self.duration_s,
            self.pops,
            self.regions,
            self.functions,
            self.scheduled,
            self.shed,
            self.slowest_region_runs_compiled.0,
            self.slowest_region_runs_compiled.1,
            if self.agrees { "agree" } else { "disagree" }
        );
        for r in &self.rows {
            let tolerance = r
                .tolerance
                .map_or("shown".to_owned(), |t| format!("{t:.2}"));
            let verdict = match (r.tolerance, r.agrees) {
                (None, _) => "",
                (Some(_), true) => "yes",
                (Some(_), false) => "no",
            };
            md.push_str(&format!(
                "| {} | {:.3} | {:.3} | {tolerance} | {verdict} |\n",
                r.metric, r.sim, r.live
            ));
        }
        md.push_str("\n| forwards by reason | sim | live |\n|---|---:|---:|\n");
        let reasons: std::collections::BTreeSet<&String> = self
            .sim_forwards
            .keys()
            .chain(self.live_forwards.keys())
            .collect();
        for reason in reasons {
            let get = |m: &BTreeMap<String, u64>| m.get(reason).copied().unwrap_or(0);
            md.push_str(&format!(
                "| {reason} | {} | {} |\n",
                get(&self.sim_forwards),
                get(&self.live_forwards)
            ));
        }
        md
    }
}
