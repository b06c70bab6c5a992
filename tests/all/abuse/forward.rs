//! A region that takes a forward and never answers (a hung region, or a link that drops
//! everything while the connection still looks alive) cannot hold a device's request: the
//! POP bounds each forward by the function's timeout plus `forward_margin_ms`, then resets
//! the stream and answers 503 `forward_timeout` with `retry-after`, while functions it runs
//! itself are still served.

use crate::support::{TestCluster, header, pop_config, region_config, until_served};
use serde_json::json;
use std::time::Duration;
use testkit::proxy::DelayProxy;

const HELLO: &str = include_str!("../../../examples/hello.wat");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_the_region_never_answers_ends_at_the_functions_timeout_plus_the_margin() {
    let proxy = DelayProxy::start(Duration::ZERO)
        .await
        .expect("proxy binds");
    let pop = pop_node::PopConfig {
        forward_margin_ms: 100,
        // Silence detection would otherwise drop the connection first (after 1 s) and
        // answer 503 for another reason: this test is about the per-forward bound.
        region_silence_ms: 60_000,
        ..pop_config()
    };
    let c = TestCluster::via(region_config(), pop, &proxy).await;
    c.deploy_wat("near", json!({"placement": "edge"}), HELLO)
        .await;
    c.deploy_wat(
        "far",
        json!({"placement": "region", "timeout_ms": 200}),
        HELLO,
    )
    .await;
    until_served(&c, "near", "pop/").await;
    until_served(&c, "far", "region/").await;

    // Everything sent to the region is now lost; the connection still looks alive.
    proxy.set_down(true);
    let resp = tokio::time::timeout(Duration::from_secs(30), c.invoke("far", "x"))
        .await
        .expect("the POP answers a forward the region never answers");
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers().get("retry-after").is_some(),
        "503 without retry-after"
    );
    let body = resp.text().await.expect("body");
    assert!(body.contains("forward_timeout"), "{body}");

    // The victim: a function the POP runs itself is still answered.
    let near = c.invoke("near", "x").await;
    assert_eq!(near.status(), 200);
    assert!(header(&near, "x-strata-executed-at").starts_with("pop/"));
    proxy.set_down(false);
}
