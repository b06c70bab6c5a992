//! Tenant TLS certificates end to end, with the real `curl` (OpenSSL): a tenant uploads a
//! chain signed by a test CA (rcgen) for its host, the region pushes it, and the POP serves
//! the tenant's route over HTTPS with it (HTTP/1.1 and HTTP/2); a rotation reaches the POP
//! without a restart; a wrong SNI never gets it; an expired certificate is refused at
//! upload, and one that expires while installed stops being served (the wildcard answers);
//! another tenant cannot upload for the host; the quotas refuse an attacker while the
//! victim is still served. `curl -v` prints the served leaf's subject, which tells the
//! certificates apart (each has its own common name).

use crate::https::{curl, https_pop};
use crate::routes::{CGI_GUEST, add_route, other_tenant};
use crate::support::{Patience, TestCluster, error_kind, region_config};
use region_node::quota::QuotaConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A CA of the test's own, its PEM written where curl's `--cacert` reads it.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pem: PathBuf,
}

impl TestCa {
    fn new(dir: &std::path::Path) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Strata test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let pem = dir.join("test-ca.pem");
        std::fs::write(&pem, issuer.pem()).expect("writes the CA");
        Self { issuer, pem }
    }

    /// A leaf for `name` with common name `cn`, valid from a minute ago until `valid_for`
    /// from now (or, with a negative `valid_for`, until that long ago): (chain, key) PEM.
    fn leaf(&self, name: &str, cn: &str, valid_for: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let at = |s: u64| epoch + Duration::from_secs(s);
        params.not_before = at(now - 120);
        params.not_after = at(now.saturating_add_signed(valid_for));
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = params.signed_by(&key, &*self.issuer).expect("signs");
        (
            format!("{}{}", leaf.pem(), self.issuer.pem()),
            key.serialize_pem(),
        )
    }
}

/// A cluster whose POP serves HTTPS and refreshes routes every 20 ms, a test CA, and the
/// CGI guest deployed as `shop` and routed from `shop.example/api`.
struct Shop {
    c: TestCluster,
    addr: SocketAddr,
    ca: TestCa,
}

impl Shop {
    async fn start(region: region_node::RegionConfig) -> Self {
        let pop = pop_node::PopConfig {
            route_refresh_ms: 20,
            ..https_pop(true)
        };
        let c = TestCluster::with(region, pop).await;
        let addr = c.nodes.pop.https_addr.expect("HTTPS listener bound");
        let ca = TestCa::new(c.dir.path());
        c.deploy_wat("shop", json!({}), CGI_GUEST).await;
        let body = json!({"host": "shop.example", "path_prefix": "/api", "function": "shop"});
        assert_eq!(add_route(&c, &c.nodes.token, body).await.status(), 201);
        Self { c, addr, ca }
    }
}

/// `PUT /v1/certificates/{host}` as `token`'s tenant.
async fn put_cert(
    c: &TestCluster,
    token: &str,
    host: &str,
    (chain, key): (String, String),
) -> reqwest::Response {
    c.http
        .put(format!("{}/v1/certificates/{host}", c.nodes.region_url()))
        .bearer_auth(token)
        .json(&json!({ "chain": chain, "key": key }))
        .send()
        .await
        .expect("request completes")
}

/// Uploads a leaf for `host` with common name `cn`, valid for a day.
async fn put_leaf(
    c: &TestCluster,
    ca: &TestCa,
    token: &str,
    host: &str,
    cn: &str,
) -> reqwest::Response {
    put_cert(c, token, host, ca.leaf(host, cn, 86_400)).await
}

