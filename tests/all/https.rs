//! HTTPS at the POP with the real `curl`: HTTP/1.1 and HTTP/2 by ALPN over TLS with the
//! dev CA's `localhost` certificate, h2c on the plain listener, and an SNI naming no host
//! with a certificate failing the handshake cleanly while `localhost` is still served.

use crate::support::{TestCluster, any_port, pop_config, region_config};
use pop_node::config::HttpsConfig;
use std::net::SocketAddr;
use tokio::process::Command;

/// A deployment whose POP also listens for HTTPS (the `localhost` certificate from the
/// dev CA, no default certificate).
async fn https_cluster() -> (TestCluster, SocketAddr) {
    let c = TestCluster::with(region_config(), https_pop(true)).await;
    let addr = c.nodes.pop.https_addr.expect("HTTPS listener bound");
    (c, addr)
}

/// A POP config with an HTTPS listener (the dev cluster adds the `localhost`
/// certificate) and the plain listener on or off.
pub(crate) fn https_pop(plain_http: bool) -> pop_node::PopConfig {
    pop_node::PopConfig {
        plain_http,
        https: Some(HttpsConfig::on(any_port())),
        ..pop_config()
    }
}

/// What `curl` printed and how it exited.
pub(crate) struct Curl {
    pub(crate) ok: bool,
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs curl with `args`, printing `<body>\n<http_version> <status>` on success.
pub(crate) async fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .await
        .expect("curl runs (is it installed?)");
    Curl {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Invokes `hello` at the POP over HTTPS with SNI `host` (resolved to the listener).
async fn invoke_hello(c: &TestCluster, addr: SocketAddr, host: &str, version: &str) -> Curl {
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let url = format!("https://{host}:{}/v1/functions/hello/invoke", addr.port());
    let auth = format!("authorization: Bearer {}", c.nodes.token);
    let ca = c.nodes.ca_cert.display().to_string();
    curl(&[
        version,
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-X",
        "POST",
        "-H",
        &auth,
        "-d",
        "Strata",
        &url,
    ])
    .await
}

#[tokio::test]
async fn curl_invokes_over_https_with_http1_and_http2() {
    let (c, addr) = https_cluster().await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = invoke_hello(&c, addr, "localhost", flag).await;
        assert!(out.ok, "{flag}: curl failed: {}", out.stderr);
        let (body, tail) = out.stdout.rsplit_once('\n').expect("curl's -w line");
        assert_eq!(tail, format!("{version} 200"), "{flag}: body {body}");
        assert!(
            body.contains("Strata"),
            "{flag}: the function's answer: {body}"
        );
    }
    assert_eq!(
        c.nodes.pop_https_url(),
        Some(format!("https://localhost:{}", addr.port()))
    );
}

#[tokio::test]
async fn an_unknown_sni_fails_the_handshake_and_localhost_is_still_served() {
    let (c, addr) = https_cluster().await;
    let out = invoke_hello(&c, addr, "other-tenant.example", "--http2").await;
    assert!(!out.ok, "no certificate for that name, yet: {}", out.stdout);
    // 35: the TLS handshake failed (not a certificate verification error, 60: no
    // certificate was offered at all).
    assert_eq!(out.code, Some(35), "{}", out.stderr);
    let out = invoke_hello(&c, addr, "localhost", "--http2").await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.ends_with("2 200"), "{}", out.stdout);
}

#[tokio::test]
async fn the_plain_listener_speaks_h2c() {
    let c = TestCluster::start().await;
    let url = format!("{}/healthz", c.nodes.pop_url());
    let out = curl(&["--http2-prior-knowledge", &url]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "ok\n2 200");
}

#[tokio::test]
async fn plain_http_can_be_turned_off() {
    let pop = pop_node::PopConfig {
        plain_http: false,
        ..pop_config()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let err = strata::dev::DevCluster::start(dir.path(), region_config(), pop)
        .await
        .expect_err("no listener at all is refused");
    assert!(
        format!("{err:#}").contains("plain_http = false needs"),
        "{err:#}"
    );

    let c = TestCluster::with(region_config(), https_pop(false)).await;
    let https = c.nodes.pop.https_addr.expect("HTTPS bound");
    assert_eq!(c.nodes.pop.http_addr, https, "only the HTTPS listener runs");
    let out = invoke_hello(&c, https, "localhost", "--http1.1").await;
    assert!(out.ok && out.stdout.ends_with("1.1 200"), "{}", out.stderr);
}

/// The HTTPS listener runs the shared serve loop, so `[http]` limits hold there too: a
/// client that opens a connection and never completes the TLS handshake is closed after
/// the header-read timeout (the standalone HTTPS loop this replaced waited a fixed 10 s),
/// and HTTPS devices are still served.
#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_by_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let pop = pop_node::PopConfig {
        http: common::edge::HttpLimits {
            header_read_timeout_ms: 200,
            ..common::edge::HttpLimits::default()
        },
        ..https_pop(true)
    };
    let c = TestCluster::with(region_config(), pop).await;
    let addr = c.nodes.pop.https_addr.expect("HTTPS listener bound");
    let mut raw = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects to the HTTPS listener");
    // The first bytes of a TLS record header, then nothing.
    raw.write_all(&[0x16, 0x03, 0x01]).await.expect("writes");
    assert!(
        crate::raw::ends_within(&mut raw, std::time::Duration::from_secs(5)).await,
        "a stalled TLS handshake stays open"
    );
    let out = invoke_hello(&c, addr, "localhost", "--http2").await;
    assert!(out.ok, "HTTPS still serves: {}", out.stderr);
    assert!(out.stdout.ends_with("2 200"), "{}", out.stdout);
}
