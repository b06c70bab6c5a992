//! Function logs: guest stderr kept per function at both tiers, POP lines shipped to the
//! region, read through `GET /v1/functions/{name}/logs`, scoped to the caller's tenant.

use crate::routes::{cluster, other_tenant};
use crate::support::{TestCluster, header};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long shipped lines may take to reach the region (the POP ships every 20 ms here).
const SHIPPING: Duration = Duration::from_secs(10);

/// Writes stdin to stderr (its log) and `ok` to stdout.
const NOISY: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "ok")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

async fn logs(c: &TestCluster, token: &str, name: &str, query: &str) -> reqwest::Response {
    c.http
        .get(format!(
            "{}/v1/functions/{name}/logs{query}",
            c.nodes.region_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}

async fn page(c: &TestCluster, token: &str, name: &str, query: &str) -> Value {
    let resp = logs(c, token, name, query).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

fn lines(page: &Value) -> Vec<(String, String, String)> {
    page["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            (s("line"), s("node"), s("request_id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_at_the_region_is_read_in_pages_that_follow_on() {
    let c = cluster().await;
    c.deploy_wat("noisy", json!({}), NOISY).await;
    let region = c.nodes.region_url();
    let first = c.invoke_at(&region, "noisy", "one\ntwo\n").await;
    assert_eq!(first.status(), 200);
    let id = header(&first, "x-strata-request-id");
    let token = c.nodes.token.clone();
    let p = page(&c, &token, "noisy", "?limit=1").await;
    assert_eq!(
        lines(&p),
        [("one".into(), "region/region-1".into(), id.clone())]
    );
    let next = p["next"].as_u64().expect("next");
    let p = page(&c, &token, "noisy", &format!("?since={next}")).await;
    assert_eq!(lines(&p), [("two".into(), "region/region-1".into(), id)]);
    let next = p["next"].as_u64().expect("next");
    assert!(lines(&page(&c, &token, "noisy", &format!("?since={next}")).await).is_empty());
    c.invoke_at(&region, "noisy", "three").await;
    let p = page(&c, &token, "noisy", &format!("?since={next}")).await;
    assert_eq!(lines(&p).len(), 1);
    assert_eq!(lines(&p)[0].0, "three");
    assert_eq!(logs(&c, &token, "noisy", "?limit=0").await.status(), 400);
    let bad = logs(&c, &token, "noisy", "?since=x").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(crate::support::error_kind(bad).await, "bad_request");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_at_the_pop_are_shipped_to_the_region() {
    let c = cluster().await;
    c.deploy_wat("noisy", json!({"placement": "edge"}), NOISY)
        .await;
    // Pinned to the edge: once the POP has learned the function and fetched its code it
    // runs it itself.
    let mut local = None;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let resp = c.invoke("noisy", "from the edge").await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            local = Some(header(&resp, "x-strata-request-id"));
            break;
        }
    }
    let id = local.expect("the edge-pinned function never ran at the POP");
    let deadline = Instant::now() + SHIPPING;
    let token = c.nodes.token.clone();
    loop {
        let p = page(&c, &token, "noisy", "?limit=1000").await;
        let shipped = lines(&p)
            .into_iter()
            .find(|(_, node, request)| node == "pop/pop-1" && *request == id);
        if let Some((line, ..)) = shipped {
            assert_eq!(line, "from the edge");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "POP log line never reached the region"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_logs() {
    let c = cluster().await;
    c.deploy_wat("noisy", json!({}), NOISY).await;
    let region = c.nodes.region_url();
    assert_eq!(c.invoke_at(&region, "noisy", "secret").await.status(), 200);
    let other = other_tenant(&c, "acme").await;
    // acme has no function named noisy: 404, not our lines.
    let resp = logs(&c, &other, "noisy", "").await;
    assert_eq!(resp.status(), 404);
    // With its own noisy, acme sees only its own (empty) log.
    c.nodes
        .deploy_as(
            &other,
            "noisy",
            json!({}),
            wat::parse_str(NOISY).expect("wat"),
        )
        .await
        .expect("deploys");
    assert!(lines(&page(&c, &other, "noisy", "").await).is_empty());
    assert_eq!(lines(&page(&c, &c.nodes.token, "noisy", "").await).len(), 1);
    assert_eq!(logs(&c, "st_bogus", "noisy", "").await.status(), 401);
    c.nodes.shutdown().await;
}
