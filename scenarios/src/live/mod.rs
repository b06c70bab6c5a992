//! Live latency runs: a region and a POP on loopback, driven over real HTTP with a bounded
//! number of requests at a fixed concurrency; reports requests/s and p50/p90/p99 per path.
//!
//! Paths measured in one run, against the same nodes:
//! - `pop-local`: a popular function the POP runs itself (warmed until it does);
//! - `pop-forward`: a function pinned to the region, so the POP forwards every call;
//! - `region-direct`: the same function invoked at the region's own HTTP edge, the
//!   baseline that `pop-forward` is compared with to get the forwarding overhead;
//! - `axum-baseline`: a plain axum handler answering the same body, no Strata at all: the
//!   ceiling DESIGN §7 compares the POP's local path with.
//!
//! [`deploy_under_load`] measures dynamic deployment (DESIGN §6): the POP-local path once
//! steady and once while `$LATEST` of the same function is redeployed over and over;
//! every request must still answer 200 from the POP.
//!
//! [`ramp`] compares trend-driven and reactive warm pools on a doubling arrival rate.

pub mod calibrate;
pub mod compare;
pub mod compile;
pub mod fleet;
pub mod interleave;
pub mod keepalive;
pub mod load;
pub mod ramp;
pub mod replay;
pub mod scenario;
pub mod workload;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::cluster::DevCluster;

/// Parameters of a live run.
#[derive(Debug, Clone, Copy)]
pub struct LiveParams {
    /// Requests per path.
    pub requests: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

/// The measurements of one path.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// Which path.
    pub path: &'static str,
    /// Requests sent.
    pub requests: u64,
    /// Requests that did not return 200 from the expected tier.
    pub errors: u64,
    /// Completed requests per second of wall time.
    pub requests_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
}

pub(crate) const PAYLOAD: &str = "ping";

/// Runs every path and returns their reports.
///
/// # Errors
/// When the nodes cannot start, the functions cannot be deployed, or the popular function
/// never becomes local.
pub async fn run(params: LiveParams) -> anyhow::Result<Vec<PathReport>> {
    let dir = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        max_concurrency: params.concurrency.max(1) * 2,
        ..Default::default()
    };
    let pop = pop_node::PopConfig {
        http_listen: any,
        local_concurrency: params.concurrency.max(1) * 2,
        ..Default::default()
    };
    let cluster = DevCluster::start(dir.path(), region, pop).await?;
    let echo = wat::parse_str(include_str!("../../../examples/echo.wat"))?;
    cluster.deploy("popular", json!({}), echo.clone()).await?;
    cluster
        .deploy("rare", json!({"placement": "region"}), echo)
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(params.concurrency.max(1))
        .build()?;
    warm_until_local(&http, &cluster).await?;

    let pop_url = cluster.pop_url();
    let region_url = cluster.region_url();
    let (baseline_url, baseline) = baseline_server().await?;
    let mut reports = Vec::new();
    for (path, base, function, expect) in [
        ("pop-local", &pop_url, "popular", "pop/"),
        ("pop-forward", &pop_url, "rare", "region/"),
        ("region-direct", &region_url, "rare", "region/"),
        ("axum-baseline", &baseline_url, "any", "baseline"),
    ] {
        let target = Target {
            url: format!("{base}/v1/functions/{function}/invoke"),
            token: cluster.token.clone(),
            expect,
        };
        // A short warm-up per path (connections, caches), not measured.
        drive(
            &http,
            &target,
            params.concurrency.max(1) as u64 * 4,
            params.concurrency,
        )
        .await?;
        reports.push(measure(&http, &target, params, path).await?);
    }
    baseline.abort();
    cluster.shutdown().await;
    Ok(reports)
}

/// `wasm` with a custom section carrying `n`: same behaviour, a new digest, so each
/// variant is different code the POP must fetch and prepare on its own.
pub(crate) fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    // Custom section: id 0, size 6, name of length 1 ("v"), four payload bytes.
    let mut out = wasm.to_vec();
    out.extend_from_slice(&[0, 6, 1, b'v']);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

