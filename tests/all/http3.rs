//! HTTP/3 at the POP with a real HTTP/3 client (the `h3` crate's, over quinn): the same
//! invoke API and routes as HTTP/1.1 and HTTP/2, certificates from the same table (a
//! tenant's certificate added at run time serves its host), `alt-svc` on TCP responses,
//! and the `[http]` and QUIC limits holding against hostile clients while others are
//! served.

use crate::routes::{CGI_GUEST, add_route};
use crate::support::{Patience, TestCluster, any_port, pop_config, region_config};
use bytes::Bytes;
use futures::FutureExt as _;
use pop_node::config::HttpsConfig;
use scenarios::bench::h3::{H3Client, client_config, endpoint};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// A POP config with HTTPS and HTTP/3 on (the dev cluster adds the `localhost`
/// certificate), and `max_streams` request streams per HTTP/3 connection.
fn h3_pop(max_streams: u32) -> pop_node::PopConfig {
    pop_node::PopConfig {
        route_refresh_ms: 20,
        https: Some(HttpsConfig {
            h3_listen: Some(any_port()),
            h3_max_streams: max_streams,
            ..HttpsConfig::on(any_port())
        }),
        ..pop_config()
    }
}

async fn h3_cluster(pop: pop_node::PopConfig) -> (TestCluster, SocketAddr) {
    let c = TestCluster::with(region_config(), pop).await;
    let addr = c.nodes.pop.h3_addr.expect("HTTP/3 listener bound");
    (c, addr)
}

/// An HTTP/3 connection to the POP trusting the dev CA, SNI `localhost`.
async fn connect(c: &TestCluster, addr: SocketAddr) -> anyhow::Result<H3Client> {
    let ep = endpoint(client_config(&c.nodes.ca_cert)?)?;
    H3Client::connect(&ep, addr, "localhost").await
}

async fn client(c: &TestCluster, addr: SocketAddr) -> H3Client {
    connect(c, addr).await.expect("HTTP/3 connection")
}

fn invoke_req(c: &TestCluster, addr: SocketAddr, name: &str) -> http::Request<()> {
    http::Request::post(format!(
        "https://localhost:{}/v1/functions/{name}/invoke",
        addr.port()
    ))
    .header("authorization", format!("Bearer {}", c.nodes.token))
    .body(())
    .expect("request")
}

