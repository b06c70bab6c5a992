//! `scenarios calibrate`: measures the per-hop costs the simulator's model assumes on real
//! nodes, from the nodes' own `server-timing`, and writes them as a [`CostModel`] file a
//! scenario loads with `model = "FILE"`.
//!
//! One POP and one region on loopback with a known one-way delay injected between them
//! (the [`testkit::proxy::DelayProxy`]); the `echo` example deployed twice, popular (run at
//! the POP) and pinned to the region (forwarded). The calls come from `strata-load` in its
//! own process, as in the paths comparison of `run --live` ([`super::load`]), so the model
//! is measured the way it is compared: after the same untimed warm-up on the same connections,
//! the local path gets `local_requests` calls and the forwarded path `requests`, at
//! `concurrency` in flight (default one, as `[live] concurrency`); every parameter is a median over them (`pop.overhead_p99_ms`
//! the 99th percentile). `agree` sends these local calls in rounds alternating with its
//! compared local calls on the same nodes ([`super::interleave`]):
//!
//! | parameter | source |
//! | --- | --- |
//! | `exec_ms` | `server-timing: exec` of the local calls (the guest itself) |
//! | `pop.overhead_ms` | local end-to-end latency at the client − `exec`: client and POP HTTP parse and render, the POP's placement and dispatch, and the instance every invocation creates from the prepared module (`server-timing: instantiate`, 7-13 µs in a release build: the simulator charges `cold_start.instantiate_ms` only on a cold start, so a warm call's instantiation is part of its overhead, as it is of the region's) |
//! | `pop.overhead_p99_ms` | the 99th percentile of the same (a lognormal with this median and p99 is what the simulator draws from when a model has no quantiles) |
//! | `pop.overhead_quantiles_ms` | the same at the 1st, 5th, 10th, 25th, 50th, 75th, 90th, 95th, 99th and 99.5th percentiles (not the 99.9th: of a 1 000-call run that is its largest sample, and the steep slope to it put the simulated p99 of 400 draws anywhere up to 7 ms): the distribution the simulator draws each invocation's overhead from (inverse CDF) |
//! | `region.overhead_ms` | `server-timing: forward` at the POP − the injected RTT − the region's `exec`: QUIC stream open and framing, the region's admission, queueing and execution hand-off, the proxy's timer rounding |
//! | `region.overhead_quantiles_ms` | the same at the ten levels of `pop.overhead_quantiles_ms`: the distribution the simulator draws each forward's overhead from (single forwards take 1-4 ms longer than the median one; a constant left the simulated forwarded path only the POP overhead's spread) |
//! | `forward_edge_ms` | forwarded end-to-end − `forward`: the POP's HTTP edge on a forwarded call (checks `pop.overhead_ms`) |
//! | `cold_start.instantiate_ms` | `server-timing: instantiate` of the calls that report one (cold starts during the run), or unchanged when none did |
//! | `cold_start.region_compile_ms` | the median `server-timing: compile` of a restarted region's first run of each of 15 functions ([`super::compile`]): what a region's first run of a function since it started adds (2-3 ms for the replay's `sleep` guest in a release build) |
//!
//! `functions.exec_overshoot_quantiles_ms` (the model file's `sleep_overshoot_quantiles_ms`):
//! the `sleep` example deployed at the edge and asked for a 2 ms wait 300 times, one call at
//! a time; its `exec` minus 2 ms at the ten levels: how much later than asked a waiting
//! guest wakes (the runtime's timer tick). The live replays' guests are that `sleep`
//! reactor, so their executions include it.
//!
//! Artifact fetch (`cold_start.artifact_kb`, `bandwidth_mbps`, `deserialize_ms`) is not
//! measured: a calibration run makes no cold artifact fetch it could time.

use super::Sample;
use super::load::Loadgen;
use super::scenario::{delayed_cluster, deploy_echo_pair, forward_warmup, local_warmup, path_load};
use anyhow::Context as _;
use strata_sim::scenario::model::OVERHEAD_LEVELS;
pub use strata_sim::scenario::model::{CalibrationRun, CostModel};

/// Calls over the forwarded path by default.
pub const REQUESTS: u64 = 1000;
/// Calls over the local path by default.
pub const LOCAL_REQUESTS: u64 = 20_000;

