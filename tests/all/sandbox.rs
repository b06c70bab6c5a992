//! The sandbox through real nodes: adversarial guests are refused or contained with the
//! right status and the node keeps serving after each; reactors keep warm state per
//! affinity key; per-invocation facts reach the response headers; a restarted POP serves
//! a cached function from its disk cache without a region.

use crate::support::{TestCluster, error_kind, header, pop_config, region_config};
use pop_node::discovery::RegionSource;
use serde_json::{Value, json};
use std::time::Duration;

/// Deploys `wat` as `name` with `config`, invokes it once through the POP (which forwards
/// it), and returns the response; then checks that the same node still serves `hello`.
async fn contained(name: &str, config: Value, wat: &str) -> (u16, String, String) {
    let c = TestCluster::start().await;
    c.deploy_wat(name, config, wat).await;
    let resp = c.invoke(name, "").await;
    let status = resp.status().as_u16();
    let function_error = header(&resp, "x-strata-function-error");
    let body = resp.text().await.expect("body");
    let after = c.invoke("hello", "again").await;
    assert_eq!(after.status(), 200, "the node stopped serving after {name}");
    assert_eq!(after.text().await.expect("body"), "Hello, again!\n");
    c.nodes.shutdown().await;
    (status, function_error, body)
}

async fn refused(name: &str, config: Value, wasm: Vec<u8>) -> String {
    let c = TestCluster::start().await;
    let err = c
        .nodes
        .deploy(name, config, wasm)
        .await
        .expect_err("the deploy is refused");
    assert_eq!(c.invoke(name, "").await.status(), 404, "nothing was stored");
    assert_eq!(c.invoke("hello", "").await.status(), 200);
    c.nodes.shutdown().await;
    err.to_string()
}

