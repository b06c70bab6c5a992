//! The runtime canary through a real region: with half of each function's invocations on
//! the next runtime release, a guest importing the import that release dropped is pinned
//! to the current release (its owner notified through the API and its
//! `on_runtime_incompatible` function), and a plain guest is promoted; responses name the
//! release that ran them (`x-strata-runtime`), and the POP runs the pinned guest on current.

use crate::support::{Patience, TestCluster, header, pop_config, region_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Uses the deprecated `strata.log_v0`, which the next release (2026.11) no longer links.
const LEGACY: &str = r#"(module
  (import "strata" "log_v0" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "legacy hello")
  (func (export "_start") (drop (call $log (i32.const 0) (i32.const 12)))))"#;

const PLAIN: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Copies its payload (up to 8 KiB) to its log.
const ALERT: &str = r#"(module
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

async fn get(c: &TestCluster, path: &str) -> Value {
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

fn verdict_of(runtime: &Value, function: &str) -> String {
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
    // release at the region. (A POP that learned `plain` from the push stream before the
    // verdict keeps running it on current until it learns the function from a forwarded
    // result again: verdicts are not pushed yet.)
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
