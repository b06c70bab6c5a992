//! `run --live`: a scenario scaled down to one POP and one region on loopback, with the
//! scenario's WAN latency injected between them by a [`DelayProxy`], compared with the
//! simulator run on the same scaled-down topology.
//!
//! What is compared is the latency model of the two paths every invocation takes: a warm
//! local run at the POP, and a forward to the region (RTT + region overhead + execution).
//! Both sides use one trivial function per path (the `echo` example), so the comparison
//! checks the simulator's cost model against real HTTP, QUIC and wasmtime, not the
//! placement dynamics (those are the same code on both sides).

use super::calibrate::CostModel;
use super::compare::Comparison;
use super::interleave::{self, SameSitting, Side};
use super::load::{LoadOutcome, LoadSpec, Loadgen};
use super::{PathReport, path_report, warm_until_local};
use crate::report::Percentiles;
use crate::scenario::{Arrivals, Functions, LiveSpec, Scenario, Topology};
use crate::sim::stats::Tier;
use serde_json::json;
use std::time::Duration;
use testkit::cluster::{DevCluster, StartOptions};
use testkit::proxy::DelayProxy;

/// Execution time of the `echo` example in the simulator's model, ms, when the scenario
/// loads no cost model (a model's `exec_ms` is the measured one: 6 µs in a release
/// build, which next to a 0.1 ms local path is not negligible).
const ECHO_EXEC_MS: f64 = 0.05;
/// How long the POP may take to reach its region through the proxy.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// Simulated arrival rate of the mirror run, per second: low enough that nothing queues.
const MIRROR_RATE: f64 = 100.0;
/// Simulated calls per live call of a path: the simulator's percentiles are its model's,
/// not another sample's. With as many draws as live calls the simulated POP p99 moved by
/// ±5-15% from draw to draw alone (the 99th percentile of the calls sits where the
/// calibrated overhead climbs steeply to its 99.5th), as much as the tolerance.
const SIM_DRAWS_PER_CALL: u64 = 10;
/// The bound of one path's load run (warm-up and measured requests): at one in flight
/// the forwarded path's 400 requests take about 10 s, the local path's 20 000 (and as
/// many untimed) a few seconds.
pub(crate) const PATH_WITHIN: Duration = Duration::from_secs(120);

/// Both paths as measured on real nodes, to be compared with the simulator ([`judge`]).
#[derive(Debug, Clone)]
pub struct MeasuredPaths {
    local: PathReport,
    forward: PathReport,
    local_rounds: Vec<(Side, u64)>,
}

impl MeasuredPaths {
    /// The rounds the local path's calls were sent in, in order: side and measured calls
    /// (one compared round without a calibration; interleaved with the calibration's
    /// local calls with one, [`super::interleave`]).
    pub fn local_rounds(&self) -> &[(Side, u64)] {
        &self.local_rounds
    }
}

/// Runs `s` scaled down against real nodes, the load sent by `load`, and compares with
/// the simulator.
///
/// # Errors
/// When the nodes cannot start, a deploy fails, the popular function never turns local,
/// or the load generator fails.
pub async fn compare(s: &Scenario, load: &Loadgen) -> anyhow::Result<Comparison> {
    let (_, measured) = measure(s, load, None).await?;
    judge(s, &measured)
}

/// Measures both paths of `s` on one POP and one region; with `calibration`, also takes
/// `calibrate`'s measurement on the same nodes, its local calls interleaved with the
/// compared ones in alternating rounds ([`super::interleave`]), and returns its model
/// too: `agree` judges the paths against a model of the very nodes, and the very
/// seconds, it measured.
///
/// # Errors
/// As [`compare`], and when the calibration reports no timings.
pub async fn measure(
    s: &Scenario,
    load: &Loadgen,
    calibration: Option<&SameSitting>,
) -> anyhow::Result<(Option<CostModel>, MeasuredPaths)> {
    let l = &s.live;
    let (_proxy, cluster, _dir) = delayed_cluster(l.concurrency, l.one_way_delay_ms).await?;
    let result = async {
        deploy_echo_pair(&cluster, &reqwest::Client::new()).await?;
        let (model, local, local_rounds) = match calibration {
            Some(args) => {
                let i = interleave::measure(&cluster, args, load, l.local_requests).await?;
                (Some(i.model), i.local, i.rounds)
            }
            None => {
                let local = measure_local(&cluster, load, l).await?;
                let rounds = vec![(Side::Compared, local.requests)];
                (None, local, rounds)
            }
        };
        let forward = measure_forward(&cluster, load, l).await?;
        let measured = MeasuredPaths {
            local,
            forward,
            local_rounds,
        };
        anyhow::Ok((model, measured))
    }
    .await;
    cluster.shutdown().await;
    result
}

