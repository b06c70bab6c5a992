//! The `http` ABI through real nodes (DESIGN §3): a `wasi:http/proxy` component
//! (`examples/http/hello.wat`) gets the device's request and answers with its own status,
//! fields and body, through the invoke API and routes, at the POP and at the region; its
//! failures are the typed errors of every ABI; outbound HTTP is off unless allowed.

use crate::routes::{add_route, cluster, get, wait_for_status};
use crate::support::{TestCluster, error_kind, header, until_served};
use serde_json::{Value, json};

pub const HELLO_HTTP: &str = include_str!("../../examples/http/hello.wat");

/// Deploys the hello component as `name` with `config` (plus `abi = http`).
async fn deploy(c: &TestCluster, name: &str, mut config: Value) {
    config["abi"] = json!("http");
    c.deploy_wat(name, config, HELLO_HTTP).await;
}

/// Adds a route for `host` to `function` (placed at the edge) and waits until the POP
/// runs it itself: the component was shipped to the POP as a precompiled artifact.
async fn route(c: &TestCluster, host: &str, function: &str) {
    let body = json!({"host": host, "path_prefix": "/", "function": function});
    assert_eq!(add_route(c, &c.nodes.token, body).await.status(), 201);
    let pop = c.nodes.pop_url();
    wait_for_status(c, &pop, host, "/", 200).await;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let resp = get(c, &pop, host, "/").await;
        // Each request is the traffic that makes the function popular there: no pause.
        if header(&resp, "x-strata-executed-at").starts_with("pop/") {
            return;
        }
    }
    panic!("{host} never ran at the POP");
}

/// Where a response says it ran: `pop` or `region`.
fn tier(resp: &reqwest::Response) -> String {
    let at = header(resp, "x-strata-executed-at");
    at.split('/').next().unwrap_or_default().to_owned()
}

