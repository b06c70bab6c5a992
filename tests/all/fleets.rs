//! Fleets at the region: a frequent reactor keeps its warm instance while a burst of rare
//! reactors runs through the bounded on-demand fleet.

use crate::support::{Patience, TestCluster, header, pop_config, region_config};
use common::policy::PlacementConfig;
use region_node::fleet::FleetsConfig;
use serde_json::json;

const RARE: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_rare_reactors_does_not_evict_a_frequent_ones_warm_instance() {
    let mut region = region_config();
    // Room for the frequent pool plus the on-demand workers' pools only: without fleets,
    // forty rare pools would push the frequent one out of the LRU.
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
    };
    let c = TestCluster::with(region, pop_config()).await;
    let wat = include_str!("../../examples/counter.wat");
    c.deploy_wat("hot", json!({"abi": "reactor"}), wat).await;
    for i in 0..RARE {
        c.deploy_wat(&format!("rare-{i}"), json!({"abi": "reactor"}), wat)
            .await;
    }
    let region = c.nodes.region_url();

    // The first invocations are rare (cold each time, nothing kept); once over the bar the
    // function runs in the dedicated fleet and its instance stays warm.
    let mut patience = Patience::new();
    let count_before = loop {
        let resp = c.invoke_at(&region, "hot", "").await;
        assert_eq!(resp.status(), 200);
        let start = header(&resp, "x-strata-start");
        let body = resp.text().await.expect("body");
        if start == "warm" {
            break body.parse::<u32>().expect("a count");
        }
        assert!(patience.more(), "hot never became warm");
    };
    assert!(
        patience.tries() >= 3,
        "rare until its third request (enter_score 3)"
    );

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
            200 => assert_eq!(start, "cold", "rare reactors run on demand"),
            503 => assert!(!retry_after.is_empty(), "a refusal says when to retry"),
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
    assert_eq!(count_after, count_before + 1);
    c.nodes.shutdown().await;
}