/// Options of `calibrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Where to write the model (TOML).
    #[arg(long, default_value = "target/cost-model.toml")]
    pub out: std::path::PathBuf,
    /// Calls over the forwarded path.
    #[arg(long, default_value_t = REQUESTS)]
    pub requests: u64,
    /// Calls over the local path (a warm local call costs well under a millisecond, so the
    /// overhead's tail quantiles get more samples for little time).
    #[arg(long, default_value_t = LOCAL_REQUESTS)]
    pub local_requests: u64,
    /// Calls in flight at once (as `[live] concurrency`: one, the per-call costs, not how
    /// the machine's cores are shared under a closed loop).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// One-way delay injected between POP and region, ms.
    #[arg(long, default_value_t = 10.0)]
    pub one_way_delay_ms: f64,
}

fn median(v: Vec<f64>) -> Option<f64> {
    percentile(v, 0.5)
}

/// The `q` quantile of `v` (nearest rank at `q * len`).
fn percentile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64) as usize).min(v.len() - 1);
    Some(v[rank])
}

/// Derives the model from the samples of both paths (pure: unit-tested).
pub(crate) fn derive(
    local: &[Sample],
    forward: &[Sample],
    one_way_delay_ms: f64,
    build: &str,
) -> anyhow::Result<CostModel> {
    let ok = |s: &&Sample| s.ok;
    let ms = |s: &Sample| s.latency.as_secs_f64() * 1e3;
    let exec = median(
        local
            .iter()
            .filter(ok)
            .filter_map(|s| s.timing.exec)
            .collect(),
    )
    .context("no local call reported `exec`")?;
    let pop_overheads: Vec<f64> = local
        .iter()
        .filter(ok)
        // Not minus `instantiate`: every call reports one, and the simulator's warm call
        // adds none (interleaved with the compared calls, the model without it sat
        // 0.01-0.02 ms under them at p50 in every scenario, docs/performance.md).
        .map(|s| ms(s) - s.timing.exec.unwrap_or(0.0))
        .collect();
    let pop_overhead = median(pop_overheads.clone()).context("no local call succeeded")?;
    let pop_overhead_p99 = percentile(pop_overheads.clone(), 0.99);
    let pop_overhead_quantiles = quantiles(&pop_overheads);
    let rtt = 2.0 * one_way_delay_ms;
    let forwarded: Vec<&Sample> = forward
        .iter()
        .filter(ok)
        .filter(|s| s.timing.forward.is_some())
        .collect();
    let region_overheads: Vec<f64> = forwarded
        .iter()
        .filter_map(|s| {
            let t = s.timing;
            Some(t.forward? - rtt - t.exec.unwrap_or(0.0))
        })
        .collect();
    let region_overhead =
        median(region_overheads.clone()).context("no forwarded call reported `forward`")?;
    let region_overhead_quantiles = quantiles(
        &region_overheads
            .iter()
            .map(|o| o.max(0.0))
            .collect::<Vec<_>>(),
    );
    let forward_edge = median(
        forwarded
            .iter()
            .filter_map(|s| Some(ms(s) - s.timing.forward?))
            .collect(),
    )
    .context("no forwarded call")?;
    let instantiate = median(
        local
            .iter()
            .chain(forward)
            .filter_map(|s| s.timing.instantiate)
            .filter(|&i| i > 0.0)
            .collect(),
    );
    let errors = local.iter().chain(forward).filter(|s| !s.ok).count() as u64;
    Ok(CostModel {
        pop_overhead_ms: pop_overhead.max(0.0),
        pop_overhead_p99_ms: pop_overhead_p99.map(|p| p.max(pop_overhead.max(0.0))),
        pop_overhead_quantiles_ms: pop_overhead_quantiles,
        sleep_overshoot_quantiles_ms: None,
        region_overhead_ms: region_overhead.max(0.0),
        region_overhead_quantiles_ms: region_overhead_quantiles,
        instantiate_ms: instantiate,
        region_compile_ms: None,
        exec_ms: exec,
        forward_edge_ms: forward_edge.max(0.0),
        run: CalibrationRun {
            requests: forward.len() as u64,
            local_requests: Some(local.len() as u64),
            concurrency: 0,
            one_way_delay_ms,
            errors,
            build: build.to_owned(),
        },
    })
}

/// Runs the calibration, its load sent by `load`, and returns the model (not written).
///
/// # Errors
/// When the nodes cannot start, a deploy fails, the load generator fails, or no call
/// reports the timings.
pub async fn measure(args: &CalibrateArgs, load: &Loadgen) -> anyhow::Result<CostModel> {
    let concurrency = args.concurrency.max(1);
    let (_proxy, cluster, _dir) = delayed_cluster(concurrency, args.one_way_delay_ms).await?;
    let result = async {
        deploy_echo_pair(&cluster, &reqwest::Client::new()).await?;
        measure_on(&cluster, args, load).await
    }
    .await;
    cluster.shutdown().await;
    result
}

