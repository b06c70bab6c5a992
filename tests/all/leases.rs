//! A POP's tenant leases across quiet spells: a tenant that ran at the POP keeps a floor of
//! its lease through renewal rounds without traffic, so its next request runs at the POP
//! (not forwarded while a lease is fetched again); once the idle hold is over the slots go
//! back to the region.
//!
//! "Quiet for N rounds" is awaited on the POP's renewal-round counter, bounded, never by
//! sleeping.

use crate::support::{Patience, TestCluster, header, leased_at, pop_config, region_config};
use common::model::TenantId;
use std::time::Duration;

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
