//! The JetStream store backend with real nodes: two regions configured with one real
//! `nats-server -js` share functions, POP push streams and durable streams; the async
//! queue and dead-letter queue work on it end to end and keep an event across a region
//! restart; a region whose server is unreachable refuses to start with a clear error.
//!
//! Each test starts its own server on a free loopback port with a temporary directory.
//! They are `#[ignore = "needs nats-server"]`: `.ci/test` runs them when the binary is
//! installed (and always in CI, where a missing binary fails them), else reports them
//! skipped (see tests/all/README.md).

use crate::events::{OK, accepted, dead_letters, fast_retries, invoke_event, payload, wait_dlq};
use crate::gate::{Then, deploy_gated, deploy_opener};
use crate::support::{TRAP, TestCluster, pop_config, region_config, synced};
use region_node::events::EventsConfig;
use region_node::node::StartError;
use region_node::store::StoreError;
use region_node::store::jetstream::nats_server::NatsServer;
use region_node::{RegionConfig, StoreBackend, StoreConfig};
use serde_json::{Value, json};
use strata::dev::DevCluster;

fn on_nats(url: &str, node_id: &str) -> RegionConfig {
    RegionConfig {
        node_id: node_id.into(),
        store: StoreConfig {
            backend: StoreBackend::Jetstream,
            nats_url: Some(url.into()),
            prefix: "it".into(),
            ..StoreConfig::default()
        },
        ..region_config()
    }
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_on_one_nats_server_share_functions_pushes_and_streams() {
    let nats = NatsServer::start().expect("nats-server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DevCluster::start(
        &dir.path().join("a"),
        on_nats(&nats.url(), "a"),
        pop_config(),
    )
    .await
    .expect("region a starts");
    let b = DevCluster::start(
        &dir.path().join("b"),
        on_nats(&nats.url(), "b"),
        pop_config(),
    )
    .await
    .expect("region b starts");
    // B's POP is subscribed before the deploy, so it learns of it through B's push stream.
    assert!(synced(&b.pop, |s| s.live).await, "B's POP never subscribed");

    a.deploy_examples().await.expect("deploys through region a");
    let store_a = a.region.registry().store().clone();
    let deployed_at = tokio::task::spawn_blocking(move || store_a.revision())
        .await
        .expect("joins")
        .expect("revision");

    let http = reqwest::Client::new();
    let listed: serde_json::Value = http
        .get(format!("{}/v1/functions", b.region_url()))
        .bearer_auth(&a.token)
        .send()
        .await
        .expect("list at b")
        .json()
        .await
        .expect("JSON");
    let names: Vec<_> = listed["functions"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"hello"), "{listed}");

    let invoke = |base: String| {
        http.post(format!("{base}/v1/functions/hello/invoke"))
            .bearer_auth(&a.token)
            .body("shared")
            .send()
    };
    let resp = invoke(b.region_url()).await.expect("invoke at b");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "Hello, shared!\n");

    assert!(
        synced(&b.pop, |s| s.revision >= deployed_at).await,
        "B's POP is at {:?}, the deploy at {deployed_at}",
        b.pop.sync_status()
    );
    let resp = invoke(b.pop_url()).await.expect("invoke at b's POP");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "Hello, shared!\n");

    // A durable stream appended at A is read and acked at B.
    let (store_a, store_b) = (
        a.region.registry().store().clone(),
        b.region.registry().store().clone(),
    );
    tokio::task::spawn_blocking(move || {
        let seq = store_a.append("jobs", b"job-1", 16).expect("append at a");
        let read = store_b.read("jobs", 0, 16).expect("read at b");
        assert_eq!(read.len(), 1);
        assert_eq!(
            (read[0].seq, read[0].value.as_slice()),
            (seq, &b"job-1"[..])
        );
        assert!(store_b.ack("jobs", seq).expect("ack at b"));
        assert_eq!(store_a.read("jobs", 0, 16).expect("read at a"), []);
    })
    .await
    .expect("joins");

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_nats_server_is_unreachable_refuses_to_start() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RegionConfig {
        state_dir: dir.path().to_path_buf(),
        ..on_nats(&url, "lonely")
    };
    let err = region_node::start(config)
        .await
        .expect_err("no NATS server, no region");
    assert!(
        matches!(&err, StartError::Store(StoreError::Backend(m)) if m.contains(&url)),
        "{err}"
    );
    let config = RegionConfig {
        state_dir: dir.path().to_path_buf(),
        store: StoreConfig {
            backend: StoreBackend::Jetstream,
            ..StoreConfig::default()
        },
        ..region_config()
    };
    let err = region_node::start(config).await.expect_err("no URL");
    assert!(err.to_string().contains("nats_url"), "{err}");
}

