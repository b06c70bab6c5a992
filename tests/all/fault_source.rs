//! Every error a device gets says whose fault it is: `error.fault` in the body (device,
//! capacity, internal, guest, peer) and the `fault` label of
//! `strata_invoke_responses_total`. Through a real POP in front of a real region: the
//! region's pipeline classifies its errors, the wire carries the fault, the POP renders
//! it unchanged; a guest's own failure is the guest's; a region the POP cannot reach is
//! the peer's.

use crate::support::{TRAP, TestCluster, dev_hogged, pop_config, region_config, throttled};
use serde_json::json;
use std::time::Duration;
use testkit::proxy::DelayProxy;

const QUIET: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// The status and `error` object of `resp`.
async fn error_of(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.expect("JSON error body");
    (status, v["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_errors_through_the_pop_say_whose_fault_they_are() {
    let proxy = DelayProxy::start(Duration::ZERO)
        .await
        .expect("proxy binds");
    let c = TestCluster::via(region_config(), pop_config(), &proxy).await;
    // Pinned to the region: every call is forwarded, so the region's pipeline answers.
    let pinned = json!({"placement": "region"});
    c.deploy_wat("trap", pinned.clone(), TRAP).await;
    c.deploy_wat("quiet", pinned, QUIET).await;

    // The guest traps: it ran, and failed on its own.
    let (status, e) = error_of(c.invoke("trap", "").await).await;
    assert_eq!(
        (status, &e["kind"], &e["fault"]),
        (500, &json!("unhandled"), &json!("guest")),
        "{e}"
    );

    // The device names a function that does not exist: the region's resolve layer.
    let (status, e) = error_of(c.invoke("no-such-function", "").await).await;
    assert_eq!(
        (status, &e["kind"], &e["fault"]),
        (404, &json!("not_found"), &json!("device")),
        "{e}"
    );

    // The tenant is at its concurrency limit: the region's admit layer refuses.
    let hog = dev_hogged(&c).await;
    let (limit, _wait) = throttled(c.invoke("quiet", "").await).await;
    assert_eq!(limit, ("tenant".into(), "concurrency".into(), 1));
    let (status, e) = error_of(c.invoke("quiet", "").await).await;
    assert_eq!(
        (status, &e["kind"], &e["fault"]),
        (429, &json!("throttled"), &json!("capacity")),
        "{e}"
    );
    assert_eq!(hog.await.expect("hog task"), 504);

    // The region goes silent: the POP cannot reach it, which is no one's fault but the
    // peer's (the device may retry; the POP is not out of capacity).
    proxy.set_down(true);
    let (status, e) = error_of(c.invoke("quiet", "").await).await;
    assert_eq!(
        (status, &e["kind"], &e["fault"]),
        (503, &json!("unavailable"), &json!("peer")),
        "{e}"
    );

    // The POP's response counter is labelled by fault.
    let metrics = c.pop_metrics().await;
    for (code, fault) in [
        (500, "guest"),
        (404, "device"),
        (429, "capacity"),
        (503, "peer"),
    ] {
        let needle =
            format!(r#"strata_invoke_responses_total{{tier="pop",code="{code}",fault="{fault}"}}"#);
        assert!(
            metrics.contains(&needle),
            "POP /metrics lacks {needle}:\n{metrics}"
        );
    }
    c.nodes.shutdown().await;
}
