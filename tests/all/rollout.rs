//! What POPs run is judged too: a POP samples undecided functions onto the next runtime
//! release like the region, and reports the outcomes per function version in its load
//! reports; the region folds them into the runtime canary and into the judges of alias
//! rollouts with `auto_rollback`, which return a failing rollout to its older version,
//! notify the owner (`GET /v1/notifications`, `on_rollback`) and show it on the dashboard.
//!
//! Every test here drives traffic through the POP only, with the functions pinned to the
//! edge: the region executes just the few invocations forwarded before the POP has the
//! code, too few for any verdict, so a verdict proves the POP's outcomes were counted.

use crate::canary::{ALERT, LEGACY, PLAIN, get, verdict_of};
use crate::support::{
    Patience, TRAP, TestCluster, header, pop_config, region_config, until_served,
};
use common::model::ArtifactDigest;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A POP reporting every 100 ms (the default is a second).
fn reporting_pop() -> pop_node::PopConfig {
    let mut pop = pop_config();
    pop.report_interval_ms = 100;
    pop
}

/// Whether `resp` was executed at the region.
fn at_region(resp: &reqwest::Response) -> bool {
    header(resp, "x-strata-executed-at").starts_with("region/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_run_only_at_the_pop_get_runtime_canary_verdicts() {
    let mut region = region_config();
    region.canary_percent = 50;
    region.canary_min_samples = 10;
    let c = TestCluster::with(region, reporting_pop()).await;
    c.deploy_wat("legacy", json!({"placement": "edge"}), LEGACY)
        .await;
    c.deploy_wat("plain", json!({"placement": "edge"}), PLAIN)
        .await;
    until_served(&c, "legacy", "pop/").await;
    until_served(&c, "plain", "pop/").await;

    let pop_url = c.nodes.pop_url();
    let mut at_region_count = 0u64;
    let mut at_pop = 0u64;
    let mut patience = Patience::new();
    let runtime = loop {
        for name in ["legacy", "plain"] {
            let r = c.invoke_at(&pop_url, name, "").await;
            // The next release cannot link `legacy`: it runs on the current one.
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            if at_region(&r) {
                at_region_count += 1;
            } else {
                at_pop += 1;
            }
        }
        let runtime = get(&c, "/v1/runtime").await;
        if ["legacy", "plain"]
            .iter()
            .all(|f| verdict_of(&runtime, f) != "undecided")
        {
            break runtime;
        }
        assert!(
            patience.more(),
            "no verdicts after {} rounds ({at_pop} run at the POP, {at_region_count} at \
             the region): {runtime}",
            patience.tries()
        );
    };
    assert_eq!(verdict_of(&runtime, "legacy"), "pinned", "{runtime}");
    assert_eq!(verdict_of(&runtime, "plain"), "promoted", "{runtime}");
    // More outcomes were judged than the region ran itself: the POP's were counted.
    let counted = |f: &str| {
        runtime["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["function"] == f)
            .map_or(0, |v| {
                v["current_invocations"].as_u64().unwrap_or(0)
                    + v["next_invocations"].as_u64().unwrap_or(0)
            })
    };
    assert!(
        counted("legacy") + counted("plain") > at_region_count,
        "{at_region_count} run at the region: {runtime}"
    );
    let notes = get(&c, "/v1/notifications").await;
    assert_eq!(notes["notifications"][0]["kind"], "runtime_incompatible");
    assert_eq!(notes["notifications"][0]["function"], "legacy");
    c.nodes.shutdown().await;
}

/// Deploys `code` as `shop` with `config` and publishes it; returns its digest.
async fn publish(c: &TestCluster, config: Value, code: &str) -> ArtifactDigest {
    let wasm = wat::parse_str(code).expect("wat");
    let digest = ArtifactDigest::of(&wasm);
    c.nodes.deploy("shop", config, wasm).await.expect("deploys");
    let r = c
        .http
        .post(format!(
            "{}/v1/functions/shop/versions",
            c.nodes.region_url()
        ))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("sent");
    assert!(r.status().is_success(), "publish: {}", r.status());
    digest
}

async fn alias(c: &TestCluster) -> Value {
    get(c, "/v1/functions/shop/aliases/live").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_version_is_rolled_back_on_what_the_pop_saw() {
    let mut region = region_config();
    region.canary_min_samples = 10;
    let c = TestCluster::with(region, reporting_pop()).await;
    // Told of the rollback; pinned to the region so its log is there to read.
    c.deploy_wat("alert", json!({"placement": "region"}), ALERT)
        .await;
    let edge = json!({"placement": "edge", "on_rollback": "alert"});
    let v1 = publish(&c, edge.clone(), PLAIN).await;
    let v2 = publish(&c, edge, TRAP).await;
    let r = c
        .http
        .put(format!(
            "{}/v1/functions/shop/aliases/live",
            c.nodes.region_url()
        ))
        .bearer_auth(&c.nodes.token)
        .json(
            &json!({"routing": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                      "auto_rollback": true}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::OK);
    let set: Value = r.json().await.expect("json");
    assert_eq!(set["auto_rollback"], true);

    let invoke = || async {
        c.http
            .post(format!(
                "{}/v1/functions/shop/invoke?qualifier=live",
                c.nodes.pop_url()
            ))
            .bearer_auth(&c.nodes.token)
            .send()
            .await
            .expect("sent")
    };
    // Both versions' code at the POP first, so what follows runs there.
    let pop = &c.nodes.pop;
    let mut patience = Patience::new();
    while !(pop.has_module(&v1) && pop.has_module(&v2)) {
        invoke().await;
        assert!(patience.more(), "the POP never prepared both versions");
    }
    let mut at_region_count = 0u64;
    let mut patience = Patience::new();
    let rolled = loop {
        let r = invoke().await;
        at_region_count += u64::from(at_region(&r));
        let a = alias(&c).await;
        if a["routing"].as_array().map(Vec::len) == Some(1) {
            break a;
        }
        assert!(
            patience.more(),
            "never rolled back ({at_region_count} run at the region): {a}"
        );
    };
    assert_eq!(rolled["routing"], json!([{"version": 1, "weight": 100}]));
    let record = &rolled["rolled_back"];
    assert_eq!(
        (record["to"].as_u64(), record["new"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        record["new_failures"], record["new_invocations"],
        "{record}"
    );
    assert_eq!(record["old_failures"], 0, "{record}");
    let judged = record["old_invocations"].as_u64().unwrap_or(0)
        + record["new_invocations"].as_u64().unwrap_or(0);
    assert!(
        judged > at_region_count,
        "{at_region_count} at the region: {record}"
    );

    // The POP follows the pushed routing: every invocation gets version 1 again.
    let mut patience = Patience::new();
    let mut clean = 0;
    while clean < 5 {
        let r = invoke().await;
        if r.status() == StatusCode::OK && header(&r, "x-strata-version") == "1" {
            clean += 1;
        } else {
            clean = 0;
            assert!(patience.more(), "the POP kept running version 2");
        }
    }

    // The owner is told: listed, and through `on_rollback` with the same record.
    let notes = get(&c, "/v1/notifications").await;
    let note = &notes["notifications"][0];
    assert_eq!(note["kind"], "rollback", "{notes}");
    assert_eq!(note["function"], "shop");
    assert_eq!(note["alias"]["rolled_back"], *record);
    let logs_of_alert = || async { get(&c, "/v1/functions/alert/logs").await.to_string() };
    let mut patience = Patience::new();
    while !logs_of_alert().await.contains("rolled back to version 1") {
        assert!(patience.more(), "on_rollback never ran");
        tokio::task::yield_now().await;
    }
    // Operators see it on the dashboard's view.
    let view = crate::observability::capacity(&c).await;
    let shown = &view["rollouts"]["rolled_back"][0];
    assert!(
        shown["alias"]
            .as_str()
            .is_some_and(|a| a.ends_with("/shop:live")),
        "{view}"
    );
    assert_eq!(view["rollouts"]["judged"], 0, "{view}");
    c.nodes.shutdown().await;
}
