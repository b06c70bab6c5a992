//! Every 429 says which limit refused and when to retry: `limit: {scope, kind, value}`
//! and `retry_after_ms` from the limiter's own state (the rate's next token), with the
//! `retry-after` header that wait rounded up. The tenant's concurrency limit and the
//! event queue's depth are checked where those limits are tested (limits.rs, events.rs).

use crate::support::{TestCluster, pop_config, region_config, throttled};
use serde_json::json;

/// A command module that answers 200 with an empty body.
const QUIET: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_functions_rate_limit_names_itself_and_the_next_token_at_both_tiers() {
    let c = TestCluster::with(region_config(), pop_config()).await;
    c.deploy_wat("metered", json!({"rate_limit_rps": 1}), QUIET)
        .await;
    c.deploy_wat("free", json!({}), QUIET).await;
    for base in [c.nodes.region_url(), c.nodes.pop_url()] {
        // The bucket holds one token: the first call takes it (the POP may forward its
        // first call to the region, whose bucket is its own).
        let mut refused = None;
        for _ in 0..4 {
            let resp = c.invoke_at(&base, "metered", "").await;
            if resp.status() == 429 {
                refused = Some(resp);
                break;
            }
            assert_eq!(resp.status(), 200, "at {base}");
        }
        let (limit, wait) = throttled(refused.expect("a call past 1/s is refused")).await;
        assert_eq!(limit, ("function".into(), "rate".into(), 1), "at {base}");
        assert!(
            wait <= 1000,
            "the next token of 1/s is within a second: {wait} ms"
        );
        // The same tenant's other function is still served.
        assert_eq!(c.invoke_at(&base, "free", "").await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_rate_limit_names_the_tenant_and_other_tenants_are_served() {
    let c = TestCluster::with(region_config(), pop_config()).await;
    c.deploy_wat("quiet", json!({}), QUIET).await;
    let region = c.nodes.region_url();
    let set = c
        .http
        .put(format!("{region}/v1/tenants/dev/limits"))
        .bearer_auth(&c.nodes.admin_token)
        .json(&json!({"rate_limit_rps": 2}))
        .send()
        .await
        .expect("sent");
    assert!(set.status().is_success(), "{}", set.status());
    let mut refused = None;
    for _ in 0..6 {
        let resp = c.invoke_at(&region, "quiet", "").await;
        if resp.status() == 429 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    let (limit, wait) = throttled(refused.expect("a call past 2/s is refused")).await;
    assert_eq!(limit, ("tenant".into(), "rate".into(), 2));
    assert!(
        wait <= 500,
        "the next token of 2/s is within 500 ms: {wait} ms"
    );
    // Another tenant is not limited by dev's rate.
    let other = crate::support::tenant(&c, "other").await;
    let deployed = crate::support::deploy_as(&c, &other, "quiet", json!({}), QUIET).await;
    assert!(deployed.status().is_success());
    for _ in 0..6 {
        let resp = c
            .http
            .post(format!("{region}/v1/functions/quiet/invoke"))
            .bearer_auth(&other)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
    }
}
