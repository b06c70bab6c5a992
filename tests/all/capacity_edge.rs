//! Capacity at the edge: the POP's popular set fits its memory budget, and neither a flood
//! of rare functions nor functions competing at the budget edge push the popular one out.

use crate::support::{Patience, TestCluster, header, pop_config, region_config};
use serde_json::json;

/// A command module that does nothing and exits 0.
const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Invokes `hello` at the POP until it runs there.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rare_functions_never_displaces_the_popular_one() {
    let mut pop = pop_config();
    // Room for two 128 MiB functions; a small tracked table so the flood cycles through it.
    pop.placement.memory_budget_mb = 300;
    pop.placement.max_tracked = 32;
    let c = TestCluster::with(region_config(), pop).await;
    for name in ["mid0", "mid1", "mid2"] {
        c.deploy_wat(name, json!({}), NOOP).await;
    }
    make_hello_local(&c).await;
    let mut mids_local = std::collections::BTreeSet::new();
    const ROUNDS: usize = 90;
    const RARE_PER_ROUND: usize = 4;
    for round in 0..ROUNDS {
        let resp = c.invoke("hello", "x").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-strata-executed-at"),
            "pop/pop-1",
            "the popular function left the POP in round {round}"
        );
        // Three functions of about the same rate compete for the one remaining share of
        // the budget: at most one of them ever gets it.
        let mid = format!("mid{}", round % 3);
        let resp = c.invoke(&mid, "").await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            mids_local.insert(mid);
        }
        // Hundreds of distinct rare names (not deployed: the region answers 404), each
        // seen once.
        for i in 0..RARE_PER_ROUND {
            let name = format!("rare-{round}-{i}");
            let resp = c.invoke(&name, "").await;
            assert_eq!(resp.status(), 404, "{name}");
        }
    }
    assert!(
        mids_local.len() <= 1,
        "the budget has room for one more function, yet {mids_local:?} ran at the POP"
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_with_a_resource_group_runs_at_the_region() {
    let c = TestCluster::start().await;
    c.deploy_wat("shared", json!({"resource_group": "carts"}), NOOP)
        .await;
    for _ in 0..30 {
        let resp = c.invoke("shared", "").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    }
    c.nodes.shutdown().await;
}

/// A command module with code of its own (so no other test's artifact matches its digest).
const TRENDY: &str = r#"(module (memory (export "memory") 1) (func (export "_start") nop nop))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_trending_up_at_one_pop_makes_another_pop_prepare_the_code() {
    let mut region = region_config();
    region.trending.tick_ms = 200;
    // Hints repeat while the rise lasts, so one sent before B subscribed is not the last.
    region.trending.cooldown_ms = 500;
    let mut pop_a = pop_config();
    pop_a.report_interval_ms = 100;
    let c = TestCluster::with(region, pop_a).await;
    let wasm = wat::parse_str(TRENDY).expect("valid wat");
    let digest = common::model::ArtifactDigest::of(&wasm);
    c.nodes
        .deploy("trendy", json!({}), wasm)
        .await
        .expect("deploys");
    // POP B, same region and CA, never sees a request for `trendy`.
    let b = c.another_pop("pop-b").await;
    assert!(!b.has_module(&digest));
    // Rising traffic at POP A until B has the code (waiting on the condition, bounded).
    let mut patience = Patience::new();
    let mut burst = 1;
    while !b.has_module(&digest) && patience.more() {
        for _ in 0..burst {
            let resp = c.invoke("trendy", "").await;
            assert_eq!(resp.status(), 200);
        }
        burst = (burst + 1).min(50);
    }
    assert!(
        b.has_module(&digest),
        "POP B never prepared the trending function's code"
    );
    b.shutdown().await;
    c.nodes.shutdown().await;
}

/// A reactor whose every call sleeps 20 ms (one `poll_oneoff` clock subscription).
const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "strata_handle") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 20000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.const 0)))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_with_steady_traffic_at_the_pop_gets_an_instance_ahead_of_its_concurrency() {
    let mut pop = pop_config();
    pop.warm.tick_ms = 50;
    let c = TestCluster::with(region_config(), pop).await;
    c.deploy_wat("sleeper", json!({"abi": "reactor"}), SLEEPER)
        .await;
    // One request at a time: on demand the POP would never need a second instance; the
    // plan (Little's law + headroom) pre-warms one.
    let mut patience = Patience::new();
    while c.nodes.pop.warm_instances() < 2 && patience.more() {
        let resp = c.invoke("sleeper", "").await;
        assert_eq!(resp.status(), 200);
    }
    assert!(
        c.nodes.pop.warm_instances() >= 2,
        "no instance was pre-warmed beyond the one sequential traffic uses"
    );
    c.nodes.shutdown().await;
}