/// Measures `pop-local` steady, then `pop-local-deploying` while `popular` is redeployed
/// (a new digest each time) for the whole measurement; returns both reports and the
/// number of deploys made during the second.
///
/// # Errors
/// As [`run`], or when a deploy fails.
pub async fn deploy_under_load(params: LiveParams) -> anyhow::Result<(Vec<PathReport>, u32)> {
    let dir = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        max_concurrency: params.concurrency.max(1) * 2,
        ..Default::default()
    };
    let pop = pop_node::PopConfig {
        http_listen: any,
        local_concurrency: params.concurrency.max(1) * 2,
        ..Default::default()
    };
    let cluster = DevCluster::start(dir.path(), region, pop).await?;
    let echo = wat::parse_str(include_str!("../../../examples/echo.wat"))?;
    cluster.deploy("popular", json!({}), echo.clone()).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(params.concurrency.max(1))
        .build()?;
    warm_until_local(&http, &cluster).await?;
    let target = Target {
        url: format!("{}/v1/functions/popular/invoke", cluster.pop_url()),
        token: cluster.token.clone(),
        expect: "pop/",
    };
    drive(
        &http,
        &target,
        params.concurrency.max(1) as u64 * 4,
        params.concurrency,
    )
    .await?;
    let steady = measure(&http, &target, params, "pop-local-steady").await?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let deployer = async {
        let mut deploys = 0u32;
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            let code = variant(&echo, deploys % 250 + 1);
            cluster.deploy("popular", json!({}), code).await?;
            deploys += 1;
        }
        anyhow::Ok(deploys)
    };
    let measured = async {
        let r = measure(&http, &target, params, "pop-local-deploying").await;
        done.store(true, std::sync::atomic::Ordering::Release);
        r
    };
    let (deploys, deploying) = tokio::join!(deployer, measured);
    cluster.shutdown().await;
    Ok((vec![steady, deploying?], deploys?))
}

/// A plain axum server echoing the body with the header the checks look for.
async fn baseline_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/functions/{name}/invoke",
        post(
            |body: axum::body::Bytes| async move { ([("x-strata-executed-at", "baseline")], body) },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, handle))
}

pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) expect: &'static str,
}

pub(crate) async fn warm_until_local(http: &reqwest::Client, c: &DevCluster) -> anyhow::Result<()> {
    let url = format!("{}/v1/functions/popular/invoke", c.pop_url());
    for _ in 0..1000 {
        let resp = http
            .post(&url)
            .bearer_auth(&c.token)
            .body(PAYLOAD)
            .send()
            .await?;
        let at = resp
            .headers()
            .get("x-strata-executed-at")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            resp.status() == 200,
            "warm-up request failed: {}",
            resp.status()
        );
        if at.starts_with("pop/") {
            return Ok(());
        }
    }
    bail!("the popular function never ran at the POP")
}

/// Sends `n` requests with `concurrency` in flight; returns per-request (latency, ok).
pub(crate) async fn drive(
    http: &reqwest::Client,
    t: &Target,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<(Duration, bool)>> {
    let samples = drive_timed(http, t, n, concurrency).await?;
    Ok(samples.into_iter().map(|s| (s.latency, s.ok)).collect())
}

pub use testkit::header;

/// One request of [`drive_timed`] or of a [`load`] run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// End to end, as the client saw it.
    pub(crate) latency: Duration,
    /// 200 from the expected tier with the payload echoed.
    pub(crate) ok: bool,
    /// The response's `server-timing`.
    pub(crate) timing: ServerTiming,
}

/// The durations of a response's `server-timing` header, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServerTiming {
    /// `exec`: the guest ran (at the tier that ran it).
    pub(crate) exec: Option<f64>,
    /// `instantiate`: the instance was created (every invocation creates one from the
    /// prepared module; a cold one prepared it first).
    pub(crate) instantiate: Option<f64>,
    /// `forward`: at a POP that forwarded, the round trip to the region.
    pub(crate) forward: Option<f64>,
    /// `compile`: the region compiled the function's module for this run (its first since
    /// the region started).
    #[serde(default)]
    pub(crate) compile: Option<f64>,
}

