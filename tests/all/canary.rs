//! The runtime canary through a real region: with half of each function's invocations on
//! the next runtime release, a guest importing the import that release dropped is pinned
//! to the current release (its owner notified through the API and its
//! `on_runtime_incompatible` function), and a plain guest is promoted; responses name the
//! release that ran them (`x-strata-runtime`), and the POP runs the pinned guest on current.
//!
//! `on_runtime_incompatible` runs from the durable async queue: the invocation that pinned
//! the function answers without waiting for it, and a queued run survives a restart.
//!
//! Verdicts reach POPs on the push stream: a POP running a function locally follows its
//! promotion without forwarding it, whether it was subscribed when the verdict was
//! decided (the change message) or subscribed afterwards (the initial state).

use crate::events::{dead_letters, payload, wait_dlq};
use crate::gate::{Then, deploy_gated, deploy_opener};
use crate::support::{
    Patience, TRAP, TestClock, TestCluster, header, pop_config, region_config, synced,
};
use common::model::ArtifactDigest;
use common::sandbox::Release;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Uses the deprecated `strata.log_v0`, which the next release (2026.11) no longer links.
pub(crate) const LEGACY: &str = r#"(module
  (import "strata" "log_v0" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "legacy hello")
  (func (export "_start") (drop (call $log (i32.const 0) (i32.const 12)))))"#;

pub(crate) const PLAIN: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Copies its payload (up to 8 KiB) to its log.
pub(crate) const ALERT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 8192))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 4) (i32.load (i32.const 16)))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

