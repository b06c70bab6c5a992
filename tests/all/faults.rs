//! Bad input and faults: each gets a typed error with the right status, changes nothing,
//! and the nodes keep serving.

use crate::support::{
    LOOP_FOREVER, TRAP, TestCluster, error_kind, eventually, header, pop_config, region_config,
    until_served,
};
use common::edge::EdgeConfig;
use common::transport::{Client, NodeTls, REGION_SERVER_NAME, dev_ca};
use common::wire::{MAX_FRAME_LEN, Message};
use pop_node::discovery::RegionSource;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_module_is_refused_and_nothing_is_stored() {
    let c = TestCluster::start().await;
    let err = c
        .nodes
        .deploy("broken", json!({}), b"\0asm\x01\0\0\0garbage".to_vec())
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("400") && msg.contains("invalid_module"),
        "{msg}"
    );
    let resp = c
        .http
        .get(format!("{}/v1/functions/broken", c.nodes.region_url()))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_importing_what_the_host_lacks_is_refused_naming_the_import() {
    let c = TestCluster::start().await;
    let wasm = wat::parse_str(
        r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#,
    )
    .expect("wat");
    let err = c
        .nodes
        .deploy("imports", json!({}), wasm)
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("launch_missiles"), "{msg}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_unknown_fields_is_refused() {
    let c = TestCluster::start().await;
    let wasm = wat::parse_str(crate::support::TRAP).expect("wat");
    let err = c
        .nodes
        .deploy("cfg", json!({"memory_mib": 64}), wasm)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("memory_mib"), "{err}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_gets_413_whether_announced_or_streamed() {
    let pop = pop_node::PopConfig {
        edge: EdgeConfig {
            max_payload_bytes: 1024,
            ..EdgeConfig::default()
        },
        ..pop_config()
    };
    let c = TestCluster::with(region_config(), pop).await;
    let url = format!("{}/v1/functions/echo/invoke", c.nodes.pop_url());
    let resp = c
        .http
        .post(&url)
        .bearer_auth(&c.nodes.token)
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 413);
    assert_eq!(error_kind(resp).await, "payload_too_large");
    // Chunked, without content-length: refused while streaming.
    let chunks = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 100]))),
    );
    let resp = c
        .http
        .post(&url)
        .bearer_auth(&c.nodes.token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 413);
    // Under the limit still works.
    let resp = c.invoke("echo", "small").await;
    assert_eq!(resp.status(), 200);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_function_is_404() {
    let c = TestCluster::start().await;
    let resp = c.invoke("nope", "").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_kind(resp).await, "not_found");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_tokens_are_401() {
    let c = TestCluster::start().await;
    let url = format!("{}/v1/functions/hello/invoke", c.nodes.pop_url());
    let resp = c.http.post(&url).send().await.expect("sent");
    assert_eq!(resp.status(), 401);
    let resp = c
        .http
        .post(&url)
        .bearer_auth("st_wrong")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    assert_eq!(error_kind(resp).await, "unauthenticated");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_loops_forever_times_out_with_504_and_the_node_keeps_serving() {
    let c = TestCluster::start().await;
    c.deploy_wat("spin", json!({"timeout_ms": 200}), LOOP_FOREVER)
        .await;
    let resp = c.invoke("spin", "").await;
    assert_eq!(resp.status(), 504);
    assert_eq!(header(&resp, "x-strata-function-error"), "timeout");
    let resp = c.invoke("hello", "again").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "Hello, again!\n");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_traps_is_500_unhandled() {
    let c = TestCluster::start().await;
    c.deploy_wat("trap", json!({}), TRAP).await;
    let resp = c.invoke("trap", "").await;
    assert_eq!(resp.status(), 500);
    assert_eq!(header(&resp, "x-strata-function-error"), "unhandled");
    assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_region_is_503_with_a_clear_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(dir.path()).expect("certs");
    // A port nothing listens on: bind, note, release.
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
    .expect("POP starts without a region");
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/functions/hello/invoke",
            pop.http_addr
        ))
        .bearer_auth("st_any")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["kind"], "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no reachable region"),
        "{body}"
    );
    pop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_with_a_certificate_from_another_ca_is_refused() {
    let c = TestCluster::start().await;
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = dev_ca::init(other.path()).expect("other CA");
    // The foreign POP trusts the real CA (so it would accept the region) but presents a
    // certificate the region's CA never signed.
    let mut files = foreign.pop;
    files.ca_cert = c.nodes.region.tls.ca_cert.clone();
    let pop = pop_node::start(pop_node::PopConfig {
        state_dir: other.path().join("pop"),
        tls: Some(files),
        regions: RegionSource::Static(vec![c.nodes.region.quic_addr]),
        connect_timeout_ms: 2000,
        ..pop_config()
    })
    .await
    .expect("POP starts");
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/functions/hello/invoke",
            pop.http_addr
        ))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    pop.shutdown().await;
    // The legitimate POP is unaffected.
    assert_eq!(c.invoke("hello", "").await.status(), 200);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_quic_stream_closes_only_that_stream() {
    let c = TestCluster::start().await;
    let pop_tls = NodeTls::load(
        &dev_ca::init(&c.dir.path().join("certs"))
            .expect("certs")
            .pop,
    )
    .expect("tls");
    let client = Client::new(&pop_tls).expect("client");
    let ch = client
        .connect(c.nodes.region.quic_addr, REGION_SERVER_NAME)
        .await
        .expect("connects");
    for garbage in [
        &b"\x00\x00\x00\x08notbincode"[..],
        &b"\xff\xff\xff\xff"[..],
        &b"\x00\x00\x00\x02\xff\xff"[..],
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(5), ch.request_raw(garbage))
            .await
            .expect("the region answers garbage promptly");
        assert!(
            answer.map(|b| b.is_empty()).unwrap_or(true),
            "garbage got a reply"
        );
    }
    let pong = ch
        .request(&Message::Ping { nonce: 9 }, MAX_FRAME_LEN)
        .await
        .expect("the connection still serves");
    assert_eq!(pong, Message::Pong { nonce: 9 });
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_refuses_a_forwarded_payload_over_its_own_limit() {
    // The POP allows 8 KiB, the region only 1 KiB: the region has the last word.
    let region = region_node::RegionConfig {
        edge: EdgeConfig {
            max_payload_bytes: 1024,
            ..EdgeConfig::default()
        },
        ..region_config()
    };
    let pop = pop_node::PopConfig {
        edge: EdgeConfig {
            max_payload_bytes: 8192,
            ..EdgeConfig::default()
        },
        ..pop_config()
    };
    let c = TestCluster::with(region, pop).await;
    let resp = c
        .http
        .post(format!("{}/v1/functions/echo/invoke", c.nodes.pop_url()))
        .bearer_auth(&c.nodes.token)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 413);
    assert_eq!(header(&resp, "x-strata-request-id").len(), 32);
    c.nodes.shutdown().await;
}

