//! What the live replay observed, request by request: latency per tier, cold starts,
//! refusals and failures, and the compiles the regions reported. Never sends a request:
//! the replay ([`super::compare`]) records each ending here.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use std::time::Duration;

/// What the live run observed.
#[derive(Debug)]
pub(super) struct Observed {
    pub(super) latency: [Histogram<u64>; 2],
    pub(super) cold: [u64; 2],
    pub(super) throttled: u64,
    pub(super) unavailable: u64,
    pub(super) failed: u64,
    pub(super) shed: u64,
    /// Each run at a region: its latency, µs, and whether its module was compiled for it
    /// (`server-timing: compile`).
    pub(super) region_runs: Vec<(u64, bool)>,
    /// The compile times the regions reported, ms.
    pub(super) compiles: Vec<f64>,
    /// When each POP's first lease renewal round after the replay's start began, ms.
    pub(super) first_lease_rounds_ms: Vec<f64>,
}

/// How one replayed request ended.
pub(super) enum Ending {
    Ran {
        tier: usize,
        cold: bool,
        compile: Option<f64>,
    },
    Throttled,
    Unavailable,
    Failed,
}

impl Observed {
    pub(super) fn new() -> anyhow::Result<Self> {
        let h = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).context("histogram");
        Ok(Self {
            latency: [h()?, h()?],
            cold: [0; 2],
            throttled: 0,
            unavailable: 0,
            failed: 0,
            shed: 0,
            region_runs: Vec::new(),
            compiles: Vec::new(),
            first_lease_rounds_ms: Vec::new(),
        })
    }

    pub(super) fn record(&mut self, (ending, took): (Ending, Duration)) {
        match ending {
            Ending::Ran {
                tier,
                cold,
                compile,
            } => {
                let micros = took.as_micros().max(1) as u64;
                self.latency[tier].saturating_record(micros);
                self.cold[tier] += u64::from(cold);
                if tier == 1 {
                    self.region_runs.push((micros, compile.is_some()));
                }
                self.compiles.extend(compile);
            }
            Ending::Throttled => self.throttled += 1,
            Ending::Unavailable => self.unavailable += 1,
            Ending::Failed => self.failed += 1,
        }
    }

    pub(super) fn completed(&self, tier: usize) -> u64 {
        self.latency[tier].len()
    }

    /// Of the slowest 1% of the runs at regions (those at or above the region p99), how
    /// many compiled their module, and how many there are.
    pub(super) fn slowest_compiled(&self) -> (u64, u64) {
        slowest_compiled(&self.region_runs, self.latency[1].value_at_quantile(0.99))
    }
}

/// Of `runs` (latency µs, compiled), those at or above `p99`: how many compiled, and how
/// many there are.
fn slowest_compiled(runs: &[(u64, bool)], p99: u64) -> (u64, u64) {
    let slowest = runs.iter().filter(|r| r.0 >= p99 && p99 > 0);
    let n = slowest.clone().count() as u64;
    (slowest.filter(|r| r.1).count() as u64, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_region_runs_say_how_many_compiled() {
        let runs = [
            (10, false),
            (900, true),
            (50, true),
            (700, false),
            (950, true),
        ];
        assert_eq!(slowest_compiled(&runs, 700), (2, 3));
        assert_eq!(slowest_compiled(&runs, 0), (0, 0), "no region runs");
    }
}
