//! Async invocations (DESIGN §4, §6 "Failures"): 202 only once durably queued, retries
//! with backoff, expiry past `max_event_age_s`, the dead-letter queue and its API, control
//! functions, and a region killed with SIGKILL losing no accepted event.

use crate::gate::{Then, deploy_gated, deploy_opener};
use crate::support::{
    LOOP_FOREVER, Patience, TRAP, TestClock, TestCluster, pop_config, region_config,
};
use base64::Engine as _;
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use region_node::events::EventsConfig;
use serde_json::{Value, json};

/// Exits 0 with nothing on stdout.
pub(crate) const OK: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// Exits 0 after a few million loop iterations, so events are still running when the
/// region is killed (see [`crate::event_crash`]).
pub(crate) const BUSY_OK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 30000000))))))"#;

/// Retries fast, so tests see them without waiting seconds.
pub(crate) fn fast_retries() -> region_node::RegionConfig {
    region_node::RegionConfig {
        events: EventsConfig {
            retry_base_ms: 5,
            retry_cap_ms: 20,
            ..EventsConfig::default()
        },
        ..region_config()
    }
}

pub(crate) async fn invoke_event(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> reqwest::Response {
    c.post(format!("{base}/v1/functions/{name}/invoke"))
        .bearer_auth(token)
        .header("x-strata-invocation-type", "event")
        .body("payload")
        .send()
        .await
        .expect("request completes")
}

/// The 202's request id.
pub(crate) async fn accepted(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let v: Value = resp.json().await.expect("json");
    v["request_id"].as_str().expect("request_id").to_owned()
}

/// Every dead letter of the token's tenant, paging through `/v1/dlq`.
pub(crate) async fn dead_letters(c: &reqwest::Client, region: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = c
            .get(format!("{region}/v1/dlq"))
            .bearer_auth(token)
            .query(&[("after", after), ("limit", 50)])
            .send()
            .await
            .expect("dlq list")
            .json()
            .await
            .expect("json");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// Polls the DLQ until `done` holds for it; panics after the patience runs out.
pub(crate) async fn wait_dlq(
    c: &reqwest::Client,
    region: &str,
    token: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut patience = Patience::new();
    loop {
        let letters = dead_letters(c, region, token).await;
        if done(&letters) {
            return letters;
        }
        assert!(patience.more(), "{what}: DLQ is {letters:#?}");
        tokio::task::yield_now().await;
    }
}

pub(crate) fn payload(letter: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(letter["payload"].as_str().expect("payload"))
        .expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_through_the_pop_gets_202_and_runs_at_the_region_with_on_success() {
    let c = TestCluster::with(fast_retries(), pop_config()).await;
    // The sink always fails: its dead letters show what it was given. It names itself as
    // its own control function, which must never run (no loops).
    c.deploy_wat(
        "sink",
        json!({"retries": 0, "on_failure": "sink", "on_success": "sink"}),
        TRAP,
    )
    .await;
    c.deploy_wat("fine", json!({"on_success": "sink"}), OK)
        .await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    let resp = invoke_event(&c.http, &c.nodes.pop_url(), &token, "fine").await;
    let id = accepted(resp).await;
    let letters = wait_dlq(&c.http, &region, &token, "on_success ran", |l| {
        l.iter().any(|d| d["request_id"] == id.as_str())
    })
    .await;
    let mine: Vec<&Value> = letters
        .iter()
        .filter(|d| d["request_id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    let d = mine[0];
    assert_eq!(
        (d["function"].as_str(), d["kind"].as_str()),
        (Some("sink"), Some("on_success"))
    );
    assert_eq!(d["error"]["kind"], "unhandled");
    let success: Value = serde_json::from_slice(&payload(d)).expect("success record");
    assert_eq!(success["function"], "fine");
    assert_eq!(success["request_id"], id.as_str());
    assert_eq!(success["attempts"], 1);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_then_dead_lettered_replayed_and_purged() {
    let c = TestCluster::with(fast_retries(), pop_config()).await;
    c.deploy_wat("sink", json!({"retries": 0}), TRAP).await;
    c.deploy_wat("flaky", json!({"retries": 2, "on_failure": "sink"}), TRAP)
        .await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    let id = accepted(invoke_event(&c.http, &region, &token, "flaky").await).await;
    let both = |l: &[Value]| {
        l.iter().any(|d| d["function"] == "flaky")
            && l.iter()
                .any(|d| d["function"] == "sink" && d["kind"] == "on_failure")
    };
    let letters = wait_dlq(&c.http, &region, &token, "dead-lettered", both).await;
    let flaky = letters
        .iter()
        .find(|d| d["function"] == "flaky")
        .expect("flaky");
    assert_eq!(flaky["request_id"], id.as_str());
    assert_eq!(flaky["attempts"], 3, "first attempt and two retries");
    assert_eq!(flaky["reason"], "retries-exhausted");
    assert_eq!(flaky["error"]["kind"], "unhandled");
    assert_eq!(flaky["version"], "$LATEST");
    assert_eq!(payload(flaky), b"payload");
    assert!(flaky["first_attempt_ms"].as_u64() <= flaky["last_attempt_ms"].as_u64());
    let sink = letters
        .iter()
        .find(|d| d["function"] == "sink")
        .expect("sink");
    let record: Value = serde_json::from_slice(&payload(sink)).expect("failure record");
    assert_eq!(
        (record["function"].as_str(), record["attempts"].as_u64()),
        (Some("flaky"), Some(3))
    );

    // The depth reaches the capacity view (and dashboard); totals are on /metrics.
    let mut patience = Patience::new();
    loop {
        let view: Value = c
            .http
            .get(format!("{region}/v1/capacity"))
            .bearer_auth(&c.nodes.admin_token)
            .send()
            .await
            .expect("capacity")
            .json()
            .await
            .expect("json");
        if view["region"]["load"]["dlq_depth"] == 2 {
            break;
        }
        assert!(patience.more(), "dlq_depth never reached 2: {view}");
        tokio::task::yield_now().await;
    }
    let metrics = c
        .http
        .get(format!("{region}/metrics"))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "strata_events_total{outcome=\"accepted\"} 1",
        "strata_events_total{outcome=\"retried\"} 2",
        "strata_events_total{outcome=\"dead_lettered\"} 2",
        "strata_dlq_depth 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }

    // Show, then replay: the dead letter leaves, runs again with fresh attempts and comes
    // back as a new dead letter after three more attempts.
    let flaky_id = flaky["id"].as_u64().expect("id");
    let shown: Value = c
        .http
        .get(format!("{region}/v1/dlq/{flaky_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    assert_eq!(&shown, flaky);
    let resp = c
        .http
        .post(format!("{region}/v1/dlq/{flaky_id}/replay"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 200);
    let replayed = wait_dlq(&c.http, &region, &token, "replayed", |l| {
        l.iter().filter(|d| d["function"] == "sink").count() == 2
            && l.iter().any(|d| d["function"] == "flaky")
    })
    .await;
    let again = replayed
        .iter()
        .find(|d| d["function"] == "flaky")
        .expect("again");
    assert_ne!(again["id"].as_u64(), Some(flaky_id), "a new dead letter");
    assert_eq!(
        (again["attempts"].as_u64(), again["request_id"].as_str()),
        (Some(3), Some(id.as_str()))
    );

    // The replayed dead letter is gone; bad ids are typed errors.
    let missing = c
        .http
        .get(format!("{region}/v1/dlq/{flaky_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let bad = c
        .http
        .get(format!("{region}/v1/dlq/nope"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);

    // Another tenant sees none of them and cannot touch them.
    let other = crate::routes::other_tenant(&c, "other").await;
    assert!(dead_letters(&c.http, &region, &other).await.is_empty());
    let again_id = again["id"].as_u64().expect("id");
    for req in [
        c.http.get(format!("{region}/v1/dlq/{again_id}")),
        c.http.post(format!("{region}/v1/dlq/{again_id}/replay")),
    ] {
        let resp = req.bearer_auth(&other).send().await.expect("sent");
        assert_eq!(resp.status(), 404);
    }
    let none: Value = c
        .http
        .delete(format!("{region}/v1/dlq"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("purge")
        .json()
        .await
        .expect("json");
    assert_eq!(none["count"], 0);

    let purged: Value = c
        .http
        .delete(format!("{region}/v1/dlq"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("purge")
        .json()
        .await
        .expect("json");
    assert_eq!(purged["count"], 3);
    assert!(dead_letters(&c.http, &region, &token).await.is_empty());
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_says_429_with_retry_after() {
    let region = region_node::RegionConfig {
        events: EventsConfig {
            workers: 1,
            max_queued: 1,
            ..EventsConfig::default()
        },
        ..region_config()
    };
    let c = TestCluster::with(region, pop_config()).await;
    c.deploy_wat(
        "spin",
        json!({"retries": 0, "timeout_ms": 5000}),
        LOOP_FOREVER,
    )
    .await;
    let (url, token) = (c.nodes.region_url(), c.nodes.token.clone());
    accepted(invoke_event(&c.http, &url, &token, "spin").await).await;
    // The first event holds the only queue place while it runs (it spins until its
    // timeout, far longer than this test needs).
    let resp = invoke_event(&c.http, &url, &token, "spin").await;
    let (limit, _wait) = crate::support::throttled(resp).await;
    assert_eq!(limit, ("queue".into(), "depth".into(), 1));
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_no_reachable_region_is_503_never_202() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("certs");
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port");
    let pop = pop_node::start(pop_node::PopConfig {
        state_dir: dir.path().join("pop"),
        tls: Some(certs.pop),
        regions: RegionSource::Static(vec![dead]),
        connect_timeout_ms: 300,
        ..pop_config()
    })
    .await
    .expect("POP starts");
    let resp = invoke_event(
        &reqwest::Client::new(),
        &format!("http://{}", pop.http_addr),
        "st_any",
        "hello",
    )
    .await;
    assert_eq!(resp.status(), 503);
    pop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_failures_are_dead_lettered_only_when_the_function_asks() {
    let c = TestCluster::start().await;
    c.deploy_wat(
        "kept",
        json!({"dead_letter_sync": true, "placement": "edge"}),
        TRAP,
    )
    .await;
    c.deploy_wat("dropped", json!({"placement": "region"}), TRAP)
        .await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    for name in ["dropped", "kept"] {
        let resp = c.invoke_at(&region, name, "x").await;
        assert_eq!(resp.status(), 500);
    }
    // Through the POP too, though the function is placed at the edge: the dead-letter
    // queue is at the region, so the POP forwards it.
    for _ in 0..4 {
        let resp = c.invoke("kept", "x").await;
        assert_eq!(resp.status(), 500);
        let at = crate::support::header(&resp, "x-strata-executed-at");
        assert!(at.starts_with("region/"), "{at}");
    }
    let letters = dead_letters(&c.http, &region, &token).await;
    let names: Vec<&str> = letters
        .iter()
        .filter_map(|d| d["function"].as_str())
        .collect();
    assert_eq!(names, ["kept"; 5]);
    assert_eq!(letters[0]["reason"], "sync");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_older_than_max_event_age_is_dead_lettered_unrun_and_on_failure_gets_it() {
    // One worker, held by a gated event while `stale` waits behind it and ages.
    let region = region_node::RegionConfig {
        events: EventsConfig {
            workers: 1,
            ..fast_retries().events
        },
        ..region_config()
    };
    let clock = TestClock::new();
    let c = TestCluster::with_clock(region, pop_config(), clock.clone()).await;
    c.deploy_wat("sink", json!({"retries": 0}), TRAP).await;
    // Would succeed if it ran (and then tell the sink, under kind `on_success`).
    c.deploy_wat(
        "stale",
        json!({"max_event_age_s": 60, "retries": 2, "on_failure": "sink", "on_success": "sink"}),
        OK,
    )
    .await;
    deploy_gated(&c, "hold", Then::Succeed, json!({})).await;
    deploy_opener(&c).await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());

    accepted(invoke_event(&c.http, &region, &token, "hold").await).await;
    let id = accepted(invoke_event(&c.http, &region, &token, "stale").await).await;
    // `stale` is queued behind `hold` (due no later, accepted later) on the only worker,
    // which `hold` keeps until the gate opens: it is over its age when the worker gets it.
    clock.advance(std::time::Duration::from_secs(61));
    crate::gate::open(&c).await;

    let letters = wait_dlq(&c.http, &region, &token, "stale dead-lettered", |l| {
        l.iter().any(|d| d["function"] == "stale") && l.iter().any(|d| d["function"] == "sink")
    })
    .await;
    let stale = letters
        .iter()
        .find(|d| d["function"] == "stale")
        .expect("stale");
    assert_eq!(stale["request_id"], id.as_str());
    assert_eq!(stale["reason"], "too-old");
    assert_eq!(stale["error"]["kind"], "too-old");
    assert_eq!(stale["attempts"], 0, "never ran");
    assert_eq!(stale["first_attempt_ms"], Value::Null);
    assert_eq!(payload(stale), b"payload");
    // The sink ran under `on_failure` with the failure record, and never under
    // `on_success`: `stale` did not run.
    let sink: Vec<&Value> = letters.iter().filter(|d| d["function"] == "sink").collect();
    assert_eq!(sink.len(), 1, "{sink:#?}");
    assert_eq!(
        (sink[0]["kind"].as_str(), sink[0]["request_id"].as_str()),
        (Some("on_failure"), Some(id.as_str()))
    );
    let record: Value = serde_json::from_slice(&payload(sink[0])).expect("failure record");
    assert_eq!(record["function"], "stale");
    assert_eq!(record["reason"], "too-old");
    assert_eq!(record["attempts"], 0);
    assert_eq!(record["id"], stale["id"]);
    c.nodes.shutdown().await;
}
