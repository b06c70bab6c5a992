//! A POP's tenant leases across quiet spells: a tenant that ran at the POP keeps a floor of
//! its lease through renewal rounds without traffic, so its next request runs at the POP
//! (not forwarded while a lease is fetched again); once the idle hold is over the slots go
//! back to the region.
//!
//! A POP whose region stops answering (its traffic cut silently, no close frame) keeps
//! running what it has cached, on the stalled-lease rule, instead of forwarding it to the
//! region that does not answer.
//!
//! A POP far from its region renews all its tenants' leases within a renewal period: their
//! lease messages go concurrently, not one tenant after another.
//!
//! "Quiet for N rounds" is awaited on the POP's renewal-round counter, and a lease's state
//! on the POP's view of it, bounded, never by sleeping for a time.

use crate::support::{
    Patience, TestCluster, deploy_as, header, leased_at, over_capacity_forwards, pop_config,
    region_config, tenant,
};
use common::model::TenantId;
use pop_node::PopConfig;
use pop_node::leases::LeaseView;
use region_node::RegionConfig;
use std::time::Duration;
use testkit::proxy::DelayProxy;

/// Lease TTL of these tests at both tiers: renewal rounds every 300 ms.
const TTL_MS: u64 = 900;

fn dev() -> TenantId {
    TenantId::new(strata::dev::DEV_TENANT.to_owned()).expect("valid tenant")
}

/// Configurations with short leases and `hold_ms` of idle hold at the POP.
fn configs(hold_ms: u64) -> (RegionConfig, PopConfig) {
    let mut region = region_config();
    region.limits.lease_ttl_ms = TTL_MS;
    let mut pop = pop_config();
    pop.lease_ttl_ms = TTL_MS;
    pop.lease_idle_hold_ms = hold_ms;
    (region, pop)
}

/// A cluster with short leases and `hold_ms` of idle hold at the POP.
async fn cluster(hold_ms: u64) -> TestCluster {
    let (region, pop) = configs(hold_ms);
    TestCluster::with(region, pop).await
}

/// As [`cluster`], the POP reaching its region through `proxy`.
async fn cluster_via(hold_ms: u64, proxy: &DelayProxy) -> TestCluster {
    let (region, pop) = configs(hold_ms);
    TestCluster::via(region, pop, proxy).await
}

/// Invokes `hello` at the POP until it runs there (the POP learned it, fetched it and got
/// a lease).
async fn make_hello_local(c: &TestCluster) {
    let mut patience = Patience::new();
    while patience.more() {
        let resp = c.invoke("hello", "x").await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            return;
        }
    }
    panic!("hello never ran at the POP");
}

/// Waits until `rounds` more renewal rounds have completed at the POP, bounded.
async fn wait_rounds(c: &TestCluster, rounds: u64) {
    let mut rx = c.nodes.pop.lease_rounds();
    let target = *rx.borrow_and_update() + rounds;
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|n| *n >= target))
        .await
        .expect("renewal rounds within 30 s")
        .expect("the POP's lease task is running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quiet_for_several_renewal_rounds_still_runs_at_the_pop() {
    let c = cluster(60_000).await;
    make_hello_local(&c).await;
    // Quiet for five renewal rounds: without the hold, the first quiet one gives every
    // free slot back.
    wait_rounds(&c, 5).await;
    let (held, in_use) = c.nodes.pop.lease_holding(&dev());
    assert!(held >= 1, "the quiet tenant kept no slot ({held} held)");
    assert_eq!(in_use, 0);
    let resp = c.invoke("hello", "x").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-strata-executed-at"),
        "pop/pop-1",
        "the first request after the quiet spell was forwarded"
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenant_gives_its_lease_back_once_the_idle_hold_is_over() {
    let c = cluster(1500).await;
    make_hello_local(&c).await;
    // Rounds go on while the tenant stays quiet; the hold ends and the slots go back.
    let pop = &c.nodes.pop;
    let mut rx = pop.lease_rounds();
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|_| pop.lease_holding(&dev()) == (0, 0)),
    )
    .await
    .expect("the lease was given back within 30 s")
    .expect("the POP's lease task is running");
    // The region's books agree: nothing of the tenant is leased any more.
    let region = c.nodes.region_url();
    let mut patience = Patience::new();
    let mut leased = leased_at(&c.http, &region, &c.nodes.admin_token, "dev").await;
    while leased > 0 && patience.more() {
        leased = leased_at(&c.http, &region, &c.nodes.admin_token, "dev").await;
    }
    assert_eq!(leased, 0, "the region still counts slots leased to the POP");
    c.nodes.shutdown().await;
}

