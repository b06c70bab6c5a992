//! A POP's tenant leases across quiet spells: a tenant that ran at the POP keeps a floor of
//! its lease through renewal rounds without traffic, so its next request runs at the POP
//! (not forwarded while a lease is fetched again); once the idle hold is over the slots go
//! back to the region.
//!
//! A POP whose region stops answering (its traffic cut silently, no close frame) keeps
//! running what it has cached, on the stalled-lease rule, instead of forwarding it to the
//! region that does not answer.
//!
//! "Quiet for N rounds" is awaited on the POP's renewal-round counter, and a lease's state
//! on the POP's view of it, bounded, never by sleeping for a time.

use crate::support::{
    Patience, TestCluster, header, leased_at, over_capacity_forwards, pop_config, region_config,
};
use common::model::TenantId;
use pop_node::leases::LeaseView;
use std::time::Duration;
use testkit::proxy::DelayProxy;

/// Lease TTL of these tests at both tiers: renewal rounds every 300 ms.
const TTL_MS: u64 = 900;

fn dev() -> TenantId {
    TenantId::new(strata::dev::DEV_TENANT.to_owned()).expect("valid tenant")
}

/// A cluster with short leases and `hold_ms` of idle hold at the POP.
async fn cluster(hold_ms: u64) -> TestCluster {
    let mut region = region_config();
    region.limits.lease_ttl_ms = TTL_MS;
    let mut pop = pop_config();
    pop.lease_ttl_ms = TTL_MS;
    pop.lease_idle_hold_ms = hold_ms;
    TestCluster::with(region, pop).await
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
    let mut region = region_config();
    region.limits.lease_ttl_ms = TTL_MS;
    let mut pop = pop_config();
    pop.lease_ttl_ms = TTL_MS;
    let c = TestCluster::via(region, pop, &proxy).await;
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
