//! The two-tier path: popular functions run at the POP, rare ones at the region, and the
//! device gets the same answer either way.

use crate::support::{TestCluster, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_invoked_once_runs_at_the_region() {
    let c = TestCluster::start().await;
    let resp = c.invoke("hello", "rare").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    assert_eq!(header(&resp, "x-strata-version"), "$LATEST");
    assert_eq!(header(&resp, "x-strata-request-id").len(), 32);
    let timing = header(&resp, "server-timing");
    assert!(
        timing.contains("exec;dur=") && timing.contains("forward;dur="),
        "{timing}"
    );
    assert_eq!(resp.text().await.expect("body"), "Hello, rare!\n");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_invoked_often_runs_at_the_pop() {
    let c = TestCluster::start().await;
    // The default popularity bar is about 10 requests within a minute; after that the POP
    // fetches the module once and runs it itself. Every answer must be right meanwhile.
    let mut at_pop = 0;
    let mut first_local = None;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let i = patience.tries() - 1;
        let resp = c.invoke("hello", "edge").await;
        assert_eq!(resp.status(), 200);
        let where_ = header(&resp, "x-strata-executed-at");
        assert_eq!(resp.text().await.expect("body"), "Hello, edge!\n");
        if where_ == "pop/pop-1" {
            first_local.get_or_insert(i);
            at_pop += 1;
            if at_pop == 5 {
                break;
            }
        } else {
            assert_eq!(where_, "region/region-1");
            assert!(
                first_local.is_none(),
                "went back to the region after running locally"
            );
        }
    }
    let first = first_local.expect("the popular function never ran at the POP");
    assert!(first >= 9, "ran locally after only {first} requests");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_invocation_has_no_forward_timing_and_is_warm() {
    let c = TestCluster::start().await;
    let mut local = None;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let resp = c.invoke("echo", "x").await;
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            local = Some(resp);
            break;
        }
    }
    let resp = local.expect("echo became local");
    assert_eq!(header(&resp, "x-strata-start"), "warm");
    let timing = header(&resp, "server-timing");
    assert!(
        timing.contains("exec;dur=") && !timing.contains("forward"),
        "{timing}"
    );
    assert_eq!(resp.text().await.expect("body"), "x");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_serves_the_same_invoke_api_directly() {
    let c = TestCluster::start().await;
    let resp = c.invoke_at(&c.nodes.region_url(), "echo", "direct").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    assert!(!header(&resp, "server-timing").contains("forward"));
    assert_eq!(resp.text().await.expect("body"), "direct");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_env_and_strata_variables_reach_the_guest() {
    let c = TestCluster::start().await;
    // A guest that prints its environment, one variable per line.
    c.deploy_wat(
        "env",
        serde_json::json!({"env": {"GREETING": "hi"}}),
        ENV_PRINTER,
    )
    .await;
    let resp = c.invoke("env", "").await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.contains("GREETING=hi"), "{body}");
    assert!(body.contains("STRATA_FUNCTION=env"), "{body}");
    assert!(body.contains("STRATA_VERSION=$LATEST"), "{body}");
    assert!(body.contains("STRATA_REQUEST_ID="), "{body}");
    c.nodes.shutdown().await;
}

/// Prints every environment variable followed by a newline.
const ENV_PRINTER: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $n i32) (local $i i32) (local $p i32) (local $len i32)
    ;; counts at 0 (count) and 4 (buffer size); pointers at 1024; strings at 8192
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (local.set $n (i32.load (i32.const 0)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 4)))))
        ;; strlen
        (local.set $len (i32.const 0))
        (block $end (loop $scan
          (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $len)))))
          (local.set $len (i32.add (local.get $len) (i32.const 1)))
          (br $scan)))
        ;; replace the NUL with a newline and write the line
        (i32.store8 (i32.add (local.get $p) (local.get $len)) (i32.const 10))
        (i32.store (i32.const 16) (local.get $p))
        (i32.store (i32.const 20) (i32.add (local.get $len) (i32.const 1)))
        (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pop_reconnects_when_its_region_comes_back() {
    let pop = pop_node::PopConfig {
        connect_timeout_ms: 500,
        ..crate::support::pop_config()
    };
    let c = TestCluster::with(crate::support::region_config(), pop).await;
    assert_eq!(c.invoke("hello", "before").await.status(), 200);
    let TestCluster { dir, nodes, http } = c;
    let strata::dev::DevCluster {
        region,
        pop,
        token,
        admin_token,
        ..
    } = nodes;
    let (quic_addr, tls) = (region.quic_addr, region.tls.clone());
    region.shutdown().await;

    let pop_url = format!("http://{}/v1/functions/hello/invoke", pop.http_addr);
    let invoke = || http.post(&pop_url).bearer_auth(&token).body("after").send();
    let down = invoke().await.expect("sent");
    assert_eq!(down.status(), 503);

    // Same state directory (the token and functions are durable), same QUIC address.
    let region = region_node::start(region_node::RegionConfig {
        state_dir: dir.path().join("region"),
        tls: Some(tls),
        quic_listen: quic_addr,
        admin_token: Some(admin_token),
        ..crate::support::region_config()
    })
    .await
    .expect("region restarts");
    // The POP reconnects in the background (at once, then every 50 ms doubling to
    // 400 ms); until then forwards get a fast 503, never anything else.
    let mut patience = crate::support::Patience::new();
    let back = loop {
        let resp = invoke().await.expect("sent");
        if resp.status() == 200 || !patience.more() {
            break resp;
        }
        assert_eq!(resp.status(), 503, "only 503 while the POP reconnects");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(back.status(), 200);
    assert_eq!(header(&back, "x-strata-executed-at"), "region/region-1");
    assert_eq!(back.text().await.expect("body"), "Hello, after!\n");
    pop.shutdown().await;
    region.shutdown().await;
}
