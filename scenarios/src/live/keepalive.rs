//! `run --live` for a keep-alive scenario: the fixed keep-alive policy checked on a real
//! POP against the model's verdict for every start.
//!
//! The workload (generated or read, as the simulated comparison uses it) is scaled down:
//! its first `window_s × speedup` seconds replayed `speedup` times faster, one request per
//! busy block, for the `apps` applications whose idle gaps fall nearest the keep-alive most
//! often. The POP runs each application as an edge-placed `sleep` reactor with a warm pool
//! of one instance, keep-alive only (`[pop.warm] mode = "reactive"`), and its sandbox's
//! `warm_idle_ms` set to the policy's keep-alive shortened by the same factor. The model
//! (`keepalive::evaluate::fixed_cold_blocks`) says which requests of the scaled workload
//! start cold; the POP says which did (`x-strata-start`). Starts whose idle gap is within
//! `guard_ratio` of the keep-alive are too close to call and only counted.
//!
//! The plan is pure ([`plan`]); [`compare`] runs it on loopback nodes in real time.

use crate::keepalive::evaluate::fixed_cold_blocks;
use crate::keepalive::{AppActivity, Block, KeepAliveSpec, Workload};
use anyhow::{Context as _, ensure};
use common::policy::{WarmConfig, WarmMode};
use serde::Serialize;
use serde_json::json;
use std::time::Duration;
use testkit::cluster::DevCluster;

/// Shortest gap kept between two requests of one application, seconds: closer ones would
/// find the instance still busy with the previous request (a one-off, cold instance),
/// which the one-instance model never sees.
const MIN_GAP_S: f64 = 0.05;
/// How long the POP may take to reach its region.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// Tries to get each function running at the POP before the replay.
const WARM_UP_TRIES: usize = 200;
/// The policy the replay checks.
const POLICY: &str = "fixed-10min";

/// One application of the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedApp {
    /// Its index in the workload.
    pub source: usize,
    /// When each request is sent, seconds from the replay's start.
    pub starts: Vec<f64>,
    /// Whether the model starts each cold.
    pub cold: Vec<bool>,
    /// Whether each is too close to call (idle gap within the guard of the keep-alive).
    pub close: Vec<bool>,
}

/// The scaled-down replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The keep-alive the POP runs with (the policy's, shortened by the speed-up).
    pub keep_alive: Duration,
    /// The replayed applications.
    pub apps: Vec<PlannedApp>,
}

/// The replay of `w` under `spec`'s `[keepalive.live]`: which applications, when each
/// request is sent and what the model says of it. Pure.
pub fn plan(w: &Workload, spec: &KeepAliveSpec) -> Plan {
    let l = &spec.live;
    let keep_alive_s = spec.fixed_keep_alive_min * 60.0 / l.speedup;
    let horizon = l.window_s * l.speedup;
    let mut candidates: Vec<(usize, usize, Vec<f64>)> = Vec::new();
    for (i, app) in w.apps.iter().enumerate() {
        let mut starts: Vec<f64> = Vec::new();
        for b in app.blocks.iter().take_while(|b| b.start < horizon) {
            let t = b.start / l.speedup;
            if starts.last().is_some_and(|&p| t - p < MIN_GAP_S) {
                continue;
            }
            starts.push(t);
            if starts.len() == l.max_blocks_per_app {
                break;
            }
        }
        if starts.len() < 2 {
            continue;
        }
        // Gaps the policy decides (warm below the keep-alive, cold above), not those too
        // close to it to call.
        let decides = |gap: f64| {
            (0.5 * keep_alive_s..=2.0 * keep_alive_s).contains(&gap)
                && (gap - keep_alive_s).abs() > l.guard_ratio * keep_alive_s
        };
        let near = starts.windows(2).filter(|g| decides(g[1] - g[0])).count();
        candidates.push((near, i, starts));
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let keep_alive = Duration::from_secs_f64(keep_alive_s);
    let apps = candidates
        .into_iter()
        .take(l.apps)
        .map(|(_, source, starts)| {
            let activity = AppActivity {
                memory_mb: w.apps[source].memory_mb,
                blocks: starts
                    .iter()
                    .map(|&t| Block {
                        start: t,
                        end: t,
                        invocations: 1,
                    })
                    .collect(),
            };
            let close =
                std::iter::once(false)
                    .chain(starts.windows(2).map(|g| {
                        (g[1] - g[0] - keep_alive_s).abs() <= l.guard_ratio * keep_alive_s
                    }))
                    .collect();
            PlannedApp {
                source,
                cold: fixed_cold_blocks(&activity, keep_alive),
                close,
                starts,
            }
        })
        .collect();
    Plan { keep_alive, apps }
}

/// The live keep-alive replay's result (`report.json`'s `live_keepalive`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeepAliveReplay {
    /// The policy checked.
    pub policy: String,
    /// Applications replayed.
    pub apps: usize,
    /// The replay's speed-up over the workload.
    pub speedup: f64,
    /// The POP's keep-alive during the replay, ms.
    pub keep_alive_ms: u64,
    /// Requests sent.
    pub requests: usize,
    /// Requests compared (not too close to call).
    pub compared: usize,
    /// Requests too close to call.
    pub close_calls: usize,
    /// Compared requests whose live start differs from the model's.
    pub mismatched: usize,
    /// Requests that did not run at the POP (each counts as a mismatch when compared).
    pub not_local: usize,
    /// Cold starts among the compared requests: the model's.
    pub sim_cold: usize,
    /// The same, live.
    pub live_cold: usize,
    /// Median over applications of their cold-start share among compared requests, %:
    /// the model's.
    pub sim_cold_pct_p50: f64,
    /// The same, live.
    pub live_cold_pct_p50: f64,
    /// Most mismatches that still agree (`tolerance × compared`, rounded down).
    pub allowed: usize,
    /// Whether the replay agrees with the model.
    pub agrees: bool,
}

