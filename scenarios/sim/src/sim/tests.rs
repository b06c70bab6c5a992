//! How the simulator deals POPs and regions to shards.

use super::{Home, deal};

#[test]
fn shards_are_dealt_so_that_each_gets_about_the_same_work() {
    // 6 POPs, 3 regions: POPs 0-3 nearest region 0, POPs 4-5 region 1, none region 2.
    let rtt: Vec<u64> = [
        [1, 5, 9],
        [1, 5, 9],
        [2, 5, 9],
        [2, 5, 9],
        [5, 1, 9],
        [5, 2, 9],
    ]
    .concat();
    let (pops, regions) = deal(&rtt, 6, 3, 2);
    let shards = |h: &[Home]| h.iter().map(|h| h.shard).collect::<Vec<_>>();
    // Forwards weigh half a POP: region 0 (weight 2) goes to shard 0, regions 1 (1) and
    // 2 (0) to shard 1; the POPs then even it out to within one POP.
    assert_eq!(shards(&regions), [0, 1, 1]);
    let load = |s: u32| {
        let r: f64 = [2.0, 1.0, 0.0]
            .iter()
            .zip(&regions)
            .filter(|(_, h)| h.shard == s)
            .map(|(w, _)| w)
            .sum();
        r + pops.iter().filter(|h| h.shard == s).count() as f64
    };
    assert!(
        (load(0) - load(1)).abs() <= 1.0,
        "{} vs {}",
        load(0),
        load(1)
    );
    // Indices count up per shard in order.
    for s in 0..2 {
        let idx: Vec<u32> = pops
            .iter()
            .filter(|h| h.shard == s)
            .map(|h| h.index)
            .collect();
        assert_eq!(idx, (0..idx.len() as u32).collect::<Vec<_>>());
    }
    assert_eq!((regions[1].index, regions[2].index), (0, 1));
}

/// Five forwards of region-pinned functions from one POP: function 0 twice and function 1
/// at region 0, then region 0 fails and function 0 twice at region 1.
fn compile_run(region_compile_ms: f64) -> super::Outcome {
    let s = crate::scenario::Scenario::parse(&format!(
        r#"
        name = "compile"
        seed = 1
        duration_s = 12
        [topology]
        pops = 1
        regions = 2
        rtt_ms = [[10, 30]]
        [functions]
        count = 3
        tenants = 1
        region_pinned_fraction = 1.0
        [arrivals]
        kind = "poisson"
        rate_per_pop = 1
        [cold_start]
        region_compile_ms = {region_compile_ms}
        [[region_failure]]
        region = 0
        at_s = 5
        "#
    ))
    .expect("valid scenario");
    let at = |at: f64, func: u32| super::Planned {
        at,
        pop: 0,
        func,
        exec_us: 5_000,
    };
    let plan = [at(1.0, 0), at(2.0, 0), at(3.0, 1), at(8.0, 0), at(9.0, 0)];
    super::simulate_schedule(&s, &plan, &mut |_| {}).expect("runs")
}

#[test]
fn a_regions_first_run_of_each_function_compiles_once() {
    let free = compile_run(0.0);
    let charged = compile_run(40.0);
    let c = &charged.recorder.counters;
    assert_eq!(c.completed, [0, 5], "{c:?}");
    // Region 0's first runs of functions 0 and 1, and region 1's first of function 0 once
    // it took over; not the later runs of function 0 at either.
    assert_eq!(c.region_compiles, 3);
    assert_eq!(
        free.recorder.counters.region_compiles, 3,
        "counted when free too"
    );
    // Each of the three is 40 ms slower, nothing else: the mean of five by 24 ms.
    let mean = |o: &super::Outcome| o.recorder.latency[1].mean() / 1e3;
    let added = mean(&charged) - mean(&free);
    assert!((added - 24.0).abs() < 0.5, "{added} ms");
    let slowest = |o: &super::Outcome| o.recorder.latency[1].max() as f64 / 1e3;
    assert!(
        (slowest(&charged) - slowest(&free) - 40.0).abs() < 0.5,
        "{} vs {}",
        slowest(&charged),
        slowest(&free)
    );
    // Deterministic.
    assert_eq!(compile_run(40.0).recorder.counters, *c);
}
