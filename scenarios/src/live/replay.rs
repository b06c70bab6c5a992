//! The workload replay's plan: a scenario scaled down to what real nodes on one machine can
//! run, and the schedule of requests both the live run and the simulator see. Pure: no
//! I/O, no clock; the same scenario gives the same plan.
//!
//! Scaling keeps the scenario's shape and shrinks its size: its first `live.pops` POPs and
//! `live.regions` regions with their RTTs, its `live.functions` most popular functions
//! (the same medians, sizes and placements the simulator draws for them), the arrival
//! process around `live.rate_per_pop`, and its timeline (flash crowds, region failures,
//! the diurnal period) compressed from `duration_s` into `live.duration_s`. The policies'
//! own time constants (popularity window, keep-alives, warm ticks) are not compressed:
//! they are the nodes' real settings, in real time, on both sides.

use crate::scenario::{Arrivals, FlashCrowdSpec, RegionFailure, Scenario, Topology};
use crate::sim::arrival::{Zipf, lognormal};
use crate::sim::{self, FnSpec};
use anyhow::ensure;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The RNG stream the live schedule draws from (the simulator's shards use 0..16).
const LIVE_STREAM: u64 = 1 << 20;

/// One request of the replay: the simulator replays the same ones
/// ([`sim::simulate_schedule`]).
pub use crate::sim::Planned;

/// The scaled-down scenario the replay runs and the simulator is compared on.
///
/// # Errors
/// When `s` replays a trace (the replay needs a synthetic arrival process) or its live
/// replay is switched off.
pub fn scaled(s: &Scenario) -> anyhow::Result<Scenario> {
    let l = &s.live;
    ensure!(
        l.duration_s > 0.0,
        "the workload replay is off (live.duration_s = 0)"
    );
    ensure!(
        !matches!(s.arrivals, Arrivals::Trace { .. }),
        "the workload replay needs a synthetic arrival process, not a trace"
    );
    let pops = l.pops.min(s.topology.pops);
    let regions = l.regions.min(s.topology.regions);
    let (_, rtt) = sim::population(s)?;
    let rtt: Vec<Vec<f64>> = rtt[..pops]
        .iter()
        .map(|row| row[..regions].to_vec())
        .collect();
    let all = rtt.iter().flatten().copied();
    let min_rtt = all.clone().fold(f64::INFINITY, f64::min);
    let max_rtt = all.fold(0.0, f64::max);
    let scale = l.duration_s / s.duration_s;
    let count = l.functions.min(s.functions.count);

    let mut m = s.clone();
    m.duration_s = l.duration_s;
    m.sample_interval_s = None;
    m.shards = 1;
    m.topology = Topology {
        pops,
        regions,
        rtt_ms: Some(rtt),
        min_rtt_ms: min_rtt,
        max_rtt_ms: max_rtt,
    };
    m.functions.count = count;
    m.functions.tenants = l.tenants.min(s.functions.tenants).min(count);
    m.arrivals = match s.arrivals {
        Arrivals::Diurnal {
            amplitude,
            period_s,
            ..
        } => Arrivals::Diurnal {
            rate_per_pop: l.rate_per_pop,
            amplitude,
            period_s: period_s * scale,
        },
        _ => Arrivals::Poisson {
            rate_per_pop: l.rate_per_pop,
        },
    };
    // A crowd on a function beyond the scaled population lands on its least popular one:
    // "a rare function goes viral" stays what it shows.
    m.flash_crowd = s
        .flash_crowd
        .iter()
        .filter(|f| f.pop < pops)
        .map(|f| FlashCrowdSpec {
            pop: f.pop,
            start_s: f.start_s * scale,
            duration_s: f.duration_s * scale,
            factor: f.factor,
            function: f.function.map(|k| k.min(count - 1)),
        })
        .collect();
    m.region_failure = s
        .region_failure
        .iter()
        .filter(|f| f.region < regions)
        .map(|f| RegionFailure {
            region: f.region,
            at_s: f.at_s * scale,
            recover_s: f.recover_s.map(|r| r * scale),
        })
        .collect();
    // A canary rollout needs the nodes' next runtime and a regressed guest: not replayed.
    m.canary = None;
    // The replay's regions keep every tenant's books (`[limits.tenant]`, the node's
    // defaults when the scenario sets none), so its model does too: a simulated region
    // without books grants every lease and counts none, so a POP's lease survived a
    // failover there, while a real region counts what it granted and the renewal the
    // region taking over answers first is 0 slots (the tenant forwards until it acquires
    // again; docs/performance.md, region-failure's region p99).
    if m.region.tenant_concurrency.is_none() {
        let node = region_node::RegionConfig::default().limits.tenant;
        m.region.tenant_concurrency = Some(node.hard_max);
        m.region.tenant_burst = Some(node.burst);
        m.region.tenant_step = node.step;
        m.region.tenant_interval_ms = node.interval_ms;
    }
    Ok(m)
}

/// The replay's requests in time order: arrivals drawn from `m`'s rate curve per POP,
/// functions by its Zipf law (or a crowd's function), execution times around each
/// function's median like the simulator draws them; at most `m.live.max_requests`.
pub fn schedule(m: &Scenario, functions: &[FnSpec]) -> Vec<Planned> {
    let mut rng = ChaCha8Rng::seed_from_u64(m.seed);
    rng.set_stream(LIVE_STREAM);
    let profile = m.rate_profile();
    let n = functions.len();
    if n == 0 {
        return vec![];
    }
    let zipf = Zipf::new(n, m.functions.zipf_exponent);
    let mut plan = Vec::new();
    for pop in 0..m.topology.pops {
        let mut t = 0.0;
        while let Some(a) = profile.next(&mut rng, pop, t) {
            if a.at >= m.duration_s {
                break;
            }
            t = a.at;
            let func = a
                .function
                .filter(|&f| f < n)
                .unwrap_or_else(|| zipf.sample(&mut rng));
            let exec_ms = lognormal(&mut rng, functions[func].median_ms, m.functions.exec_sigma);
            plan.push(Planned {
                at: a.at,
                pop: pop as u32,
                func: func as u32,
                exec_us: (exec_ms * 1e3).round() as u64,
            });
        }
    }
    plan.sort_by(|a, b| a.at.total_cmp(&b.at));
    plan.truncate(m.live.max_requests);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flash_crowd() -> Scenario {
        Scenario::parse(
            r#"
            name = "fc"
            duration_s = 240
            [topology]
            pops = 4
            regions = 2
            rtt_ms = [[12, 70], [25, 60], [40, 30], [80, 15]]
            [functions]
            count = 3000
            tenants = 30
            [arrivals]
            kind = "poisson"
            rate_per_pop = 300
            [[flash_crowd]]
            pop = 0
            start_s = 90
            duration_s = 60
            factor = 20
            function = 2000
            [[region_failure]]
            region = 1
            at_s = 120
            [live]
            duration_s = 24
            pops = 3
            regions = 2
            functions = 10
            rate_per_pop = 5
            "#,
        )
        .expect("valid")
    }

    #[test]
    fn scaling_keeps_the_first_pops_and_regions_and_compresses_the_timeline() {
        let m = scaled(&flash_crowd()).expect("scales");
        assert_eq!(m.duration_s, 24.0);
        assert_eq!(m.topology.pops, 3);
        assert_eq!(m.topology.regions, 2);
        assert_eq!(
            m.topology.rtt_ms.as_deref(),
            Some(&[vec![12.0, 70.0], vec![25.0, 60.0], vec![40.0, 30.0]][..])
        );
        assert_eq!(m.functions.count, 10);
        assert_eq!(m.functions.tenants, 4);
        let crowd = &m.flash_crowd[0];
        assert_eq!((crowd.start_s, crowd.duration_s), (9.0, 6.0));
        assert_eq!(
            crowd.function,
            Some(9),
            "the rare function is the scaled tail"
        );
        assert_eq!(m.region_failure[0].at_s, 12.0);
        assert!(matches!(m.arrivals, Arrivals::Poisson { rate_per_pop } if rate_per_pop == 5.0));
        // The replay's regions keep the node's default tenant books, and so does its model.
        let node = region_node::RegionConfig::default().limits.tenant;
        assert_eq!(m.region.tenant_concurrency, Some(node.hard_max));
        assert_eq!(m.region.tenant_burst, Some(node.burst));
        m.validate().expect("the scaled scenario is valid");
    }

    #[test]
    fn the_scaled_population_is_the_scenarios_most_popular_functions() {
        let s = flash_crowd();
        let (all, _) = sim::population(&s).expect("population");
        let (top, _) = sim::population(&scaled(&s).expect("scales")).expect("population");
        assert_eq!(top.len(), 10);
        for (a, b) in all.iter().zip(&top) {
            assert_eq!(a.median_ms, b.median_ms);
            assert_eq!(a.memory_mb, b.memory_mb);
            assert_eq!(a.placement, b.placement);
        }
    }

    #[test]
    fn the_schedule_is_ordered_bounded_and_the_same_for_the_same_scenario() {
        let m = scaled(&flash_crowd()).expect("scales");
        let (functions, _) = sim::population(&m).expect("population");
        let plan = schedule(&m, &functions);
        assert_eq!(plan, schedule(&m, &functions));
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(plan.iter().all(|p| p.at < 24.0 && p.pop < 3 && p.func < 10));
        // 3 POPs x 5/s x 24 s, plus the crowd's 19 x 5/s for 6 s at POP 0, all on rank 9.
        let viral = plan
            .iter()
            .filter(|p| p.pop == 0 && p.func == 9 && (9.0..15.0).contains(&p.at))
            .count();
        assert!((400..=750).contains(&viral), "{viral} crowd arrivals");
        assert!(
            (700..=1300).contains(&plan.len()),
            "{} arrivals",
            plan.len()
        );

        let mut small = m.clone();
        small.live.max_requests = 50;
        assert_eq!(schedule(&small, &functions).len(), 50);
    }

    #[test]
    fn a_trace_or_a_disabled_replay_is_refused() {
        let mut s = flash_crowd();
        s.live.duration_s = 0.0;
        assert!(scaled(&s).is_err());
    }
}
