//! `run --live`: a scenario scaled down to one POP and one region on loopback, with the
//! scenario's WAN latency injected between them by a [`DelayProxy`], compared with the
//! simulator run on the same scaled-down topology.
//!
//! What is compared is the latency model of the two paths every invocation takes: a warm
//! local run at the POP, and a forward to the region (RTT + region overhead + execution).
//! Both sides use one trivial function per path (the `echo` example), so the comparison
//! checks the simulator's cost model against real HTTP, QUIC and wasmtime, not the
//! placement dynamics (those are the same code on both sides).

use super::compare::Comparison;
use super::{LiveParams, Target, measure, warm_until_local};
use crate::report::Percentiles;
use crate::scenario::{Arrivals, Functions, Scenario, Topology};
use crate::sim::stats::Tier;
use serde_json::json;
use std::time::Duration;
use testkit::cluster::{DevCluster, StartOptions};
use testkit::proxy::DelayProxy;

/// Execution time of the `echo` example in the simulator's model, ms (measured in-process:
/// tens of microseconds).
const ECHO_EXEC_MS: f64 = 0.05;
/// How long the POP may take to reach its region through the proxy.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// Simulated arrival rate of the mirror run, per second: low enough that nothing queues.
const MIRROR_RATE: f64 = 100.0;

/// Runs `s` scaled down against real nodes and compares with the simulator.
///
/// # Errors
/// When the nodes cannot start, a deploy fails or the popular function never turns local.
pub async fn compare(s: &Scenario) -> anyhow::Result<Comparison> {
    let l = &s.live;
    let (_proxy, cluster, _dir) = delayed_cluster(l.concurrency, l.one_way_delay_ms).await?;
    let result = measure_paths(&cluster, l.requests, l.concurrency).await;
    cluster.shutdown().await;
    let (local, forward, errors) = result?;

    let rtt_ms = 2.0 * l.one_way_delay_ms;
    let sim_local = simulate_path(s, rtt_ms, false, Tier::Pop)?;
    let sim_forward = simulate_path(s, rtt_ms, true, Tier::Region)?;
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
        l.requests,
        l.concurrency,
        l.one_way_delay_ms,
        errors,
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

async fn measure_paths(
    c: &DevCluster,
    requests: u64,
    concurrency: usize,
) -> anyhow::Result<(super::PathReport, super::PathReport, u64)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    deploy_echo_pair(c, &http).await?;
    let params = LiveParams {
        requests,
        concurrency,
    };
    let target = |function: &str, expect| Target {
        url: format!("{}/v1/functions/{function}/invoke", c.pop_url()),
        token: c.token.clone(),
        expect,
    };
    // One untimed pass over each path, as the simulator's steady state has no onset
    // either: the forward path's first (cold) call, and the local path's first burst at
    // full concurrency right after the function turned local (new client connections,
    // the first instances of the pool), which otherwise puts 3-28 ms in the local p99
    // although the POP reports microseconds of `exec` and `instantiate` for them.
    super::drive(
        &http,
        &target("rare", "region/"),
        concurrency as u64,
        concurrency,
    )
    .await?;
    super::drive(
        &http,
        &target("popular", "pop/"),
        concurrency as u64 * 4,
        concurrency,
    )
    .await?;
    let local = measure(&http, &target("popular", "pop/"), params, "pop-local").await?;
    let forward = measure(&http, &target("rare", "region/"), params, "pop-forward").await?;
    let errors = local.errors + forward.errors;
    Ok((local, forward, errors))
}

/// The simulator on the live run's topology: one POP, one region `rtt_ms` away, one
/// function that is popular (or pinned to the region), the scenario's overheads and
/// cold-start costs.
fn simulate_path(
    s: &Scenario,
    rtt_ms: f64,
    pinned: bool,
    tier: Tier,
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
        exec_median_ms: ECHO_EXEC_MS,
        exec_sigma: 0.0,
        median_spread: 0.0,
        memory_mb: vec![128],
        region_pinned_fraction: if pinned { 1.0 } else { 0.0 },
        ..Functions::default()
    };
    m.arrivals = Arrivals::Poisson {
        rate_per_pop: MIRROR_RATE,
    };
    m.duration_s = (s.live.requests as f64 / MIRROR_RATE).max(10.0);
    m.sample_interval_s = None;
    m.flash_crowd.clear();
    m.region_failure.clear();
    m.canary = None;
    let outcome = crate::sim::simulate(&m, None, &mut |_| {})?;
    Ok(Percentiles::of(&outcome.recorder.latency[tier.index()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_live_run_compares_both_paths_with_the_simulator() {
        let s = Scenario::parse(
            r#"
            name = "live"
            duration_s = 10
            [topology]
            pops = 1
            regions = 1
            [arrivals]
            kind = "poisson"
            rate_per_pop = 10
            [live]
            requests = 200
            concurrency = 4
            one_way_delay_ms = 10
            "#,
        )
        .expect("valid");
        let c = compare(&s).await.expect("live run completes");
        assert_eq!(c.errors, 0, "{c:?}");
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
}