impl KeepAliveReplay {
    /// The result as a markdown section.
    pub fn markdown(&self) -> String {
        format!(
            "\n### live keep-alive replay ({policy})\n\n{apps} applications, {requests} \
             requests at {speedup}x, keep-alive {ka} ms; {compared} compared, {close} too \
             close to call.\n\n| | model | live |\n|---|---:|---:|\n| cold starts (compared) \
             | {sc} | {lc} |\n| app cold-start % p50 | {sp:.1} | {lp:.1} |\n\n{mm} of {compared} \
             starts differ ({nl} not run at the POP; at most {allowed} agree): **{verdict}**\n",
            policy = self.policy,
            apps = self.apps,
            requests = self.requests,
            speedup = self.speedup,
            ka = self.keep_alive_ms,
            compared = self.compared,
            close = self.close_calls,
            sc = self.sim_cold,
            lc = self.live_cold,
            sp = self.sim_cold_pct_p50,
            lp = self.live_cold_pct_p50,
            mm = self.mismatched,
            nl = self.not_local,
            allowed = self.allowed,
            verdict = if self.agrees { "agree" } else { "DISAGREE" },
        )
    }
}

/// What one live request found.
#[derive(Debug, Clone, Copy)]
struct Seen {
    cold: bool,
    local: bool,
}

/// Median of `v` (nearest rank), 0 when empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

fn cold_pct(flags: impl Iterator<Item = bool>) -> f64 {
    let (mut n, mut cold) = (0usize, 0usize);
    for c in flags {
        n += 1;
        cold += usize::from(c);
    }
    100.0 * cold as f64 / n.max(1) as f64
}

/// Compares `plan` with what the POP did (`seen[app][request]`).
fn judge(plan: &Plan, spec: &KeepAliveSpec, seen: &[Vec<Seen>]) -> KeepAliveReplay {
    let mut r = KeepAliveReplay {
        policy: POLICY.to_owned(),
        apps: plan.apps.len(),
        speedup: spec.live.speedup,
        keep_alive_ms: u64::try_from(plan.keep_alive.as_millis()).unwrap_or(u64::MAX),
        requests: 0,
        compared: 0,
        close_calls: 0,
        mismatched: 0,
        not_local: 0,
        sim_cold: 0,
        live_cold: 0,
        sim_cold_pct_p50: 0.0,
        live_cold_pct_p50: 0.0,
        allowed: 0,
        agrees: false,
    };
    let (mut sim_pct, mut live_pct) = (Vec::new(), Vec::new());
    for (app, seen) in plan.apps.iter().zip(seen) {
        let mut compared = Vec::new();
        for ((&model, &close), s) in app.cold.iter().zip(&app.close).zip(seen) {
            r.requests += 1;
            r.not_local += usize::from(!s.local);
            if close {
                r.close_calls += 1;
                continue;
            }
            r.compared += 1;
            r.sim_cold += usize::from(model);
            r.live_cold += usize::from(s.cold);
            r.mismatched += usize::from(!s.local || s.cold != model);
            compared.push((model, s.cold));
        }
        if !compared.is_empty() {
            sim_pct.push(cold_pct(compared.iter().map(|c| c.0)));
            live_pct.push(cold_pct(compared.iter().map(|c| c.1)));
        }
    }
    r.sim_cold_pct_p50 = median(sim_pct);
    r.live_cold_pct_p50 = median(live_pct);
    r.allowed = (spec.live.tolerance * r.compared as f64).floor() as usize;
    r.agrees = r.compared > 0 && r.mismatched <= r.allowed;
    r
}