/// A region on `url` with fast retries and `workers` event workers.
fn events_on_nats(url: &str, workers: usize) -> RegionConfig {
    RegionConfig {
        events: EventsConfig {
            workers,
            ..fast_retries().events
        },
        ..on_nats(url, "events")
    }
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_jetstream_run_retry_dead_letter_and_replay() {
    let nats = NatsServer::start().expect("nats-server starts");
    let c = TestCluster::with(events_on_nats(&nats.url(), 4), pop_config()).await;
    c.deploy_wat("sink", json!({"retries": 0}), TRAP).await;
    c.deploy_wat("fine", json!({"on_success": "sink"}), OK)
        .await;
    c.deploy_wat("flaky", json!({"retries": 2, "on_failure": "sink"}), TRAP)
        .await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());

    // Accepted through the POP, run at the region: the sink's dead letter is its
    // `on_success` record.
    let fine = accepted(invoke_event(&c.http, &c.nodes.pop_url(), &token, "fine").await).await;
    let flaky = accepted(invoke_event(&c.http, &region, &token, "flaky").await).await;
    let letters = wait_dlq(&c.http, &region, &token, "both done", |l| {
        let of = |f: &str, k: &str| l.iter().any(|d| d["function"] == f && d["kind"] == k);
        of("sink", "on_success") && of("flaky", "invocation") && of("sink", "on_failure")
    })
    .await;
    assert_eq!(letters.len(), 3, "{letters:#?}");
    let find = |f: &str, k: &str| {
        letters
            .iter()
            .find(|d| d["function"] == f && d["kind"] == k)
            .cloned()
            .expect("listed")
    };
    let success: Value =
        serde_json::from_slice(&payload(&find("sink", "on_success"))).expect("success record");
    assert_eq!(
        (success["function"].as_str(), success["request_id"].as_str()),
        (Some("fine"), Some(fine.as_str()))
    );
    let dead = find("flaky", "invocation");
    assert_eq!(dead["request_id"], flaky.as_str());
    assert_eq!(dead["attempts"], 3, "first attempt and two retries");
    assert_eq!(dead["reason"], "retries-exhausted");
    let record: Value =
        serde_json::from_slice(&payload(&find("sink", "on_failure"))).expect("failure record");
    assert_eq!(record["id"], dead["id"]);

    // Replayed: removed, run again with fresh attempts, dead-lettered anew.
    let id = dead["id"].as_u64().expect("id");
    let resp = c
        .http
        .post(format!("{region}/v1/dlq/{id}/replay"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 200);
    let letters = wait_dlq(&c.http, &region, &token, "replayed", |l| {
        l.iter()
            .any(|d| d["function"] == "flaky" && d["id"].as_u64() != Some(id))
    })
    .await;
    let again = letters
        .iter()
        .find(|d| d["function"] == "flaky")
        .expect("flaky again");
    assert_eq!(
        (again["attempts"].as_u64(), again["request_id"].as_str()),
        (Some(3), Some(flaky.as_str()))
    );
    assert!(letters.iter().all(|d| d["id"].as_u64() != Some(id)));
    c.nodes.shutdown().await;
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_accepted_before_a_region_restart_on_jetstream_runs_after_it() {
    let nats = NatsServer::start().expect("nats-server starts");
    // One worker, held by a gated event: `works` is accepted but cannot run before the
    // region stops.
    let c = TestCluster::with(events_on_nats(&nats.url(), 1), pop_config()).await;
    c.deploy_wat("sink", json!({"retries": 0}), TRAP).await;
    c.deploy_wat("works", json!({"on_success": "sink"}), OK)
        .await;
    deploy_gated(&c, "hold", Then::Succeed, json!({})).await;
    deploy_opener(&c).await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    accepted(invoke_event(&c.http, &region, &token, "hold").await).await;
    let id = accepted(invoke_event(&c.http, &region, &token, "works").await).await;
    assert!(dead_letters(&c.http, &region, &token).await.is_empty());

    let c = c
        .restart(events_on_nats(&nats.url(), 1), pop_config(), None)
        .await;
    let region = c.nodes.region_url();
    // `hold` is run again (at least once) and waits; opening the gate lets it, and the
    // stopped region's copy, finish.
    crate::gate::open(&c).await;
    let letters = wait_dlq(&c.http, &region, &token, "works ran", |l| {
        l.iter().any(|d| d["request_id"] == id.as_str())
    })
    .await;
    let success = letters
        .iter()
        .find(|d| d["request_id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        (success["function"].as_str(), success["kind"].as_str()),
        (Some("sink"), Some("on_success"))
    );
    let record: Value = serde_json::from_slice(&payload(success)).expect("success record");
    assert_eq!(
        (record["function"].as_str(), record["attempts"].as_u64()),
        (Some("works"), Some(1))
    );
    c.nodes.shutdown().await;
}
