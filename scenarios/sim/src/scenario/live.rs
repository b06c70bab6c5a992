//! The `[live]` section: how `--live` scales a scenario down to real nodes, and the
//! tolerances its comparison is judged by.

use serde::Deserialize;

/// How `--live` scales the scenario down to real nodes on loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSpec {
    /// Requests sent over the forwarded (region) path. Default 400.
    pub requests: u64,
    /// Requests sent over the POP-local path: a warm local call costs well under a
    /// millisecond, so its p99 gets more samples for little time. Default 20 000: with
    /// 4000 (before) a sitting's POP p99 could miss by sampling alone, the 40 slowest
    /// calls on the steep stretch between the 99th and the 99.5th percentile
    /// (docs/performance.md, issue 20).
    pub local_requests: u64,
    /// Requests in flight at once on each path. Default 1: the per-call cost the model's
    /// overheads stand for. At 8 in flight on a machine whose two cores also run the
    /// client, both nodes and the proxy, the local path measured how the cores were shared
    /// (queueing) and its p50 moved by 30% run to run (docs/performance.md, issue 20).
    pub concurrency: usize,
    /// One-way delay the UDP proxy adds between POP and region, ms. Default 10.
    pub one_way_delay_ms: f64,
    /// Agreement tolerance: |live - sim| <= max(tolerance_ms, tolerance_ratio * sim) for
    /// each compared p50 and p90 (`tolerance_ratio_p99` at p99), per tier. Absolute floor,
    /// ms. Default 0.
    pub tolerance_ms: f64,
    /// Share of the simulated p50 and p90. Default 0.10.
    pub tolerance_ratio: f64,
    /// Share of the simulated p99. Default 0.15.
    pub tolerance_ratio_p99: f64,
    /// Seconds of the workload replay: the scenario scaled down to a few real POPs and
    /// regions with their WAN latencies injected, its arrival process, popularity and
    /// execution times replayed in real time, compared with the simulator run on the same
    /// scaled-down scenario. 0 skips it (only the paths are compared). Default 30.
    pub duration_s: f64,
    /// POPs of the replay: the scenario's first ones. Default 3 (at most the scenario's).
    pub pops: usize,
    /// Regions of the replay: the scenario's first ones. Default 2 (at most the
    /// scenario's).
    pub regions: usize,
    /// Functions of the replay: the most popular of the population. Default 40.
    pub functions: usize,
    /// Tenants the replay's functions belong to (function `i` is tenant `i % tenants`).
    /// Default 4 (at most the scenario's).
    pub tenants: usize,
    /// Mean requests per second per POP; the scenario's rate curve (diurnal swing, flash
    /// crowds) is kept around it. Default 20.
    pub rate_per_pop: f64,
    /// Replay requests in flight at once; an arrival beyond it is not sent and is counted
    /// as shed. Default 256.
    pub max_in_flight: usize,
    /// Most requests the replay sends (its schedule is cut there). Default 20 000.
    pub max_requests: usize,
    /// Agreement of the edge hit ratio: |live - sim| <= this. Default 0.03.
    pub hit_ratio_tolerance: f64,
    /// Agreement of the 429 share and of the 503-or-lost share of the workload replay:
    /// |live - sim| <= this. Default 0.03.
    pub share_tolerance: f64,
}

impl LiveSpec {
    /// The percentile tolerance of the comparisons.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            ms: self.tolerance_ms,
            ratio: self.tolerance_ratio,
            ratio_p99: self.tolerance_ratio_p99,
        }
    }
}

/// How far a live percentile may be from the simulated one: `max(ms, ratio × sim)`, with
/// `ratio_p99` for the 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute floor, ms.
    pub ms: f64,
    /// Share of the simulated value at p50 and p90.
    pub ratio: f64,
    /// Share of the simulated value at p99.
    pub ratio_p99: f64,
}

impl Tolerance {
    /// The allowed difference for percentile `q` (`p50`, `p90`, `p99`) of `sim_ms`.
    pub fn of(&self, q: &str, sim_ms: f64) -> f64 {
        let ratio = if q == "p99" {
            self.ratio_p99
        } else {
            self.ratio
        };
        self.ms.max(ratio * sim_ms)
    }
}

impl Default for LiveSpec {
    fn default() -> Self {
        Self {
            requests: 400,
            local_requests: 20_000,
            concurrency: 1,
            one_way_delay_ms: 10.0,
            tolerance_ms: 0.0,
            tolerance_ratio: 0.10,
            tolerance_ratio_p99: 0.15,
            duration_s: 30.0,
            pops: 3,
            regions: 2,
            functions: 40,
            tenants: 4,
            rate_per_pop: 20.0,
            max_in_flight: 256,
            max_requests: 20_000,
            hit_ratio_tolerance: 0.03,
            share_tolerance: 0.03,
        }
    }
}
