//! `scenarios fault region-kill`: what a region's death costs a POP, measured on the
//! real binaries.
//!
//! A region and a POP run as separate processes. Closed-loop load on two functions of one
//! tenant, `near` (placement `edge`: runs at the POP) and `far` (placement `region`:
//! forwarded), runs steady, then the region is killed with SIGKILL (no shutdown, no close
//! frame), restarted on the same state directory and ports `down` later, and the load
//! goes on until `after` past the region's return. Reported: status counts per function,
//! the longest stretch without a `far` completion of 200 (the zero-completion gap), when
//! the first fast 503 came, time from the region listening again to the first `far` 200
//! (recovery), and the `near` p99 steady versus during the fault.

use super::{Node, layout, tenant, wait_healthy};
use anyhow::Context as _;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const HELLO: &str = include_str!("../../../examples/hello.wat");

/// Shape of a run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Closed-loop connections per function.
    pub connections: usize,
    /// Load before the kill.
    pub steady: Duration,
    /// Time between the kill and the restart.
    pub down: Duration,
    /// Load after the region is healthy again.
    pub after: Duration,
}

/// One request: which function, when sent and answered, its status.
#[derive(Debug, Clone, Copy)]
struct Sample {
    far: bool,
    sent: Instant,
    done: Instant,
    status: u16,
}

/// What a run measured. Times are milliseconds relative to the kill unless named
/// otherwise.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `near`'s statuses and counts.
    pub near_statuses: BTreeMap<u16, u64>,
    /// `far`'s statuses and counts.
    pub far_statuses: BTreeMap<u16, u64>,
    /// The longest time without a `far` 200 completing, around the fault (ms).
    pub far_zero_completion_gap_ms: f64,
    /// When the first `far` 503 came back after the kill (ms after the kill).
    pub first_503_after_kill_ms: Option<f64>,
    /// When the restarted region answered its health check (ms after the kill).
    pub region_listening_ms: f64,
    /// From the region listening again to the first `far` 200 completing (ms).
    pub recovery_ms: Option<f64>,
    /// `near` p99 before the kill (ms).
    pub near_p99_steady_ms: f64,
    /// `near` p99 from the kill to the recovery (ms).
    pub near_p99_fault_ms: f64,
    /// `near` worst latency from the kill to the recovery (ms).
    pub near_max_fault_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn p99(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort();
    ms(v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1])
}

async fn load(
    http: reqwest::Client,
    url: String,
    token: String,
    far: bool,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let sent = Instant::now();
        let status = match http.post(&url).bearer_auth(&token).body("x").send().await {
            Ok(r) => r.status().as_u16(),
            // Transport failure to the POP: counted as status 0.
            Err(_) => 0,
        };
        let done = Instant::now();
        samples.push(Sample {
            far,
            sent,
            done,
            status,
        });
        if status == 503 {
            // As a device honouring retry-after would, though far sooner.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    samples
}

/// Runs the fault once under a fresh temporary directory.
///
/// # Errors
/// When a node does not start, set up or come back.
pub async fn run(p: Params) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let layout = layout(dir.path(), "")?;
    let region = Node::spawn("region-node", &layout.region_config, &layout.logs)?;
    wait_healthy(layout.region_http, Duration::from_secs(20)).await?;
    let _pop = Node::spawn("pop-node", &layout.pop_config, &layout.logs)?;
    wait_healthy(layout.pop_http, Duration::from_secs(20)).await?;
    let token = tenant(&layout).await?;
    let region_url = format!("http://{}", layout.region_http);
    let wasm = wat::parse_str(HELLO)?;
    for (name, placement) in [("near", "edge"), ("far", "region")] {
        testkit::cluster::deploy_at(
            &region_url,
            &token,
            name,
            serde_json::json!({ "placement": placement }),
            wasm.clone(),
        )
        .await?;
    }
    let http = reqwest::Client::new();
    let url = |f: &str| format!("http://{}/v1/functions/{f}/invoke", layout.pop_http);
    // Warm up: `near` runs at the POP, `far` at the region.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (f, at) in [("near", "pop/"), ("far", "region/")] {
        loop {
            let r = http
                .post(url(f))
                .bearer_auth(&token)
                .body("x")
                .send()
                .await?;
            let here = r
                .headers()
                .get("x-strata-executed-at")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(at));
            if r.status() == 200 && here {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "{f} never ran at {at}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for far in [false, true] {
        for _ in 0..p.connections {
            let f = if far { "far" } else { "near" };
            tasks.spawn(load(
                http.clone(),
                url(f),
                token.clone(),
                far,
                Arc::clone(&stop),
            ));
        }
    }
    tokio::time::sleep(p.steady).await;
    let killed = Instant::now();
    region.kill();
    tokio::time::sleep(p.down).await;
    let region = Node::spawn("region-node", &layout.region_config, &layout.logs)?;
    let listening = wait_healthy(layout.region_http, Duration::from_secs(20)).await?;
    tokio::time::sleep(p.after).await;
    stop.store(true, Ordering::Release);
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        samples.extend(done.context("load task")?);
    }
    drop(region);
    Ok(report(&samples, killed, listening))
}

