//! Fleets at the region: a frequent reactor keeps its warm instance while a burst of rare
//! reactors runs through the bounded on-demand fleet, whose own warm-pool budget lets a
//! rarely called reactor keep its state between calls.

use crate::support::{Patience, TestCluster, header, pop_config, region_config};
use common::policy::PlacementConfig;
use region_node::fleet::FleetsConfig;
use serde_json::json;

const RARE: usize = 40;
/// Calls that take `hot` over its bar (3) with room to spare for the score's decay.
const HOT_CALLS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_rare_reactors_does_not_evict_a_frequent_ones_warm_instance() {
    let mut region = region_config();
    // Room for the frequent pool plus the on-demand fleet's two: without the on-demand
    // lane's own budget, forty rare pools would push the frequent one out of the LRU.
    region.sandbox.max_warm_pools = 4;
    region.fleets = FleetsConfig {
        enabled: true,
        workers: 2,
        max_queued: 8,
        frequent: PlacementConfig {
            enter_score: 3.0,
            exit_score: 1.0,
            ..PlacementConfig::default()
        },
        rare_warm_pools: Some(2),
        ..FleetsConfig::default()
    };
    let c = TestCluster::with(region, pop_config()).await;
    let wat = include_str!("../../examples/counter.wat");
    c.deploy_wat("hot", json!({"abi": "reactor"}), wat).await;
    for i in 0..RARE {
        c.deploy_wat(&format!("rare-{i}"), json!({"abi": "reactor"}), wat)
            .await;
    }
    let region = c.nodes.region_url();

    // The first calls are rare, the later ones frequent: one instance serves them all, its
    // pool moving from the on-demand lane to the dedicated one with its count.
    for n in 1..=HOT_CALLS {
        let resp = c.invoke_at(&region, "hot", "").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), n.to_string());
    }

    let burst = (0..RARE).map(|i| {
        let c = &c;
        let region = &region;
        async move {
            let name = format!("rare-{i}");
            let resp = c.invoke_at(region, &name, "").await;
            let status = resp.status().as_u16();
            let retry_after = header(&resp, "retry-after");
            let start = header(&resp, "x-strata-start");
            (status, retry_after, start)
        }
    });
    let results = futures::future::join_all(burst).await;
    let ran = results.iter().filter(|(s, _, _)| *s == 200).count();
    for (status, retry_after, start) in &results {
        match status {
            200 => assert_eq!(start, "cold", "each rare reactor's first call"),
            // 503: the on-demand queue is full; 429: the tenant holds its share of the
            // workers (`tenant_slot_share_percent`). Both say when to retry.
            503 | 429 => assert!(!retry_after.is_empty(), "a refusal says when to retry"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        ran >= 2,
        "the on-demand workers ran some of the burst: {results:?}"
    );

    // The frequent function's instance survived the burst: warm, and the same instance
    // (its count carries on).
    let resp = c.invoke_at(&region, "hot", "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-start"), "warm");
    let count_after: u32 = resp.text().await.expect("body").parse().expect("a count");
    assert_eq!(count_after, HOT_CALLS + 1);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rarely_called_reactor_keeps_its_state_between_calls_with_fleets_on() {
    let region = region_config();
    assert!(region.fleets.enabled, "fleets are on by default");
    let bar = region.fleets.frequent.enter_score;
    let c = TestCluster::with(region, pop_config()).await;
    c.deploy_wat(
        "counter",
        json!({"abi": "reactor"}),
        include_str!("../../examples/counter.wat"),
    )
    .await;
    // Two calls from a device, far below the frequent bar (10 a minute): the POP forwards
    // them as rare and the region runs them in its on-demand fleet, whose warm lane keeps
    // the instance, so the second call sees the first one's count.
    assert!(bar > 2.0);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let resp = c.invoke("counter", "").await;
        assert_eq!(resp.status(), 200);
        let at = header(&resp, "x-strata-executed-at");
        assert!(at.starts_with("region/"), "rare at the POP too: {at}");
        let start = header(&resp, "x-strata-start");
        seen.push((start, resp.text().await.expect("body")));
    }
    assert_eq!(seen[0].1, "1");
    assert_eq!(seen[1], ("warm".to_owned(), "2".to_owned()));
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
async fn a_frequent_reactor_at_the_region_is_pre_warmed_ahead_of_its_concurrency() {
    let mut region = region_config();
    region.fleets.enabled = true;
    region.fleets.frequent.enter_score = 1.0;
    region.fleets.frequent.exit_score = 0.5;
    region.fleets.warm.tick_ms = 50;
    let c = TestCluster::with(region, pop_config()).await;
    c.deploy_wat("sleeper", json!({"abi": "reactor"}), SLEEPER)
        .await;
    let url = c.nodes.region_url();
    // One request at a time: on demand the region would never need a second instance; the
    // dedicated fleet's plan (Little's law + headroom) pre-warms one.
    let mut patience = Patience::new();
    while c.nodes.region.warm_instances() < 2 && patience.more() {
        let resp = c.invoke_at(&url, "sleeper", "").await;
        assert_eq!(resp.status(), 200);
    }
    assert!(
        c.nodes.region.warm_instances() >= 2,
        "no instance was pre-warmed beyond the one sequential traffic uses"
    );
    c.nodes.shutdown().await;
}
