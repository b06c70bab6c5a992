//! The simulated world: the function population (synthetic or from a trace) and the RTT
//! matrix between POPs and regions, both drawn from the run's seeded RNG.

use super::FnSpec;
use super::arrival::lognormal;
use super::trace::Trace;
use crate::scenario::Scenario;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use strata_core::model::Placement;

/// The function population: the trace's functions, or `functions.count` synthetic ones
/// with seeded medians, sizes and placements. Rank `k` of the Zipf law is function `k`.
pub(super) fn functions(
    s: &Scenario,
    trace: Option<&Trace>,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<Vec<FnSpec>> {
    let f = &s.functions;
    let (count, tenant_of): (usize, Box<dyn Fn(usize) -> u32>) = match trace {
        Some(t) => (t.functions.len(), Box::new(|i| t.functions[i].app)),
        None => (f.count, Box::new(|i| (i % f.tenants) as u32)),
    };
    let regressed_fraction = s.canary.as_ref().map_or(0.0, |c| c.regressed_fraction);
    (0..count)
        .map(|i| {
            let tenant = tenant_of(i);
            let median_ms = lognormal(rng, f.exec_median_ms, f.median_spread);
            let memory_mb = u64::from(f.memory_mb[rng.random_range(0..f.memory_mb.len())]);
            let pinned = rng.random::<f64>() < f.region_pinned_fraction;
            let regressed = rng.random::<f64>() < regressed_fraction;
            Ok(FnSpec {
                tenant,
                median_ms,
                memory_mb,
                placement: if pinned {
                    Placement::Region
                } else {
                    Placement::Auto
                },
                regressed,
            })
        })
        .collect()
}

/// RTT in ms per (POP, region): explicit, or from seeded points on a unit square.
pub(super) fn rtt_matrix(s: &Scenario, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
    let t = &s.topology;
    if let Some(m) = &t.rtt_ms {
        return m.clone();
    }
    let mut point = || (rng.random::<f64>(), rng.random::<f64>());
    let regions: Vec<_> = (0..t.regions).map(|_| point()).collect();
    let pops: Vec<_> = (0..t.pops).map(|_| point()).collect();
    let diagonal = std::f64::consts::SQRT_2;
    pops.iter()
        .map(|(px, py)| {
            regions
                .iter()
                .map(|(rx, ry)| {
                    let d = ((px - rx).powi(2) + (py - ry).powi(2)).sqrt() / diagonal;
                    t.min_rtt_ms + (t.max_rtt_ms - t.min_rtt_ms) * d
                })
                .collect()
        })
        .collect()
}
