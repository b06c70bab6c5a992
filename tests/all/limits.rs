//! Per-tenant concurrency across tiers: the region owns each tenant's budget, POPs run on
//! leases of it, and the global sum of running invocations never exceeds the limit; a
//! tenant at its limit gets 429 while other tenants are served.
//!
//! Concurrency is measured from the invocations themselves: the guest reads the wall clock
//! (WASI realtime, shared by every node in this process) when it starts and when it ends
//! and returns both, so the maximum overlap of those intervals is a lower bound of what
//! the nodes had charged at the time.
//!
//! Operator overrides are durable ([`durable`]): they survive a region restart, and
//! regions sharing a JetStream store apply each other's.

mod durable;
mod split;

use crate::support::{Patience, TestCluster, any_port, header, pop_config, region_config};
use common::model::TenantId;
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use region_node::limits::{LimitsConfig, TenantLimits};
use serde_json::json;

/// Reads the realtime clock, spins, reads it again, and writes both (little-endian
/// nanoseconds) to stdout.
const TIMED_SPIN: &str = r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $now (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $i i32)
    (drop (call $now (i32.const 0) (i64.const 1) (i32.const 16)))
    (local.set $i (i32.const 20000000))
    (loop $spin
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $spin (local.get $i)))
    (drop (call $now (i32.const 0) (i64.const 1) (i32.const 24)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const LIMIT: u32 = 4;

fn fixed_limit(limit: u32) -> LimitsConfig {
    LimitsConfig {
        tenant: TenantLimits {
            hard_max: limit,
            burst: limit,
            step: 1,
            interval_ms: 1000,
            ..TenantLimits::default()
        },
        ..LimitsConfig::default()
    }
}

/// The most intervals open at once.
fn max_overlap(intervals: &[(u64, u64)]) -> usize {
    // Ends sort before starts at the same instant: touching intervals do not overlap.
    let mut events: Vec<(u64, i8)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    events.sort();
    let (mut open, mut max) = (0i64, 0i64);
    for (_, d) in events {
        open += i64::from(d);
        max = max.max(open);
    }
    usize::try_from(max).unwrap_or(0)
}

fn interval(body: &[u8]) -> (u64, u64) {
    assert_eq!(body.len(), 16, "the guest returns two timestamps");
    let start = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let end = u64::from_le_bytes(body[8..].try_into().expect("8 bytes"));
    assert!(start <= end);
    (start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pops_and_the_region_never_run_more_than_the_tenant_limit() {
    let region = region_node::RegionConfig {
        limits: fixed_limit(LIMIT),
        ..region_config()
    };
    let pop = pop_node::PopConfig {
        lease_batch: 2,
        ..pop_config()
    };
    let c = TestCluster::with(region, pop).await;
    c.deploy_wat("spin", json!({"placement": "edge"}), TIMED_SPIN)
        .await;
    let certs = dev_ca::init(&c.dir.path().join("certs")).expect("certs");
    let mut extra = vec![];
    for id in ["pop-2", "pop-3"] {
        extra.push(
            pop_node::start(pop_node::PopConfig {
                node_id: id.into(),
                state_dir: c.dir.path().join(id),
                http_listen: any_port(),
                tls: Some(certs.pop.clone()),
                regions: RegionSource::Static(vec![c.nodes.region.quic_addr]),
                lease_batch: 2,
                ..pop_config()
            })
            .await
            .expect("POP starts"),
        );
    }
    let pops: Vec<(String, String)> = std::iter::once(("pop-1".to_owned(), c.nodes.pop_url()))
        .chain(
            extra
                .iter()
                .map(|p| (p.node_id.0.clone(), format!("http://{}", p.http_addr))),
        )
        .collect();

    // Each POP learns the function, fetches it and gets a lease: it runs it itself.
    for (id, url) in &pops {
        let mut patience = Patience::new();
        let mut local = false;
        while !local && patience.more() {
            let resp = c.invoke_at(url, "spin", "").await;
            // Another POP's lease may hold the whole budget for now: the region refuses.
            assert!(
                matches!(resp.status().as_u16(), 200 | 429),
                "{}",
                resp.status()
            );
            local = header(&resp, "x-strata-executed-at") == format!("pop/{id}");
        }
        assert!(local, "{id} never ran the function itself");
    }

    // Load: six clients per POP, five invocations each.
    let mut clients = tokio::task::JoinSet::new();
    for (_, url) in &pops {
        for _ in 0..6 {
            let (http, url, token) = (c.http.clone(), url.clone(), c.nodes.token.clone());
            clients.spawn(async move {
                let mut seen = vec![];
                for _ in 0..5 {
                    let resp = http
                        .post(format!("{url}/v1/functions/spin/invoke"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("request completes");
                    let status = resp.status().as_u16();
                    let at = header(&resp, "x-strata-executed-at");
                    let retry_after = resp.headers().contains_key("retry-after");
                    let body = resp.bytes().await.expect("body");
                    seen.push((status, at, retry_after, body));
                }
                seen
            });
        }
    }
    let mut intervals = vec![];
    let (mut throttled, mut at_pops) = (0, 0);
    while let Some(seen) = clients.join_next().await {
        for (status, at, retry_after, body) in seen.expect("client task") {
            match status {
                200 => {
                    intervals.push(interval(&body));
                    at_pops += usize::from(at.starts_with("pop/"));
                }
                429 => {
                    assert!(retry_after, "429 without retry-after");
                    throttled += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
    let overlap = max_overlap(&intervals);
    eprintln!(
        "limits: {} served ({at_pops} on POP leases), {throttled} throttled, max {overlap} at once",
        intervals.len()
    );
    assert!(
        overlap <= LIMIT as usize,
        "{overlap} invocations ran at once with a limit of {LIMIT}"
    );
    assert!(
        throttled > 0,
        "90 requests from 18 clients never hit a limit of 4"
    );
    assert!(at_pops > 0, "nothing ran on a POP lease");
    for p in extra {
        p.shutdown().await;
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_limit_is_throttled_while_another_is_served() {
    let c = TestCluster::start().await;
    let region = c.nodes.region_url();
    let other = TenantId::new("other").expect("valid");
    let registry = c.nodes.region.registry();
    registry.create_tenant(other.clone(), 1024).expect("tenant");
    let other_token = registry.create_token(&other).expect("token");
    let spin = wat::parse_str(TIMED_SPIN).expect("wat");
    c.nodes
        .deploy_as(&other_token, "spin", json!({}), spin)
        .await
        .expect("deploys");
    // The dev tenant gets a limit of one: one long invocation fills it.
    let hog = crate::support::dev_hogged(&c).await;
    // The dev tenant is now refused at once, not queued.
    let resp = c.invoke_at(&region, "hello", "").await;
    let (limit, _wait) = crate::support::throttled(resp).await;
    assert_eq!(limit, ("tenant".into(), "concurrency".into(), 1));
    // Meanwhile the other tenant is served normally.
    for _ in 0..3 {
        let resp = c
            .http
            .post(format!("{region}/v1/functions/spin/invoke"))
            .bearer_auth(&other_token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(hog.await.expect("hog task"), 504);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tenant_limits_are_refused_and_change_nothing() {
    let c = TestCluster::start().await;
    let url = format!("{}/v1/tenants/dev/limits", c.nodes.region_url());
    let before: serde_json::Value = c.operator_json(&url).await;
    let resp = c
        .http
        .put(&url)
        .bearer_auth(&c.nodes.admin_token)
        .json(&json!({"hard_max": 1, "burst": 5}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    let after: serde_json::Value = c.operator_json(&url).await;
    assert_eq!(before, after);
    let resp = c
        .http
        .put(&url)
        .bearer_auth(&c.nodes.token)
        .json(&json!({"hard_max": 10}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403);
    c.nodes.shutdown().await;
}

/// Sends calls of `forever` to `region` until one is refused, and returns the limit its
/// 429 names; the admitted ones keep running (until their timeout) in `running`. A call
/// still going after a moment is taken as admitted: misjudging a slow 429 only sends one
/// more call, which is refused in turn.
async fn press(
    c: &TestCluster,
    region: &str,
    running: &mut Vec<tokio::task::JoinHandle<u16>>,
) -> u64 {
    loop {
        assert!(running.len() < 20, "nothing was ever refused");
        let (http, url, token) = (
            c.http.clone(),
            format!("{region}/v1/functions/forever/invoke"),
            c.nodes.token.clone(),
        );
        let mut call = tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("request completes");
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            (status, body)
        });
        match tokio::time::timeout(std::time::Duration::from_millis(300), &mut call).await {
            Ok(done) => {
                let (status, body) = done.expect("call task");
                assert_eq!(status, 429, "{body}");
                assert_eq!(body["error"]["limit"]["scope"], "tenant", "{body}");
                return body["error"]["limit"]["value"]
                    .as_u64()
                    .expect("a limit value");
            }
            Err(_) => running.push(tokio::spawn(async move {
                call.await.map_or(0, |(status, _)| status)
            })),
        }
    }
}

/// Waits for the calls `press` left running and returns how many ran until their timeout
/// (504). The others were refused after `press` stopped waiting for them (a slow 429 on a
/// busy machine); any other ending fails the test.
async fn finish(running: &mut Vec<tokio::task::JoinHandle<u16>>) -> usize {
    let mut ran = 0;
    for call in running.drain(..) {
        match call.await.expect("call task") {
            504 => ran += 1,
            429 => {}
            other => panic!("a call ended with {other}, not by its timeout or a refusal"),
        }
    }
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_grows_under_pressure_and_decays_when_idle() {
    // The nodes' policies read this clock: each interval of the limit passes when the
    // test says so, not when the machine gets to it.
    let clock = common::clock::ManualClock::new(std::time::Instant::now());
    let c = TestCluster::with_manual_time(region_config(), pop_config(), clock.clone()).await;
    let region = c.nodes.region_url();
    let resp = c
        .http
        .put(format!("{region}/v1/tenants/dev/limits"))
        .bearer_auth(&c.nodes.admin_token)
        .json(&json!({"hard_max": 3, "burst": 1, "step": 1, "interval_ms": 200}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    // Long enough that every call a phase admits is still running when its last one is
    // refused, however slow the machine (with 1.5 s, a loaded CI machine saw the first
    // call end and a fourth admitted).
    c.deploy_wat(
        "forever",
        json!({"timeout_ms": 6000}),
        crate::support::LOOP_FOREVER,
    )
    .await;
    let interval = std::time::Duration::from_millis(200);
    // Calls that never end on their own press against the limit: one runs, the next is
    // refused. Each pressed interval that passes grows the limit by one, up to its hard
    // maximum; a refusal names the limit in force.
    let mut running = Vec::new();
    let mut seen = vec![press(&c, &region, &mut running).await];
    for _ in 0..3 {
        clock.advance(interval);
        seen.push(press(&c, &region, &mut running).await);
    }
    assert_eq!(
        seen,
        [1, 2, 3, 3],
        "grown by one per pressed interval, up to 3"
    );
    assert_eq!(
        finish(&mut running).await,
        3,
        "exactly the limit ran at once"
    );
    // Idle now: each empty interval decays the limit by a step back to the burst value
    // (the interval of the last refusal closes first, pressed: no decay for it).
    clock.advance(2 * interval);
    assert_eq!(
        press(&c, &region, &mut running).await,
        2,
        "one idle interval"
    );
    assert_eq!(finish(&mut running).await, 2);
    // That refusal pressed again (its interval grows the limit back to 3); five empty
    // ones after it take it down to the burst value, and no lower.
    clock.advance(6 * interval);
    assert_eq!(
        press(&c, &region, &mut running).await,
        1,
        "back at the burst value"
    );
    assert_eq!(finish(&mut running).await, 1);
    // And the tenant is served again at once.
    c.deploy_wat(
        "quick",
        json!({}),
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .await;
    assert_eq!(c.invoke_at(&region, "quick", "").await.status(), 200);
}