/// The name application `i` of the replay is deployed under.
fn app_name(i: usize) -> String {
    format!("ka{i:03}")
}

/// Runs the keep-alive replay of `spec`'s workload (seeded by `seed`) on a real POP and
/// region and compares it with the model.
///
/// # Errors
/// When the workload cannot be loaded, has no application with two requests in the
/// window, the nodes cannot start, a deploy fails or a function never runs at the POP.
pub async fn compare(spec: &KeepAliveSpec, seed: u64) -> anyhow::Result<KeepAliveReplay> {
    let workload = crate::keepalive::load(spec, seed)?;
    let plan = plan(&workload, spec);
    ensure!(
        !plan.apps.is_empty(),
        "no application has two requests in the keep-alive replay's window"
    );
    let dir = tempfile::tempdir()?;
    let cluster = start(dir.path(), &plan).await?;
    let seen = replay(&cluster, &plan).await;
    cluster.shutdown().await;
    Ok(judge(&plan, spec, &seen?))
}

/// A region and a POP whose only keep-alive is the sandbox's idle expiry at `plan`'s.
async fn start(dir: &std::path::Path, plan: &Plan) -> anyhow::Result<DevCluster> {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        ..Default::default()
    };
    let mut pop = pop_node::PopConfig {
        http_listen: any,
        warm: WarmConfig {
            mode: WarmMode::Reactive,
            ..WarmConfig::default()
        },
        ..Default::default()
    };
    pop.sandbox.warm_idle_ms = u64::try_from(plan.keep_alive.as_millis()).unwrap_or(u64::MAX);
    pop.sandbox.warm_pool_size = 1;
    pop.sandbox.max_warm_pools = pop.sandbox.max_warm_pools.max(plan.apps.len() * 2);
    let cluster = DevCluster::start(dir, region, pop).await?;
    testkit::cluster::wait_connected(&cluster.pop, CONNECT_WITHIN).await?;
    let wasm = wat::parse_str(super::fleet::SLEEP_WAT)?;
    for i in 0..plan.apps.len() {
        let config = json!({"abi": "reactor", "placement": "edge", "timeout_ms": 10_000});
        cluster
            .deploy(&app_name(i), config, wasm.clone())
            .await
            .with_context(|| format!("deploying {}", app_name(i)))?;
    }
    Ok(cluster)
}

/// Invokes `name` through the POP at `pop_url`: what the POP did (a failed request ran
/// nowhere: neither cold nor local).
async fn send(http: reqwest::Client, pop_url: String, token: String, name: String) -> Seen {
    let sent = http
        .post(format!("{pop_url}/v1/functions/{name}/invoke"))
        .bearer_auth(&token)
        .body("0")
        .send()
        .await;
    let Ok(resp) = sent else {
        return Seen {
            cold: false,
            local: false,
        };
    };
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    Seen {
        cold: header("x-strata-start") == "cold",
        local: resp.status().is_success() && header("x-strata-executed-at").starts_with("pop/"),
    }
}

