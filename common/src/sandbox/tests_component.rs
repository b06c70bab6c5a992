//! The `http` ABI's contract in the sandbox: `examples/http/hello.wat`, a hand-written
//! `wasi:http/proxy` component, run through [`Sandbox::run_http`].

use super::tests::{block_on, invocation, sandbox, sandbox_with, wasm};
use super::*;
use crate::model::{Abi, FunctionErrorKind, HttpRequestHead};
use crate::policy::outbound::OutboundRules;
use bytes::Bytes;
use std::time::Duration;

const HELLO_HTTP: &str = include_str!("../../../examples/http/hello.wat");
const HELLO_CORE: &str = include_str!("../../../examples/hello.wat");

/// A request head for `shop.example`.
pub(super) fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpRequestHead {
    HttpRequestHead {
        method: method.into(),
        scheme: "http".into(),
        authority: "shop.example".into(),
        path_and_query: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    }
}

fn run_http_in(
    sandbox: &Sandbox,
    inv: Invocation,
    head: HttpRequestHead,
    rules: Option<OutboundRules>,
) -> HttpExecution {
    let module = sandbox
        .compile(&wasm(HELLO_HTTP))
        .expect("component compiles");
    block_on(sandbox.run_http(&module, inv, Some(head), rules.map(Arc::new)))
        .expect("sandbox runs the component")
}

fn run_path(path: &str, inv: Invocation) -> HttpExecution {
    run_http_in(&sandbox(), inv, head("GET", path, &[]), None)
}

fn kind(e: &HttpExecution) -> FunctionErrorKind {
    e.execution
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure: {e:?}"))
        .kind
}

#[test]
fn a_component_gets_the_request_and_answers_with_its_status_fields_and_body() {
    let mut inv = invocation(b"payload");
    inv.env = vec![("STRATA_FUNCTION".into(), "hello".into())];
    let out = run_http_in(
        &sandbox(),
        inv,
        head("PATCH", "/teapot?cups=2", &[("x-echo", "hi there")]),
        None,
    );
    assert_eq!(out.execution.failure, None, "{out:?}");
    let response = out.response.expect("a response head");
    assert_eq!(response.status, 418);
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("x-guest").as_deref(), Some(&b"hello"[..]));
    assert_eq!(field("x-echo").as_deref(), Some(&b"hi there"[..]));
    assert_eq!(out.execution.stdout, b"PATCH /teapot?cups=2\npayload");
    assert_eq!(out.execution.start, crate::model::StartKind::Cold);
    assert!(out.execution.peak_memory_bytes >= 64 << 10);
    assert_eq!(out.outbound, None);
}

#[test]
fn a_device_host_that_is_no_authority_does_not_fail_the_request() {
    let mut h = head("GET", "/", &[]);
    h.authority = "not a host".into();
    let out = run_http_in(&sandbox(), invocation(b""), h, None);
    assert_eq!(out.execution.failure, None, "{out:?}");
    assert_eq!(out.execution.stdout, b"GET /\n");
}

#[test]
fn components_and_modules_are_told_apart_and_checked_against_the_abi() {
    let sandbox = sandbox();
    let component = wasm(HELLO_HTTP);
    let core = wasm(HELLO_CORE);
    assert!(is_component(&component));
    assert!(!is_component(&core));
    let c = sandbox.compile(&component).expect("compiles");
    assert!(c.is_component());
    assert_eq!(c.check_abi(Abi::Http), Ok(()));
    assert!(matches!(
        c.check_abi(Abi::Command),
        Err(ModuleError::Abi { .. })
    ));
    assert!(matches!(
        c.check_abi(Abi::Reactor),
        Err(ModuleError::Abi { .. })
    ));
    let m = sandbox.compile(&core).expect("compiles");
    assert!(matches!(
        m.check_abi(Abi::Http),
        Err(ModuleError::Abi { abi: "http", .. })
    ));
    // Neither runs as the other kind.
    let inv = invocation(b"");
    assert_eq!(
        block_on(sandbox.run(&c, inv.clone())).err(),
        Some(SandboxError::WrongKind(
            "a component cannot run as a core module"
        ))
    );
    assert!(matches!(
        block_on(sandbox.run_http(&m, inv, None, None)),
        Err(SandboxError::WrongKind(_))
    ));
}

#[test]
fn a_component_without_the_handler_export_is_refused() {
    let err = sandbox()
        .compile(&wasm("(component)"))
        .expect_err("no incoming-handler export");
    assert!(
        matches!(err, ModuleError::Abi { abi: "http", .. }),
        "{err:?}"
    );
}

#[test]
fn a_trap_is_unhandled_and_the_platforms_fault() {
    let out = run_path("/trap", invocation(b""));
    assert_eq!(kind(&out), FunctionErrorKind::Unhandled);
    assert!(out.execution.platform_fault);
    assert_eq!(out.response, None);
}