/// Waits until the POP's view of the dev tenant's lease satisfies `ok`, bounded; returns it.
async fn wait_lease(c: &TestCluster, what: &str, ok: impl Fn(&LeaseView) -> bool) -> LeaseView {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = c.nodes.pop.lease_view(&dev());
        if ok(&view) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never became {what} within 30 s: {view:?}"
        );
        // Polling a condition, not waiting for a time to pass.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_whose_region_stops_answering_keeps_running_cached_functions_locally() {
    let proxy = DelayProxy::start(Duration::ZERO)
        .await
        .expect("proxy binds");
    let c = cluster_via(60_000, &proxy).await;
    make_hello_local(&c).await;
    let forwarded = over_capacity_forwards(&c).await;

    // The region goes silent: no close frame, the POP's connection stays up until the
    // transport's idle timeout.
    proxy.set_down(true);
    let view = wait_lease(&c, "expired and stalled", |v| !v.valid && v.stalled).await;
    assert!(
        view.held >= 1,
        "the POP held a lease before the cut: {view:?}"
    );
    for _ in 0..5 {
        let resp = c.invoke("hello", "x").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-strata-executed-at"),
            "pop/pop-1",
            "a cached function was not run at the POP while its region was silent"
        );
    }
    assert_eq!(
        over_capacity_forwards(&c).await,
        forwarded,
        "runnable invocations were forwarded to the silent region"
    );

    // The link comes back: the region answers, the stall ends, and local runs draw from a
    // lease the region counts again.
    proxy.set_down(false);
    wait_lease(&c, "answered again", |v| !v.stalled).await;
    make_hello_local(&c).await;
    wait_lease(&c, "granted again", |v| v.valid && v.held >= 1).await;
    c.nodes.shutdown().await;
}

/// A command module that answers 200 with an empty body.
const QUIET: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// POSTs an empty invocation to `url` with `token`.
async fn post_as(c: &TestCluster, url: &str, token: &str) -> reqwest::Response {
    c.http
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request completes")
}

/// Invokes `quiet` at the POP as `token`'s tenant `t` until it runs there (the POP learned
/// the token and the function, fetched it and got a lease).
async fn run_quiet_at_pop(c: &TestCluster, t: &TenantId, token: &str) {
    let url = format!("{}/v1/functions/quiet/invoke", c.nodes.pop_url());
    let mut patience = Patience::new();
    while patience.more() {
        let resp = post_as(c, &url, token).await;
        // Until the token, the function and a lease have reached the POP, it forwards
        // (each forward a round trip to the far region): each request is the traffic.
        if resp.status() == 200 && header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            return;
        }
    }
    let view = c.nodes.pop.lease_view(t);
    panic!("{t:?}'s quiet never ran at the POP; its lease: {view:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_pop_keeps_every_tenants_lease_valid_through_renewal_rounds() {
    // 80 ms RTT and renewals every 300 ms: one tenant's messages after another's would
    // take 20 × 80 ms = 1.6 s a round, past the 900 ms a renewal keeps a lease valid.
    const TENANTS: usize = 20;
    let proxy = DelayProxy::start(Duration::from_millis(40))
        .await
        .expect("proxy binds");
    let c = cluster_via(60_000, &proxy).await;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let id = format!("far{i}");
        let token = tenant(&c, &id).await;
        let deployed = deploy_as(&c, &token, "quiet", serde_json::json!({}), QUIET).await;
        assert!(deployed.status().is_success(), "{}", deployed.status());
        tenants.push((TenantId::new(id).expect("valid tenant"), token));
    }
    futures::future::join_all(tenants.iter().map(|(id, t)| run_quiet_at_pop(&c, id, t))).await;
    // Quiet now, each holds its floor; after every round each lease is still valid.
    let mut rx = c.nodes.pop.lease_rounds();
    rx.borrow_and_update();
    for round in 0..3 {
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .expect("a renewal round within 30 s")
            .expect("the POP's lease task is running");
        for (t, _) in &tenants {
            let view = c.nodes.pop.lease_view(t);
            assert!(
                view.valid && view.held >= 1,
                "after round {round}, {t:?}'s lease lapsed: {view:?}"
            );
        }
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tenants_keeps_the_pops_lease_books_bounded_and_the_victim_is_served() {
    // `lease_tenants` 16: one book per shard. Forty-one tenants, each running a function
    // pinned to the edge (idle hold a minute, so no book empties during the test): where
    // two meet in a shard the later one is forwarded, never refused, and the POP never
    // holds more than 16 books.
    const FLOOD: usize = 40;
    let (region, mut pop) = configs(60_000);
    pop.lease_tenants = 16;
    let c = TestCluster::with(region, pop).await;
    make_hello_local(&c).await;
    let url = format!("{}/v1/functions/quiet/invoke", c.nodes.pop_url());
    let mut forwarded = 0;
    for i in 0..FLOOD {
        let token = tenant(&c, &format!("flood{i}")).await;
        let placed = serde_json::json!({"placement": "edge"});
        let deployed = deploy_as(&c, &token, "quiet", placed, QUIET).await;
        assert!(deployed.status().is_success(), "{}", deployed.status());
        // Enough requests for the POP to learn the function, fetch it and draw a lease.
        let mut last = String::new();
        for _ in 0..12 {
            let resp = post_as(&c, &url, &token).await;
            assert_eq!(resp.status(), 200, "flood{i} was refused");
            last = header(&resp, "x-strata-executed-at");
        }
        forwarded += usize::from(last != "pop/pop-1");
        let books = c.nodes.pop.lease_books();
        assert!(books <= 16, "{books} lease books after flood{i}");
    }
    assert!(forwarded > 0, "no tenant ever found its shard full");
    // The victim, which drew first, is served correctly throughout.
    let resp = c.invoke("hello", "still here").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "Hello, still here!\n");
    c.nodes.shutdown().await;
}
