//! Behaviour of the whole simulator on small scenarios.

use crate::report::Report;
use crate::scenario::Scenario;
use crate::sim::trace::Trace;
use crate::sim::{Outcome, Planned, simulate, simulate_schedule};

const BASE: &str = r#"
    name = "t"
    seed = 42
    duration_s = 60
    sample_interval_s = 1
    [topology]
    pops = 2
    regions = 2
    rtt_ms = [[10, 50], [20, 40]]
    [functions]
    count = 500
    tenants = 5
    exec_median_ms = 5
    [arrivals]
    kind = "poisson"
    rate_per_pop = 200
"#;

fn run(text: &str) -> Outcome {
    let s = Scenario::parse(text).expect("valid scenario");
    simulate(&s, None, &mut |_| {}).expect("runs")
}

fn report(text: &str) -> Report {
    let s = Scenario::parse(text).expect("valid scenario");
    let o = simulate(&s, None, &mut |_| {}).expect("runs");
    Report::new(&s, &o, 1.0)
}

fn json_without_run(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("serializes");
    v["run"] = serde_json::Value::Null;
    v
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = report(BASE);
    let b = report(BASE);
    assert_eq!(json_without_run(&a), json_without_run(&b));
    let c = report(&BASE.replace("seed = 42", "seed = 43"));
    assert_ne!(json_without_run(&a), json_without_run(&c));
}

#[test]
fn arrivals_match_the_configured_rate() {
    let o = run(BASE);
    // 2 POPs x 200/s x 60 s = 24 000, standard deviation ~155.
    let n = o.recorder.counters.invocations;
    assert!((23_400..=24_600).contains(&n), "{n}");
    let completed: u64 = o.recorder.counters.completed.iter().sum();
    assert!(completed <= n && completed + 200 >= n, "{completed} of {n}");
}

#[test]
fn popular_functions_run_at_the_edge_and_the_tail_is_forwarded_as_rare() {
    let r = report(BASE);
    assert!(r.edge_hit_ratio > 0.4, "{}", r.edge_hit_ratio);
    assert!(r.forwards["rare"] > 1000, "{:?}", r.forwards);
    assert!(r.prepares > 0);
    let pop = &r.latency_ms["pop"];
    let region = &r.latency_ms["region"];
    // Forwarding adds at least the nearest region's RTT (10 ms).
    assert!(region.p50 > pop.p50 + 9.0, "{} vs {}", region.p50, pop.p50);
}

#[test]
fn a_pop_with_one_slot_spills_over_capacity() {
    let r = report(&format!("{BASE}\n[pop]\nslots = 1\n"));
    assert!(r.forwards["over_capacity"] > 100, "{:?}", r.forwards);
}

#[test]
fn a_region_with_few_slots_throttles() {
    let text = format!("{BASE}\n[pop]\nslots = 1\n[region]\nslots = 1\n");
    let r = report(&text);
    assert!(r.refusals.region_capacity > 0, "{:?}", r.refusals);
}

#[test]
fn a_failed_region_is_never_tried_once_noticed_and_nothing_is_unavailable() {
    let text = format!("{BASE}\n[[region_failure]]\nregion = 0\nat_s = 20\n");
    let r = report(&text);
    assert_eq!(
        r.failovers, 0,
        "once a POP noticed, the region is marked down: nothing is sent there to fail over"
    );
    assert_eq!(r.refusals.unavailable, 0);
    // What was in flight, and what was sent before the POPs' liveness timeout noticed,
    // is lost (not retried: it was sent).
    assert!(r.lost > 0, "{}", r.lost);
}

#[test]
fn forwards_sent_before_the_failure_is_noticed_are_lost_and_a_longer_timeout_loses_more() {
    let with = |detect_ms: u32| {
        report(&format!(
            "{BASE}\n[region]\nfailure_detect_ms = {detect_ms}\n\
             [[region_failure]]\nregion = 0\nat_s = 20\n"
        ))
    };
    let (quick, slow) = (with(100), with(5000));
    assert!(
        slow.lost > quick.lost * 5,
        "{} lost with a 5 s timeout, {} with 100 ms",
        slow.lost,
        quick.lost
    );
    assert_eq!((quick.failovers, slow.failovers), (0, 0));
}

/// Seconds' worth of region-tier completions slower than `ms` (the far region's), at the
/// run's average region-tier rate.
fn seconds_above(o: &Outcome, duration_s: f64, ms: u64) -> f64 {
    let region = &o.recorder.latency[1];
    let slow = region.len() - region.count_between(0, ms * 1000);
    slow as f64 / (region.len() as f64 / duration_s)
}