/// Compares `measured` with the simulator on `s`'s paths (its cost model in effect).
///
/// # Errors
/// When the simulation fails.
pub fn judge(s: &Scenario, measured: &MeasuredPaths) -> anyhow::Result<Comparison> {
    let l = &s.live;
    let (local, forward) = (&measured.local, &measured.forward);
    let rtt_ms = 2.0 * l.one_way_delay_ms;
    let exec_ms = s.cost_model.as_ref().map_or(ECHO_EXEC_MS, |m| m.exec_ms);
    let mirror = |pinned, tier, requests| {
        simulate_path(
            s,
            rtt_ms,
            exec_ms,
            pinned,
            tier,
            requests * SIM_DRAWS_PER_CALL,
        )
    };
    let sim_local = mirror(false, Tier::Pop, l.local_requests)?;
    let sim_forward = mirror(true, Tier::Region, l.requests)?;
    let ms = |us: u64| us as f64 / 1e3;
    let values = [
        ("pop", "p50", sim_local.p50, ms(local.p50_us)),
        ("pop", "p90", sim_local.p90, ms(local.p90_us)),
        ("pop", "p99", sim_local.p99, ms(local.p99_us)),
        ("region", "p50", sim_forward.p50, ms(forward.p50_us)),
        ("region", "p90", sim_forward.p90, ms(forward.p90_us)),
        ("region", "p99", sim_forward.p99, ms(forward.p99_us)),
    ];
    Ok(Comparison::new(
        [local.requests, forward.requests],
        l.concurrency,
        l.one_way_delay_ms,
        local.errors + forward.errors,
        &values,
        l.tolerance(),
    ))
}

/// One POP and one region on loopback with `one_way_delay_ms` injected each way between
/// them, sized for `concurrency` requests in flight, the POP connected. Keep the proxy and
/// the directory alive as long as the cluster.
///
/// # Errors
/// When the proxy or the nodes cannot start, or the POP never reaches the region.
pub(crate) async fn delayed_cluster(
    concurrency: usize,
    one_way_delay_ms: f64,
) -> anyhow::Result<(DelayProxy, DevCluster, tempfile::TempDir)> {
    let delay = Duration::from_secs_f64(one_way_delay_ms / 1e3);
    let proxy = DelayProxy::start(delay).await?;
    let dir = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        max_concurrency: concurrency * 2,
        ..Default::default()
    };
    let pop = pop_node::PopConfig {
        http_listen: any,
        local_concurrency: concurrency * 2,
        ..Default::default()
    };
    let options = StartOptions {
        region_via: Some(proxy.addr()),
        ..StartOptions::default()
    };
    let cluster = DevCluster::start_with(dir.path(), region, pop, options).await?;
    proxy.set_upstream(cluster.region.quic_addr);
    testkit::cluster::wait_connected(&cluster.pop, CONNECT_WITHIN).await?;
    // Operators can watch the run live on the region's capacity dashboard.
    eprintln!(
        "live run: dashboard at {}/dashboard#token={}",
        cluster.region_url(),
        cluster.admin_token
    );
    Ok((proxy, cluster, dir))
}

pub(crate) async fn deploy_echo_pair(c: &DevCluster, http: &reqwest::Client) -> anyhow::Result<()> {
    let echo = wat::parse_str(testkit::cluster::EXAMPLES[1].1)?;
    c.deploy("popular", json!({}), echo.clone()).await?;
    c.deploy("rare", json!({"placement": "region"}), echo)
        .await?;
    warm_until_local(http, c).await
}