/// Gets every function running at the POP (its code fetched), lets every instance idle
/// past the keep-alive, then sends each planned request at its time.
async fn replay(c: &DevCluster, plan: &Plan) -> anyhow::Result<Vec<Vec<Seen>>> {
    let http = reqwest::Client::new();
    let request = |app: usize| send(http.clone(), c.pop_url(), c.token.clone(), app_name(app));
    for app in 0..plan.apps.len() {
        let mut local = false;
        for _ in 0..WARM_UP_TRIES {
            if request(app).await.local {
                local = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ensure!(local, "{} never ran at the POP", app_name(app));
    }
    // Every instance is past its keep-alive: the first request of each app finds none,
    // as the model's first start is cold.
    tokio::time::sleep(plan.keep_alive + Duration::from_millis(300)).await;
    let t0 = tokio::time::Instant::now();
    let tasks: Vec<Vec<_>> = plan
        .apps
        .iter()
        .enumerate()
        .map(|(a, app)| {
            app.starts
                .iter()
                .map(|&at| {
                    let sent = request(a);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_secs_f64(at)).await;
                        sent.await
                    })
                })
                .collect()
        })
        .collect();
    let mut seen = Vec::with_capacity(tasks.len());
    for requests in tasks {
        let mut app = Vec::with_capacity(requests.len());
        for task in requests {
            app.push(task.await?);
        }
        seen.push(app);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::Source;
    use crate::keepalive::generate::GenerateSpec;

    fn spec(apps: usize, window_s: f64) -> KeepAliveSpec {
        let mut s: KeepAliveSpec = toml::from_str(
            r#"
            [source]
            kind = "generate"
            apps = 200
            days = 1
            "#,
        )
        .expect("valid");
        s.live.apps = apps;
        s.live.window_s = window_s;
        s
    }

    fn app(starts: &[f64]) -> AppActivity {
        AppActivity {
            memory_mb: 128.0,
            blocks: starts
                .iter()
                .map(|&t| Block {
                    start: t,
                    end: t + 1.0,
                    invocations: 3,
                })
                .collect(),
        }
    }

    #[test]
    fn the_plan_picks_the_apps_the_policy_decides_for_and_scales_them() {
        // At 300x, 10 minutes is 2 s. App 0 idles 5 and 15 minutes (both near it), app 1
        // every minute (always warm), app 2 once.
        let w = Workload {
            apps: vec![
                app(&[0.0, 300.0, 1200.0]),
                app(&[0.0, 60.0, 120.0, 180.0]),
                app(&[10.0]),
            ],
            function_daily_invocations: vec![],
            span_s: 3600.0,
        };
        let p = plan(&w, &spec(1, 60.0));
        assert_eq!(p.keep_alive, Duration::from_secs(2));
        assert_eq!(p.apps.len(), 1);
        let a = &p.apps[0];
        assert_eq!(a.source, 0);
        assert_eq!(a.starts, [0.0, 1.0, 4.0]);
        assert_eq!(a.cold, [true, false, true]);
        assert_eq!(a.close, [false, false, false]);
        let both = plan(&w, &spec(5, 60.0));
        assert_eq!(
            both.apps.len(),
            2,
            "an app with one request is not replayed"
        );
    }

    #[test]
    fn gaps_near_the_keep_alive_are_close_calls_and_tight_requests_merge() {
        // 9.9 minutes is within 10% of 10: too close to call. 5 s apart is 17 ms at 300x.
        let w = Workload {
            apps: vec![app(&[0.0, 5.0, 594.0])],
            function_daily_invocations: vec![],
            span_s: 3600.0,
        };
        let a = &plan(&w, &spec(1, 60.0)).apps[0];
        assert_eq!(a.starts, [0.0, 1.98]);
        assert_eq!(a.close, [false, true]);
    }

    #[test]
    fn a_replay_that_matches_the_model_agrees_and_one_that_does_not_disagrees() {
        let w = Workload {
            apps: vec![app(&[0.0, 300.0, 1200.0, 1500.0])],
            function_daily_invocations: vec![],
            span_s: 3600.0,
        };
        let s = spec(1, 60.0);
        let p = plan(&w, &s);
        let as_model: Vec<Seen> = p.apps[0]
            .cold
            .iter()
            .map(|&cold| Seen { cold, local: true })
            .collect();
        let r = judge(&p, &s, std::slice::from_ref(&as_model));
        assert!(r.agrees, "{r:?}");
        assert_eq!((r.compared, r.mismatched, r.sim_cold), (4, 0, 2));
        let mut flipped = as_model;
        flipped[1].cold = true;
        let r = judge(&p, &s, &[flipped]);
        assert!(!r.agrees);
        assert_eq!(r.mismatched, 1);
        assert!(r.markdown().contains("DISAGREE"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_replay_on_a_real_pop_follows_the_fixed_keep_alive() {
        // 4 apps of a generated day at 600x (10 minutes is 1 s), 12 s of replay.
        let mut s = spec(4, 12.0);
        s.live.speedup = 600.0;
        s.live.max_blocks_per_app = 12;
        assert!(matches!(s.source, Source::Generate(GenerateSpec { .. })));
        let r = compare(&s, 7).await.expect("the replay runs");
        eprintln!("{}", r.markdown());
        assert_eq!(r.apps, 4, "{r:?}");
        assert_eq!(r.not_local, 0, "{r:?}");
        assert!(
            r.sim_cold > 0 && r.sim_cold < r.compared,
            "the window decides: {r:?}"
        );
        assert!(r.agrees, "{}", r.markdown());
    }
}