fn header(resp: &http::Response<()>, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Invokes `hello` over `h3` and expects the greeting.
async fn hello_served(c: &TestCluster, addr: SocketAddr, h3: &H3Client) {
    let (resp, body) = h3
        .send(invoke_req(c, addr, "hello"), Bytes::from_static(b"Strata"))
        .await
        .expect("answered over HTTP/3");
    assert_eq!(resp.status(), 200, "{body:?}");
    assert_eq!(body, "Hello, Strata!\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_invokes_a_popular_function_at_the_pop_and_https_advertises_it() {
    let (c, addr) = h3_cluster(h3_pop(100)).await;
    let h3 = client(&c, addr).await;
    // Popular enough after a few calls: then it runs at the POP, over HTTP/3 as over TCP.
    let mut patience = Patience::new();
    let resp = loop {
        let (resp, body) = h3
            .send(invoke_req(&c, addr, "hello"), Bytes::from_static(b"Strata"))
            .await
            .expect("answered over HTTP/3");
        assert_eq!(resp.status(), 200, "{body:?}");
        assert_eq!(body, "Hello, Strata!\n");
        if header(&resp, "x-strata-executed-at").starts_with("pop/") {
            break resp;
        }
        assert!(patience.more(), "hello never ran at the POP");
    };
    assert_eq!(header(&resp, "x-strata-request-id").len(), 32);
    assert!(matches!(
        header(&resp, "x-strata-start").as_str(),
        "cold" | "warm"
    ));
    assert!(header(&resp, "server-timing").contains("exec"));
    assert_eq!(
        c.nodes.pop_h3_url(),
        Some(format!("https://localhost:{}", addr.port()))
    );

    // HTTPS over TCP, HTTP/1.1 and HTTP/2, tells devices where HTTP/3 is.
    let https = c.nodes.pop.https_addr.expect("HTTPS bound");
    let ca = c.nodes.ca_cert.display().to_string();
    for flag in ["--http1.1", "--http2"] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-D", "-", "-o", "/dev/null"])
            .args([flag, "--cacert", &ca])
            .arg(format!("https://localhost:{}/healthz", https.port()))
            .output()
            .await
            .expect("curl runs (is it installed?)");
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let want = format!("alt-svc: h3=\":{}\"; ma=86400", addr.port());
        assert!(head.contains(&want), "{flag}: no {want} in {head}");
    }
}

/// A self-signed certificate for `host`: (chain PEM, key PEM).
fn self_signed(host: &str) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("rcgen");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_http3_is_served_with_its_hosts_certificate() {
    let (c, addr) = h3_cluster(h3_pop(100)).await;
    c.deploy_wat("shop", json!({}), CGI_GUEST).await;
    let resp = add_route(
        &c,
        &c.nodes.token,
        json!({"host": "shop.example", "path_prefix": "/api", "function": "shop"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    // The host's certificate goes into the POP's table at run time (as a tenant's upload
    // does); HTTP/3 handshakes naming the host get it, no restart.
    let (chain, key) = self_signed("shop.example");
    let certified =
        common::edge::tls::certified_key(chain.as_bytes(), key.as_bytes()).expect("valid");
    c.nodes.pop.certs.insert("shop.example", certified);
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = dir.path().join("shop.pem");
    std::fs::write(&trust, &chain).expect("write");
    let ep = endpoint(client_config(&trust).expect("config")).expect("endpoint");
    let h3 = H3Client::connect(&ep, addr, "shop.example")
        .await
        .expect("the handshake presents shop.example's own certificate");

    let mut patience = Patience::new();
    let (resp, body) = loop {
        let req = http::Request::post("https://shop.example/api/items?id=3")
            .header("x-custom", "yes")
            .body(())
            .expect("request");
        let (resp, body) = h3
            .send(req, Bytes::from_static(b"the body"))
            .await
            .expect("answered over HTTP/3");
        if resp.status() == 201 {
            break (resp, body);
        }
        assert!(patience.more(), "the route never reached the POP");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(header(&resp, "content-type"), "text/x-env");
    assert_eq!(header(&resp, "x-guest"), "cgi");
    let body = String::from_utf8_lossy(&body);
    for expected in [
        "REQUEST_METHOD=POST",
        "PATH_INFO=/api/items",
        "QUERY_STRING=id=3",
        "SERVER_NAME=shop.example",
        "HTTP_X_CUSTOM=yes",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    assert!(body.ends_with("the body"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_over_http3_gets_the_same_413_as_http1() {
    let pop = pop_node::PopConfig {
        edge: common::edge::EdgeConfig {
            max_payload_bytes: 1024,
            ..common::edge::EdgeConfig::default()
        },
        ..h3_pop(100)
    };
    let (c, addr) = h3_cluster(pop).await;
    let big = Bytes::from(vec![b'x'; 8 << 10]);
    let h1 = c
        .http
        .post(format!("{}/v1/functions/hello/invoke", c.nodes.pop_url()))
        .bearer_auth(&c.nodes.token)
        .body(big.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(h1.status(), 413);
    let h1_body: Value = h1.json().await.expect("json");

    let h3 = client(&c, addr).await;
    let (resp, body) = h3
        .send(invoke_req(&c, addr, "hello"), big)
        .await
        .expect("answered over HTTP/3");
    assert_eq!(resp.status(), 413);
    let h3_body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(h3_body["error"]["kind"], "payload_too_large");
    assert_eq!(h3_body, h1_body, "the same typed error on both protocols");
    // The connection serves on.
    hello_served(&c, addr, &h3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_garbage_streams_do_not_hurt_other_streams_or_connections() {
    let (c, addr) = h3_cluster(h3_pop(100)).await;
    let a = client(&c, addr).await;
    // A request whose body is abandoned midway (the client resets its stream).
    let mut sender = a.sender.clone();
    let mut aborted = sender
        .send_request(invoke_req(&c, addr, "hello"))
        .await
        .expect("stream opened");
    aborted
        .send_data(Bytes::from_static(b"half a bo"))
        .await
        .expect("sent");
    aborted.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
    // The same connection serves the next request.
    hello_served(&c, addr, &a).await;

    // Garbage on a raw request stream of another connection: that connection may be
    // closed (a protocol error), the others are not.
    let b = client(&c, addr).await;
    let (mut send, mut recv) = b.quic.open_bi().await.expect("raw stream");
    // A DATA frame where HEADERS must come first, then noise.
    send.write_all(&[0x00, 0x04, 1, 2, 3, 4, 0xff, 0xfe])
        .await
        .expect("garbage written");
    let _ = send.finish();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        recv.read_to_end(1 << 16),
    );
    assert!(ended.await.is_ok(), "the garbage stream was left open");
    hello_served(&c, addr, &a).await;
    let fresh = client(&c, addr).await;
    hello_served(&c, addr, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_streams_beyond_the_limit_get_no_credit_and_others_are_served() {
    const STREAMS: u32 = 4;
    let (c, addr) = h3_cluster(h3_pop(STREAMS)).await;
    let hostile = client(&c, addr).await;
    let mut sender = hostile.sender.clone();
    let mut held = Vec::new();
    for _ in 0..STREAMS {
        // Headers announcing a body that never comes: each holds its stream.
        let req = http::Request::post(format!(
            "https://localhost:{}/v1/functions/hello/invoke",
            addr.port()
        ))
        .header("authorization", format!("Bearer {}", c.nodes.token))
        .header("content-length", "10")
        .body(())
        .expect("request");
        let mut stream = sender.send_request(req).await.expect("within the limit");
        stream
            .send_data(Bytes::from_static(b"12345"))
            .await
            .expect("sent");
        held.push(stream);
    }
    // The POP granted no credit for one more request stream.
    let mut over = Box::pin(hostile.quic.open_bi());
    assert!(
        over.as_mut().now_or_never().is_none(),
        "a stream beyond h3_max_streams was opened"
    );
    // Another client is served meanwhile.
    let victim = client(&c, addr).await;
    hello_served(&c, addr, &victim).await;
    // One held request completes: its stream's credit comes back.
    let mut done = held.pop().expect("held");
    done.send_data(Bytes::from_static(b"67890"))
        .await
        .expect("sent");
    done.finish().await.expect("finished");
    let resp = done.recv_response().await.expect("answered");
    assert_eq!(resp.status(), 200);
    let opened = tokio::time::timeout(std::time::Duration::from_secs(30), over).await;
    assert!(
        matches!(opened, Ok(Ok(_))),
        "credit never came back: {opened:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_and_freed_slots_serve_again() {
    let pop = pop_node::PopConfig {
        http: common::edge::HttpLimits {
            max_connections: 2,
            ..common::edge::HttpLimits::default()
        },
        ..h3_pop(100)
    };
    let (c, addr) = h3_cluster(pop).await;
    let first = client(&c, addr).await;
    let second = client(&c, addr).await;
    hello_served(&c, addr, &first).await;
    let err = connect(&c, addr).await.expect_err("a third connection");
    let refused = err
        .downcast_ref::<quinn::ConnectionError>()
        .is_some_and(|e| {
            matches!(e, quinn::ConnectionError::ConnectionClosed(close)
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
        });
    assert!(refused, "not refused with CONNECTION_REFUSED: {err:#}");
    // The held connections are still served; once one closes its slot serves again.
    hello_served(&c, addr, &second).await;
    first.quic.close(0u32.into(), b"done");
    drop(first);
    let mut patience = Patience::new();
    let third = loop {
        if let Ok(h3) = connect(&c, addr).await {
            break h3;
        }
        assert!(patience.more(), "the freed slot never served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    hello_served(&c, addr, &third).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http3_connection_is_closed_and_too_many_headers_get_431() {
    let pop = pop_node::PopConfig {
        http: common::edge::HttpLimits {
            idle_timeout_ms: 300,
            max_headers: 8,
            ..common::edge::HttpLimits::default()
        },
        ..h3_pop(100)
    };
    let (c, addr) = h3_cluster(pop).await;
    let h3 = client(&c, addr).await;
    let mut req = invoke_req(&c, addr, "hello");
    for i in 0..20 {
        req.headers_mut().insert(
            http::HeaderName::try_from(format!("x-filler-{i}")).expect("name"),
            http::HeaderValue::from_static("1"),
        );
    }
    let (resp, _) = h3.send(req, Bytes::new()).await.expect("answered");
    assert_eq!(resp.status(), 431);
    hello_served(&c, addr, &h3).await;
    // Nothing in flight: the POP closes the connection after the idle timeout.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), h3.quic.closed()).await;
    assert!(
        matches!(closed, Ok(quinn::ConnectionError::ApplicationClosed(_))),
        "{closed:?}"
    );
    let fresh = client(&c, addr).await;
    hello_served(&c, addr, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_is_refused_over_http3_before_its_body() {
    let (c, addr) = h3_cluster(h3_pop(100)).await;
    let h3 = client(&c, addr).await;
    // Headers announcing 6 MiB, and no body at all: the answer must come anyway.
    let req = http::Request::post(format!(
        "https://localhost:{}/v1/functions/hello/invoke",
        addr.port()
    ))
    .header("content-length", "6291456")
    .body(())
    .expect("request");
    let mut stream = h3
        .sender
        .clone()
        .send_request(req)
        .await
        .expect("stream opened");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), stream.recv_response())
        .await
        .expect("answered before any body")
        .expect("a response");
    assert_eq!(resp.status(), 401);
    hello_served(&c, addr, &h3).await;
}
