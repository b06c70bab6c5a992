//! Range checks of a parsed scenario: every problem names its field.

use super::{Arrivals, Scenario, ScenarioError};

fn invalid(field: &'static str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Scenario {
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let positive = |field, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        let non_negative = |field, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(field, format!("must be >= 0, got {v}")))
            }
        };
        let share = |field, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("must be in [0, 1], got {v}")))
            }
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid("name", "must be non-empty [A-Za-z0-9_-]"));
        }
        positive("duration_s", self.duration_s)?;
        if let Some(i) = self.sample_interval_s {
            positive("sample_interval_s", i)?;
        }
        if self.duration_s / self.sample_interval() > 100_000.0 {
            return Err(invalid("sample_interval_s", "gives over 100 000 buckets"));
        }
        let t = &self.topology;
        if t.pops == 0 || t.pops > 100_000 {
            return Err(invalid("topology.pops", "must be in 1..=100000"));
        }
        if t.regions == 0 || t.regions > 1000 {
            return Err(invalid("topology.regions", "must be in 1..=1000"));
        }
        positive("topology.min_rtt_ms", t.min_rtt_ms)?;
        if t.max_rtt_ms < t.min_rtt_ms || !t.max_rtt_ms.is_finite() {
            return Err(invalid("topology.max_rtt_ms", "must be >= min_rtt_ms"));
        }
        if let Some(m) = &t.rtt_ms {
            if m.len() != t.pops || m.iter().any(|row| row.len() != t.regions) {
                return Err(invalid(
                    "topology.rtt_ms",
                    "must be pops rows of regions values",
                ));
            }
            for v in m.iter().flatten() {
                positive("topology.rtt_ms", *v)?;
            }
        }
        let f = &self.functions;
        if f.count == 0 || f.count > 10_000_000 {
            return Err(invalid("functions.count", "must be in 1..=10000000"));
        }
        if f.tenants == 0 || f.tenants > f.count {
            return Err(invalid("functions.tenants", "must be in 1..=count"));
        }
        non_negative("functions.zipf_exponent", f.zipf_exponent)?;
        positive("functions.exec_median_ms", f.exec_median_ms)?;
        non_negative("functions.exec_sigma", f.exec_sigma)?;
        non_negative("functions.median_spread", f.median_spread)?;
        if f.memory_mb.is_empty() || f.memory_mb.contains(&0) {
            return Err(invalid("functions.memory_mb", "must list sizes > 0"));
        }
        share("functions.region_pinned_fraction", f.region_pinned_fraction)?;
        quantiles(
            "functions.exec_overshoot_quantiles_ms",
            f.exec_overshoot_quantiles_ms.as_deref(),
        )?;
        let c = &self.cold_start;
        non_negative("cold_start.artifact_kb", c.artifact_kb)?;
        positive("cold_start.bandwidth_mbps", c.bandwidth_mbps)?;
        non_negative("cold_start.deserialize_ms", c.deserialize_ms)?;
        non_negative("cold_start.instantiate_ms", c.instantiate_ms)?;
        non_negative("cold_start.region_compile_ms", c.region_compile_ms)?;
        let p = &self.pop;
        if p.slots == 0 {
            return Err(invalid("pop.slots", "must be >= 1"));
        }
        positive("pop.keep_alive_s", p.keep_alive_s)?;
        non_negative("pop.overhead_ms", p.overhead_ms)?;
        if let Some(p99) = p.overhead_p99_ms
            && !(p99.is_finite() && p99 >= p.overhead_ms)
        {
            return Err(invalid(
                "pop.overhead_p99_ms",
                "must be at least pop.overhead_ms",
            ));
        }
        quantiles(
            "pop.overhead_quantiles_ms",
            p.overhead_quantiles_ms.as_deref(),
        )?;
        positive("pop.placement.window", p.placement.window.as_secs_f64())?;
        if p.placement.exit_score > p.placement.enter_score || p.placement.max_tracked == 0 {
            return Err(invalid(
                "pop.placement",
                "needs exit_score <= enter_score and max_tracked >= 1",
            ));
        }
        if let Err(reason) = p.warm.validate() {
            return Err(invalid("pop.warm", reason));
        }
        let l = &self.leases;
        if l.batch == 0 || l.ttl_ms == 0 {
            return Err(invalid("leases", "batch and ttl_ms must be >= 1"));
        }
        if l.first_round_ms
            .iter()
            .flatten()
            .any(|ms| !ms.is_finite() || *ms < 0.0)
        {
            return Err(invalid("leases.first_round_ms", "must be finite and >= 0"));
        }
        let r = &self.region;
        if r.slots == 0 || r.tenant_concurrency == Some(0) {
            return Err(invalid(
                "region.slots",
                "slots and tenant_concurrency must be >= 1",
            ));
        }
        let burst_over = r
            .tenant_burst
            .zip(r.tenant_concurrency)
            .is_some_and(|(b, c)| b > c);
        if r.tenant_burst == Some(0) || r.tenant_interval_ms == 0 || burst_over {
            return Err(invalid(
                "region.tenant_burst",
                "tenant_burst and tenant_interval_ms must be >= 1, tenant_burst at most \
                 tenant_concurrency",
            ));
        }
        positive("region.keep_alive_s", r.keep_alive_s)?;
        non_negative("region.overhead_ms", r.overhead_ms)?;
        quantiles(
            "region.overhead_quantiles_ms",
            r.overhead_quantiles_ms.as_deref(),
        )?;
        non_negative("region.failure_detect_ms", r.failure_detect_ms)?;
        match &self.arrivals {
            Arrivals::Poisson { rate_per_pop } => positive("arrivals.rate_per_pop", *rate_per_pop)?,
            Arrivals::Diurnal {
                rate_per_pop,
                amplitude,
                period_s,
            } => {
                positive("arrivals.rate_per_pop", *rate_per_pop)?;
                positive("arrivals.period_s", *period_s)?;
                if !(0.0..1.0).contains(amplitude) {
                    return Err(invalid("arrivals.amplitude", "must be in [0, 1)"));
                }
            }
            Arrivals::Trace { max_rows, .. } => {
                if *max_rows == 0 {
                    return Err(invalid("arrivals.max_rows", "must be >= 1"));
                }
            }
        }
        if matches!(self.arrivals, Arrivals::Trace { .. }) && !self.flash_crowd.is_empty() {
            return Err(invalid(
                "flash_crowd",
                "needs synthetic arrivals, not a trace",
            ));
        }
        for fc in &self.flash_crowd {
            if fc.pop >= t.pops {
                return Err(invalid("flash_crowd.pop", "is not a POP of the topology"));
            }
            non_negative("flash_crowd.start_s", fc.start_s)?;
            positive("flash_crowd.duration_s", fc.duration_s)?;
            if !(fc.factor.is_finite() && fc.factor >= 1.0) {
                return Err(invalid("flash_crowd.factor", "must be >= 1"));
            }
            if fc.function.is_some_and(|k| k >= f.count) {
                return Err(invalid("flash_crowd.function", "is not a function rank"));
            }
        }
        for rf in &self.region_failure {
            if rf.region >= t.regions {
                return Err(invalid("region_failure.region", "is not a region"));
            }
            non_negative("region_failure.at_s", rf.at_s)?;
            if rf.recover_s.is_some_and(|r| r <= rf.at_s || r.is_nan()) {
                return Err(invalid("region_failure.recover_s", "must be after at_s"));
            }
        }
        if !(1..=16).contains(&self.shards) {
            return Err(invalid("shards", "must be in 1..=16"));
        }
        if self.shards > 1 && self.canary.is_some() {
            return Err(invalid(
                "shards",
                "must be 1 with a canary rollout (its verdicts are fleet-wide state)",
            ));
        }
        if let Some(c) = &self.canary {
            if !(c.share > 0.0 && c.share < 1.0) {
                return Err(invalid("canary.share", "must be in (0, 1)"));
            }
            share("canary.base_error_rate", c.base_error_rate)?;
            share("canary.regressed_fraction", c.regressed_fraction)?;
            share("canary.regressed_error_rate", c.regressed_error_rate)?;
            positive("canary.exec_factor", c.exec_factor)?;
            if c.min_samples == 0 {
                return Err(invalid("canary.min_samples", "must be >= 1"));
            }
        }
        if let Some(Err(reason)) = self.keepalive.as_ref().map(|k| k.validate()) {
            return Err(invalid("keepalive", reason));
        }
        let l = &self.live;
        if l.requests == 0 || l.requests > 100_000 || l.concurrency == 0 || l.concurrency > 1024 {
            return Err(invalid(
                "live",
                "requests must be in 1..=100000 and concurrency in 1..=1024",
            ));
        }
        non_negative("live.one_way_delay_ms", l.one_way_delay_ms)?;
        non_negative("live.tolerance_ms", l.tolerance_ms)?;
        non_negative("live.tolerance_ratio", l.tolerance_ratio)?;
        non_negative("live.tolerance_ratio_p99", l.tolerance_ratio_p99)?;
        share("live.share_tolerance", l.share_tolerance)?;
        non_negative("live.duration_s", l.duration_s)?;
        if l.duration_s > 3600.0 {
            return Err(invalid("live.duration_s", "must be at most 3600"));
        }
        if !(1..=16).contains(&l.pops)
            || !(1..=8).contains(&l.regions)
            || !(1..=1000).contains(&l.functions)
            || l.tenants == 0
        {
            return Err(invalid(
                "live",
                "pops must be in 1..=16, regions in 1..=8, functions in 1..=1000, tenants at least 1",
            ));
        }
        positive("live.rate_per_pop", l.rate_per_pop)?;
        if !(1..=4096).contains(&l.max_in_flight) || !(1..=1_000_000).contains(&l.max_requests) {
            return Err(invalid(
                "live",
                "max_in_flight must be in 1..=4096 and max_requests in 1..=1000000",
            ));
        }
        non_negative("live.hit_ratio_tolerance", l.hit_ratio_tolerance)?;
        Ok(())
    }
}

