//! Instance reuse for `http`-ABI components in the sandbox: `examples/http/hello.wat`
//! counts the requests its instance has handled (`x-count`), so a request shows whether
//! it ran in a fresh instance (`001`) or a reused one.

use super::tests::{block_on, invocation, sandbox, wasm};
use super::*;
use crate::model::{FunctionErrorKind, FunctionKey, FunctionName, HttpRequestHead};
use crate::model::{HttpResponseHead, StartKind, TenantId};

const HELLO_HTTP: &str = include_str!("../../../examples/http/hello.wat");

fn head(path: &str, headers: &[(&str, &str)]) -> HttpRequestHead {
    super::tests_component::head("GET", path, headers)
}

fn field(response: &HttpResponseHead, name: &str) -> Option<String> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// A sandbox, the compiled hello component and the pool key of `tenant`'s `hello`.
struct Fixture {
    sandbox: Sandbox,
    module: CompiledModule,
}

impl Fixture {
    fn new() -> Self {
        let sandbox = sandbox();
        let module = sandbox
            .compile(&wasm(HELLO_HTTP))
            .expect("component compiles");
        Self { sandbox, module }
    }

    fn key(&self, tenant: &str) -> WarmKey {
        WarmKey {
            function: FunctionKey {
                tenant: TenantId::new(tenant).expect("tenant"),
                name: FunctionName::new("hello").expect("name"),
            },
            version: "$LATEST".into(),
            digest: self.module.digest(),
            memory_bytes: invocation(b"").memory_bytes,
        }
    }

    /// One request of `tenant`'s function, opted in to reuse.
    fn reusing(&self, tenant: &str, inv: Invocation, head: HttpRequestHead) -> HttpExecution {
        self.run(&self.key(tenant), None, inv, head)
    }

    /// One request in `key`'s pool, with `affinity`.
    fn run(
        &self,
        key: &WarmKey,
        affinity: Option<&str>,
        inv: Invocation,
        head: HttpRequestHead,
    ) -> HttpExecution {
        let reuse = Reuse {
            key,
            affinity,
            lane: WarmLane::Dedicated,
        };
        block_on(
            self.sandbox
                .run_http_reusing(reuse, &self.module, inv, Some(head), None),
        )
        .expect("the sandbox runs the component")
    }

    /// The `x-count` of a successful request of tenant `t`'s function to `path`.
    fn count(&self, path: &str) -> String {
        count(&self.reusing("t", invocation(b""), head(path, &[])))
    }
}

fn count(out: &HttpExecution) -> String {
    assert_eq!(out.execution.failure, None, "{out:?}");
    let response = out.response.as_ref().expect("a response");
    field(response, "x-count").expect("x-count")
}

#[test]
fn an_opted_in_component_serves_the_next_requests_in_the_same_instance() {
    let f = Fixture::new();
    let first = f.reusing("t", invocation(b""), head("/", &[]));
    assert_eq!(
        (count(&first), first.execution.start),
        ("001".to_owned(), StartKind::Cold)
    );
    let second = f.reusing("t", invocation(b""), head("/", &[]));
    assert_eq!(
        (count(&second), second.execution.start),
        ("002".to_owned(), StartKind::Warm)
    );
    assert_eq!(second.execution.instantiate, Duration::ZERO);
    assert_eq!(f.count("/"), "003");
    assert_eq!(f.sandbox.warm_instances(&f.key("t")), 1);
}

#[test]
fn without_the_opt_in_every_request_gets_a_fresh_instance() {
    let f = Fixture::new();
    for _ in 0..3 {
        let out =
            block_on(
                f.sandbox
                    .run_http(&f.module, invocation(b""), Some(head("/", &[])), None),
            )
            .expect("runs");
        assert_eq!(count(&out), "001");
        assert_eq!(out.execution.start, StartKind::Cold);
    }
    assert_eq!(f.sandbox.warm_totals().0, 0);
}

#[test]
fn an_instance_that_failed_is_dropped_and_the_next_request_starts_fresh() {
    let f = Fixture::new();
    let fail = |path: &str, inv: Invocation| {
        let out = f.reusing("t", inv, head(path, &[]));
        out.execution.failure.expect("fails").kind
    };
    let mut short = invocation(b"");
    short.timeout = Duration::from_millis(100);
    let mut fuel = invocation(b"");
    fuel.fuel = Some(100_000);
    for (path, inv, kind) in [
        ("/trap", invocation(b""), FunctionErrorKind::Unhandled),
        ("/spin", short.clone(), FunctionErrorKind::Timeout),
        // Waiting in a host call at the deadline: the outer timer ends it.
        ("/sleep", short, FunctionErrorKind::Timeout),
        ("/spin", fuel, FunctionErrorKind::Timeout),
    ] {
        assert_eq!(f.count("/"), "001", "{path}: a fresh instance");
        assert_eq!(f.count("/"), "002", "{path}: reused");
        assert_eq!(fail(path, inv), kind, "{path}");
        assert_eq!(f.count("/"), "001", "after {path}: not the failed instance");
        // Leave no instance for the next round to find.
        f.sandbox.retire_warm(&f.key("t"), 0, Duration::ZERO);
    }
    // Out of memory: the pool of an 8 MiB invocation is its own (the key names the limit).
    let mut key = f.key("t");
    key.memory_bytes = 8 << 20;
    let run = |path: &str| {
        let mut inv = invocation(b"");
        inv.memory_bytes = key.memory_bytes;
        f.run(&key, None, inv, head(path, &[]))
    };
    assert_eq!(count(&run("/")), "001");
    let oom = run("/grow");
    assert_eq!(
        oom.execution.failure.map(|e| e.kind),
        Some(FunctionErrorKind::OutOfMemory)
    );
    assert_eq!(count(&run("/")), "001");
}