/// The calibration on `cluster` (a [`delayed_cluster`] with `args`' delay, the echo pair
/// deployed): the forwarded path and the `sleep` overshoot ([`measure_remote`]), then the
/// local calls in one block. `agree` interleaves the local calls with its compared ones
/// instead ([`super::interleave`]).
///
/// # Errors
/// When the load generator fails, or no call reports the timings.
pub(crate) async fn measure_on(
    cluster: &testkit::cluster::DevCluster,
    args: &CalibrateArgs,
    load: &Loadgen,
) -> anyhow::Result<CostModel> {
    let remote = measure_remote(cluster, args, load).await?;
    let local = (local_warmup(args.local_requests), args.local_requests);
    let local = path_load(cluster, "popular", "pop/", local, args.concurrency.max(1));
    let local = load.run(&local).await?;
    model_of(&local.samples, &remote, args)
}

/// What the calibration measures besides the local calls.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// The forwarded calls.
    forward: Vec<Sample>,
    /// The `sleep` guest's overshoot, ms ([`sleep_overshoot`]).
    overshoot: Vec<f64>,
    /// A restarted region's compile of each function it runs first, ms
    /// ([`super::compile`]).
    compiles: Vec<f64>,
}

/// The forwarded calls and the `sleep` overshoot on `cluster`, then the popular function
/// warmed until it runs at the POP again: the local calls come right after, since at
/// 0.1 ms a call the host's level moves by more than 10% within the half minute these
/// take.
///
/// # Errors
/// When the load generator fails, or the `sleep` guest never runs at the POP.
pub(crate) async fn measure_remote(
    cluster: &testkit::cluster::DevCluster,
    args: &CalibrateArgs,
    load: &Loadgen,
) -> anyhow::Result<Remote> {
    let concurrency = args.concurrency.max(1);
    let forward = (forward_warmup(concurrency), args.requests);
    let forward = path_load(cluster, "rare", "region/", forward, concurrency);
    let forward = load.run(&forward).await?.samples;
    let http = reqwest::Client::new();
    let overshoot = sleep_overshoot(cluster, &http).await?;
    let compiles = super::compile::region_compiles(super::compile::PROBES).await?;
    // Half a minute without calls may have cooled the popular function.
    super::warm_until_local(&http, cluster).await?;
    Ok(Remote {
        forward,
        overshoot,
        compiles,
    })
}

/// The model of the calibration's `local` calls and `remote` measurements, taken with
/// `args`.
///
/// # Errors
/// When no call reports the timings.
pub(crate) fn model_of(
    local: &[Sample],
    remote: &Remote,
    args: &CalibrateArgs,
) -> anyhow::Result<CostModel> {
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut model = derive(local, &remote.forward, args.one_way_delay_ms, build)?;
    model.run.concurrency = args.concurrency.max(1);
    model.sleep_overshoot_quantiles_ms = quantiles(&remote.overshoot);
    model.region_compile_ms = median(remote.compiles.clone());
    Ok(model)
}

/// The wait the `sleep` guest is asked for in [`sleep_overshoot`], ms.
const NAP_MS: f64 = 2.0;
/// Calls of the `sleep` guest measured.
const NAPS: usize = 300;

