//! Region failover: a POP with two regions keeps serving when the region serving it is
//! killed mid-run; only requests in flight at the kill may fail (503), none runs twice,
//! and everything after the kill runs at the other region. A tenant's concurrency lease
//! moves with the POP: after the failover the POP runs on slots the new region counts, and
//! a quiet tenant's held slots move too, so its next call still runs at the POP.

use crate::support::{
    LOOP_FOREVER, Patience, any_port, header, leased_at, pop_config, region_config,
};
use common::model::{Abi, FunctionConfig, FunctionName, Placement, TenantId};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use region_node::{RegionConfig, RegionHandle};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Writes stdin to stderr (its log line, so the region records each execution) and `ok`
/// to stdout.
const NOISY: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "ok")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// The regions' operator token (for their capacity views).
const ADMIN: &str = "failover-admin";

const WORKERS: usize = 4;
const PER_WORKER: usize = 25;
/// Responses before the serving region is killed.
const KILL_AFTER: usize = 20;
/// Requests each worker holds back until the kill is over, so the run always goes on after
/// it however long the shutdown takes (on a slow machine the others could all finish
/// during it).
const AFTER_KILL: usize = 5;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

async fn start_region(
    id: &str,
    dir: &Path,
    tls: &common::transport::TlsFiles,
    config: RegionConfig,
) -> RegionHandle {
    region_node::start(RegionConfig {
        node_id: id.into(),
        state_dir: dir.to_path_buf(),
        tls: Some(tls.clone()),
        admin_token: Some(ADMIN.into()),
        http_listen: any_port(),
        quic_listen: any_port(),
        ..config
    })
    .await
    .expect("region starts")
}

