//! Tenancy attacks: a hostile tenant's long-running calls cannot take every execution
//! slot of the region; a revoked token is refused at the POP; an impostor POP cannot
//! return another POP's lease or write another tenant's logs.

use crate::support::{LOOP_FOREVER, Patience, TestCluster, error_kind, pop_config, region_config};
use common::model::TenantId;
use region_node::RegionConfig;
use serde_json::json;

/// A hostile tenant (`dev`) floods the region with calls that never end on their own;
/// the victim's calls still run while every one of them is in flight.
async fn hostile_calls_leave_the_victim_a_slot(
    region_cfg: RegionConfig,
    hostile: usize,
    cap: usize,
) {
    let c = TestCluster::with(region_cfg, pop_config()).await;
    let region = c.nodes.region_url();
    let victim = TenantId::new("victim").expect("valid");
    let registry = c.nodes.region.registry();
    registry
        .create_tenant(victim.clone(), 1024)
        .expect("tenant");
    let victim_token = registry.create_token(&victim).expect("token");
    let hello = wat::parse_str(HELLO).expect("wat");
    c.nodes
        .deploy_as(&victim_token, "hello", json!({}), hello)
        .await
        .expect("deploys");
    c.deploy_wat("forever", json!({"timeout_ms": 8000}), LOOP_FOREVER)
        .await;

    let calls: Vec<_> = (0..hostile)
        .map(|_| {
            let (http, region, token) = (c.http.clone(), region.clone(), c.nodes.token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{region}/v1/functions/forever/invoke"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request completes");
                (resp.status().as_u16(), error_kind(resp).await)
            })
        })
        .collect();
    // Every call past the tenant's share is refused at once (never queued); the rest hold
    // their slots.
    let mut patience = Patience::new();
    while calls.iter().filter(|h| h.is_finished()).count() < hostile - cap && patience.more() {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (done, running): (Vec<_>, Vec<_>) = calls.into_iter().partition(|h| h.is_finished());
    assert_eq!(
        (done.len(), running.len()),
        (hostile - cap, cap),
        "calls past the tenant's share are refused at once, the others run"
    );
    for h in done {
        let (status, kind) = h.await.expect("joins");
        assert_eq!((status, kind.as_str()), (429, "throttled"));
    }
    // The victim is served while every hostile call is still running.
    for _ in 0..3 {
        let resp = c
            .http
            .post(format!("{region}/v1/functions/hello/invoke"))
            .bearer_auth(&victim_token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "hello");
    }
    assert!(
        running.iter().all(|h| !h.is_finished()),
        "the victim was served only after the hostile calls ended"
    );
    for h in running {
        assert_eq!(h.await.expect("joins").0, 504, "bounded by its own timeout");
    }
}

/// Writes `hello` to stdout.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_every_execution_slot() {
    let mut region = region_config();
    region.max_concurrency = 4;
    region.fleets.enabled = false;
    hostile_calls_leave_the_victim_a_slot(region, 6, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_every_on_demand_worker() {
    let mut region = region_config();
    region.fleets.workers = 4;
    hostile_calls_leave_the_victim_a_slot(region, 6, 2).await;
}
