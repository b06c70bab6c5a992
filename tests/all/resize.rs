//! Resource resizing: `x-strata-memory-mb` per invocation up to `max_memory_mb`,
//! `auto_resize` retrying an out-of-memory failure at double the memory and keeping the
//! size, and the observed peak memory in `GET /v1/functions/{name}`.

use crate::support::{Patience, TestCluster, error_kind, header, pop_config, region_config};
use serde_json::{Value, json};

/// Grows its memory by the number of 64 KiB pages given on stdin (decimal), then prints
/// `ok`; traps when the growth is refused.
const GROWER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "ok")
  (func (export "_start")
    (local $i i32) (local $n i32) (local $len i32) (local $c i32)
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $len (i32.load (i32.const 8)))
    (block $done
      (loop $digits
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c
          (i32.sub (i32.load8_u (i32.add (i32.const 128) (local.get $i))) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $c)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digits)))
    (if (i32.eq (memory.grow (local.get $n)) (i32.const -1)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// 48 pages on top of the initial one: about 3.06 MiB, over a 2 MiB limit.
const THREE_MIB: &str = "48";

async fn invoke(c: &TestCluster, name: &str, memory_mb: Option<u32>) -> reqwest::Response {
    let mut req = c
        .http
        .post(format!(
            "{}/v1/functions/{name}/invoke",
            c.nodes.region_url()
        ))
        .bearer_auth(&c.nodes.token)
        .body(THREE_MIB);
    if let Some(mb) = memory_mb {
        req = req.header("x-strata-memory-mb", mb.to_string());
    }
    req.send().await.expect("request completes")
}

async fn function(c: &TestCluster, name: &str) -> Value {
    c.http
        .get(format!("{}/v1/functions/{name}", c.nodes.region_url()))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

fn peak(resp: &reqwest::Response) -> u64 {
    header(resp, "x-strata-peak-memory-bytes")
        .parse()
        .expect("peak header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_header_raises_memory_up_to_the_maximum() {
    let c = TestCluster::start().await;
    let config = json!({"memory_mb": 2, "max_memory_mb": 8, "placement": "region"});
    c.deploy_wat("grower", config, GROWER).await;

    let resp = invoke(&c, "grower", None).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(header(&resp, "x-strata-function-error"), "out-of-memory");

    let resp = invoke(&c, "grower", Some(4)).await;
    assert_eq!(resp.status(), 200);
    assert!(peak(&resp) > 3 << 20, "ran past 3 MiB: {}", peak(&resp));

    let resp = invoke(&c, "grower", Some(16)).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_memory_mb of 8"), "{message}");

    // Through the POP too: it forwards the header, the same rule applies.
    let resp = c
        .http
        .post(format!("{}/v1/functions/grower/invoke", c.nodes.pop_url()))
        .bearer_auth(&c.nodes.token)
        .header("x-strata-memory-mb", "16")
        .body(THREE_MIB)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 400);
    assert_eq!(error_kind(resp).await, "bad_request");
    let resp = c
        .http
        .post(format!("{}/v1/functions/grower/invoke", c.nodes.pop_url()))
        .bearer_auth(&c.nodes.token)
        .header("x-strata-memory-mb", "4")
        .body(THREE_MIB)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);

    let memory = &function(&c, "grower").await["memory"];
    assert_eq!(memory["samples"], 3, "{memory}");
    assert!(memory["observed_peak_mb"]["p99"].as_f64().expect("p99") > 3.0);
    // p99 ≈ 3.06 MiB × 1.25 ≈ 3.8 → 4.
    assert_eq!(memory["recommended_mb"], 4, "{memory}");
    assert_eq!(memory["learned_mb"], Value::Null);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_resize_retries_out_of_memory_once_and_keeps_the_size() {
    let c = TestCluster::start().await;
    let config = json!({"memory_mb": 2, "max_memory_mb": 8, "auto_resize": true,
        "placement": "region"});
    c.deploy_wat("grower", config, GROWER).await;

    let resp = invoke(&c, "grower", None).await;
    assert_eq!(resp.status(), 200, "the retry at 4 MiB succeeded");
    assert!(peak(&resp) > 3 << 20);
    let memory = &function(&c, "grower").await["memory"];
    assert_eq!(memory["oom_retries"], 1, "{memory}");
    assert_eq!(memory["learned_mb"], 4, "{memory}");

    // Next time it runs at the learned size directly: no second retry.
    let resp = invoke(&c, "grower", None).await;
    assert_eq!(resp.status(), 200);
    let memory = &function(&c, "grower").await["memory"];
    assert_eq!(memory["oom_retries"], 1, "{memory}");
    assert_eq!(memory["samples"], 2, "{memory}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_below_the_memory_size_is_refused() {
    let c = TestCluster::start().await;
    let wasm = wat::parse_str(GROWER).expect("wat");
    let err = c
        .nodes
        .deploy("grower", json!({"memory_mb": 4, "max_memory_mb": 2}), wasm)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("max_memory_mb"), "{err}");
    c.nodes.shutdown().await;
}

/// Peak memory of invocations run at the POP reaches the region in load reports and counts
/// in the percentiles and the recommendation, which survive a restart of both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peaks_at_the_pop_count_and_the_recommendation_survives_a_restart() {
    let mut pop = pop_config();
    pop.report_interval_ms = 100;
    let c = TestCluster::with(region_config(), pop.clone()).await;
    c.deploy_wat("grow", json!({"placement": "edge", "memory_mb": 8}), GROWER)
        .await;
    let at_pop = || async {
        c.http
            .post(format!("{}/v1/functions/grow/invoke", c.nodes.pop_url()))
            .bearer_auth(&c.nodes.token)
            .body(THREE_MIB)
            .send()
            .await
            .expect("request completes")
    };
    let mut at_region = 0u64;
    let mut patience = Patience::new();
    let mut local = 0;
    while local < 20 {
        let r = at_pop().await;
        assert_eq!(r.status(), 200);
        if header(&r, "x-strata-executed-at").starts_with("pop/") {
            local += 1;
        } else {
            at_region += 1;
            assert!(patience.more(), "the POP never ran `grow` itself");
        }
    }
    // More samples than the region ran itself: the POP's peaks were counted.
    let mut patience = Patience::new();
    let memory = loop {
        let memory = function(&c, "grow").await["memory"].clone();
        if memory["samples"].as_u64() > Some(at_region) {
            break memory;
        }
        assert!(patience.more(), "{at_region} run at the region: {memory}");
        tokio::task::yield_now().await;
    };
    assert!(
        memory["observed_peak_mb"]["p99"].as_f64() >= Some(3.0),
        "{memory}"
    );
    // 3.06 MiB × 1.25 → the 4 MiB step.
    assert_eq!(memory["recommended_mb"], 4, "{memory}");
    // `strata ls` reads the same from the list.
    let list: Value = c
        .http
        .get(format!("{}/v1/functions", c.nodes.region_url()))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let listed = list["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "grow")
        .map(|f| f["memory"]["recommended_mb"].clone());
    assert_eq!(listed, Some(json!(4)), "{list}");

    let c = c.restart(region_config(), pop, None).await;
    let after = function(&c, "grow").await["memory"].clone();
    assert_eq!(after["recommended_mb"], 4, "{after}");
    assert_eq!(
        after["observed_peak_mb"], memory["observed_peak_mb"],
        "{after}"
    );
    assert!(
        after["samples"].as_u64() >= memory["samples"].as_u64(),
        "{after}"
    );
    c.nodes.shutdown().await;
}