#[test]
fn a_recovered_region_serves_its_pops_again_once_they_reconnect() {
    // Region 0 is near both POPs, region 1 far (every forward to it takes over 400 ms).
    // Region 0 is down from 20 s to 23 s; the POPs notice at 21 s and reconnect on the
    // node's schedule (every 400 ms at most) once it answers: about 2.5 s of forwards go
    // to the far region, not until some back-off or avoidance period ends.
    let text = BASE.replace(
        "rtt_ms = [[10, 50], [20, 40]]",
        "rtt_ms = [[10, 500], [20, 600]]",
    ) + "\n[[region_failure]]\nregion = 0\nat_s = 20\nrecover_s = 23\n";
    let far = seconds_above(&run(&text), 60.0, 400);
    assert!(
        (1.5..3.5).contains(&far),
        "{far:.2} s of forwards went to the far region"
    );
}

#[test]
fn with_every_region_down_forwards_are_unavailable() {
    let text = format!(
        "{BASE}\n[[region_failure]]\nregion = 0\nat_s = 10\n[[region_failure]]\nregion = 1\nat_s = 10\n"
    );
    let r = report(&text);
    assert!(r.refusals.unavailable > 1000, "{:?}", r.refusals);
}

#[test]
fn a_flash_crowd_makes_a_rare_function_popular_at_its_pop() {
    let text = format!(
        "{BASE}\n[[flash_crowd]]\npop = 0\nstart_s = 20\nduration_s = 20\nfactor = 5\nfunction = 400\n"
    );
    let r = report(&text);
    let during: f64 = r.series[25..40].iter().map(|p| p.rate).sum::<f64>() / 15.0;
    let before: f64 = r.series[5..20].iter().map(|p| p.rate).sum::<f64>() / 15.0;
    assert!(during > before * 2.5, "{during} vs {before}");
    assert!(
        r.forwards["not_ready"] > 0,
        "the crowd waits for the artifact"
    );
}

#[test]
fn the_canary_pins_regressed_functions() {
    let text = format!(
        "{BASE}\n[canary]\nshare = 0.2\nregressed_fraction = 0.2\nregressed_error_rate = 0.3\nmin_samples = 50\n"
    );
    let r = report(&text.replace("count = 500", "count = 50"));
    let c = r.canary.expect("canary outcome");
    assert!(c.pinned_regressed > 0, "{c:?}");
    assert_eq!(c.promoted_regressed, 0, "{c:?}");
    assert!(c.promoted > c.pinned, "{c:?}");
}

#[test]
fn the_tenant_limit_at_regions_adapts_to_demand_like_the_nodes() {
    let fixed = run(&format!("{BASE}\n[region]\ntenant_concurrency = 1\n"));
    let adaptive = run(&format!(
        "{BASE}\n[region]\ntenant_concurrency = 64\ntenant_burst = 1\ntenant_step = 4\n\
         tenant_interval_ms = 100\n"
    ));
    let (f, a) = (
        fixed.recorder.counters.throttled_tenant,
        adaptive.recorder.counters.throttled_tenant,
    );
    assert!(f > 0, "a limit of one throttles");
    // Starting from the same limit, the adaptive one refuses at first, then grows under
    // pressure.
    assert!(a > 0, "the adaptive limit starts at its burst of one");
    assert!(a * 4 < f * 3, "adaptive {a} vs fixed {f}");
}

#[test]
fn a_trace_replays_its_invocations() {
    let s = Scenario::parse(
        r#"
        name = "trace"
        duration_s = 100
        [topology]
        pops = 2
        regions = 1
        [arrivals]
        kind = "trace"
        file = "unused.csv"
        "#,
    )
    .expect("valid");
    let trace = Trace::parse(
        "app,func,end_timestamp,duration\na,f,1.0,0.5\na,f,2.0,0.5\nb,g,3.0,1.0\nb,g,200.0,1.0\n",
        100,
    )
    .expect("valid trace");
    let o = simulate(&s, Some(&trace), &mut |_| {}).expect("runs");
    assert_eq!(
        o.recorder.counters.invocations, 3,
        "the last one is past the end"
    );
    assert_eq!(o.functions, 2);
    assert!(
        simulate(&s, None, &mut |_| {}).is_err(),
        "a trace scenario needs its trace"
    );
}

