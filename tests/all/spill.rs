//! Spill to the region: a POP over its capacity (its execution slots taken, or a function
//! that does not fit its memory budget) forwards to the region at once instead of queueing,
//! and every request still gets its answer.

use crate::support::{
    Patience, TestCluster, header, over_capacity_forwards, pop_config, region_config,
};
use serde_json::json;

/// A command module that sleeps 300 ms when its payload starts with `s` and returns at
/// once otherwise, so one function can be made popular quickly and then held busy.
/// Sleeping (one `poll_oneoff` clock subscription) keeps the two cores free for the nodes.
const NAPPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; iovec at 0: 16 bytes of stdin into 256; bytes read at 8
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eq (i32.load8_u (i32.const 256)) (i32.const 115))
      (then
        ;; subscription at 512: clock tag, monotonic clock, 300 ms relative; events at 640
        (i32.store8 (i32.const 520) (i32.const 0))
        (i32.store (i32.const 528) (i32.const 1))
        (i64.store (i32.const 536) (i64.const 300000000))
        (drop (call $poll (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 768)))))))"#;

/// A command module that does nothing and exits 0.
const NOOP: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Invokes `name` with `body` at the POP until it runs there.
async fn make_local(c: &TestCluster, name: &str, body: &'static str) {
    let mut patience = Patience::new();
    while patience.more() {
        let resp = c.invoke(name, body).await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            return;
        }
    }
    panic!("{name} never ran at the POP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_with_its_slots_full_spills_to_the_region() {
    const CLIENTS: usize = 6;
    let mut pop = pop_config();
    pop.local_concurrency = 1;
    // The tenant's lease holds more slots than there are clients, so a spill comes from
    // the POP's one execution slot, not from the lease running dry.
    pop.lease_batch = 16;
    let c = TestCluster::with(region_config(), pop).await;
    c.deploy_wat("napper", json!({}), NAPPER).await;
    make_local(&c, "napper", "x").await;
    // The first local attempts may have been forwarded while the lease was being granted.
    let before = over_capacity_forwards(&c).await;
    // Bursts of concurrent slow requests; bounded, repeated only in case a loaded machine
    // kept one burst from overlapping.
    let (mut at_pop, mut at_region) = (0, 0);
    let mut patience = Patience::new();
    while (at_pop == 0 || at_region == 0) && patience.more() {
        let burst = (0..CLIENTS).map(|_| c.invoke("napper", "slow"));
        for resp in futures::future::join_all(burst).await {
            assert_eq!(resp.status(), 200);
            match header(&resp, "x-strata-executed-at").as_str() {
                "pop/pop-1" => at_pop += 1,
                "region/region-1" => at_region += 1,
                other => panic!("executed at {other:?}"),
            }
        }
    }
    assert!(at_pop > 0, "nothing of the bursts ran at the POP");
    assert!(at_region > 0, "nothing of the bursts spilled to the region");
    // The popular function's extra requests were forwarded for capacity, not queued: a
    // queued one would have run at the POP.
    assert!(
        over_capacity_forwards(&c).await >= before + at_region,
        "spilled requests are not all counted as over_capacity forwards"
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_does_not_fit_the_memory_budget_runs_at_the_region() {
    let mut pop = pop_config();
    pop.placement.memory_budget_mb = 64;
    let c = TestCluster::with(region_config(), pop).await;
    c.deploy_wat("small", json!({"memory_mb": 16}), NOOP).await;
    c.deploy_wat("big", json!({"memory_mb": 128}), NOOP).await;
    // Both get the same traffic; only the one that fits becomes local.
    let mut patience = Patience::new();
    let mut small_local = false;
    while !small_local && patience.more() {
        let resp = c.invoke("big", "").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
        let resp = c.invoke("small", "").await;
        assert_eq!(resp.status(), 200);
        small_local = header(&resp, "x-strata-executed-at") == "pop/pop-1";
    }
    assert!(small_local, "the small function never ran at the POP");
    // `big` is as popular as `small` by now and keeps running at the region.
    for _ in 0..20 {
        let resp = c.invoke("big", "").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    }
    assert!(
        over_capacity_forwards(&c).await > 0,
        "the popular function that does not fit was not forwarded as over_capacity"
    );
    c.nodes.shutdown().await;
}