pub(crate) async fn get(c: &TestCluster, path: &str) -> Value {
    let r = c
        .http
        .get(format!("{}{path}", c.nodes.region_url()))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("request completes");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

pub(crate) fn verdict_of(runtime: &Value, function: &str) -> String {
    runtime["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["function"] == function)
        .and_then(|f| f["verdict"].as_str())
        .unwrap_or("undecided")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_using_a_dropped_import_is_pinned_and_a_plain_one_promoted() {
    let mut region = region_config();
    region.canary_percent = 50;
    region.canary_min_samples = 10;
    let c = TestCluster::with(region, pop_config()).await;
    c.deploy_wat("alert", json!({"runtime": "2026.10"}), ALERT)
        .await;
    c.deploy_wat(
        "legacy",
        json!({"on_runtime_incompatible": "alert"}),
        LEGACY,
    )
    .await;
    c.deploy_wat("plain", json!({}), PLAIN).await;
    let region_url = c.nodes.region_url();

    let pop_url = c.nodes.pop_url();
    let mut patience = Patience::new();
    let runtime = loop {
        for name in ["legacy", "plain"] {
            // Every other round through the POP: what it forwards is canaried at the
            // region like the region's own traffic (what it runs itself runs on current).
            let base = if patience.tries().is_multiple_of(2) {
                &region_url
            } else {
                &pop_url
            };
            let r = c.invoke_at(base, name, "").await;
            // A release that cannot link the module falls back to the current one.
            assert_eq!(r.status(), StatusCode::OK, "{name}");
        }
        let runtime = get(&c, "/v1/runtime").await;
        let decided = ["legacy", "plain"]
            .iter()
            .all(|f| verdict_of(&runtime, f) != "undecided");
        if decided {
            break runtime;
        }
        assert!(
            patience.more(),
            "no verdicts after {} tries: {runtime}",
            patience.tries()
        );
    };
    eprintln!("verdicts after {} rounds", patience.tries());
    assert_eq!(runtime["current"], "2026.10");
    assert_eq!(runtime["next"], "2026.11");
    assert_eq!(verdict_of(&runtime, "legacy"), "pinned", "{runtime}");
    assert_eq!(verdict_of(&runtime, "plain"), "promoted", "{runtime}");

    // A release that is not hosted is refused at deploy.
    let wasm = wat::parse_str(PLAIN).expect("wat");
    let r = c
        .nodes
        .deploy("odd", json!({"runtime": "1999.01"}), wasm)
        .await;
    assert!(r.is_err(), "unknown runtime accepted");

    // Pinned: everything runs on the current release and succeeds.
    for _ in 0..10 {
        let r = c.invoke_at(&region_url, "legacy", "").await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Every answer names the release that ran it: the promoted guest runs on the next
    // release at the region (and at POPs: see the push-stream tests below).
    let r = c.invoke_at(&region_url, "plain", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-strata-runtime"), "2026.11");
    // The pinned guest runs on the current release at the POP too, and succeeds.
    let mut patience = Patience::new();
    loop {
        let r = c.invoke_at(&pop_url, "legacy", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-strata-runtime"), "2026.10");
        if header(&r, "x-strata-executed-at").starts_with("pop/") {
            break;
        }
        assert!(patience.more(), "the POP never ran the pinned guest");
    }

    // The owner sees one notification, for the pinned function only.
    let notes = get(&c, "/v1/notifications").await;
    let notes = notes["notifications"].as_array().expect("list").clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["kind"], "runtime_incompatible");
    assert_eq!(notes[0]["function"], "legacy");

    // Operators see the verdicts in the capacity view the dashboard renders.
    let r = c
        .http
        .get(format!("{region_url}/v1/capacity"))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("request completes");
    let view: Value = r.json().await.expect("json");
    let pinned = view["runtime"]["pinned_functions"]
        .as_array()
        .expect("list");
    assert!(
        pinned
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.ends_with("/legacy"))),
        "{view}"
    );
    assert!(view["runtime"]["promoted"].as_u64() >= Some(1), "{view}");

    // The control function ran with the notification as its payload.
    let mut patience = Patience::new();
    loop {
        let logs = get(&c, "/v1/functions/alert/logs").await;
        let seen = logs["lines"].as_array().into_iter().flatten().any(|l| {
            l["line"]
                .as_str()
                .unwrap_or_default()
                .contains("runtime_incompatible")
        });
        if seen {
            break;
        }
        assert!(patience.more(), "alert never ran: {logs}");
        tokio::task::yield_now().await;
    }
}

/// A function pinned to the next release runs on it at the POP too: the POP compiles the
/// next release's module from the region's wasm (forwarding meanwhile), then runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_runs_a_function_pinned_to_the_next_release_on_it() {
    let c = TestCluster::start().await;
    c.deploy_wat("next", json!({"runtime": "2026.11"}), PLAIN)
        .await;
    let pop_url = c.nodes.pop_url();
    let mut patience = Patience::new();
    loop {
        let r = c.invoke_at(&pop_url, "next", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-strata-runtime"), "2026.11");
        if header(&r, "x-strata-executed-at").starts_with("pop/") {
            break;
        }
        assert!(patience.more(), "the POP never ran the guest itself");
    }
}

/// A cluster canarying half of each function's invocations, with `plain` deployed pinned
/// to the edge and already running at the POP on the current release. Returns its digest.
async fn plain_running_at_the_pop() -> (TestCluster, ArtifactDigest) {
    let mut region = region_config();
    region.canary_percent = 50;
    region.canary_min_samples = 5;
    // While the verdict is reached at the region the POP draws nothing from its tenant
    // lease; the idle hold keeps a slot of it (the first invocation after the quiet spell
    // runs here, not forwarded for capacity while a new lease is fetched). A hold longer
    // than the test, so a slow machine does not outlast it.
    let mut pop = pop_config();
    pop.lease_idle_hold_ms = 600_000;
    let c = TestCluster::with(region, pop).await;
    let wasm = wat::parse_str(PLAIN).expect("wat");
    let digest = ArtifactDigest::of(&wasm);
    c.nodes
        .deploy("plain", json!({"placement": "edge"}), wasm)
        .await
        .expect("deploys");
    let pop_url = c.nodes.pop_url();
    let mut patience = Patience::new();
    loop {
        let r = c.invoke_at(&pop_url, "plain", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        // Undecided: the POP samples it like the region (either release).
        if header(&r, "x-strata-executed-at").starts_with("pop/") {
            break;
        }
        assert!(patience.more(), "the POP never ran `plain` itself");
    }
    (c, digest)
}

/// Invokes `plain` at the region only (never through the POP) until the canary judge
/// promotes it.
async fn promote_plain_at_the_region(c: &TestCluster) {
    let region_url = c.nodes.region_url();
    let mut patience = Patience::new();
    loop {
        let r = c.invoke_at(&region_url, "plain", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        let runtime = get(c, "/v1/runtime").await;
        match verdict_of(&runtime, "plain").as_str() {
            "promoted" => return,
            "undecided" => assert!(patience.more(), "no verdict: {runtime}"),
            other => panic!("`plain` was {other}: {runtime}"),
        }
    }
}

/// Once the POP holds the verdict and the next release's module, every invocation of
/// `plain` at the POP runs there, on the next release: none is forwarded.
async fn pop_runs_plain_on_the_next_release(c: &TestCluster, digest: ArtifactDigest) {
    let pop = &c.nodes.pop;
    assert!(
        synced(pop, |s| s.releases >= 1).await,
        "the POP never got the verdict: {:?}",
        pop.sync_status()
    );
    assert!(
        pop.module_ready_on(Release::Next, &digest, std::time::Duration::from_secs(30))
            .await,
        "the POP never compiled `plain` for the next release"
    );
    let pop_url = c.nodes.pop_url();
    for _ in 0..3 {
        let r = c.invoke_at(&pop_url, "plain", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            header(&r, "x-strata-executed-at").starts_with("pop/"),
            "forwarded: {}",
            header(&r, "x-strata-executed-at")
        );
        assert_eq!(header(&r, "x-strata-runtime"), "2026.11");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_is_pushed_to_a_pop_that_runs_the_function_locally() {
    let (c, digest) = plain_running_at_the_pop().await;
    promote_plain_at_the_region(&c).await;
    pop_runs_plain_on_the_next_release(&c, digest).await;
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_that_subscribes_after_a_promotion_gets_it_with_the_initial_state() {
    let (c, digest) = plain_running_at_the_pop().await;
    // Unsubscribed while the verdict is decided: no change message can reach the POP.
    c.nodes.pop.set_sync_paused(true);
    let pop = &c.nodes.pop;
    assert!(synced(pop, |s| !s.live).await, "still subscribed");
    promote_plain_at_the_region(&c).await;
    assert_eq!(
        pop.sync_status().releases,
        0,
        "a verdict reached a paused POP"
    );
    c.nodes.pop.set_sync_paused(false);
    pop_runs_plain_on_the_next_release(&c, digest).await;
    c.nodes.shutdown().await;
}

/// A region canarying half of each function's invocations, deciding after 10 per side.
fn canarying(mut region: region_node::RegionConfig) -> region_node::RegionConfig {
    region.canary_percent = 50;
    region.canary_min_samples = 10;
    region
}

/// Invokes `legacy` at the region until it is pinned; returns the request ids it answered
/// (every response has returned when this does: the calls are sequential).
async fn invoke_legacy_until_pinned(c: &TestCluster) -> HashSet<String> {
    let region_url = c.nodes.region_url();
    let mut ids = HashSet::new();
    let mut patience = Patience::new();
    loop {
        let r = c.invoke_at(&region_url, "legacy", "").await;
        assert_eq!(r.status(), StatusCode::OK);
        ids.insert(header(&r, "x-strata-request-id"));
        let runtime = get(c, "/v1/runtime").await;
        match verdict_of(&runtime, "legacy").as_str() {
            "pinned" => return ids,
            "undecided" => assert!(patience.more(), "no verdict: {runtime}"),
            other => panic!("`legacy` was {other}: {runtime}"),
        }
    }
}

/// Checks a dead letter of `notify` holds the owner's notification about `legacy`, on
/// behalf of one of `ids`.
fn is_notification_of_legacy(letter: &Value, ids: &HashSet<String>) {
    assert_eq!(letter["kind"], "on_runtime_incompatible", "{letter}");
    assert!(
        letter["request_id"]
            .as_str()
            .is_some_and(|id| ids.contains(id)),
        "not one of legacy's requests: {letter}"
    );
    let note: Value = serde_json::from_slice(&payload(letter)).expect("notification");
    assert_eq!(note["kind"], "runtime_incompatible");
    assert_eq!(note["function"], "legacy");
    assert_eq!(note["verdict"]["verdict"], "pinned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_runtime_incompatible_is_queued_and_the_pinning_invocation_never_waits_for_it() {
    let c = TestCluster::with(canarying(region_config()), pop_config()).await;
    // Waits for the gate, then fails, so its dead letter shows what it was given. Pinned
    // to the current release: its own runs stay out of the canary.
    deploy_gated(&c, "notify", Then::Trap, json!({"runtime": "2026.10"})).await;
    deploy_opener(&c).await;
    c.deploy_wat(
        "legacy",
        json!({"on_runtime_incompatible": "notify"}),
        LEGACY,
    )
    .await;
    let ids = invoke_legacy_until_pinned(&c).await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    // Every response is back and `notify` cannot have finished: the gate is shut.
    assert!(dead_letters(&c.http, &region, &token).await.is_empty());
    crate::gate::open(&c).await;
    let letters = wait_dlq(&c.http, &region, &token, "notify ran", |l| !l.is_empty()).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter["function"], "notify");
    is_notification_of_legacy(letter, &ids);
    // It got past the gate, which opened only after the pinning response had returned.
    // Had that response waited for it, it would have run out of time behind the gate.
    assert_eq!(letter["error"]["kind"], "unhandled", "{letter}");
    assert_eq!(letter["attempts"], 1);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_on_runtime_incompatible_runs_after_a_region_restart() {
    // Retries an hour later by the queue's clock, which stands still until moved: the
    // retry of `notify` is still queued when the region stops.
    let region = || {
        let mut r = canarying(region_config());
        r.events.retry_base_ms = 3_600_000;
        r.events.retry_cap_ms = 3_600_000;
        r
    };
    let clock = TestClock::new();
    let c = TestCluster::with_clock(region(), pop_config(), clock.clone()).await;
    c.deploy_wat("notify", json!({"runtime": "2026.10", "retries": 1}), TRAP)
        .await;
    c.deploy_wat(
        "legacy",
        json!({"on_runtime_incompatible": "notify"}),
        LEGACY,
    )
    .await;
    let ids = invoke_legacy_until_pinned(&c).await;
    let (region_url, token) = (c.nodes.region_url(), c.nodes.token.clone());
    // The first attempt failed and its retry is queued.
    let mut patience = Patience::new();
    loop {
        let metrics = c
            .http
            .get(format!("{region_url}/metrics"))
            .bearer_auth(&c.nodes.admin_token)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains("strata_events_total{outcome=\"retried\"} 1") {
            break;
        }
        assert!(patience.more(), "notify never failed once: {metrics}");
        tokio::task::yield_now().await;
    }
    assert!(dead_letters(&c.http, &region_url, &token).await.is_empty());

    let c = c.restart(region(), pop_config(), Some(clock.clone())).await;
    clock.advance(std::time::Duration::from_secs(3601));
    let region_url = c.nodes.region_url();
    let letters = wait_dlq(&c.http, &region_url, &token, "notify retried", |l| {
        !l.is_empty()
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter["function"], "notify");
    assert_eq!(letter["reason"], "retries-exhausted");
    assert_eq!(
        letter["attempts"], 2,
        "one attempt before the restart, one after"
    );
    is_notification_of_legacy(letter, &ids);
    // The verdict survived too: legacy stays pinned (and the owner is not told again).
    assert_eq!(
        verdict_of(&get(&c, "/v1/runtime").await, "legacy"),
        "pinned"
    );
    c.nodes.shutdown().await;
}
