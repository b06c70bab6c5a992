//! Simulated vs live agreement: the same scenario's percentiles from the simulator and
//! from real nodes, and whether they agree within the scenario's stated tolerance.

use serde::Serialize;
pub use strata_sim::scenario::Tolerance;

/// One compared percentile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Which path (`pop` local, `region` forwarded).
    pub tier: String,
    /// Which percentile (`p50`, `p90`, `p99`).
    pub percentile: String,
    /// Simulated, ms.
    pub sim_ms: f64,
    /// Measured, ms.
    pub live_ms: f64,
    /// Allowed absolute difference, ms.
    pub tolerance_ms: f64,
    /// |live - sim| <= tolerance.
    pub agrees: bool,
}

/// The comparison of one `--live` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Requests measured over the POP-local path.
    pub local_requests: u64,
    /// Requests measured over the forwarded (region) path.
    pub requests: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// One-way delay injected between POP and region, ms.
    pub one_way_delay_ms: f64,
    /// Live requests that failed or ran at the wrong tier.
    pub errors: u64,
    /// The rows.
    pub rows: Vec<Row>,
    /// Every row agrees and no request failed.
    pub agrees: bool,
}

impl Comparison {
    /// Builds the rows from (tier, percentile, sim, live) within `tolerance`; `requests`
    /// are the measured requests of the local and the forwarded path.
    pub fn new(
        [local_requests, requests]: [u64; 2],
        concurrency: usize,
        one_way_delay_ms: f64,
        errors: u64,
        values: &[(&str, &str, f64, f64)],
        tolerance: Tolerance,
    ) -> Self {
        let rows: Vec<Row> = values
            .iter()
            .map(|&(tier, percentile, sim_ms, live_ms)| {
                let tolerance = tolerance.of(percentile, sim_ms);
                Row {
                    tier: tier.to_owned(),
                    percentile: percentile.to_owned(),
                    sim_ms,
                    live_ms,
                    tolerance_ms: tolerance,
                    agrees: (live_ms - sim_ms).abs() <= tolerance,
                }
            })
            .collect();
        let agrees = errors == 0 && rows.iter().all(|r| r.agrees);
        Self {
            local_requests,
            requests,
            concurrency,
            one_way_delay_ms,
            errors,
            rows,
            agrees,
        }
    }

    /// The comparison as a Markdown section.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "\n## Simulated vs live\n\n{} requests over the POP-local path and {} over the \
             forwarded one, {} in flight, sent by `strata-load` (its own process), {} ms \
             one-way delay injected between POP and region, {} failed. Verdict: **{}**.\n\n\
             | tier | percentile | sim (ms) | live (ms) | tolerance (ms) | agrees |\n\
             |---|---|---:|---:|---:|---|\n",
            self.local_requests,
            self.requests,
            self.concurrency,
            self.one_way_delay_ms,
            self.errors,
            if self.agrees { "agree" } else { "disagree" }
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} |\n",
                r.tier,
                r.percentile,
                r.sim_ms,
                r.live_ms,
                r.tolerance_ms,
                if r.agrees { "yes" } else { "no" }
            ));
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_agree_within_the_larger_of_absolute_and_relative_tolerance() {
        let c = Comparison::new(
            [100, 100],
            4,
            10.0,
            0,
            &[
                ("pop", "p50", 1.0, 3.0),
                ("region", "p50", 40.0, 55.0),
                ("region", "p99", 40.0, 70.0),
            ],
            Tolerance {
                ms: 5.0,
                ratio: 0.5,
                ratio_p99: 0.5,
            },
        );
        let agrees: Vec<bool> = c.rows.iter().map(|r| r.agrees).collect();
        assert_eq!(agrees, [true, true, false]);
        assert!(!c.agrees);
        assert!(
            c.markdown()
                .contains("| region | p99 | 40.00 | 70.00 | 20.00 | no |")
        );
    }

    #[test]
    fn the_default_tolerance_is_ten_percent_and_fifteen_at_p99() {
        let t = crate::scenario::LiveSpec::default().tolerance();
        let c = Comparison::new(
            [100, 100],
            4,
            10.0,
            0,
            &[
                ("region", "p50", 40.0, 43.9),
                ("region", "p90", 40.0, 44.1),
                ("region", "p99", 40.0, 45.9),
                ("region", "p99", 40.0, 33.9),
            ],
            t,
        );
        let agrees: Vec<bool> = c.rows.iter().map(|r| r.agrees).collect();
        assert_eq!(agrees, [true, false, true, false]);
    }
}
