//! The warm-pool ramp comparison (issue 5 item 3): the same binary, a region and a POP on
//! loopback, one reactor function whose calls each sleep a fixed time (so concurrency is
//! arrival rate × that time, Little's law, without burning the CPU), and an open-loop
//! arrival rate that doubles every step. Run once with the POP's trend-driven warm pools
//! and once with purely reactive ones (keep-alive only), with the same pool size, the
//! same memory and the same keep-alive; count the POP's cold starts
//! (`x-strata-start: cold` with `x-strata-executed-at: pop/...`) in each.
//!
//! Bounded: at most `MAX_IN_FLIGHT` requests are outstanding; an arrival beyond that is
//! counted as skipped, not queued.

use anyhow::{bail, ensure};
use common::policy::{WarmConfig, WarmMode};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use testkit::cluster::DevCluster;
use tokio::task::JoinSet;

/// Requests outstanding at once, at most.
const MAX_IN_FLIGHT: usize = 512;

/// A reactor whose every call sleeps 20 ms in `poll_oneoff` (one monotonic clock
/// subscription) and returns 0.
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "strata_handle") (result i32)
    ;; subscription at 0: userdata 0, tag clock (0) at 8, clock id monotonic (1) at 16,
    ;; timeout 20 ms at 24, precision 0 at 32, flags 0 (relative) at 40.
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 20000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.const 0)))"#;

/// Shape of the ramp.
#[derive(Debug, Clone, Copy)]
pub struct RampParams {
    /// Arrival rate of the first step, requests/s.
    pub start_rps: f64,
    /// Number of steps; the rate doubles from one to the next.
    pub steps: u32,
    /// Length of one step.
    pub step: Duration,
}

/// What one mode's run observed.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    /// `trend` or `reactive`.
    pub mode: &'static str,
    /// Requests sent during the ramp.
    pub requests: u64,
    /// Of those, run at the POP.
    pub local: u64,
    /// Of the local ones, cold starts.
    pub cold: u64,
    /// Forwarded to the region (over capacity, or not local yet).
    pub forwarded: u64,
    /// Failed (not 200).
    pub errors: u64,
    /// Arrivals not sent because `MAX_IN_FLIGHT` requests were outstanding.
    pub skipped: u64,
}

/// Runs the ramp with each mode in turn, same parameters.
///
/// # Errors
/// When the nodes cannot start or the function never runs at the POP.
pub async fn compare(params: RampParams) -> anyhow::Result<Vec<RampReport>> {
    let mut out = Vec::new();
    for mode in [WarmMode::Reactive, WarmMode::Trend] {
        out.push(run(params, mode).await?);
    }
    Ok(out)
}

/// One run of the ramp with warm pools in `mode`.
///
/// # Errors
/// As [`compare`].
pub async fn run(params: RampParams, mode: WarmMode) -> anyhow::Result<RampReport> {
    let dir = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut pop = pop_node::PopConfig {
        http_listen: any,
        local_concurrency: 64,
        warm: WarmConfig {
            mode,
            tick_ms: 250,
            // About one second ahead: the next step's rate is already in sight.
            horizon_ticks: 4,
            max_pool: 16,
            ..WarmConfig::default()
        },
        ..Default::default()
    };
    // Same maximum for both modes: 16 instances of 16 MiB, 60 s keep-alive.
    pop.sandbox.warm_pool_size = 16;
    pop.sandbox.max_warm_pools = 16;
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        ..Default::default()
    };
    let cluster = DevCluster::start(dir.path(), region, pop).await?;
    let wasm = wat::parse_str(SLEEPER)?;
    cluster
        .deploy("sleeper", json!({"abi": "reactor", "memory_mb": 16}), wasm)
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let url = format!("{}/v1/functions/sleeper/invoke", cluster.pop_url());
    let mut local = false;
    for _ in 0..1000 {
        let resp = http.post(&url).bearer_auth(&cluster.token).send().await?;
        ensure!(resp.status() == 200, "warm-up failed: {}", resp.status());
        if executed_at(&resp).starts_with("pop/") {
            local = true;
            break;
        }
    }
    if !local {
        bail!("the function never ran at the POP");
    }
    let counts = Arc::new(Counts::default());
    let mut tasks = JoinSet::new();
    let mut skipped = 0;
    let mut requests = 0;
    for s in 0..params.steps {
        let rate = params.start_rps * f64::from(1u32 << s.min(20));
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let end = tokio::time::Instant::now() + params.step;
        while tokio::time::Instant::now() < end {
            every.tick().await;
            while tasks.try_join_next().is_some() {}
            if tasks.len() >= MAX_IN_FLIGHT {
                skipped += 1;
                continue;
            }
            requests += 1;
            let (http, url, token, counts) = (
                http.clone(),
                url.clone(),
                cluster.token.clone(),
                Arc::clone(&counts),
            );
            tasks.spawn(async move {
                let resp = http.post(&url).bearer_auth(&token).send().await;
                counts.record(resp);
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    cluster.shutdown().await;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Ok(RampReport {
        mode: match mode {
            WarmMode::Trend => "trend",
            WarmMode::Reactive => "reactive",
        },
        requests,
        local: load(&counts.local),
        cold: load(&counts.cold),
        forwarded: load(&counts.forwarded),
        errors: load(&counts.errors),
        skipped,
    })
}

#[derive(Debug, Default)]
struct Counts {
    local: AtomicU64,
    cold: AtomicU64,
    forwarded: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn record(&self, resp: reqwest::Result<reqwest::Response>) {
        let resp = match resp {
            Ok(r) if r.status() == 200 => r,
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if executed_at(&resp).starts_with("pop/") {
            self.local.fetch_add(1, Ordering::Relaxed);
            let start = resp
                .headers()
                .get("x-strata-start")
                .and_then(|v| v.to_str().ok());
            if start == Some("cold") {
                self.cold.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn executed_at(resp: &reqwest::Response) -> &str {
    resp.headers()
        .get("x-strata-executed-at")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The reports as a Markdown table.
pub fn table(reports: &[RampReport]) -> String {
    let mut out = String::from(
        "| warm pools | requests | at POP | cold starts at POP | forwarded | errors | skipped |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.mode, r.requests, r.local, r.cold, r.forwarded, r.errors, r.skipped
        ));
    }
    out
}