#[test]
fn an_instance_that_kept_a_resource_is_not_reused() {
    let f = Fixture::new();
    assert_eq!(f.count("/"), "001");
    // The request succeeds, but the guest kept the incoming request's handle.
    assert_eq!(f.count("/leak"), "002");
    assert_eq!(f.count("/"), "001");
    assert_eq!(f.count("/"), "002");
}

#[test]
fn a_requests_fields_body_and_log_never_reach_the_next_request() {
    let f = Fixture::new();
    let first = f.reusing(
        "t",
        invocation(b"first body"),
        head("/log", &[("x-echo", "first secret")]),
    );
    assert_eq!(count(&first), "001");
    let response = first.response.as_ref().expect("response");
    assert_eq!(field(response, "x-echo").as_deref(), Some("first secret"));
    assert_eq!(first.execution.stdout, b"GET /log\nfirst body");
    assert_eq!(first.execution.stderr, b"log 001\n");
    // The same instance (the count goes on), with nothing of the first request: no echo,
    // no body, no log line, although its stdout stream is still open in the guest.
    let second = f.reusing("t", invocation(b""), head("/", &[]));
    assert_eq!(count(&second), "002");
    let response = second.response.as_ref().expect("response");
    assert_eq!(field(response, "x-echo"), None);
    assert_eq!(second.execution.stdout, b"GET /\n");
    assert_eq!(second.execution.stderr, b"");
    let third = f.reusing("t", invocation(b""), head("/log", &[]));
    assert_eq!(count(&third), "003");
    assert_eq!(third.execution.stderr, b"log 003\n");
}

#[test]
fn an_affinity_key_finds_its_instance_again() {
    let f = Fixture::new();
    let key = f.key("t");
    let run = |affinity: &str| {
        let out = f.run(&key, Some(affinity), invocation(b""), head("/", &[]));
        count(&out)
    };
    // Two keys that hash to different slots keep two instances, each counting its own.
    let slots = f.sandbox.config().warm_pool_size;
    let slot = |k: &str| crate::policy::affinity::choose_slot(k.as_bytes(), slots);
    let a = "user-0";
    let b = (1..64)
        .map(|i| format!("user-{i}"))
        .find(|k| slot(k) != slot(a))
        .expect("a key in another slot");
    assert_eq!(run(a), "001");
    assert_eq!(run(&b), "001");
    assert_eq!(run(a), "002");
    assert_eq!(run(a), "003");
    assert_eq!(run(&b), "002");
}

#[test]
fn pools_are_per_function_so_another_tenants_identical_component_starts_fresh() {
    let f = Fixture::new();
    for expected in ["001", "002", "003"] {
        let out = f.reusing("hostile", invocation(b""), head("/", &[]));
        assert_eq!(count(&out), expected);
    }
    let victim = f.reusing(
        "victim",
        invocation(b"card 4242"),
        head("/", &[("x-echo", "victim")]),
    );
    assert_eq!(
        count(&victim),
        "001",
        "the victim never runs in the hostile instance"
    );
    let hostile = f.reusing("hostile", invocation(b""), head("/", &[]));
    assert_eq!(count(&hostile), "004");
    assert_eq!(hostile.execution.stdout, b"GET /\n");
}

#[test]
fn every_request_in_a_reused_instance_gets_its_own_environment() {
    let f = Fixture::new();
    let with_env = |vars: &[(&str, &str)]| {
        let mut inv = invocation(b"");
        inv.env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        f.reusing("t", inv, head("/env", &[]))
    };
    let first = with_env(&[("SECRET", "first"), ("STRATA_REQUEST_ID", "r1")]);
    assert_eq!(count(&first), "001");
    assert_eq!(
        first.execution.stdout,
        b"GET /env\nSECRET=first\nSTRATA_REQUEST_ID=r1\n"
    );
    let second = with_env(&[("STRATA_REQUEST_ID", "r2")]);
    assert_eq!(count(&second), "002");
    assert_eq!(second.execution.stdout, b"GET /env\nSTRATA_REQUEST_ID=r2\n");
}