#[test]
fn memory_seconds_are_positive_and_bounded_by_the_budget() {
    let o = run(BASE);
    let s = Scenario::parse(BASE).expect("valid");
    let bound = s.pop.memory_mb as f64 * 2.0 * s.duration_s;
    assert!(o.memory_mb_seconds[0] > 0.0);
    assert!(
        o.memory_mb_seconds[0] <= bound,
        "{} > {bound}",
        o.memory_mb_seconds[0]
    );
}

const FLEET: &str = r#"
    name = "fleet"
    seed = 7
    duration_s = 30
    [topology]
    pops = 24
    regions = 3
    min_rtt_ms = 6
    max_rtt_ms = 80
    [functions]
    count = 2000
    tenants = 20
    exec_median_ms = 8
    [pop]
    slots = 8
    memory_mb = 1024
    [arrivals]
    kind = "poisson"
    rate_per_pop = 150
"#;

fn sharded(text: &str, shards: u32) -> String {
    text.replacen("seed = ", &format!("shards = {shards}\n    seed = "), 1)
}

#[test]
fn a_sharded_run_is_deterministic() {
    let a = report(&sharded(FLEET, 2));
    let b = report(&sharded(FLEET, 2));
    assert_eq!(a.run.shards, 2);
    assert_eq!(json_without_run(&a), json_without_run(&b));
}

#[test]
fn sharded_runs_agree_with_one_thread() {
    let one = report(FLEET);
    for shards in [2, 3, 5] {
        let r = report(&sharded(FLEET, shards));
        let close = |what: &str, a: f64, b: f64, tolerance: f64| {
            assert!(
                (a - b).abs() <= tolerance * a.abs().max(1e-9),
                "{what} with {shards} shards: {b} vs {a} with one"
            );
        };
        close(
            "invocations",
            one.invocations as f64,
            r.invocations as f64,
            0.02,
        );
        close("edge hit ratio", one.edge_hit_ratio, r.edge_hit_ratio, 0.03);
        close(
            "cold-start ratio",
            one.cold_start_ratio,
            r.cold_start_ratio,
            0.1,
        );
        for tier in ["pop", "region", "all"] {
            let (a, b) = (&one.latency_ms[tier], &r.latency_ms[tier]);
            close(&format!("{tier} p50"), a.p50, b.p50, 0.05);
            close(&format!("{tier} p99"), a.p99, b.p99, 0.1);
        }
        close(
            "rare forwards",
            one.forwards["rare"] as f64,
            r.forwards["rare"] as f64,
            0.05,
        );
        close(
            "POP memory-seconds",
            one.memory_mb_seconds.pop,
            r.memory_mb_seconds.pop,
            0.05,
        );
        let warm = |r: &Report| r.series.iter().map(|p| p.warm_region).sum::<u64>() as f64;
        close("warm region instances", warm(&one), warm(&r), 0.05);
    }
}

#[test]
fn with_more_shards_than_pops_a_failed_region_is_still_never_tried_once_noticed() {
    let text = format!(
        "{}\n[[region_failure]]\nregion = 0\nat_s = 20\n",
        sharded(BASE, 4)
    );
    let r = report(&text);
    assert_eq!(r.run.shards, 4);
    assert_eq!(
        r.failovers, 0,
        "once a POP noticed, the region is marked down: nothing is sent there to fail over"
    );
    assert_eq!(r.refusals.unavailable, 0);
}

#[test]
fn a_sharded_trace_replay_replays_every_invocation_once() {
    let s = Scenario::parse(
        r#"
        name = "trace"
        shards = 2
        duration_s = 100
        [topology]
        pops = 2
        regions = 1
        [arrivals]
        kind = "trace"
        file = "unused.csv"
        "#,
    )
    .expect("valid");
    let trace = Trace::parse(
        "app,func,end_timestamp,duration\na,f,1.0,0.5\nb,g,1.5,0.5\na,f,2.0,0.5\nb,g,3.0,1.0\nb,g,200.0,1.0\n",
        100,
    )
    .expect("valid trace");
    let o = simulate(&s, Some(&trace), &mut |_| {}).expect("runs");
    assert_eq!(o.shards, 2);
    assert_eq!(o.recorder.counters.invocations, 4);
    assert_eq!(o.recorder.counters.completed.iter().sum::<u64>(), 4);
}

