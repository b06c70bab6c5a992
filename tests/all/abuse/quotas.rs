//! Per-tenant quotas under attack: a hostile tenant hits each quota (env bytes, functions,
//! versions, routes, queued event bytes, dead-letter bytes, shared-state keys) and gets a
//! `quota_exceeded` refusal naming it, while a victim tenant on the same region still
//! deploys, invokes, queues events and lists its own dead letters. Quotas are set small
//! in each test so the attacks are quick.

use crate::events::{OK, dead_letters};
use crate::support::{
    TRAP, TestClock, TestCluster, deploy_as as deploy, pop_config, region_config, tenant,
};
use region_node::quota::QuotaConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Puts key `a` (or `b`, per the data segment) in its resource group and writes one byte
/// to stdout: `I` for success, `A` for `QUOTA_EXCEEDED` (-8), another letter otherwise.
fn put_key(key: char) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "strata" "put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{key}")
  (data (i32.const 8) "v")
  (func (export "_start")
    (i32.store8 (i32.const 16)
      (i32.add (i32.const 73) (call $put (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 1))))
    (i32.store (i32.const 32) (i32.const 16))
    (i32.store (i32.const 36) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))"#
    )
}

async fn post(c: &TestCluster, token: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let req = c
        .http
        .post(format!("{}{path}", c.nodes.region_url()))
        .bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    req.send().await.expect("request completes")
}

/// Routes `host` `/` to the tenant's function `f1`.
async fn add_route(c: &TestCluster, token: &str, host: &str) -> reqwest::Response {
    let route = json!({"host": host, "path_prefix": "/", "function": "f1"});
    post(c, token, "/v1/routes", Some(route)).await
}

async fn invoke(
    c: &TestCluster,
    token: &str,
    name: &str,
    event: bool,
    body: &str,
) -> reqwest::Response {
    let req = c
        .http
        .post(format!(
            "{}/v1/functions/{name}/invoke",
            c.nodes.region_url()
        ))
        .bearer_auth(token)
        .body(body.to_owned());
    let req = if event {
        req.header("x-strata-invocation-type", "event")
    } else {
        req
    };
    req.send().await.expect("request completes")
}