/// How much longer than asked the `sleep` guest's waits take at the POP (`exec` minus
/// the wait), ms: it wakes on the runtime's timer tick. One call at a time, so nothing
/// but the timer adds to it.
async fn sleep_overshoot(
    cluster: &testkit::cluster::DevCluster,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<f64>> {
    let wasm = wat::parse_str(super::fleet::SLEEP_WAT)?;
    cluster
        .deploy(
            "nap",
            serde_json::json!({"placement": "edge", "abi": "reactor"}),
            wasm,
        )
        .await?;
    let url = format!("{}/v1/functions/nap/invoke", cluster.pop_url());
    let body = format!("{}", (NAP_MS * 1e3) as u64);
    let mut overshoot = Vec::with_capacity(NAPS);
    // Until it runs at the POP (its code prepared there), then NAPS timed waits.
    for _ in 0..(NAPS + 2000) {
        let resp = http
            .post(&url)
            .bearer_auth(&cluster.token)
            .body(body.clone())
            .send()
            .await?;
        let header = |name: &str| super::header(&resp, name);
        let local = header("x-strata-executed-at").starts_with("pop/");
        let exec = super::ServerTiming::parse(&header("server-timing")).exec;
        if let (true, Some(exec)) = (local && resp.status() == 200, exec) {
            overshoot.push((exec - NAP_MS).max(0.0));
            if overshoot.len() == NAPS {
                return Ok(overshoot);
            }
        }
    }
    anyhow::bail!("the sleep guest never ran at the POP {NAPS} times")
}

/// `v` at each of [`OVERHEAD_LEVELS`], non-decreasing; `None` when empty.
fn quantiles(v: &[f64]) -> Option<Vec<f64>> {
    if v.is_empty() {
        return None;
    }
    let mut floor = 0.0f64;
    Some(
        OVERHEAD_LEVELS
            .iter()
            .map(|&q| {
                floor = floor.max(percentile(v.to_vec(), q).unwrap_or(0.0));
                floor
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::ServerTiming;
    use super::*;
    use std::time::Duration;

    fn sample(latency_ms: f64, exec: f64, forward: Option<f64>) -> Sample {
        Sample {
            latency: Duration::from_secs_f64(latency_ms / 1e3),
            ok: true,
            timing: ServerTiming {
                exec: Some(exec),
                instantiate: Some(0.0),
                forward,
                compile: None,
            },
        }
    }

    #[test]
    fn server_timing_parses_and_skips_what_it_does_not_know() {
        let t = ServerTiming::parse("exec;dur=0.014, instantiate;dur=0.250, forward;dur=21.5");
        assert_eq!(
            t,
            ServerTiming {
                exec: Some(0.014),
                instantiate: Some(0.25),
                forward: Some(21.5),
                compile: None,
            }
        );
        let t = ServerTiming::parse("cache;desc=hit, exec;dur=NaN, exec, forward;dur=-1");
        assert_eq!(t, ServerTiming::default());
        // A region's run that compiled its module says how long.
        let t = ServerTiming::parse(
            "exec;dur=2.500, instantiate;dur=0.012, forward;dur=31.0, compile;dur=2.431",
        );
        assert_eq!(t.compile, Some(2.431));
        assert_eq!(t.forward, Some(31.0));
    }

    #[test]
    fn the_region_compile_is_the_median_of_the_restarted_regions_first_runs() {
        let args = CalibrateArgs {
            out: "model.toml".into(),
            requests: 1,
            local_requests: 1,
            concurrency: 1,
            one_way_delay_ms: 10.0,
        };
        let local = [sample(0.3, 0.05, None)];
        let remote = |compiles: Vec<f64>| Remote {
            forward: vec![sample(21.4, 0.05, Some(21.0))],
            overshoot: vec![0.1],
            compiles,
        };
        let m = model_of(&local, &remote(vec![2.6, 1.9, 2.2]), &args).expect("derives");
        assert_eq!(m.region_compile_ms, Some(2.2));
        let m = model_of(&local, &remote(vec![]), &args).expect("derives");
        assert_eq!(
            m.region_compile_ms, None,
            "not measured: the scenario's own"
        );
    }

    #[test]
    fn the_model_subtracts_what_the_nodes_report_from_what_the_client_saw() {
        let local: Vec<Sample> = [0.30, 0.25, 0.35].map(|l| sample(l, 0.05, None)).into();
        // RTT 20 ms; the POP saw 21.0 ms to the region (23.0 once), the client 0.4 ms more.
        let forward: Vec<Sample> = [21.0, 23.0, 21.0]
            .map(|f| sample(f + 0.4, 0.05, Some(f)))
            .into();
        let m = derive(&local, &forward, 10.0, "debug").expect("derives");
        assert!((m.exec_ms - 0.05).abs() < 1e-9);
        assert!((m.pop_overhead_ms - 0.25).abs() < 1e-6, "{m:?}");
        assert!(
            (m.pop_overhead_p99_ms.expect("a p99") - 0.30).abs() < 1e-6,
            "the spread is kept: {m:?}"
        );
        assert!((m.region_overhead_ms - 0.95).abs() < 1e-6, "{m:?}");
        // The slow forward is the region overhead's tail, not its median.
        let q = m.region_overhead_quantiles_ms.clone().expect("quantiles");
        assert_eq!(q.len(), OVERHEAD_LEVELS.len());
        assert!((q[4] - 0.95).abs() < 1e-6, "{q:?}");
        assert!((q[9] - 2.95).abs() < 1e-6, "{q:?}");
        assert!((m.forward_edge_ms - 0.4).abs() < 1e-6, "{m:?}");
        assert_eq!(m.instantiate_ms, None, "no cold start reported");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("model.toml");
        m.write(&file).expect("writes");
        assert_eq!(CostModel::load(&file).expect("loads"), m);
    }

    #[test]
    fn a_scenario_loads_the_model_in_place_of_the_fixed_overheads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = derive(
            &[sample(0.9, 0.05, None)],
            &[sample(30.0, 0.05, Some(28.0))],
            10.0,
            "release",
        )
        .expect("derives");
        m.instantiate_ms = Some(0.7);
        m.write(&dir.path().join("model.toml")).expect("writes");
        let file = dir.path().join("s.toml");
        let scenario = |model: &str| {
            format!(
                "name = \"m\"\nduration_s = 1\n{model}\n[topology]\npops = 1\nregions = 1\n\
                 [arrivals]\nkind = \"poisson\"\nrate_per_pop = 1\n"
            )
        };
        std::fs::write(&file, scenario("model = \"model.toml\"")).expect("write");
        let s = crate::scenario::Scenario::load(&file).expect("loads");
        assert!(
            (s.pop.overhead_ms - 0.85).abs() < 1e-6,
            "{}",
            s.pop.overhead_ms
        );
        assert!((s.region.overhead_ms - 7.95).abs() < 1e-6);
        assert_eq!(s.cold_start.instantiate_ms, 0.7);
        assert_eq!(s.pop.overhead_p99_ms, m.pop_overhead_p99_ms);
        std::fs::write(&file, scenario("")).expect("write");
        let s = crate::scenario::Scenario::load(&file).expect("loads");
        assert_eq!((s.pop.overhead_ms, s.region.overhead_ms), (0.2, 0.2));
        std::fs::write(&file, scenario("model = \"missing.toml\"")).expect("write");
        assert!(matches!(
            crate::scenario::Scenario::load(&file),
            Err(crate::scenario::ScenarioError::Invalid { field: "model", .. })
        ));
    }

    #[test]
    fn a_model_given_at_load_replaces_the_one_the_scenario_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let committed = derive(
            &[sample(0.9, 0.05, None)],
            &[sample(30.0, 0.05, Some(28.0))],
            10.0,
            "release",
        )
        .expect("derives");
        committed
            .write(&dir.path().join("model.toml"))
            .expect("writes");
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "name = \"m\"\nduration_s = 1\nmodel = \"model.toml\"\n[topology]\npops = 1\n\
             regions = 1\n[arrivals]\nkind = \"poisson\"\nrate_per_pop = 1\n",
        )
        .expect("write");
        // Calibrated in the same sitting: another overhead, exec and region spread.
        let fresh = derive(
            &[sample(0.3, 0.02, None)],
            &[
                sample(25.0, 0.02, Some(23.0)),
                sample(29.0, 0.02, Some(27.0)),
            ],
            10.0,
            "release",
        )
        .expect("derives");
        let s =
            crate::scenario::Scenario::load_with_model(&file, Some(fresh.clone())).expect("loads");
        assert!(
            (s.pop.overhead_ms - 0.28).abs() < 1e-6,
            "{}",
            s.pop.overhead_ms
        );
        assert!(
            (s.region.overhead_ms - 6.98).abs() < 1e-6,
            "{}",
            s.region.overhead_ms
        );
        assert_eq!(
            s.region.overhead_quantiles_ms,
            fresh.region_overhead_quantiles_ms
        );
        assert_eq!(s.cost_model.as_ref().map(|m| m.exec_ms), Some(0.02));
        // Without one, the file's.
        let s = crate::scenario::Scenario::load(&file).expect("loads");
        assert!((s.pop.overhead_ms - 0.85).abs() < 1e-6);
        assert_eq!(s.cost_model, Some(committed));
    }

    #[test]
    fn a_warm_calls_instantiation_stays_in_the_pop_overhead() {
        // Every invocation instantiates from the prepared module; the simulator charges
        // an instantiation only on a cold start, so the model keeps it in the overhead.
        let local: Vec<Sample> = [0.30, 0.25, 0.35]
            .map(|l| {
                let mut s = sample(l, 0.05, None);
                s.timing.instantiate = Some(0.01);
                s
            })
            .into();
        let forward = [sample(21.4, 0.05, Some(21.0))];
        let m = derive(&local, &forward, 10.0, "release").expect("derives");
        assert!((m.pop_overhead_ms - 0.25).abs() < 1e-6, "{m:?}");
        assert_eq!(m.instantiate_ms, Some(0.01));
    }

    #[test]
    fn a_run_without_timings_is_an_error_not_a_model() {
        let mut s = sample(1.0, 0.05, None);
        s.timing = ServerTiming::default();
        assert!(derive(&[s], &[s], 10.0, "debug").is_err());
    }
}