/// Every region request id's log lines: payload -> how many executions.
async fn executions(
    http: &reqwest::Client,
    region: &RegionHandle,
    token: &str,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut since = 0u64;
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "http://{}/v1/functions/noisy/logs?since={since}&limit=1000",
                region.http_addr
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("logs")
            .json()
            .await
            .expect("json");
        let lines = page["lines"].as_array().expect("lines");
        if lines.is_empty() {
            return counts;
        }
        for l in lines {
            *counts
                .entry(l["line"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        since = page["next"].as_u64().expect("next");
    }
}

/// Two regions with the same registry (tenant `t`, functions `noisy` and `spin`, both
/// pinned to the region, `edgy`, pinned to the edge, and the reactor `counter`, pinned to
/// the region) and a POP listing A first, then
/// B. `a_config` tunes A.
struct TwoRegions {
    _dir: tempfile::TempDir,
    a: RegionHandle,
    b: RegionHandle,
    pop: pop_node::PopHandle,
    token: String,
}

/// Two regions with the same registry: tenant `t` and the functions `deploy` adds are set
/// up at A (two region processes cannot share one store: A is stopped cleanly and its state
/// copied to B), then both start with their configs. Returns A, B and `t`'s token.
pub(crate) async fn seeded_pair(
    dir: &Path,
    tls: &common::transport::TlsFiles,
    deploy: impl FnOnce(&RegionHandle, &TenantId),
    configs: (RegionConfig, RegionConfig),
) -> (RegionHandle, RegionHandle, String) {
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    let a = start_region("a", &dir_a, tls, region_config()).await;
    let tenant = TenantId::new("t").expect("tenant");
    a.registry()
        .create_tenant(tenant.clone(), 1024)
        .expect("tenant");
    let token = a.registry().create_token(&tenant).expect("token");
    deploy(&a, &tenant);
    a.shutdown().await;
    copy_dir(&dir_a, &dir_b);
    let a = start_region("a", &dir_a, tls, configs.0).await;
    let b = start_region("b", &dir_b, tls, configs.1).await;
    (a, b, token)
}

async fn two_regions(a_config: RegionConfig) -> TwoRegions {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
    let counter = include_str!("../../examples/counter.wat");
    let deploy = |a: &RegionHandle, tenant: &TenantId| {
        for (name, wat, timeout_ms, placement, abi) in [
            ("noisy", NOISY, 3000, Placement::Region, Abi::Command),
            ("spin", LOOP_FOREVER, 4000, Placement::Region, Abi::Command),
            ("edgy", NOISY, 3000, Placement::Edge, Abi::Command),
            ("counter", counter, 3000, Placement::Region, Abi::Reactor),
        ] {
            let config = FunctionConfig {
                placement,
                timeout_ms,
                abi,
                ..FunctionConfig::default()
            };
            let wasm = wat::parse_str(wat).expect("wat");
            a.registry()
                .deploy(
                    tenant,
                    &FunctionName::new(name).expect("name"),
                    config,
                    &wasm,
                    None,
                )
                .expect("deploys");
        }
    };
    let configs = (a_config, region_config());
    let (a, b, token) = seeded_pair(dir.path(), &certs.region, deploy, configs).await;
    let pop = pop_node::start(pop_node::PopConfig {
        state_dir: dir.path().join("pop"),
        tls: Some(certs.pop.clone()),
        regions: RegionSource::Static(vec![a.quic_addr, b.quic_addr]),
        connect_timeout_ms: 1000,
        http_listen: any_port(),
        // Both regions are on loopback, equally near: every RTT ties and A, first in the
        // list, is preferred. Without a wide margin a loaded machine's slow first sample
        // (a handshake's, say) could make B look nearer and move the POP off A for
        // distance, which these tests would mistake for a failover or a back-off.
        region_choice: pop_node::config::RegionChoiceSettings {
            rtt_margin_ms: 60_000,
            ..Default::default()
        },
        ..pop_config()
    })
    .await
    .expect("POP starts");
    TwoRegions {
        _dir: dir,
        a,
        b,
        pop,
        token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_serving_region_fails_over_without_duplicates() {
    let TwoRegions {
        _dir,
        a,
        b,
        pop,
        token,
    } = two_regions(region_config()).await;
    let url = format!("http://{}/v1/functions/noisy/invoke", pop.http_addr);
    let http = reqwest::Client::new();

    // (responses so far, where the latest one ran)
    let (answered, mut progress) = tokio::sync::watch::channel((0usize, String::new()));
    let answered = Arc::new(answered);
    let (kill_done, killed) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (answered, mut killed) = (Arc::clone(&answered), killed.clone());
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..PER_WORKER {
                let payload = format!("w{w}-r{i}");
                if i >= PER_WORKER - AFTER_KILL {
                    killed
                        .wait_for(|done| *done)
                        .await
                        .expect("the test is alive");
                }
                let after_kill = *killed.borrow();
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .body(payload.clone())
                    .send()
                    .await
                    .expect("the POP answers");
                let status = resp.status().as_u16();
                let at = header(&resp, "x-strata-executed-at");
                answered.send_modify(|(n, latest)| {
                    *n += 1;
                    latest.clone_from(&at);
                });
                outcomes.push((payload, status, at, after_kill));
            }
            outcomes
        });
    }
    // Kill the region that is serving once the run is well under way. Both regions are on
    // loopback, so either may be the one (whichever the POP measured first, or the other
    // when their RTTs tie): the latest response names it.
    let serving = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        progress.wait_for(|(n, _)| *n >= KILL_AFTER),
    )
    .await
    .expect("the run got under way within 30 s")
    .expect("workers alive")
    .1
    .clone();
    let (killed_at, survivor, survivor_at) = match serving.as_str() {
        "region/a" => {
            a.shutdown().await;
            ("region/a", b, "region/b")
        }
        "region/b" => {
            b.shutdown().await;
            ("region/b", a, "region/a")
        }
        other => panic!("the run's latest response ran at {other:?}"),
    };
    kill_done.send_replace(true);
    let mut outcomes = Vec::new();
    while let Some(done) = workers.join_next().await {
        outcomes.extend(done.expect("worker"));
    }

    let at_survivor = executions(&http, &survivor, &token).await;
    let mut failed = 0;
    for (payload, status, at, after_kill) in &outcomes {
        let ran_at_survivor = at_survivor.get(payload).copied().unwrap_or(0);
        assert!(
            ran_at_survivor <= 1,
            "{payload} ran {ran_at_survivor} times at {survivor_at}"
        );
        match (*status, at.as_str()) {
            (200, at) if at == killed_at => {
                assert!(!after_kill, "{payload} ran at {at} after it was killed");
                assert_eq!(ran_at_survivor, 0, "{payload} ran at both regions");
            }
            (200, at) if at == survivor_at => {
                assert_eq!(ran_at_survivor, 1, "{payload} is in {at}'s log");
            }
            // Only a request in flight at the kill may fail, and it is not sent again.
            (503, _) => {
                assert!(!after_kill, "{payload} failed after the kill");
                assert_eq!(
                    ran_at_survivor, 0,
                    "{payload} failed yet ran at the survivor"
                );
                failed += 1;
            }
            other => panic!("{payload}: unexpected outcome {other:?}"),
        }
    }
    assert!(
        failed <= WORKERS,
        "{failed} failures with {WORKERS} requests in flight"
    );
    let served_by_killed = outcomes.iter().filter(|o| o.2 == killed_at).count();
    assert!(served_by_killed > 0, "the killed region was serving");
    assert!(
        outcomes
            .iter()
            .filter(|o| o.3)
            .all(|o| o.1 == 200 && o.2 == survivor_at),
        "every request after the kill ran at {survivor_at}"
    );
    let after_kill = outcomes.iter().filter(|o| o.3).count();
    assert!(
        after_kill >= WORKERS * AFTER_KILL,
        "the run went on after the kill"
    );
    eprintln!(
        "served by {killed_at} (killed): {served_by_killed}, failed in flight: {failed}, \
         after the kill (all at {survivor_at}): {after_kill}, of {}",
        outcomes.len()
    );
    pop.shutdown().await;
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_under_pressure_is_backed_off_from() {
    // A has one execution slot and no queue: while a request runs there, it refuses the
    // next with 503 and reports pressure. Fleets off: the slot is the dedicated fleet's
    // admission, which rare functions would bypass on their way to the on-demand fleet.
    let mut a_config = RegionConfig {
        max_concurrency: 1,
        max_queued: 0,
        ..region_config()
    };
    a_config.fleets.enabled = false;
    let c = two_regions(a_config).await;
    let http = reqwest::Client::new();
    let invoke = |base: String, name: &'static str| {
        let (http, token) = (http.clone(), c.token.clone());
        async move {
            let resp = http
                .post(format!("{base}/v1/functions/{name}/invoke"))
                .bearer_auth(token)
                .body("x")
                .send()
                .await
                .expect("answered");
            (
                resp.status().as_u16(),
                header(&resp, "x-strata-executed-at"),
            )
        }
    };
    let pop_url = format!("http://{}", c.pop.http_addr);
    let a_url = format!("http://{}", c.a.http_addr);
    // Warm up until the POP prefers A: once it has measured both regions their loopback
    // RTTs tie and A, first in its list, wins (before that, whichever answered its
    // background dial first serves).
    let mut patience = Patience::new();
    let mut at_a = false;
    while !at_a && patience.more() {
        let (status, at) = invoke(pop_url.clone(), "noisy").await;
        assert_eq!(status, 200, "warm-up at {at}");
        at_a = at == "region/a";
    }
    assert!(at_a, "the POP never preferred A, first in its list");
    // Occupy A's only slot (directly, so the POP sees nothing of it) and wait until A is
    // visibly full; a spin that lost the slot to a probe is refused and sent again.
    let mut spin = tokio::spawn(invoke(a_url.clone(), "spin"));
    let mut patience = Patience::new();
    let mut busy = false;
    while !busy && patience.more() {
        if spin.is_finished() {
            spin = tokio::spawn(invoke(a_url.clone(), "spin"));
        }
        busy = invoke(a_url.clone(), "noisy").await.0 == 503 && !spin.is_finished();
    }
    assert!(busy, "A never got busy");
    // The POP's next request reaches A, which refuses it and reports pressure (not
    // retried: A received it); the POP then backs off from A and B serves.
    let mut refused_at_a = 0;
    let mut served_by_b = false;
    let mut patience = Patience::new();
    while !served_by_b && patience.more() {
        match invoke(pop_url.clone(), "noisy").await {
            (200, at) if at == "region/b" => served_by_b = true,
            (503, _) => refused_at_a += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(served_by_b, "the POP kept sending to the busy region");
    assert!(refused_at_a >= 1, "A reported pressure with its refusal");
    assert_eq!(
        spin.await.expect("spin").0,
        504,
        "the spinning request timed out at A"
    );
    c.pop.shutdown().await;
    c.a.shutdown().await;
    c.b.shutdown().await;
}

/// Invokes `edgy` at `pop` until it runs there while the tenant's lease is counted by the
/// region at `lease_from`.
async fn edgy_runs_at_the_pop(
    pop: &pop_node::PopHandle,
    token: &str,
    lease_from: std::net::SocketAddr,
) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/functions/edgy/invoke", pop.http_addr);
    let tenant = TenantId::new("t").expect("tenant");
    let mut patience = Patience::new();
    while patience.more() {
        let resp = http
            .post(&url)
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .expect("the POP answers");
        let status = resp.status();
        let at = header(&resp, "x-strata-executed-at");
        assert_eq!(
            status,
            200,
            "at {at}: {}",
            resp.text().await.unwrap_or_default()
        );
        // A renewal answered by a region that holds nothing for this POP moves the lease
        // there with no slots until that region answers the acquire that follows, so wait
        // for slots too.
        if at == "pop/pop-1"
            && pop.lease_region(&tenant) == Some(lease_from)
            && pop.lease_holding(&tenant).0 > 0
        {
            return;
        }
    }
    panic!(
        "edgy never ran at the POP on a lease of {lease_from} (lease of {:?})",
        pop.lease_region(&tenant)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_that_fails_over_runs_on_a_lease_of_the_new_region() {
    let TwoRegions {
        _dir,
        a,
        b,
        pop,
        token,
    } = two_regions(region_config()).await;
    let tenant = TenantId::new("t").expect("tenant");
    // A, first in the list, serves and leases.
    edgy_runs_at_the_pop(&pop, &token, a.quic_addr).await;
    a.shutdown().await;
    // The lease moved with the POP: what runs at the POP now runs on B's slots.
    edgy_runs_at_the_pop(&pop, &token, b.quic_addr).await;
    // B's books count what the POP holds (compared in one poll; B's capacity view is
    // refreshed every second).
    let b_url = format!("http://{}", b.http_addr);
    let http = reqwest::Client::new();
    let mut patience = Patience::new();
    let (agree, last) = loop {
        let held = u64::from(pop.lease_holding(&tenant).0);
        let leased = leased_at(&http, &b_url, ADMIN, "t").await;
        if held > 0 && leased == held {
            break (true, (held, leased));
        }
        if !patience.more() {
            break (false, (held, leased));
        }
    };
    assert!(
        agree,
        "B never counted the POP's lease (POP holds, B counts): {last:?}"
    );
    pop.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenants_lease_moves_whole_and_its_next_call_runs_at_the_pop() {
    let TwoRegions {
        _dir,
        a,
        b,
        pop,
        token,
    } = two_regions(region_config()).await;
    let tenant = TenantId::new("t").expect("tenant");
    let at_a = a.quic_addr;
    edgy_runs_at_the_pop(&pop, &token, at_a).await;
    a.shutdown().await;
    // No call until a renewal round has taken the lease off A. B counts nothing for this
    // POP and answers the renewal with no slots; the book asks B for some then, so the
    // quiet tenant's idle hold moves with the lease instead of the empty book being
    // dropped (and the next call forwarded while a lease is fetched again).
    let mut rounds = pop.lease_rounds();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        rounds.wait_for(|_| pop.lease_region(&tenant) != Some(at_a)),
    )
    .await
    .expect("a round took the lease off A within 30 s")
    .expect("the POP's lease task is running");
    assert_eq!(
        (pop.lease_region(&tenant), pop.lease_holding(&tenant).0 > 0),
        (Some(b.quic_addr), true),
        "the quiet tenant's lease did not move to B with slots"
    );
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/functions/edgy/invoke", pop.http_addr))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .expect("the POP answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-strata-executed-at"),
        "pop/pop-1",
        "the first call after the failover was forwarded"
    );
    pop.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_request_finds_its_state_at_the_same_region_among_two() {
    let TwoRegions {
        _dir,
        a: _a,
        b: _b,
        pop,
        token,
    } = two_regions(region_config()).await;
    let url = format!("http://{}/v1/functions/counter/invoke", pop.http_addr);
    let http = reqwest::Client::new();
    // Sixteen keys, interleaved, four at once (within one tenant's share of a region's
    // on-demand workers), four rounds. Each key stays at one region, and the keys spread
    // over both (a key goes to the region it hashes to, not to the fastest one), so its
    // pool slot there is the one it used before. Within the region, reaching that slot's
    // instance is best effort (a slot busy with another key's call runs this one in a
    // one-off instance; docs/guest-abi.md), which the sandbox tests cover, so the count is
    // only checked to be a count here.
    let keys: Vec<String> = (0..16).map(|i| format!("user-{i}")).collect();
    let mut home: HashMap<String, String> = HashMap::new();
    for (round, chunk) in (1..=4).flat_map(|r| keys.chunks(4).map(move |c| (r, c))) {
        let calls = chunk.iter().map(|key| {
            let (http, url, token) = (&http, &url, &token);
            async move {
                let resp = http
                    .post(url)
                    .bearer_auth(token)
                    .header("x-strata-affinity", key)
                    .send()
                    .await
                    .expect("request completes");
                let status = resp.status();
                let at = header(&resp, "x-strata-executed-at");
                let body = resp.text().await.expect("body");
                assert_eq!(status, 200, "key {key} at {at}: {body}");
                (key.clone(), at, body)
            }
        });
        for (key, at, count) in futures::future::join_all(calls).await {
            let first = home.entry(key.clone()).or_insert_with(|| at.clone());
            assert_eq!(*first, at, "key {key} moved between regions");
            let count: u64 = count.parse().expect("a count");
            assert!(count >= 1, "key {key} in round {round}: {count}");
        }
    }
    let regions: std::collections::HashSet<&String> = home.values().collect();
    assert_eq!(
        regions.len(),
        2,
        "the keys spread over both regions: {home:?}"
    );
}
