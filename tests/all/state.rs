//! Shared state of stateful functions through a real region: concurrent compare-and-swap
//! increments from two functions of one resource group add up exactly, groups are
//! per tenant, and a function without a group cannot import the state functions.

use crate::support::{TestCluster, deploy_as as deploy, error_kind, tenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Reads `counter` (an 8-byte little-endian integer), adds one with `cas`, and retries
/// until the swap succeeds. Exits 2..4 on an unexpected host-import result.
const INCREMENT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "strata" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "strata" "cas" (func $cas (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter")
  (func (export "_start") (local $n i32) (local $r i32) (local $tries i32)
    (block $done
      (loop $retry
        (local.set $tries (i32.add (local.get $tries) (i32.const 1)))
        (if (i32.gt_u (local.get $tries) (i32.const 100000)) (then (call $exit (i32.const 3))))
        (local.set $n (call $get (i32.const 0) (i32.const 7) (i32.const 256) (i32.const 8)))
        (if (i32.eq (local.get $n) (i32.const -1))
          (then
            (i64.store (i32.const 512) (i64.const 1))
            (local.set $r (call $cas (i32.const 0) (i32.const 7)
              (i32.const 0) (i32.const -1) (i32.const 512) (i32.const 8))))
          (else
            (if (i32.ne (local.get $n) (i32.const 8)) (then (call $exit (i32.const 2))))
            (i64.store (i32.const 512) (i64.add (i64.load (i32.const 256)) (i64.const 1)))
            (local.set $r (call $cas (i32.const 0) (i32.const 7)
              (i32.const 256) (i32.const 8) (i32.const 512) (i32.const 8)))))
        (br_if $done (i32.eq (local.get $r) (i32.const 1)))
        (if (i32.lt_s (local.get $r) (i32.const 0)) (then (call $exit (i32.const 4))))
        (br $retry))))
  )"#;

/// Writes `counter`'s 8 bytes to stdout (nothing when absent).
const READ: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "strata" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "counter")
  (func (export "_start") (local $n i32)
    (local.set $n (call $get (i32.const 0) (i32.const 7) (i32.const 256) (i32.const 8)))
    (if (i32.eq (local.get $n) (i32.const 8))
      (then
        (i32.store (i32.const 64) (i32.const 256))
        (i32.store (i32.const 68) (i32.const 8))
        (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 72)))))))"#;

async fn invoke(c: &TestCluster, base: &str, token: &str, name: &str) -> reqwest::Response {
    c.http
        .post(format!("{base}/v1/functions/{name}/invoke"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request completes")
}

/// The counter as `token`'s `read` function sees it.
async fn counter(c: &TestCluster, token: &str) -> u64 {
    let r = invoke(c, &c.nodes.region_url(), token, "read").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.expect("body");
    let bytes: [u8; 8] = body.as_ref().try_into().expect("8 bytes");
    u64::from_le_bytes(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_increments_from_two_functions_add_up_exactly() {
    // 40 calls of one tenant at once: within its share of the on-demand workers
    // (`tenant_slot_share_percent` of 96 is 48), so none is refused for fairness.
    let mut region = crate::support::region_config();
    region.fleets.workers = 96;
    let c = TestCluster::with(region, crate::support::pop_config()).await;
    let token = c.nodes.token.clone();
    let group = json!({"resource_group": "counters"});
    for (name, wat) in [("inc-a", INCREMENT), ("inc-b", INCREMENT), ("read", READ)] {
        let r = deploy(&c, &token, name, group.clone(), wat).await;
        assert!(r.status().is_success(), "{name}: {}", r.status());
    }
    const EACH: usize = 20;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2 * EACH {
        let (http, token) = (c.http.clone(), token.clone());
        let name = if i % 2 == 0 { "inc-a" } else { "inc-b" };
        // Half through the POP (which forwards stateful functions), half at the region.
        let base = if i % 4 < 2 {
            c.nodes.region_url()
        } else {
            c.nodes.pop_url()
        };
        calls.spawn(async move {
            http.post(format!("{base}/v1/functions/{name}/invoke"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request completes")
                .status()
        });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::OK);
    }
    assert_eq!(counter(&c, &token).await, 2 * EACH as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_the_same_name_in_another_tenant_is_another_namespace() {
    let c = TestCluster::start().await;
    let mine = c.nodes.token.clone();
    let other = tenant(&c, "other").await;
    let group = json!({"resource_group": "counters"});
    for token in [&mine, &other] {
        for (name, wat) in [("inc", INCREMENT), ("read", READ)] {
            let r = deploy(&c, token, name, group.clone(), wat).await;
            assert!(r.status().is_success(), "{name}: {}", r.status());
        }
    }
    for _ in 0..3 {
        let r = invoke(&c, &c.nodes.region_url(), &mine, "inc").await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = invoke(&c, &c.nodes.region_url(), &other, "inc").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(counter(&c, &mine).await, 3);
    assert_eq!(counter(&c, &other).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_a_resource_group_cannot_import_shared_state() {
    let c = TestCluster::start().await;
    let r = deploy(&c, &c.nodes.token, "loner", json!({}), READ).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["kind"], "invalid_module");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("resource_group"), "{message}");
    // Nothing was deployed.
    let r = invoke(&c, &c.nodes.region_url(), &c.nodes.token, "loner").await;
    assert_eq!(error_kind(r).await, "not_found");
}
