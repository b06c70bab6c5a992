//! The leases through whole simulated runs.

use crate::scenario::Scenario;
use crate::sim::{Outcome, simulate};

/// One POP, one region `rtt_ms` away, one function of one tenant arriving at `rate`/s.
fn one_tenant(rtt_ms: u32, rate: u32, extra: &str) -> String {
    format!(
        r#"
        name = "lease"
        seed = 7
        duration_s = 20
        sample_interval_s = 0.1
        [topology]
        pops = 1
        regions = 1
        rtt_ms = [[{rtt_ms}]]
        [functions]
        count = 1
        tenants = 1
        exec_median_ms = 5
        exec_sigma = 0.1
        median_spread = 0
        [arrivals]
        kind = "poisson"
        rate_per_pop = {rate}
        {extra}
        "#
    )
}

fn run(text: &str) -> Outcome {
    let s = Scenario::parse(text).expect("valid scenario");
    simulate(&s, None, &mut |_| {}).expect("runs")
}

/// How many of the buckets from `from` on ran at the POP, as a share of their arrivals.
fn local_share_from(o: &Outcome, from: usize) -> f64 {
    let (local, arrivals) = o.recorder.series[from..]
        .iter()
        .fold((0, 0), |(l, a), b| (l + b.local, a + b.arrivals));
    local as f64 / arrivals.max(1) as f64
}

#[test]
fn a_tenant_new_at_a_pop_forwards_until_its_grant_arrives_then_runs_locally() {
    // 200/s: a grant one RTT away costs about 200 × RTT forwards, then it runs here.
    let near = run(&one_tenant(20, 200, ""));
    let far = run(&one_tenant(200, 200, ""));
    for o in [&near, &far] {
        assert!(o.leases.grants >= 1, "{:?}", o.leases);
        assert!(o.leases.acquires >= o.leases.grants);
    }
    assert!(
        (2..=15).contains(&near.leases.forwards),
        "{:?}",
        near.leases
    );
    assert!(
        (25..=100).contains(&far.leases.forwards),
        "{:?}",
        far.leases
    );
    // Once the first grant is in (the first local run, one RTT after the function was
    // ready here, plus the RTT), nearly everything runs here.
    let first = far
        .recorder
        .series
        .iter()
        .position(|b| b.local > 0)
        .expect("runs locally at some point");
    assert!(
        first >= 4,
        "not before the function is known and ready: {first}"
    );
    let after = local_share_from(&far, first + 3);
    assert!(after > 0.98, "{after}");
    assert_eq!(far.recorder.series[first - 1].local, 0);
}

/// Three POPs 20 ms from one region, one tenant at 200/s each whose runs take 50 ms (about
/// ten at once per POP), limited to `limit` at the region.
fn limited(limit: u32, seed: u64, shards: u32) -> String {
    format!(
        r#"
        name = "limited"
        seed = {seed}
        shards = {shards}
        duration_s = 20
        [topology]
        pops = 3
        regions = 1
        rtt_ms = [[20], [20], [20]]
        [functions]
        count = 1
        tenants = 1
        exec_median_ms = 50
        exec_sigma = 0.1
        median_spread = 0
        [arrivals]
        kind = "poisson"
        rate_per_pop = 200
        [region]
        tenant_concurrency = {limit}
        "#
    )
}

#[test]
fn a_tenant_at_its_global_limit_gets_fewer_slots_and_runs_less_at_the_pops() {
    let roomy = run(&limited(100, 1, 1));
    let tight = run(&limited(6, 1, 1));
    // Roomy: the leases cover the ~30 running at once; a few forwards while they grow.
    let c = &roomy.recorder.counters;
    assert!(c.completed[0] > 10 * c.completed[1], "{c:?}");
    assert_eq!(c.throttled_tenant, 0);
    // Tight: the POPs' leases and the region's own runs share 6 slots.
    assert!(
        tight.leases.slots_granted * 2 < roomy.leases.slots_granted,
        "{:?} vs {:?}",
        tight.leases,
        roomy.leases
    );
    assert!(tight.leases.forwards > 10 * roomy.leases.forwards.max(1));
    let c = &tight.recorder.counters;
    assert!(c.throttled_tenant > 0, "{c:?}");
    // At most 6 running at once, 50 ms each: at most ~120/s ran at the POPs.
    let local_rate = c.completed[0] as f64 / 20.0;
    assert!(local_rate < 6.0 / 0.05 * 1.1, "{local_rate}");
}