/// A table of values at `model::OVERHEAD_LEVELS`: one per level, non-negative and
/// non-decreasing.
fn quantiles(field: &'static str, q: Option<&[f64]>) -> Result<(), ScenarioError> {
    match q {
        Some(q)
            if q.len() != super::model::OVERHEAD_LEVELS.len()
                || q.iter().any(|v| !(v.is_finite() && *v >= 0.0))
                || q.windows(2).any(|w| w[1] < w[0]) =>
        {
            Err(invalid(
                field,
                "must be 10 non-negative, non-decreasing values (at 0.01, 0.05, 0.1, 0.25, 0.5, \
                 0.75, 0.9, 0.95, 0.99, 0.995)",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use strata_core::policy::PlacementConfig;

    pub(crate) const MINIMAL: &str = r#"
        name = "t"
        duration_s = 10
        [topology]
        pops = 2
        regions = 1
        [arrivals]
        kind = "poisson"
        rate_per_pop = 100
    "#;

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let s = Scenario::parse(MINIMAL).expect("valid");
        assert_eq!(s.seed, 1);
        assert_eq!(s.functions.count, 1000);
        assert_eq!(s.pop.slots, 64);
        assert_eq!(s.pop.placement, PlacementConfig::default());
        assert_eq!(s.pop.warm, strata_core::policy::WarmConfig::default());
        let l = &s.leases;
        assert_eq!(
            (l.batch, l.ttl_ms, l.idle_hold_ms, l.grace_ms),
            (4, 3000, 60_000, 60_000),
            "the nodes' defaults"
        );
        assert!((s.sample_interval() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn every_shipped_scenario_file_is_valid() {
        let dir = &Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).expect("scenarios/ lists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("Cargo.toml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if let Arrivals::Trace { file, .. } = &s.arrivals {
                    assert!(
                        file.exists(),
                        "{}: no trace {}",
                        path.display(),
                        file.display()
                    );
                }
                names.push(s.name);
            }
        }
        names.sort();
        for wanted in [
            "flash-crowd",
            "pops-500x5",
            "region-failure",
            "runtime-canary",
            "steady-zipf",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{MINIMAL}\n[pop]\nslotz = 3\n");
        assert!(matches!(
            Scenario::parse(&text),
            Err(ScenarioError::Parse(_))
        ));
        let text = MINIMAL.replace("rate_per_pop = 100", "rate_per_pop = 100\nrate = 3");
        assert!(matches!(
            Scenario::parse(&text),
            Err(ScenarioError::Parse(_))
        ));
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            ("duration_s = 10", "duration_s = -1", "duration_s"),
            ("pops = 2", "pops = 0", "topology.pops"),
            (
                "rate_per_pop = 100",
                "rate_per_pop = 0",
                "arrivals.rate_per_pop",
            ),
            ("name = \"t\"", "name = \"a b\"", "name"),
            ("duration_s = 10", "duration_s = 10\nshards = 0", "shards"),
            ("duration_s = 10", "duration_s = 10\nshards = 17", "shards"),
            (
                "rate_per_pop = 100",
                "rate_per_pop = 100\n[pop.warm]\nalpha = 0",
                "pop.warm",
            ),
            (
                "rate_per_pop = 100",
                "rate_per_pop = 100\n[leases]\nbatch = 0",
                "leases",
            ),
            (
                "rate_per_pop = 100",
                "rate_per_pop = 100\n[leases]\nttl_ms = 0",
                "leases",
            ),
        ];
        for (from, to, field) in cases {
            match Scenario::parse(&MINIMAL.replace(from, to)) {
                Err(ScenarioError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{to}: {other:?}"),
            }
        }
        let bad_flash = format!(
            "{MINIMAL}\n[[flash_crowd]]\npop = 5\nstart_s = 1\nduration_s = 1\nfactor = 2\n"
        );
        assert!(matches!(
            Scenario::parse(&bad_flash),
            Err(ScenarioError::Invalid {
                field: "flash_crowd.pop",
                ..
            })
        ));
        let sharded_canary = format!(
            "{}\n[canary]\nshare = 0.1\n",
            MINIMAL.replace("duration_s = 10", "duration_s = 10\nshards = 2")
        );
        assert!(matches!(
            Scenario::parse(&sharded_canary),
            Err(ScenarioError::Invalid {
                field: "shards",
                ..
            })
        ));
        let bad_rtt = MINIMAL.replace("regions = 1", "regions = 1\nrtt_ms = [[1.0]]");
        assert!(matches!(
            Scenario::parse(&bad_rtt),
            Err(ScenarioError::Invalid {
                field: "topology.rtt_ms",
                ..
            })
        ));
    }
}