#[test]
fn trend_warm_pools_keep_functions_with_traffic_warm_and_cut_cold_starts_at_the_pop() {
    // With a keep-alive shorter than most functions' gaps between requests, keep-alive
    // pools start most instances cold; the trend policy keeps each function with traffic
    // pre-warmed to its forecast (plus headroom), and pre-warms ahead of a crowd's ramp.
    let text = format!(
        "{}\n[pop]\nmemory_mb = 65536\nkeep_alive_s = 1\n[[flash_crowd]]\npop = 0\nstart_s = 20\nduration_s = 30\nfactor = 8\nfunction = 3\n",
        BASE.replace("exec_median_ms = 5", "exec_median_ms = 40")
    );
    let trend = report(&format!("{text}\n[pop.warm]\nmemory_budget_mb = 65536\n"));
    let reactive = report(&format!(
        "{text}\n[pop.warm]\nmemory_budget_mb = 65536\nmode = \"reactive\"\n"
    ));
    assert!(
        trend.cold_starts.pop < reactive.cold_starts.pop,
        "trend {} vs reactive {}",
        trend.cold_starts.pop,
        reactive.cold_starts.pop
    );
    assert!(
        trend.memory_mb_seconds.pop >= reactive.memory_mb_seconds.pop,
        "pre-warmed instances cost memory: {} vs {}",
        trend.memory_mb_seconds.pop,
        reactive.memory_mb_seconds.pop
    );
}

#[test]
fn the_pop_overhead_spreads_to_its_p99_when_the_model_has_one() {
    let fixed = BASE.replace("exec_median_ms = 5", "exec_median_ms = 0.001")
        + "    [pop]\n    overhead_ms = 0.4\n";
    let spread = fixed.clone() + "    overhead_p99_ms = 2.0\n";
    let (fixed, spread) = (report(&fixed), report(&spread));
    let (f, s) = (&fixed.latency_ms["pop"], &spread.latency_ms["pop"]);
    // Without the spread only cold starts lift the tail; with it the p99 is the model's.
    assert!(
        (s.p50 - f.p50).abs() < 0.05,
        "the median stays: {} vs {}",
        s.p50,
        f.p50
    );
    assert!(s.p99 > f.p99 + 1.0, "{} vs {}", s.p99, f.p99);
    assert!(
        (s.p99 - 2.0).abs() < 0.4,
        "the p99 is the model's: {}",
        s.p99
    );
}

#[test]
fn the_pop_overhead_follows_its_measured_quantiles_when_the_model_has_them() {
    // A body tighter and a tail heavier than any lognormal through its p50 and p99.
    let measured = [0.30, 0.32, 0.34, 0.37, 0.40, 0.45, 0.55, 0.80, 2.0, 3.0];
    let text = BASE.replace(
        "exec_median_ms = 5",
        "exec_median_ms = 0.001\n    exec_sigma = 0.1\n    median_spread = 0",
    ) + &format!(
        "    [cold_start]\n    instantiate_ms = 0\n    deserialize_ms = 0\n    [pop]\n    overhead_ms = 0.4\n    overhead_p99_ms = 2.0\n    overhead_quantiles_ms = {measured:?}\n"
    );
    let r = report(&text);
    let p = &r.latency_ms["pop"];
    // Every guest costs a microsecond and cold starts nothing: the latency is the overhead.
    for (q, want) in [(p.p50, 0.40), (p.p90, 0.55)] {
        assert!((q - want).abs() < 0.03, "{q} vs {want}: {p:?}");
    }
    // Steep above p99 (2 to 3 ms over 0.5% of the draws), so the p99 of ~13 000 draws
    // moves by about 0.4 ms with the seed.
    assert!((p.p99 - 2.0).abs() < 0.5, "{p:?}");
    // The lognormal through the same p50 and p99 puts its p90 far above the measured one.
    let lognormal = report(&text.replace("    overhead_quantiles_ms", "    # "));
    assert!(
        lognormal.latency_ms["pop"].p90 > 0.9,
        "{:?}",
        lognormal.latency_ms["pop"]
    );
}