/// GETs `path` at the POP over HTTPS with SNI `host`, verifying with `ca` (or, without,
/// accepting any certificate), with `curl -v` so the served leaf's subject is printed.
async fn get(addr: SocketAddr, host: &str, path: &str, ca: Option<&TestCa>, version: &str) -> Out {
    let resolve = format!("{host}:{}:127.0.0.1", addr.port());
    let url = format!("https://{host}:{}{path}", addr.port());
    let mut args = vec![version, "-v", "--resolve", &resolve];
    let ca_path = ca.map(|ca| ca.pem.display().to_string());
    match &ca_path {
        Some(p) => args.extend(["--cacert", p.as_str()]),
        None => args.push("-k"),
    }
    args.push(&url);
    let out = curl(&args).await;
    Out {
        ok: out.ok,
        code: out.code,
        subject: out
            .stderr
            .lines()
            .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
            .map(str::to_owned),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// What one curl saw.
#[derive(Debug)]
struct Out {
    ok: bool,
    code: Option<i32>,
    /// The served leaf's subject (`CN=...`), when a certificate was presented.
    subject: Option<String>,
    stdout: String,
    stderr: String,
}

/// GETs until a handshake with SNI `host` verifies with `ca` and presents `cn`, bounded by
/// [`Patience`]: what a pushed certificate reaching the POP looks like.
async fn until_subject(addr: SocketAddr, host: &str, ca: &TestCa, cn: &str) -> Out {
    let want = format!("CN={cn}");
    let mut patience = Patience::new();
    let mut last = None;
    while patience.more() {
        let out = get(addr, host, "/api", Some(ca), "--http1.1").await;
        if out.ok && out.subject.as_deref() == Some(want.as_str()) {
            return out;
        }
        last = Some(out);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{host} never served {want}: last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_certificate_serves_its_route_over_http1_and_http2_and_rotates_without_restart() {
    let Shop { c, addr, ca } = Shop::start(region_config()).await;
    let token = c.nodes.token.clone();
    let resp = put_leaf(&c, &ca, &token, "shop.example", "shop-1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("body");
    assert!(!text.contains("PRIVATE KEY"), "a key in the answer: {text}");
    let view: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(view["host"], "shop.example");
    assert_eq!(view["subject"], "CN=shop-1");
    assert_eq!(view["fingerprint"].as_str().map(str::len), Some(64));

    until_subject(addr, "shop.example", &ca, "shop-1").await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = get(addr, "shop.example", "/api", Some(&ca), flag).await;
        assert!(out.ok, "{flag}: {}", out.stderr);
        assert_eq!(out.subject.as_deref(), Some("CN=shop-1"), "{flag}");
        let (body, tail) = out.stdout.rsplit_once('\n').expect("curl's -w line");
        assert_eq!(tail, format!("{version} 201"), "{flag}: {body}");
        assert!(body.contains("SERVER_NAME=shop.example"), "{flag}: {body}");
    }

    // Rotation: the next handshake gets the new leaf, from the same running POP.
    let resp = put_leaf(&c, &ca, &token, "shop.example", "shop-2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    until_subject(addr, "shop.example", &ca, "shop-2").await;
    assert_eq!(c.nodes.pop.https_addr, Some(addr));

    // Expiry is visible: the listing, the region's metrics and its capacity view.
    let list: Value = c
        .http
        .get(format!("{}/v1/certificates", c.nodes.region_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("lists")
        .json()
        .await
        .expect("json");
    let certs = list["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 1, "{list}");
    assert_eq!(certs[0]["subject"], "CN=shop-2");
    assert!(!list.to_string().contains("PRIVATE KEY"));
    let mut patience = Patience::new();
    let mut seen = false;
    while patience.more() && !seen {
        let metrics = c
            .http
            .get(format!("{}/metrics", c.nodes.region_url()))
            .bearer_auth(&c.nodes.admin_token)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        seen = metrics
            .lines()
            .filter_map(|l| {
                l.strip_prefix("strata_certificate_expiry_seconds{host=\"shop.example\"} ")
            })
            .filter_map(|v| v.parse::<f64>().ok())
            .any(|s| s > 86_000.0 && s <= 86_400.0);
        if !seen {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(seen, "no expiry gauge for shop.example");
    let view: Value = c
        .http
        .get(format!("{}/v1/capacity", c.nodes.region_url()))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("capacity")
        .json()
        .await
        .expect("json");
    assert_eq!(view["certificates"][0]["host"], "shop.example", "{view}");

    // Deleted: no certificate for the name any more (and no default): the handshake fails.
    let resp = c
        .http
        .delete(format!(
            "{}/v1/certificates/shop.example",
            c.nodes.region_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("deletes");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let mut patience = Patience::new();
    let mut last = None;
    while patience.more() {
        let out = get(addr, "shop.example", "/api", None, "--http1.1").await;
        if out.code == Some(35) {
            last = None;
            break;
        }
        last = Some(out);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.is_none(), "still served after the delete: {last:?}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sni_or_another_tenant_never_gets_a_tenant_certificate() {
    let Shop { c, addr, ca } = Shop::start(region_config()).await;
    let token = c.nodes.token.clone();
    let resp = put_leaf(&c, &ca, &token, "shop.example", "shop").await;
    assert_eq!(resp.status(), StatusCode::OK);
    until_subject(addr, "shop.example", &ca, "shop").await;

    // Names without a certificate, even one under the tenant's own host: no default
    // certificate here, so the handshake fails (35) even accepting any certificate (-k).
    for sni in ["other.example", "x.shop.example", "shop.example.evil"] {
        let out = get(addr, sni, "/api", None, "--http2").await;
        assert!(!out.ok, "{sni} was served: {:?}", out.subject);
        assert_eq!(out.code, Some(35), "{sni}: {}", out.stderr);
        assert_eq!(out.subject, None, "{sni}");
    }

    // Another tenant cannot put its certificate on the host, nor a wildcard over it.
    let mallory = other_tenant(&c, "mallory").await;
    for host in ["shop.example", "*.shop.example", "a.shop.example"] {
        let resp = put_leaf(&c, &ca, &mallory, host, "mallory").await;
        assert_eq!(resp.status(), StatusCode::CONFLICT, "{host}");
        assert_eq!(error_kind(resp).await, "host_owned", "{host}");
    }
    let resp = put_leaf(&c, &ca, &mallory, "*.example", "mallory").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(resp).await, "host_not_allowed");
    let resp = c
        .http
        .delete(format!(
            "{}/v1/certificates/shop.example",
            c.nodes.region_url()
        ))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    until_subject(addr, "shop.example", &ca, "shop").await;
    c.nodes.shutdown().await;
}

/// Decided: a POP never presents an expired certificate. Past its `not_after` the entry is
/// skipped as if absent, so a wildcard certificate of the same tenant (or the node's
/// default, or a clean handshake failure) answers instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_and_one_expiring_while_installed_gives_way() {
    let Shop { c, addr, ca } = Shop::start(region_config()).await;
    let token = c.nodes.token.clone();
    let resp = put_cert(
        &c,
        &token,
        "old.example",
        ca.leaf("old.example", "old", -60),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["kind"], "invalid_certificate", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{v}"
    );
    // The key of another certificate, and a leaf for another name: refused the same way.
    let (chain, _) = ca.leaf("old.example", "old", 3600);
    let (_, other_key) = ca.leaf("old.example", "old", 3600);
    let resp = put_cert(&c, &token, "old.example", (chain, other_key)).await;
    assert_eq!(error_kind(resp).await, "invalid_certificate");
    let resp = put_cert(&c, &token, "old.example", ca.leaf("new.example", "x", 3600)).await;
    assert_eq!(error_kind(resp).await, "invalid_certificate");

    let wild = ca.leaf("*.shop.example", "wild", 86_400);
    assert_eq!(
        put_cert(&c, &token, "*.shop.example", wild).await.status(),
        StatusCode::OK
    );
    // Valid for a few seconds: long enough to be uploaded and served, then it expires.
    let short = ca.leaf("a.shop.example", "short", 6);
    assert_eq!(
        put_cert(&c, &token, "a.shop.example", short).await.status(),
        StatusCode::OK
    );
    until_subject(addr, "a.shop.example", &ca, "short").await;
    let out = until_subject(addr, "a.shop.example", &ca, "wild").await;
    assert!(out.ok, "{}", out.stderr);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_quotas_refuse_an_attacker_and_the_victim_is_still_served() {
    let quotas = QuotaConfig {
        certificates: 2,
        certificate_bytes: 16 << 10,
        ..QuotaConfig::default()
    };
    let region = region_node::RegionConfig {
        quotas,
        ..region_config()
    };
    let Shop { c, addr, ca } = Shop::start(region).await;
    let victim = c.nodes.token.clone();
    let resp = put_leaf(&c, &ca, &victim, "shop.example", "victim").await;
    assert_eq!(resp.status(), StatusCode::OK);

    let mallory = other_tenant(&c, "mallory").await;
    for host in ["m1.example", "m2.example"] {
        let resp = put_leaf(&c, &ca, &mallory, host, host).await;
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
    let refused = |resp: reqwest::Response, status: StatusCode, quota: &'static str, limit: u64| async move {
        assert_eq!(resp.status(), status, "{quota}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["kind"], "quota_exceeded", "{v}");
        assert_eq!(v["error"]["quota"], quota, "{v}");
        assert_eq!(v["error"]["limit"], limit, "{v}");
    };
    let resp = put_leaf(&c, &ca, &mallory, "m3.example", "m3").await;
    refused(resp, StatusCode::CONFLICT, "certificates", 2).await;
    // Over the byte quota within the body bound: read, parsed, refused.
    let (chain, key) = ca.leaf("m1.example", "big", 86_400);
    let padded = format!("{chain}{}", "x".repeat(20 << 10));
    let resp = put_cert(&c, &mallory, "m1.example", (padded, key)).await;
    refused(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "certificate_bytes",
        16 << 10,
    )
    .await;
    // Far past the bound: refused from its declared length, before any of its 4 MiB is
    // sent (a client that sent it would see the connection closed under it instead).
    let mut raw = crate::raw::Raw::connect(crate::raw::addr(&c.nodes.region_url())).await;
    raw.send(
        format!(
            "PUT /v1/certificates/m1.example HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {mallory}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            4 << 20
        )
        .as_bytes(),
    )
    .await;
    let r = raw.response().await.expect("answered before any body");
    assert_eq!(r.status, 413, "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (
            &v["error"]["kind"],
            &v["error"]["quota"],
            &v["error"]["limit"]
        ),
        (
            &json!("quota_exceeded"),
            &json!("certificate_bytes"),
            &json!(16 << 10)
        ),
        "{v}"
    );
    // No token: refused from the headers, the 1 MiB body it declares never sent.
    let mut raw = crate::raw::Raw::connect(crate::raw::addr(&c.nodes.region_url())).await;
    raw.send(
        format!(
            "PUT /v1/certificates/m4.example HTTP/1.1\r\nHost: x\r\n\
             Content-Length: {}\r\n\r\n",
            1 << 20
        )
        .as_bytes(),
    )
    .await;
    let r = raw.response().await.expect("answered before any body");
    assert_eq!(r.status, 401, "{r:?}");

    let out = until_subject(addr, "shop.example", &ca, "victim").await;
    assert!(out.stdout.ends_with("1.1 201"), "{}", out.stdout);
    c.nodes.shutdown().await;
}