impl ServerTiming {
    /// Parses `exec;dur=0.014, instantiate;dur=0.000, forward;dur=20.5`; unknown metrics
    /// and malformed entries are skipped.
    pub(crate) fn parse(header: &str) -> Self {
        let mut t = Self::default();
        for entry in header.split(',') {
            let mut parts = entry.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let dur = parts
                .find_map(|p| p.strip_prefix("dur="))
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0);
            match name {
                "exec" => t.exec = dur,
                "instantiate" => t.instantiate = dur,
                "forward" => t.forward = dur,
                "compile" => t.compile = dur,
                _ => {}
            }
        }
        t
    }
}

/// Sends `n` requests to `t`, `concurrency` at a time, keeping each one's latency,
/// verdict and `server-timing`.
pub(crate) async fn drive_timed(
    http: &reqwest::Client,
    t: &Target,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Sample>> {
    let results = futures::stream::iter(0..n)
        .map(|_| async move {
            let started = Instant::now();
            let resp = http
                .post(&t.url)
                .bearer_auth(&t.token)
                .body(PAYLOAD)
                .send()
                .await;
            let (ok, timing) = match resp {
                Ok(r) => {
                    let header = |name: &str| {
                        r.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let at_ok =
                        header("x-strata-executed-at").is_some_and(|v| v.starts_with(t.expect));
                    let timing = header("server-timing")
                        .map(|v| ServerTiming::parse(&v))
                        .unwrap_or_default();
                    let status_ok = r.status() == 200;
                    let body_ok = r
                        .bytes()
                        .await
                        .is_ok_and(|b| b.as_ref() == PAYLOAD.as_bytes());
                    (at_ok && status_ok && body_ok, timing)
                }
                Err(_) => (false, ServerTiming::default()),
            };
            Sample {
                latency: started.elapsed(),
                ok,
                timing,
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    Ok(results)
}

pub(crate) async fn measure(
    http: &reqwest::Client,
    t: &Target,
    params: LiveParams,
    path: &'static str,
) -> anyhow::Result<PathReport> {
    let started = Instant::now();
    let results = drive_timed(http, t, params.requests, params.concurrency).await?;
    path_report(path, &results, started.elapsed())
}

/// The report of `path` from its requests' samples, sent in `wall`.
///
/// # Errors
/// When the histogram cannot be built.
pub(crate) fn path_report(
    path: &'static str,
    samples: &[Sample],
    wall: Duration,
) -> anyhow::Result<PathReport> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let mut errors = 0;
    for s in samples {
        if !s.ok {
            errors += 1;
        }
        h.saturating_record(s.latency.as_micros().max(1) as u64);
    }
    Ok(PathReport {
        path,
        requests: samples.len() as u64,
        errors,
        requests_per_sec: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
    })
}

/// Renders reports as a Markdown table.
pub fn table(reports: &[PathReport]) -> String {
    let mut out = String::from(
        "| path | requests | errors | req/s | p50 (us) | p90 (us) | p99 (us) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} |\n",
            r.path, r.requests, r.errors, r.requests_per_sec, r.p50_us, r.p90_us, r.p99_us
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_live_run_measures_every_path_at_the_right_tier() {
        let reports = run(LiveParams {
            requests: 20,
            concurrency: 4,
        })
        .await
        .expect("live run completes");
        let paths: Vec<_> = reports.iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            ["pop-local", "pop-forward", "region-direct", "axum-baseline"]
        );
        for r in &reports {
            assert_eq!(
                r.errors, 0,
                "{} had failures or ran at the wrong tier",
                r.path
            );
            assert!(r.p50_us <= r.p99_us);
        }
        assert!(table(&reports).contains("| pop-forward | 20 | 0 |"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redeploying_under_load_keeps_every_request_at_the_pop() {
        let (reports, deploys) = deploy_under_load(LiveParams {
            requests: 200,
            concurrency: 4,
        })
        .await
        .expect("deploy run completes");
        assert!(deploys >= 1);
        for r in &reports {
            assert_eq!(r.errors, 0, "{} had failures or left the POP", r.path);
        }
    }
}
