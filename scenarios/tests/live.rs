//! Live runs whose load comes from `strata-load` as its own process: cargo builds the
//! package's binaries for an integration test and names this one in
//! `CARGO_BIN_EXE_strata-load`, so the comparison and the calibration are tested with the
//! very binary they run in release sittings (there is no in-process fallback).

use scenarios::live::calibrate::{CalibrateArgs, measure};
use scenarios::live::interleave::{ROUND_PAIRS, SameSitting, Side};
use scenarios::live::load::{LoadSpec, Loadgen};
use scenarios::scenario::Scenario;
use std::time::Duration;

fn loadgen() -> Loadgen {
    Loadgen::at(env!("CARGO_BIN_EXE_strata-load"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_in_its_own_process_and_checks_every_answer() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/functions/{name}/invoke",
        post(|body: axum::body::Bytes| async move { ([("x-strata-executed-at", "pop/p0")], body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut spec = LoadSpec {
        url: format!("http://{addr}/v1/functions/echo/invoke"),
        token: "t".to_owned(),
        expect: "pop/".to_owned(),
        warmup: 8,
        requests: 300,
        rounds: Vec::new(),
        concurrency: 4,
        within: Duration::from_secs(60),
    };
    let out = loadgen().run(&spec).await.expect("strata-load runs");
    assert_ne!(
        out.pid,
        std::process::id(),
        "the load came from another process"
    );
    assert_eq!((out.sent(), out.errors()), (300, 0));
    spec.expect = "region/".to_owned();
    let out = loadgen().run(&spec).await.expect("strata-load runs");
    assert_eq!(out.errors(), 300, "answers from the wrong tier are errors");
    server.abort();
}

/// A one-POP, one-region scenario for the paths comparison, with `live` as its `[live]`.
fn paths_scenario(live: &str) -> Scenario {
    let text = format!(
        "name = \"live\"\nduration_s = 10\n[topology]\npops = 1\nregions = 1\n\
         [arrivals]\nkind = \"poisson\"\nrate_per_pop = 10\n[live]\n{live}\n"
    );
    Scenario::parse(&text).expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_live_run_compares_both_paths_with_the_simulator() {
    let s = paths_scenario(
        "requests = 200\nlocal_requests = 600\nconcurrency = 4\none_way_delay_ms = 10",
    );
    let c = scenarios::live::scenario::compare(&s, &loadgen())
        .await
        .expect("live run completes");
    assert_eq!(c.errors, 0, "{c:?}");
    assert_eq!((c.local_requests, c.requests), (600, 200));
    assert_eq!(c.rows.len(), 6);
    let forward_p50 = &c.rows[3];
    // The proxy delays each way by 10 ms, so this is a lower bound by construction.
    // Whether the percentiles agree depends on the host's speed: that verdict is
    // measured in release builds and recorded in docs/performance.md, not asserted.
    assert!(
        forward_p50.live_ms >= 20.0,
        "the injected RTT shows: {forward_p50:?}"
    );
    assert!(
        forward_p50.sim_ms >= 20.0,
        "the simulator models the same RTT"
    );
    assert!(c.markdown().contains("| region | p99 |"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calibration_run_measures_every_parameter_on_real_nodes() {
    let args = CalibrateArgs {
        out: std::path::PathBuf::new(),
        requests: 100,
        local_requests: 300,
        concurrency: 4,
        one_way_delay_ms: 5.0,
    };
    let m = measure(&args, &loadgen())
        .await
        .expect("calibration completes");
    assert_eq!(m.run.errors, 0, "{m:?}");
    assert!(m.exec_ms > 0.0, "{m:?}");
    // Overheads are the host's; their being finite and the forward path's including
    // the injected RTT are what holds on any machine.
    for v in [m.pop_overhead_ms, m.region_overhead_ms, m.forward_edge_ms] {
        assert!(v.is_finite() && v >= 0.0, "{m:?}");
    }
    assert_eq!(
        (m.run.requests, m.run.local_requests, m.run.concurrency),
        (100, Some(300), 4)
    );
    let overshoot = m
        .sleep_overshoot_quantiles_ms
        .expect("the sleep guest measured");
    assert!(overshoot.windows(2).all(|w| w[0] <= w[1]), "{overshoot:?}");
    let region = m
        .region_overhead_quantiles_ms
        .expect("the region's overhead measured at every level");
    assert!(region.windows(2).all(|w| w[0] <= w[1]), "{region:?}");
    // A restarted region's first runs compiled their modules and said how long.
    let compile = m.region_compile_ms;
    assert!(compile.is_some_and(|c| c > 0.0), "{compile:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agree_calibrates_on_the_nodes_whose_paths_it_compares() {
    let s = paths_scenario("requests = 50\nlocal_requests = 200\none_way_delay_ms = 5");
    let args = CalibrateArgs {
        out: std::path::PathBuf::new(),
        requests: 50,
        local_requests: 200,
        concurrency: 1,
        one_way_delay_ms: 5.0,
    };
    let sitting = SameSitting {
        args,
        round_pairs: ROUND_PAIRS,
    };
    let (model, paths) = scenarios::live::scenario::measure(&s, &loadgen(), Some(&sitting))
        .await
        .expect("calibration and paths complete");
    let model = model.expect("a model of the compared nodes");
    assert_eq!(model.run.errors, 0, "{model:?}");
    assert_eq!(model.run.local_requests, Some(200), "{model:?}");
    // The calibration's local calls and the compared ones alternate on the same nodes,
    // each side's rounds spread over the sitting rather than one block after the other.
    let rounds = paths.local_rounds();
    let calls = |side| -> u64 {
        rounds
            .iter()
            .filter(|&&(s, _)| s == side)
            .map(|&(_, n)| n)
            .sum()
    };
    assert_eq!(
        (calls(Side::Calibration), calls(Side::Compared)),
        (200, 200),
        "{rounds:?}"
    );
    let switches = rounds.windows(2).filter(|w| w[0].0 != w[1].0).count();
    assert!(switches >= 8, "interleaved: {rounds:?}");
    let mut judged = s.clone();
    judged.apply_model(model.clone()).expect("applies");
    let c = scenarios::live::scenario::judge(&judged, &paths).expect("judged");
    assert_eq!(c.errors, 0, "{c:?}");
    assert_eq!((c.local_requests, c.requests), (200, 50));
    // The simulated local path is the calibrated overhead plus the calibrated exec.
    let pop_p50 = &c.rows[0];
    let modelled = model.pop_overhead_ms + model.exec_ms;
    assert!(
        (pop_p50.sim_ms - modelled).abs() <= 0.2 * modelled + 0.01,
        "{pop_p50:?} vs {model:?}"
    );
}