#[test]
fn the_region_overhead_follows_its_measured_quantiles_when_the_model_has_them() {
    // Every function pinned to the region, guests of a microsecond, no cold-start cost,
    // the POP's overhead nil: a forward's latency is the RTT plus the region's overhead.
    let fixed = BASE.replace(
        "exec_median_ms = 5",
        "exec_median_ms = 0.001\n    exec_sigma = 0.1\n    median_spread = 0\n    region_pinned_fraction = 1",
    ) + "    [cold_start]\n    instantiate_ms = 0\n    deserialize_ms = 0\n    [pop]\n    overhead_ms = 0\n    [region]\n    overhead_ms = 3.0\n";
    let measured = [2.9, 2.92, 2.94, 2.97, 3.0, 3.1, 3.4, 4.0, 6.0, 7.0];
    let drawn = fixed.clone() + &format!("    overhead_quantiles_ms = {measured:?}\n");
    // One region 10 ms away from one POP, so the RTT does not spread the latency.
    let one = |t: &str| {
        t.replace("pops = 2\n    regions = 2", "pops = 1\n    regions = 1")
            .replace("rtt_ms = [[10, 50], [20, 40]]", "rtt_ms = [[10]]")
    };
    let (fixed, drawn) = (report(&one(&fixed)), report(&one(&drawn)));
    let (f, d) = (&fixed.latency_ms["region"], &drawn.latency_ms["region"]);
    // Without quantiles every forward costs the constant: no spread at all.
    assert!((f.p50 - 13.0).abs() < 0.01, "{f:?}");
    assert!(f.p99 - f.p50 < 0.01, "{f:?}");
    // With them the median stays and the p99 is the measured one.
    assert!((d.p50 - 13.0).abs() < 0.05, "{d:?}");
    assert!((d.p90 - 13.4).abs() < 0.1, "{d:?}");
    assert!((d.p99 - 16.0).abs() < 0.4, "{d:?}");
}

#[test]
fn quantiles_that_decrease_or_miss_a_level_are_refused() {
    for bad in [
        "[0.5, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]",
        "[0.1, 0.2]",
    ] {
        let text = BASE.to_owned() + &format!("    [pop]\n    overhead_quantiles_ms = {bad}\n");
        let err = crate::scenario::Scenario::parse(&text).expect_err("refused");
        assert!(err.to_string().contains("overhead_quantiles_ms"), "{err}");
    }
}

#[test]
fn a_waiting_guests_overshoot_is_added_to_every_execution() {
    let text = BASE.replace(
        "exec_median_ms = 5",
        "exec_median_ms = 2\n    exec_sigma = 0.01\n    median_spread = 0",
    ) + "    [cold_start]\n    instantiate_ms = 0\n    deserialize_ms = 0\n    [pop]\n    overhead_ms = 0\n";
    let exact = report(&text);
    let overshoot = [1.0, 1.0, 1.0, 1.0, 1.1, 1.2, 1.2, 1.3, 1.5, 2.0];
    let late = report(&text.replace(
        "median_spread = 0",
        &format!("median_spread = 0\n    exec_overshoot_quantiles_ms = {overshoot:?}"),
    ));
    let (e, l) = (&exact.latency_ms["pop"], &late.latency_ms["pop"]);
    assert!((e.p50 - 2.0).abs() < 0.05, "{e:?}");
    assert!(
        (l.p50 - 3.1).abs() < 0.05,
        "the median overshoot is added: {l:?}"
    );
    assert!(l.p90 - e.p90 > 1.1, "{l:?} vs {e:?}");
}

#[test]
fn a_given_schedule_is_replayed_instead_of_the_arrival_process() {
    let s = Scenario::parse(&sharded(BASE, 2)).expect("valid scenario");
    // 300 requests of function 7 at POP 1, one every 100 ms, 5 ms each; one naming a POP
    // the scenario does not have, skipped.
    let mut plan: Vec<Planned> = (0..300)
        .map(|i| Planned {
            at: f64::from(i) * 0.1,
            pop: 1,
            func: 7,
            exec_us: 5_000,
        })
        .collect();
    plan.push(Planned {
        at: 1.0,
        pop: 9,
        func: 7,
        exec_us: 5_000,
    });
    let o = simulate_schedule(&s, &plan, &mut |_| {}).expect("runs");
    assert_eq!(o.recorder.counters.invocations, 300);
    let completed: u64 = o.recorder.counters.completed.iter().sum();
    assert_eq!(completed, 300);
    // Function 7 becomes popular at POP 1 after its first requests and then runs there.
    assert!(
        o.recorder.counters.completed[0] > 250,
        "{:?}",
        o.recorder.counters.completed
    );
    let again = simulate_schedule(&s, &plan, &mut |_| {}).expect("runs");
    assert_eq!(
        again.recorder.counters.completed,
        o.recorder.counters.completed
    );
}

#[test]
fn code_trending_across_pops_is_prepared_before_it_is_popular_at_each() {
    // The regions' hints off: no function ever trends by these thresholds.
    let without = report(&format!("{BASE}\n[region.trending]\nmin_rate = 1e9\n"));
    let with = report(BASE);
    assert!(
        with.forwards["not_ready"] * 2 < without.forwards["not_ready"],
        "not_ready with hints {}, without {}",
        with.forwards["not_ready"],
        without.forwards["not_ready"]
    );
    assert!(
        with.prepares > without.prepares,
        "a hinted function is prepared even where it never becomes popular"
    );
}