fn report(samples: &[Sample], killed: Instant, listening: Instant) -> Report {
    let since_kill = |t: Instant| ms(t.saturating_duration_since(killed));
    let mut statuses = [BTreeMap::new(), BTreeMap::new()];
    for s in samples {
        *statuses[usize::from(s.far)].entry(s.status).or_insert(0) += 1;
    }
    let mut far_ok: Vec<Instant> = samples
        .iter()
        .filter(|s| s.far && s.status == 200)
        .map(|s| s.done)
        .collect();
    far_ok.sort();
    let gap = far_ok
        .windows(2)
        .filter(|w| w[1] >= killed)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    let first_503 = samples
        .iter()
        .filter(|s| s.far && s.status == 503 && s.done >= killed)
        .map(|s| s.done)
        .min();
    let recovered = far_ok.iter().copied().find(|t| *t >= listening);
    let fault_end = recovered.unwrap_or(listening);
    let near = |from: Instant, to: Instant| -> Vec<Duration> {
        samples
            .iter()
            .filter(|s| !s.far && s.sent >= from && s.sent < to)
            .map(|s| s.done - s.sent)
            .collect()
    };
    let first = samples.iter().map(|s| s.sent).min().unwrap_or(killed);
    let fault = near(killed, fault_end);
    Report {
        near_statuses: std::mem::take(&mut statuses[0]),
        far_statuses: std::mem::take(&mut statuses[1]),
        far_zero_completion_gap_ms: ms(gap),
        first_503_after_kill_ms: first_503.map(since_kill),
        region_listening_ms: since_kill(listening),
        recovery_ms: recovered.map(|t| ms(t.duration_since(listening))),
        near_p99_steady_ms: p99(near(first, killed)),
        near_max_fault_ms: fault.iter().max().copied().map_or(0.0, ms),
        near_p99_fault_ms: p99(fault),
    }
}

/// A Markdown rendering of `r`.
pub fn table(r: &Report) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.0} ms"));
    format!(
        "| measure | value |\n|---|---|\n\
         | near (POP-local) statuses | {:?} |\n\
         | far (forwarded) statuses | {:?} |\n\
         | far zero-completion gap | {:.0} ms |\n\
         | first far 503 after the kill | {} |\n\
         | region listening again | {:.0} ms after the kill |\n\
         | recovery (listening to first far 200) | {} |\n\
         | near p99 steady / during the fault | {:.2} ms / {:.2} ms |\n\
         | near worst during the fault | {:.2} ms |\n",
        r.near_statuses,
        r.far_statuses,
        r.far_zero_completion_gap_ms,
        opt(r.first_503_after_kill_ms),
        r.region_listening_ms,
        opt(r.recovery_ms),
        r.near_p99_steady_ms,
        r.near_p99_fault_ms,
        r.near_max_fault_ms,
    )
}