/// What `strata-load` is asked for one path of `c`: `function` at the POP, answered by
/// the tier `expect`, `requests` measured after an untimed pass of `warmup`.
///
/// The untimed pass is there because the simulator's steady state has no onset either:
/// the forward path's first (cold) call, and the local path's first burst at full
/// concurrency right after the function turned local (new client connections, the first
/// instances of the pool), which otherwise puts 3-28 ms in the local p99 although the
/// POP reports microseconds of `exec` and `instantiate` for them.
pub(crate) fn path_load(
    c: &DevCluster,
    function: &str,
    expect: &str,
    (warmup, requests): (u64, u64),
    concurrency: usize,
) -> LoadSpec {
    LoadSpec {
        url: format!("{}/v1/functions/{function}/invoke", c.pop_url()),
        token: c.token.clone(),
        expect: expect.to_owned(),
        warmup,
        requests,
        rounds: Vec::new(),
        concurrency,
        within: PATH_WITHIN,
    }
}

/// The local path's report (the echo pair deployed): `l.local_requests` warm local calls,
/// `l.concurrency` in flight.
async fn measure_local(c: &DevCluster, load: &Loadgen, l: &LiveSpec) -> anyhow::Result<PathReport> {
    let local = (local_warmup(l.local_requests), l.local_requests);
    let local = path_load(c, "popular", "pop/", local, l.concurrency);
    report("pop-local", &load.run(&local).await?)
}

/// The forwarded path's report: `l.requests` forwards, `l.concurrency` in flight.
async fn measure_forward(
    c: &DevCluster,
    load: &Loadgen,
    l: &LiveSpec,
) -> anyhow::Result<PathReport> {
    let forward = (forward_warmup(l.concurrency), l.requests);
    let forward = path_load(c, "rare", "region/", forward, l.concurrency);
    report("pop-forward", &load.run(&forward).await?)
}

/// The local path's untimed pass: as many calls as it measures. In the seconds after the
/// function turned local, its first 4000 calls (at one in flight, well under a second)
/// were 5-15% slower at p50 than the next 4000 on the same nodes, in two runs of three.
pub(crate) fn local_warmup(requests: u64) -> u64 {
    requests
}

/// The forwarded path's untimed pass: four calls per connection (its first, cold call
/// and the connections' set-up).
pub(crate) fn forward_warmup(concurrency: usize) -> u64 {
    concurrency as u64 * 4
}

fn report(path: &'static str, o: &LoadOutcome) -> anyhow::Result<PathReport> {
    anyhow::ensure!(o.sent() > 0, "{path}: the load generator sent nothing");
    path_report(path, &o.samples, o.wall)
}

/// The simulator on the live run's topology: one POP, one region `rtt_ms` away, one
/// function that is popular (or pinned to the region), the scenario's overheads and
/// cold-start costs.
fn simulate_path(
    s: &Scenario,
    rtt_ms: f64,
    exec_ms: f64,
    pinned: bool,
    tier: Tier,
    requests: u64,
) -> anyhow::Result<Percentiles> {
    let mut m = s.clone();
    m.topology = Topology {
        pops: 1,
        regions: 1,
        rtt_ms: Some(vec![vec![rtt_ms]]),
        min_rtt_ms: rtt_ms,
        max_rtt_ms: rtt_ms,
    };
    m.functions = Functions {
        count: 1,
        tenants: 1,
        exec_median_ms: exec_ms,
        exec_sigma: 0.0,
        median_spread: 0.0,
        memory_mb: vec![128],
        region_pinned_fraction: if pinned { 1.0 } else { 0.0 },
        ..Functions::default()
    };
    m.arrivals = Arrivals::Poisson {
        rate_per_pop: MIRROR_RATE,
    };
    m.duration_s = (requests as f64 / MIRROR_RATE).max(10.0);
    m.sample_interval_s = None;
    m.flash_crowd.clear();
    m.region_failure.clear();
    m.canary = None;
    let outcome = crate::sim::simulate(&m, None, &mut |_| {})?;
    Ok(Percentiles::of(&outcome.recorder.latency[tier.index()]))
}