/// Asserts `r` is a `quota_exceeded` refusal with `status` naming `quota` at `limit`.
async fn refused(r: reqwest::Response, status: StatusCode, quota: &str, limit: u64) {
    assert_eq!(r.status(), status, "{quota}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["kind"], "quota_exceeded", "{v}");
    assert_eq!(v["error"]["quota"], quota, "{v}");
    assert_eq!(v["error"]["limit"], limit, "{v}");
}

fn with_quotas(quotas: QuotaConfig) -> region_node::RegionConfig {
    region_node::RegionConfig {
        quotas,
        ..region_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_count_and_env_quotas_is_refused_and_another_still_deploys() {
    let quotas = QuotaConfig {
        env_bytes: 64,
        functions: 2,
        versions_per_function: 2,
        routes: 1,
        ..QuotaConfig::default()
    };
    let c = TestCluster::with(with_quotas(quotas), pop_config()).await;
    let hostile = tenant(&c, "hostile").await;
    let victim = tenant(&c, "victim").await;

    // A 30 MB env would break POP snapshot frames; 100 bytes is over this region's 64.
    let big_env = json!({"env": {"K": "x".repeat(100)}});
    let r = deploy(&c, &hostile, "f1", big_env, OK).await;
    refused(r, StatusCode::PAYLOAD_TOO_LARGE, "env_bytes", 64).await;

    for name in ["f1", "f2"] {
        let r = deploy(&c, &hostile, name, json!({}), OK).await;
        assert!(r.status().is_success(), "{name}: {}", r.status());
    }
    let r = deploy(&c, &hostile, "f3", json!({}), OK).await;
    refused(r, StatusCode::CONFLICT, "functions", 2).await;
    // Replacing a function it has is not a new function.
    let r = deploy(&c, &hostile, "f1", json!({"timeout_ms": 1000}), OK).await;
    assert!(r.status().is_success(), "replace: {}", r.status());

    for timeout in [1001, 1002] {
        let r = post(&c, &hostile, "/v1/functions/f1/versions", None).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = deploy(&c, &hostile, "f1", json!({"timeout_ms": timeout}), OK).await;
        assert!(r.status().is_success());
    }
    let r = post(&c, &hostile, "/v1/functions/f1/versions", None).await;
    refused(r, StatusCode::CONFLICT, "versions_per_function", 2).await;

    let r = add_route(&c, &hostile, "hostile.example").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = add_route(&c, &hostile, "more.hostile.example").await;
    refused(r, StatusCode::CONFLICT, "routes", 1).await;

    // The victim's quotas are its own.
    for name in ["f1", "f2"] {
        let r = deploy(&c, &victim, name, json!({"env": {"K": "v"}}), OK).await;
        assert!(r.status().is_success(), "victim {name}: {}", r.status());
    }
    let r = post(&c, &victim, "/v1/functions/f1/versions", None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = add_route(&c, &victim, "victim.example").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        invoke(&c, &victim, "f2", false, "").await.status(),
        StatusCode::OK
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_queued_and_dead_letter_bytes_is_refused_and_another_still_queues() {
    let quotas = QuotaConfig {
        queued_event_bytes: 64,
        dead_letter_bytes: 64,
        ..QuotaConfig::default()
    };
    // The queue's clock stands still: a failed event waits for a retry that never comes
    // due, so it holds its bytes for the whole test.
    let clock = TestClock::new();
    let c = TestCluster::with_clock(with_quotas(quotas), pop_config(), clock).await;
    let hostile = tenant(&c, "hostile").await;
    let victim = tenant(&c, "victim").await;
    for token in [&hostile, &victim] {
        let r = deploy(&c, token, "fail", json!({"retries": 2}), TRAP).await;
        assert!(r.status().is_success());
        let config = json!({"dead_letter_sync": true, "placement": "region"});
        let r = deploy(&c, token, "kept", config, TRAP).await;
        assert!(r.status().is_success());
        let r = deploy(&c, token, "ok", json!({}), OK).await;
        assert!(r.status().is_success());
    }
    let forty = "x".repeat(40);

    // Queued bytes: the first 40-byte event is held; a second would make 80 > 64.
    assert_eq!(
        invoke(&c, &hostile, "fail", true, &forty).await.status(),
        202
    );
    let r = invoke(&c, &hostile, "fail", true, &forty).await;
    assert!(r.headers().contains_key("retry-after"));
    refused(r, StatusCode::TOO_MANY_REQUESTS, "queued_event_bytes", 64).await;
    // The victim's own quota is untouched: two 20-byte events fit its 64 bytes.
    let twenty = "y".repeat(20);
    assert_eq!(invoke(&c, &victim, "ok", true, &twenty).await.status(), 202);
    assert_eq!(
        invoke(&c, &victim, "fail", true, &twenty).await.status(),
        202
    );

    // Dead-letter bytes: the first failed sync call is kept, the second is not (the
    // caller still gets the function's failure).
    for _ in 0..2 {
        let r = invoke(&c, &hostile, "kept", false, &forty).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let region = c.nodes.region_url();
    assert_eq!(dead_letters(&c.http, &region, &hostile).await.len(), 1);
    let r = invoke(&c, &victim, "kept", false, &forty).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mine = dead_letters(&c.http, &region, &victim).await;
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["tenant"], "victim");
    assert_eq!(mine[0]["function"], "kept");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_shared_state_keys_is_refused_and_another_still_writes() {
    let quotas = QuotaConfig {
        state_keys: 1,
        ..QuotaConfig::default()
    };
    let c = TestCluster::with(with_quotas(quotas), pop_config()).await;
    let hostile = tenant(&c, "hostile").await;
    let victim = tenant(&c, "victim").await;
    let group = json!({"resource_group": "g", "placement": "region"});
    for token in [&hostile, &victim] {
        for (name, key) in [("put-a", 'a'), ("put-b", 'b')] {
            let r = deploy(&c, token, name, group.clone(), &put_key(key)).await;
            assert!(r.status().is_success(), "{name}: {}", r.status());
        }
    }
    let body = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.expect("body")
    };
    assert_eq!(
        body(invoke(&c, &hostile, "put-a", false, "").await).await,
        "I"
    );
    assert_eq!(
        body(invoke(&c, &hostile, "put-b", false, "").await).await,
        "A",
        "a second key is QUOTA_EXCEEDED"
    );
    assert_eq!(
        body(invoke(&c, &hostile, "put-a", false, "").await).await,
        "I"
    );
    assert_eq!(
        body(invoke(&c, &victim, "put-b", false, "").await).await,
        "I"
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_totals_of_queued_and_dead_letter_bytes_hold_across_tenants() {
    let quotas = QuotaConfig {
        queued_event_bytes: 64,
        region_queued_event_bytes: 70,
        dead_letter_bytes: 64,
        region_dead_letter_bytes: 70,
        ..QuotaConfig::default()
    };
    let clock = TestClock::new();
    let c = TestCluster::with_clock(with_quotas(quotas), pop_config(), clock).await;
    let (first, second) = (tenant(&c, "first").await, tenant(&c, "second").await);
    let victim = tenant(&c, "victim").await;
    for token in [&first, &second, &victim] {
        let r = deploy(&c, token, "fail", json!({"retries": 2}), TRAP).await;
        assert!(r.status().is_success());
        let config = json!({"dead_letter_sync": true, "placement": "region"});
        let r = deploy(&c, token, "kept", config, TRAP).await;
        assert!(r.status().is_success());
    }
    let (forty, twenty) = ("x".repeat(40), "y".repeat(20));
    // Each tenant is within its own 64 bytes; together they would pass the region's 70.
    assert_eq!(invoke(&c, &first, "fail", true, &forty).await.status(), 202);
    let r = invoke(&c, &second, "fail", true, &forty).await;
    refused(
        r,
        StatusCode::TOO_MANY_REQUESTS,
        "region_queued_event_bytes",
        70,
    )
    .await;
    assert_eq!(
        invoke(&c, &victim, "fail", true, &twenty).await.status(),
        202
    );

    let region = c.nodes.region_url();
    for (token, body) in [(&first, &forty), (&second, &forty), (&victim, &twenty)] {
        let r = invoke(&c, token, "kept", false, body).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(dead_letters(&c.http, &region, &first).await.len(), 1);
    assert_eq!(
        dead_letters(&c.http, &region, &second).await.len(),
        0,
        "over the region's 70"
    );
    let mine = dead_letters(&c.http, &region, &victim).await;
    assert_eq!(mine.len(), 1, "{mine:#?}");
    assert_eq!(mine[0]["tenant"], "victim");
    c.nodes.shutdown().await;
}