async fn invoke_http(c: &TestCluster, name: &str) -> reqwest::Response {
    c.http
        .post(format!(
            "{}/v1/functions/{name}/invoke?qualifier=$LATEST",
            c.nodes.pop_url()
        ))
        .bearer_auth(&c.nodes.token)
        .header("x-echo", "from the device")
        .header("x-strata-affinity", "k")
        .body("payload")
        .send()
        .await
        .expect("request completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_answers_the_invoke_api_at_the_pop_and_at_the_region() {
    let c = TestCluster::start().await;
    deploy(&c, "far", json!({"placement": "region"})).await;
    deploy(&c, "near", json!({"placement": "edge"})).await;
    until_served(&c, "near", "pop/").await;
    for (name, tier) in [("far", "region/"), ("near", "pop/")] {
        let resp = invoke_http(&c, name).await;
        assert_eq!(resp.status(), 200, "{name}");
        assert!(
            header(&resp, "x-strata-executed-at").starts_with(tier),
            "{name}"
        );
        assert_eq!(header(&resp, "x-guest"), "hello");
        assert_eq!(header(&resp, "x-echo"), "from the device");
        assert_eq!(header(&resp, "x-strata-version"), "$LATEST");
        assert!(header(&resp, "server-timing").contains("exec;dur="));
        let body = resp.text().await.expect("body");
        assert_eq!(
            body,
            format!("POST /v1/functions/{name}/invoke?qualifier=$LATEST\npayload")
        );
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_serves_a_route_with_its_own_status_at_both_tiers() {
    let c = cluster().await;
    deploy(&c, "shop", json!({"placement": "edge"})).await;
    route(&c, "shop.example", "shop").await;
    for (base, at) in [(c.nodes.pop_url(), "pop"), (c.nodes.region_url(), "region")] {
        let resp = c
            .http
            .put(format!("{base}/teapot/pot?cups=2"))
            .header("host", "shop.example")
            .header("x-echo", "tea")
            .body("earl grey")
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 418, "{base}");
        assert_eq!(tier(&resp), at);
        assert_eq!(header(&resp, "x-guest"), "hello");
        assert_eq!(header(&resp, "x-echo"), "tea");
        assert_eq!(header(&resp, "x-strata-request-id").len(), 32);
        assert_eq!(
            resp.text().await.expect("body"),
            "PUT /teapot/pot?cups=2\nearl grey"
        );
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_failures_are_the_typed_errors_at_both_tiers() {
    let c = cluster().await;
    let config = json!({"timeout_ms": 300, "memory_mb": 16, "placement": "edge"});
    deploy(&c, "frail", config).await;
    route(&c, "frail.example", "frail").await;
    for (base, at) in [(c.nodes.pop_url(), "pop"), (c.nodes.region_url(), "region")] {
        for (path, status, kind) in [
            ("/trap", 500, "unhandled"),
            ("/spin", 504, "timeout"),
            ("/sleep", 504, "timeout"),
            ("/grow", 500, "out-of-memory"),
        ] {
            let resp = get(&c, &base, "frail.example", path).await;
            assert_eq!(resp.status(), status, "{base}{path}");
            assert_eq!(tier(&resp), at, "{base}{path}");
            assert_eq!(
                header(&resp, "x-strata-function-error"),
                kind,
                "{base}{path}"
            );
            assert_eq!(error_kind(resp).await, kind, "{base}{path}");
        }
        // The node still serves the function afterwards.
        assert_eq!(get(&c, &base, "frail.example", "/").await.status(), 200);
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_module_is_not_deployed_as_http_nor_a_component_as_command() {
    let c = TestCluster::start().await;
    let component = wat::parse_str(HELLO_HTTP).expect("valid");
    let err = c
        .nodes
        .deploy("wrong", json!({"abi": "command"}), component)
        .await
        .expect_err("a component is not a command");
    assert!(err.to_string().contains("abi = http"), "{err}");
    let module = wat::parse_str(include_str!("../../examples/hello.wat")).expect("valid");
    let err = c
        .nodes
        .deploy("wrong", json!({"abi": "http"}), module)
        .await
        .expect_err("a module is not a component");
    assert!(err.to_string().contains("not a component"), "{err}");
    c.nodes.shutdown().await;
}

/// A loopback HTTP server answering every request `200 ok`.
async fn loopback_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_is_off_by_default_and_reaches_allowed_hosts_only() {
    let (addr, server) = loopback_server().await;
    let c = cluster().await;
    deploy(&c, "closed", json!({"placement": "edge"})).await;
    let allowed = json!({
        "placement": "edge",
        "outbound": {"allowed_outbound_hosts": [format!("http://{addr}")]},
    });
    deploy(&c, "open", allowed).await;
    route(&c, "closed.example", "closed").await;
    route(&c, "open.example", "open").await;
    for (base, at) in [(c.nodes.pop_url(), "pop"), (c.nodes.region_url(), "region")] {
        for (host, ends) in [
            // HTTP-request-denied is case 15 of wasi:http's `error-code`.
            ("closed.example", "error 015"),
            ("open.example", "status 200"),
        ] {
            let resp = c
                .http
                .get(format!("{base}/fetch"))
                .header("host", host)
                .header("x-target", addr.to_string())
                .send()
                .await
                .expect("sent");
            assert_eq!(resp.status(), 200, "{base} {host}");
            assert_eq!(tier(&resp), at);
            let timing = header(&resp, "server-timing");
            assert_eq!(
                timing.contains("outbound;dur="),
                host == "open.example",
                "{timing}"
            );
            let body = resp.text().await.expect("body");
            assert!(body.ends_with(ends), "{base} {host}: {body}");
        }
    }
    // A malformed destination is refused at deploy time.
    let bad = json!({"abi": "http", "outbound": {"allowed_outbound_hosts": ["127.0.0.1"]}});
    let wasm = wat::parse_str(HELLO_HTTP).expect("valid");
    assert!(c.nodes.deploy("bad", bad, wasm).await.is_err());
    server.abort();
    c.nodes.shutdown().await;
}

/// Builds `examples/http/build.sh LANG` into a temporary directory and returns `file`.
pub fn build_example(lang: &str, file: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/http/build.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(lang)
        .arg(dir.path())
        .status()
        .expect("runs build.sh");
    assert!(
        status.success(),
        "examples/http/build.sh {lang} failed (see the README's tool table)"
    );
    std::fs::read(dir.path().join(file)).expect("the build wrote the component")
}

/// Deploys a handler built from `examples/http/<lang>` at the edge behind a route and
/// checks it answers `<method> <path>\n<body>` with `x-guest: <lang>`, at the POP (run
/// there) and at the region.
async fn a_language_handler_serves_at_both_tiers(lang: &str, wasm: Vec<u8>) {
    let c = cluster().await;
    let host = format!("{lang}.example");
    c.nodes
        .deploy(lang, json!({"abi": "http", "placement": "edge"}), wasm)
        .await
        .expect("deploys");
    route(&c, &host, lang).await;
    for (base, at) in [(c.nodes.pop_url(), "pop"), (c.nodes.region_url(), "region")] {
        // A POP may still forward a request it could run (a lease renewed late on a
        // loaded machine): what is checked is the answer of one that ran there.
        let mut patience = crate::support::Patience::new();
        let resp = loop {
            let resp = c
                .http
                .post(format!("{base}/greet?name=ada"))
                .header("host", &host)
                .header("x-echo", "yes")
                .body("from the device")
                .send()
                .await
                .expect("sent");
            assert_eq!(resp.status(), 200, "{base}");
            if tier(&resp) == at || !patience.more() {
                break resp;
            }
        };
        assert_eq!(tier(&resp), at);
        assert_eq!(header(&resp, "x-guest"), lang);
        assert_eq!(header(&resp, "x-echo"), "yes");
        assert_eq!(
            resp.text().await.expect("body"),
            "POST /greet?name=ada\nfrom the device"
        );
    }
    c.nodes.shutdown().await;
}

#[ignore = "needs componentize-py"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_built_with_componentize_py_serves_at_both_tiers() {
    let wasm = build_example("python", "hello-py.wasm");
    a_language_handler_serves_at_both_tiers("python", wasm).await;
}

#[ignore = "needs componentize-js"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_built_with_componentize_js_serves_at_both_tiers() {
    let wasm = build_example("js", "hello-js.wasm");
    a_language_handler_serves_at_both_tiers("js", wasm).await;
}