#[test]
fn a_spinning_handler_times_out() {
    let mut inv = invocation(b"");
    inv.timeout = Duration::from_millis(100);
    assert_eq!(kind(&run_path("/spin", inv)), FunctionErrorKind::Timeout);
}

#[test]
fn a_handler_waiting_in_a_host_call_times_out_at_its_deadline() {
    let mut inv = invocation(b"");
    inv.timeout = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let out = run_path("/sleep", inv);
    assert_eq!(kind(&out), FunctionErrorKind::Timeout);
    // The guest asked for 10 s; the deadline, not the sleep, ended it.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn fuel_bounds_a_component_like_a_module() {
    let mut inv = invocation(b"");
    inv.fuel = Some(100_000);
    assert_eq!(kind(&run_path("/spin", inv)), FunctionErrorKind::Timeout);
}

#[test]
fn memory_over_the_limit_is_out_of_memory() {
    let mut inv = invocation(b"");
    inv.memory_bytes = 8 << 20;
    assert_eq!(
        kind(&run_path("/grow", inv)),
        FunctionErrorKind::OutOfMemory
    );
    let mut roomy = invocation(b"");
    roomy.memory_bytes = 128 << 20;
    assert_eq!(run_path("/grow", roomy).execution.failure, None);
}

#[test]
fn a_body_over_the_output_cap_is_unhandled() {
    let sandbox = sandbox_with(SandboxConfig {
        max_stdout_bytes: 1 << 20,
        ..SandboxConfig::default()
    });
    let out = run_http_in(&sandbox, invocation(b""), head("GET", "/big", &[]), None);
    assert_eq!(kind(&out), FunctionErrorKind::Unhandled);
    let message = &out.execution.failure.as_ref().expect("failed").message;
    assert!(
        message.contains("response body over 1048576 bytes"),
        "{message}"
    );
}

#[test]
fn a_precompiled_component_loads_and_runs() {
    let sandbox = sandbox();
    let compiled = sandbox.compile(&wasm(HELLO_HTTP)).expect("compiles");
    let bytes = sandbox.precompile(&compiled).expect("serializes");
    // SAFETY: the bytes were produced just above by this sandbox's engine.
    #[allow(unsafe_code)]
    let loaded = unsafe { sandbox.load_precompiled(compiled.digest(), &bytes) }.expect("loads");
    assert!(loaded.is_component());
    let out =
        block_on(sandbox.run_http(&loaded, invocation(b""), Some(head("GET", "/", &[])), None))
            .expect("runs");
    assert_eq!(out.execution.stdout, b"GET /\n");
}

/// A loopback HTTP server answering every connection `200 ok`; returns its address.
fn loopback_server(rt: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    rt.spawn(async move {
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
    addr
}

#[test]
fn outbound_requests_reach_only_allowed_hosts() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = loopback_server(&rt);
    let sandbox = sandbox();
    let module = sandbox.compile(&wasm(HELLO_HTTP)).expect("compiles");
    let fetch = |rules: Option<OutboundRules>| {
        let req = head("GET", "/fetch", &[("x-target", &addr.to_string())]);
        rt.block_on(sandbox.run_http(&module, invocation(b""), Some(req), rules.map(Arc::new)))
            .expect("runs")
    };
    let rules = |entry: String| {
        OutboundRules::new(&[entry], 4, 2, Duration::from_secs(5)).expect("valid rules")
    };
    // Off by default: HTTP-request-denied is case 15 of `error-code`.
    let denied = fetch(None);
    assert!(
        denied.execution.stdout.ends_with(b"error 015"),
        "{denied:?}"
    );
    assert_eq!(denied.outbound, None);
    // Another port of the same host is not allowed either.
    let other = fetch(Some(rules(format!("http://127.0.0.1:{}", addr.port() ^ 1))));
    assert!(other.execution.stdout.ends_with(b"error 015"), "{other:?}");
    let allowed = fetch(Some(rules(format!("http://{addr}"))));
    assert!(
        allowed.execution.stdout.ends_with(b"status 200"),
        "{allowed:?}"
    );
    assert!(allowed.outbound.is_some());
    // An allowed destination over the invocation's budget is refused too (the guest sends
    // one request: a budget of none in total, or none at once, refuses it).
    let entry = vec![format!("http://{addr}")];
    for (total, concurrent) in [(0, 4), (4, 0)] {
        let budget = OutboundRules::new(&entry, total, concurrent, Duration::from_secs(5))
            .expect("valid rules");
        let over = fetch(Some(budget));
        assert!(over.execution.stdout.ends_with(b"error 015"), "{over:?}");
    }
}