const WASI: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_504_timeout() {
    let wat = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let (status, fe, body) = contained("spin", json!({"timeout_ms": 200}), wat).await;
    assert_eq!((status, fe.as_str()), (504, "timeout"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_grow_bomb_is_500_out_of_memory() {
    let wat = r#"(module (memory 1)
      (func (export "_start")
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))"#;
    let (status, fe, body) = contained("bomb", json!({"memory_mb": 16}), wat).await;
    assert_eq!((status, fe.as_str()), (500, "out-of-memory"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_500_unhandled_call_stack_exhausted() {
    let wat = r#"(module (func $r (call $r)) (func (export "_start") (call $r)))"#;
    let (status, fe, body) = contained("recurse", json!({}), wat).await;
    assert_eq!((status, fe.as_str()), (500, "unhandled"));
    assert!(body.contains("call stack exhausted"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_500_unhandled_not_a_silent_truncation() {
    // 200 writes of 64 KiB: twice the default 6 MiB cap, errors ignored.
    let wat = format!(
        r#"(module {WASI} (memory (export "memory") 2)
          (func (export "_start") (local $i i32)
            (i32.store (i32.const 0) (i32.const 0))
            (i32.store (i32.const 4) (i32.const 65536))
            (loop $l
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 200))))))"#
    );
    let (status, fe, body) = contained("flood", json!({}), &wat).await;
    assert_eq!((status, fe.as_str()), (500, "unhandled"));
    assert!(body.contains("stdout over"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_host_file_fails_inside_the_guest() {
    // path_open("/etc/passwd") on fd 3, the first preopen a WASI host would give: there
    // is none, so the guest gets EBADF (8) and exits with it.
    let wat = format!(
        r#"(module {WASI} (memory (export "memory") 1)
          (data (i32.const 100) "/etc/passwd")
          (func (export "_start")
            (call $proc_exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 100)
              (i32.const 11) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
              (i32.const 200)))))"#
    );
    let (status, fe, body) = contained("snoop", json!({}), &wat).await;
    assert_eq!((status, fe.as_str()), (500, "unhandled"));
    assert!(body.contains("exited with code 8"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_function_that_traps_is_500_unhandled() {
    let wat = r#"(module (func $boom unreachable) (start $boom) (func (export "_start")))"#;
    let (status, fe, body) = contained("bad-start", json!({}), wat).await;
    assert_eq!((status, fe.as_str()), (500, "unhandled"));
    assert!(body.contains("unreachable"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_is_not_wasm_is_refused_at_deploy() {
    let msg = refused("text", json!({}), b"(module)".to_vec()).await;
    assert!(
        msg.contains("400") && msg.contains("not a WebAssembly binary"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_without_strata_handle_is_refused_at_deploy() {
    let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
    let msg = refused("not-reactor", json!({"abi": "reactor"}), wasm).await;
    assert!(msg.contains("strata_handle"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_bounds_a_function_deterministically() {
    let wat = r#"(module (func (export "_start") (loop $l (br $l))))"#;
    let (status, fe, body) = contained("fuelled", json!({"fuel": 100000}), wat).await;
    assert_eq!((status, fe.as_str()), (504, "timeout"));
    assert!(body.contains("fuel"), "{body}");
}

async fn invoke_with_key(c: &TestCluster, base: &str, name: &str, key: &str) -> reqwest::Response {
    c.http
        .post(format!("{base}/v1/functions/{name}/invoke"))
        .bearer_auth(&c.nodes.token)
        .header("x-strata-affinity", key)
        .send()
        .await
        .expect("request completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_keeps_state_per_affinity_key_across_requests() {
    let c = TestCluster::start().await;
    c.deploy_wat(
        "counter",
        json!({"abi": "reactor"}),
        include_str!("../../examples/counter.wat"),
    )
    .await;
    let region = c.nodes.region_url();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp = invoke_with_key(&c, &region, "counter", "alice").await;
        assert_eq!(resp.status(), 200);
        let start = header(&resp, "x-strata-start");
        seen.push((start, resp.text().await.expect("body")));
    }
    // The first request created the instance (and compiled nothing: deploy did that).
    assert_eq!(seen[0].1, "1");
    assert_eq!(seen[1], ("warm".to_owned(), "2".to_owned()));
    assert_eq!(seen[2], ("warm".to_owned(), "3".to_owned()));
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_invocation_facts_are_in_the_response_headers() {
    let c = TestCluster::start().await;
    let resp = c.invoke_at(&c.nodes.region_url(), "hello", "facts").await;
    assert_eq!(resp.status(), 200);
    let timing = header(&resp, "server-timing");
    assert!(
        timing.contains("exec;dur=") && timing.contains("instantiate;dur="),
        "{timing}"
    );
    assert!(matches!(
        header(&resp, "x-strata-start").as_str(),
        "cold" | "warm"
    ));
    let peak: u64 = header(&resp, "x-strata-peak-memory-bytes")
        .parse()
        .expect("a number of bytes");
    assert!(peak >= 65536, "hello has at least one page: {peak}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pop_serves_a_cached_function_without_its_region() {
    let pop = pop_node::PopConfig {
        // Long enough that no slow machine sees the learned metadata expire mid-test.
        metadata_ttl_ms: 600_000,
        ..pop_config()
    };
    let c = TestCluster::with(region_config(), pop).await;
    c.deploy_wat(
        "pinned",
        json!({"placement": "edge"}),
        include_str!("../../examples/hello.wat"),
    )
    .await;
    // The first request is forwarded (the POP does not know the function yet) and starts
    // the artifact fetch; within a bounded number of requests it runs at the POP.
    let mut local = false;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let resp = c.invoke("pinned", "warm").await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-strata-executed-at") == "pop/pop-1" {
            local = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(local, "the pinned function never ran at the POP");
    assert!(c.nodes.region.artifact_fetches() >= 1);

    let region_quic = c.nodes.region.quic_addr;
    let pop_state = c.dir.path().join("pop");
    let certs = common::transport::dev_ca::init(&c.dir.path().join("certs")).expect("certs");
    let token = c.nodes.token.clone();
    c.nodes.pop.shutdown().await;
    c.nodes.region.shutdown().await;

    let restarted = pop_node::start(pop_node::PopConfig {
        state_dir: pop_state,
        tls: Some(certs.pop),
        regions: RegionSource::Static(vec![region_quic]),
        connect_timeout_ms: 200,
        metadata_ttl_ms: 600_000,
        ..pop_config()
    })
    .await
    .expect("POP restarts");
    let resp = c
        .http
        .post(format!(
            "http://{}/v1/functions/pinned/invoke",
            restarted.http_addr
        ))
        .bearer_auth(&token)
        .body("again")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-executed-at"), "pop/pop-1");
    assert_eq!(resp.text().await.expect("body"), "Hello, again!\n");
    // Anything not cached still needs the (gone) region: a clear 503.
    let other = c
        .http
        .post(format!(
            "http://{}/v1/functions/echo/invoke",
            restarted.http_addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request completes");
    assert_eq!(other.status(), 503);
    assert_eq!(error_kind(other).await, "unavailable");
    restarted.shutdown().await;
}

/// Builds the examples in `examples/<lang>` with their build script into a temporary
/// directory. The tests that call this are `#[ignore = "needs c-wasi"]` or
/// `#[ignore = "needs zig"]` (see tests/all/README.md), so a missing toolchain fails the
/// test that asked for it instead of letting it pass.
fn build_example(lang: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(lang)
        .join("build.sh");
    // One Zig cache for every test run, so the standard library is built once.
    let zig_cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("zig-cache");
    let result = std::process::Command::new("bash")
        .arg(&script)
        .arg(out.path())
        .env("ZIG_GLOBAL_CACHE_DIR", zig_cache)
        .output();
    match result {
        Ok(o) if o.status.success() => out,
        Ok(o) => panic!(
            "the {lang} toolchain could not build the examples (.ci/test installs it): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("running {}: {e}", script.display()),
    }
}

fn read_built(dir: &tempfile::TempDir, file: &str) -> Vec<u8> {
    std::fs::read(dir.path().join(file)).expect("the build script wrote the module")
}

#[ignore = "needs c-wasi"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_command_guest_counts_words() {
    let built = tokio::task::spawn_blocking(|| build_example("c"))
        .await
        .expect("build task");
    let c = TestCluster::start().await;
    c.nodes
        .deploy("wordcount", json!({}), read_built(&built, "wordcount.wasm"))
        .await
        .expect("deploys");
    let resp = c.invoke("wordcount", "hello wasm world\nbye\n").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.expect("body"),
        r#"{"bytes":21,"words":4,"lines":2}"#
    );
    c.nodes.shutdown().await;
}

#[ignore = "needs c-wasi"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_reactor_guest_keeps_its_count_per_affinity_key() {
    let built = tokio::task::spawn_blocking(|| build_example("c"))
        .await
        .expect("build task");
    let c = TestCluster::start().await;
    c.nodes
        .deploy(
            "c-counter",
            json!({"abi": "reactor"}),
            read_built(&built, "counter.wasm"),
        )
        .await
        .expect("deploys");
    let region = c.nodes.region_url();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let resp = invoke_with_key(&c, &region, "c-counter", "k1").await;
        assert_eq!(resp.status(), 200);
        bodies.push(resp.text().await.expect("body"));
    }
    assert_eq!(bodies, ["1", "2", "3"]);
    c.nodes.shutdown().await;
}

#[ignore = "needs zig"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zig_command_guest_upper_cases_its_input() {
    let built = tokio::task::spawn_blocking(|| build_example("zig"))
        .await
        .expect("build task");
    let c = TestCluster::start().await;
    c.nodes
        .deploy("upper", json!({}), read_built(&built, "upper.wasm"))
        .await
        .expect("deploys");
    let resp = c.invoke("upper", "Hello, zig 0.17!").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "HELLO, ZIG 0.17!");
    c.nodes.shutdown().await;
}