/// DESIGN's guarantee that a guest cannot stall other requests, with guests running on the
/// POP's tokio workers: one guest spinning forever per worker (the test runtime, which the
/// in-process nodes share, has two) holds none of them, because a running guest yields
/// its worker at every epoch tick. Another function at the same POP is answered, with the
/// right body, while both spinners still run, and within its own timeout (one second, a
/// tenth of the spinners'); the spinners then end at theirs, 504 `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_spinning_guest_per_worker_does_not_stall_other_functions() {
    const WORKERS: usize = 2;
    let c = TestCluster::start().await;
    let spin = wat::parse_str(LOOP_FOREVER).expect("valid wat");
    let hello = wat::parse_str(include_str!("../../examples/hello.wat")).expect("valid wat");
    c.deploy_wat(
        "spin",
        json!({"timeout_ms": 10_000, "placement": "edge"}),
        LOOP_FOREVER,
    )
    .await;
    c.deploy_wat(
        "hi",
        json!({"timeout_ms": 1_000, "placement": "edge"}),
        include_str!("../../examples/hello.wat"),
    )
    .await;
    for wasm in [&spin, &hello] {
        c.nodes
            .pop
            .prepare(common::model::ArtifactDigest::of(wasm))
            .await
            .expect("the POP prepares the module");
    }
    // Served at the POP, which now also holds a lease for the tenant's local runs.
    until_served(&c, "hi", "pop/").await;
    let tenant = common::model::TenantId::new(strata::dev::DEV_TENANT).expect("tenant");

    let pop = c.nodes.pop_url();
    let spinners: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (http, url, token) = (c.http.clone(), pop.clone(), c.nodes.token.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/functions/spin/invoke"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("request completes")
            })
        })
        .collect();
    assert!(
        eventually(|| c.nodes.pop.lease_holding(&tenant).1 >= WORKERS as u32).await,
        "both spinners run at the POP"
    );

    let started = std::time::Instant::now();
    let resp = c.invoke("hi", "stalled?").await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-executed-at"), "pop/pop-1");
    assert_eq!(resp.text().await.expect("body"), "Hello, stalled?!\n");
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "answered while every spinner still held its guest"
    );
    assert!(
        took < Duration::from_secs(1),
        "answered within hi's timeout: {took:?}"
    );

    for s in spinners {
        let resp = s.await.expect("spinner task");
        assert_eq!(resp.status(), 504);
        assert_eq!(header(&resp, "x-strata-function-error"), "timeout");
    }
    c.nodes.shutdown().await;
}
