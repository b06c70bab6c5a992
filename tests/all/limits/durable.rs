//! Operator-set tenant limits are durable: an override survives a region restart (and so
//! does its delete), reaches the other regions sharing a JetStream store, and a write the
//! store refuses is a 503 that changes nothing.

use crate::support::{Patience, TestCluster, region_config};
use common::transport::TlsFiles;
use region_node::limits::TenantLimits;
use region_node::store::jetstream::nats_server::NatsServer;
use region_node::{RegionConfig, RegionHandle, StartError, StoreBackend, StoreConfig};
use serde_json::{Value, json};
use std::path::Path;

/// The region's `/v1/tenants/dev/limits` URL.
fn dev_limits(region: &RegionHandle) -> String {
    format!("http://{}/v1/tenants/dev/limits", region.http_addr)
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let resp = http.get(url).bearer_auth(token).send().await.expect("sent");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Starts the region of a dev deployment under `dir` again, on the same state directory.
///
/// `RegionHandle::shutdown` returns before the HTTP server's connection tasks (which hold
/// the store through the router's state) have dropped: axum closes them gracefully once
/// the aborted server is gone. Until then the redb file is still locked, so this waits for
/// that lock, bounded by the test's patience.
async fn restart(dir: &Path, tls: TlsFiles, admin_token: &str) -> RegionHandle {
    let mut patience = Patience::new();
    loop {
        let started = region_node::start(RegionConfig {
            state_dir: dir.join("region"),
            tls: Some(tls.clone()),
            admin_token: Some(admin_token.to_owned()),
            ..region_config()
        })
        .await;
        match started {
            Ok(region) => return region,
            Err(StartError::Store(e)) if patience.more() => {
                eprintln!("restart: the old region still holds the store ({e})");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("region restarts: {e}"),
        }
    }
}

/// Holds the dev tenant's only slot with a long invocation at `region`, then checks that
/// the next invocation is refused with 429; returns once the hog timed out.
async fn assert_limit_of_one_is_enforced(http: &reqwest::Client, region: &str, c: &Creds) {
    let hog = {
        let (http, url, token) = (
            http.clone(),
            format!("{region}/v1/functions/forever/invoke"),
            c.token.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request completes")
                .status()
        })
    };
    let mut patience = Patience::new();
    let mut charged = false;
    while !charged && patience.more() {
        let view = get_json(http, &format!("{region}/v1/capacity"), &c.admin_token).await;
        charged = view["budgets"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["tenant"] == "dev" && b["charged"] == 1 && b["limit"] == 1)
        });
    }
    assert!(charged, "the hog never showed in the dev tenant's budget");
    let resp = http
        .post(format!("{region}/v1/functions/hello/invoke"))
        .bearer_auth(&c.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(crate::support::error_kind(resp).await, "throttled");
    assert_eq!(hog.await.expect("hog task"), 504);
}

struct Creds {
    token: String,
    admin_token: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_set_by_the_operator_survives_a_region_restart() {
    let c = TestCluster::start().await;
    c.deploy_wat(
        "forever",
        json!({"timeout_ms": 3000}),
        crate::support::LOOP_FOREVER,
    )
    .await;
    let TestCluster { dir, nodes, http } = c;
    let strata::dev::DevCluster {
        region,
        pop,
        token,
        admin_token,
        ..
    } = nodes;
    // Only the region keeps tenant limits.
    pop.shutdown().await;
    let creds = Creds { token, admin_token };
    let resp = http
        .put(dev_limits(&region))
        .bearer_auth(&creds.admin_token)
        .json(&json!({"hard_max": 1, "burst": 1, "step": 0, "interval_ms": 1000}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let tls = region.tls.clone();
    region.shutdown().await;

    let region = restart(dir.path(), tls.clone(), &creds.admin_token).await;
    let shown = get_json(&http, &dev_limits(&region), &creds.admin_token).await;
    assert_eq!(
        (shown["hard_max"].as_u64(), shown["burst"].as_u64()),
        (Some(1), Some(1))
    );
    let url = format!("http://{}", region.http_addr);
    assert_limit_of_one_is_enforced(&http, &url, &creds).await;

    let resp = http
        .delete(dev_limits(&region))
        .bearer_auth(&creds.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    region.shutdown().await;
    let region = restart(dir.path(), tls, &creds.admin_token).await;
    let shown = get_json(&http, &dev_limits(&region), &creds.admin_token).await;
    let defaults = serde_json::to_value(TenantLimits::default()).expect("json");
    assert_eq!(shown, defaults);
    region.shutdown().await;
}

/// A region alone on `nats` under `dir`, its store answering within `timeout_ms`.
async fn region_on_nats(nats: &NatsServer, dir: &Path, id: &str, timeout_ms: u64) -> RegionHandle {
    region_node::start(RegionConfig {
        node_id: id.into(),
        state_dir: dir.join(id),
        admin_token: Some("operator".into()),
        store: StoreConfig {
            backend: StoreBackend::Jetstream,
            nats_url: Some(nats.url()),
            prefix: "limits".into(),
            timeout_ms,
        },
        ..region_config()
    })
    .await
    .expect("region starts")
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_set_on_one_region_applies_on_another_sharing_its_store() {
    let nats = NatsServer::start().expect("nats-server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = region_on_nats(&nats, dir.path(), "a", 5000).await;
    let b = region_on_nats(&nats, dir.path(), "b", 5000).await;
    let http = reqwest::Client::new();
    let resp = http
        .put(dev_limits(&a))
        .bearer_auth("operator")
        .json(&json!({"hard_max": 7, "burst": 3}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let set: Value = resp.json().await.expect("json");
    // B follows the store's watch: poll its view until it shows A's override.
    let mut patience = Patience::new();
    let mut seen = Value::Null;
    while seen != set && patience.more() {
        seen = get_json(&http, &dev_limits(&b), "operator").await;
    }
    assert_eq!(seen, set, "region b never applied region a's override");
    let resp = http
        .delete(dev_limits(&b))
        .bearer_auth("operator")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let defaults = serde_json::to_value(TenantLimits::default()).expect("json");
    let mut patience = Patience::new();
    while seen != defaults && patience.more() {
        seen = get_json(&http, &dev_limits(&a), "operator").await;
    }
    assert_eq!(seen, defaults, "region a never saw region b's delete");
    a.shutdown().await;
    b.shutdown().await;
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_the_store_cannot_keep_is_a_503_and_changes_nothing() {
    let nats = NatsServer::start().expect("nats-server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let region = region_on_nats(&nats, dir.path(), "a", 500).await;
    let http = reqwest::Client::new();
    let before = get_json(&http, &dev_limits(&region), "operator").await;
    drop(nats);
    let resp = http
        .put(dev_limits(&region))
        .bearer_auth("operator")
        .json(&json!({"hard_max": 7, "burst": 3}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(crate::support::error_kind(resp).await, "unavailable");
    assert_eq!(
        get_json(&http, &dev_limits(&region), "operator").await,
        before
    );
    region.shutdown().await;
}