#[test]
fn leases_are_deterministic_for_a_seed_sharded_or_not() {
    for shards in [1, 2] {
        let a = run(&limited(6, 3, shards));
        let b = run(&limited(6, 3, shards));
        assert_eq!(a.leases, b.leases);
        assert_eq!(a.recorder.counters, b.recorder.counters);
        let c = run(&limited(6, 4, shards));
        assert_ne!(a.leases, c.leases);
    }
}

#[test]
fn a_region_that_stops_answering_stalls_the_leases_and_local_runs_go_on() {
    // The region dies silently at 10 s; the POP notices after 5 s (not the node's 1 s, so
    // the stall has the four seconds before the uncounted fallback to itself).
    let o = run(&one_tenant(
        20,
        200,
        "[region]\nfailure_detect_ms = 5000\n[[region_failure]]\nregion = 0\nat_s = 10",
    ));
    // From a second after the failure (its lease ran out at most 3 s after the last
    // renewal, but lease messages stalled after one renewal period of 1 s), nearly
    // everything still runs here.
    let after = local_share_from(&o, 110);
    assert!(after > 0.98, "{after} {:?}", o.leases);
    // What the stalled cap leaves over is forwarded, and run here uncounted once the POP
    // knows no region is reachable.
    assert!(o.leases.uncounted_runs < 10, "{:?}", o.leases);
}

/// One POP 50 ms from its region, 1000/s over `tenants` tenants of one function each.
fn many_tenants(tenants: u32) -> String {
    format!(
        r#"
        name = "tenants"
        seed = 3
        duration_s = 30
        sample_interval_s = 1
        [topology]
        pops = 1
        regions = 1
        rtt_ms = [[50]]
        [functions]
        count = {tenants}
        tenants = {tenants}
        zipf_exponent = 0
        exec_median_ms = 5
        memory_mb = [16]
        [pop]
        memory_mb = 65536
        [arrivals]
        kind = "poisson"
        rate_per_pop = 1000
        "#
    )
}

#[test]
fn a_far_pop_renews_hundreds_of_tenants_leases_in_time() {
    // 200 tenants at 50 ms: one tenant's lease messages after another's would take 10 s a
    // round, far past the 3 s a renewal keeps a lease valid (a share run here about 0.2);
    // concurrently a round takes a few round trips and nearly everything runs here.
    // From 10 s on, once every function is known and ready at the POP.
    let o = run(&many_tenants(200));
    let hit = local_share_from(&o, 10);
    assert!(hit > 0.9, "edge hit ratio {hit}, {:?}", o.leases);
}

/// One tenant's function every 50 ms for 3 s, then once at 4.3 s; leases given back after
/// one quiet round (`idle_hold_ms = 0`); the POP's first renewal round at `first_round`.
fn quiet_after_busy(first_round: &str) -> Outcome {
    let s = Scenario::parse(&one_tenant(
        10,
        1,
        &format!("[leases]\nidle_hold_ms = 0\n{first_round}"),
    ))
    .expect("valid scenario");
    let at = |at: f64| crate::sim::Planned {
        at,
        pop: 0,
        func: 0,
        exec_us: 5_000,
    };
    let mut plan: Vec<_> = (0..60).map(|i| at(f64::from(i) * 0.05)).collect();
    plan.push(at(4.3));
    crate::sim::simulate_schedule(&s, &plan, &mut |_| {}).expect("runs")
}

#[test]
fn the_pops_renewal_rounds_start_where_first_round_ms_says() {
    // Rounds at 1, 2, 3, 4 s: the one at 4 s finds the tenant quiet and gives its lease
    // back, so the request at 4.3 s is forwarded for want of a lease.
    let default = quiet_after_busy("");
    // Rounds at 0.5, ..., 3.5, 4.5 s: at 4.3 s the lease renewed at 3.5 s still holds.
    let shifted = quiet_after_busy("first_round_ms = [500]");
    let local = |o: &Outcome| o.recorder.counters.completed[0];
    assert_eq!(local(&shifted), local(&default) + 1, "{:?}", shifted.leases);
    assert_eq!(shifted.leases.forwards + 1, default.leases.forwards);
    // A POP beyond the list starts one period in, as without it.
    let listed_elsewhere = quiet_after_busy("first_round_ms = []");
    assert_eq!(
        listed_elsewhere.recorder.counters,
        default.recorder.counters
    );
}
