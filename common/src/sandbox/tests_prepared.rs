//! Command instances made ahead of their invocation ([`super::prepared`]), one behaviour
//! per test, with real wasmtime and WAT guests.

use super::tests::{ENV_GUEST, block_on, failure, guest, invocation, wasm};
use super::*;
use crate::model::FunctionErrorKind;
use std::time::{Duration, Instant};

const ECHO: &str = include_str!("../../../examples/echo.wat");
const HELLO: &str = include_str!("../../../examples/hello.wat");

/// A sandbox that makes ahead after every lone run (tests run back to back, faster than
/// the default idle gap).
fn sandbox() -> Sandbox {
    sandbox_with(SandboxConfig::default())
}

fn sandbox_with(cfg: SandboxConfig) -> Sandbox {
    Sandbox::new(SandboxConfig {
        make_ahead_after_idle_us: 0,
        ..cfg
    })
    .expect("sandbox starts")
}

/// Lets the tasks that free finished instances and make the next ones run (the tests run
/// on one thread), until `sandbox` holds `n` made ahead.
async fn settle(sandbox: &Sandbox, n: usize) {
    for _ in 0..10_000 {
        if sandbox
            .inner
            .releasing
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
            && sandbox.inner.prepared.len() == n
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "expected {n} instances made ahead, found {}",
        sandbox.inner.prepared.len()
    );
}

/// Runs `module` with `inv`, then lets the node go idle.
async fn run_settled(sandbox: &Sandbox, module: &CompiledModule, inv: Invocation) -> Execution {
    let e = sandbox
        .run(module, inv)
        .await
        .expect("sandbox runs the guest");
    tokio::task::yield_now().await;
    e
}

#[test]
fn an_idle_nodes_next_run_takes_the_instance_made_ahead_and_a_new_one_is_made() {
    let s = sandbox();
    let m = s.compile(&wasm(ECHO)).expect("echo compiles");
    block_on(async {
        assert_eq!(s.inner.prepared.len(), 0);
        let first = s.run(&m, invocation(b"one")).await.expect("runs");
        assert_eq!((first.failure, first.stdout), (None, b"one".to_vec()));
        settle(&s, 1).await;
        assert_eq!(
            s.made_ahead_totals(),
            (1, 16 << 20),
            "one, with its memory limit"
        );
        let second = s.run(&m, invocation(b"two")).await.expect("runs");
        // Taken by this run; its replacement is made once this task waits.
        assert_eq!(s.made_ahead_totals(), (0, 0));
        assert_eq!((second.failure, second.stdout), (None, b"two".to_vec()));
        settle(&s, 1).await;
    });
}

/// Counts its runs in a global and in linear memory, and writes both counts as digits.
const COUNTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $runs (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    (i32.store (i32.const 200) (i32.add (i32.load (i32.const 200)) (i32.const 1)))
    (i32.store8 (i32.const 300) (i32.add (global.get $runs) (i32.const 48)))
    (i32.store8 (i32.const 301) (i32.add (i32.load (i32.const 200)) (i32.const 48)))
    (i32.store (i32.const 0) (i32.const 300))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[test]
fn an_instance_made_ahead_is_as_fresh_as_a_new_one() {
    let s = sandbox();
    let m = s.compile(&wasm(COUNTS)).expect("counter compiles");
    block_on(async {
        for i in 0..5 {
            let e = run_settled(&s, &m, invocation(b"")).await;
            assert_eq!((e.failure, e.stdout), (None, b"11".to_vec()), "run {i}");
            settle(&s, 1).await;
        }
    });
}

#[test]
fn an_instance_made_ahead_sees_its_own_invocations_environment_and_input() {
    let s = sandbox();
    let env = s.compile(&wasm(ENV_GUEST)).expect("env guest compiles");
    let hello = s.compile(&wasm(HELLO)).expect("hello compiles");
    block_on(async {
        for (i, value) in ["first", "second", "third"].into_iter().enumerate() {
            let mut inv = invocation(b"");
            inv.env = vec![("RUN".into(), value.into())];
            let e = run_settled(&s, &env, inv).await;
            assert_eq!(e.failure, None, "run {i}");
            assert_eq!(e.stdout, format!("RUN={value}\0").into_bytes(), "run {i}");
            let e = run_settled(&s, &hello, invocation(value.as_bytes())).await;
            assert_eq!(
                e.stdout,
                format!("Hello, {value}!\n").into_bytes(),
                "run {i}"
            );
        }
        settle(&s, 2).await;
    });
}

#[test]
fn a_module_whose_start_function_runs_is_never_made_ahead() {
    // The `start` function writes to stdout at instantiation: it must run inside each
    // invocation, with that invocation's stdout, never ahead of it.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 100) "sx")
      (func $say (param $at i32)
        (i32.store (i32.const 0) (local.get $at))
        (i32.store (i32.const 4) (i32.const 1))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
      (func $init (call $say (i32.const 100)))
      (start $init)
      (func (export "_start") (call $say (i32.const 101))))"#;
    let s = sandbox();
    let m = s.compile(&wasm(wat)).expect("compiles");
    block_on(async {
        for i in 0..3 {
            let e = run_settled(&s, &m, invocation(b"")).await;
            assert_eq!((e.failure, e.stdout), (None, b"sx".to_vec()), "run {i}");
            settle(&s, 0).await;
        }
    });
    assert!(!prepared::preparable(&m));
}

#[test]
fn limits_hold_in_an_instance_made_ahead() {
    let s = sandbox();
    let spin = s
        .compile(&wasm(&guest("(loop (br 0))")))
        .expect("spinner compiles");
    let bomb = s
        .compile(&wasm(&guest(
            "(loop (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
               (br 0))",
        )))
        .expect("bomb compiles");
    block_on(async {
        for i in 0..2 {
            let mut inv = invocation(b"");
            inv.timeout = Duration::from_millis(50);
            let e = run_settled(&s, &spin, inv).await;
            assert_eq!(
                failure(&e),
                (FunctionErrorKind::Timeout, "timed out after 50 ms"),
                "run {i}"
            );

            let mut inv = invocation(b"");
            inv.fuel = Some(10_000);
            let e = run_settled(&s, &spin, inv).await;
            let (kind, message) = failure(&e);
            assert_eq!(kind, FunctionErrorKind::Timeout, "run {i}");
            assert!(message.contains("fuel"), "run {i}: {message}");

            let mut inv = invocation(b"");
            inv.memory_bytes = 2 << 20;
            let e = run_settled(&s, &bomb, inv).await;
            assert_eq!(failure(&e).0, FunctionErrorKind::OutOfMemory, "run {i}");
            assert_eq!(e.peak_memory_bytes, 2 << 20, "run {i}");
            settle(&s, 2).await;
        }
    });
}

#[test]
fn another_memory_limit_gets_a_fresh_instance_and_replaced_code_drops_the_ones_made_ahead() {
    let s = sandbox();
    let m = s.compile(&wasm(ECHO)).expect("echo compiles");
    block_on(async {
        run_settled(&s, &m, invocation(b"a")).await;
        settle(&s, 1).await;
        let mut inv = invocation(b"b");
        inv.memory_bytes = 4 << 20;
        let e = s.run(&m, inv).await.expect("runs");
        assert_eq!(e.stdout, b"b");
        // The one made for 16 MiB was not taken.
        assert_eq!(s.inner.prepared.len(), 1);
        settle(&s, 2).await;
        s.drop_warm(&m.digest());
        assert_eq!(s.inner.prepared.len(), 0);
    });
}

/// In a sandbox of four instance slots (so one instance made ahead) and no warm pools:
/// makes an echo instance ahead, holds the other three slots with spinners, then runs
/// `other` (which needs a slot) and checks the spinners still end as they should.
fn with_every_slot_taken<F, Fut>(other: F)
where
    F: FnOnce(Sandbox) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let s = sandbox_with(SandboxConfig {
        max_instances: 4,
        max_warm_pools: 0,
        ..SandboxConfig::default()
    });
    let echo = s.compile(&wasm(ECHO)).expect("echo compiles");
    let spin = s
        .compile(&wasm(&guest("(loop (br 0))")))
        .expect("spinner compiles");
    block_on(async {
        run_settled(&s, &echo, invocation(b"x")).await;
        settle(&s, 1).await;
        let mut spinners = Vec::new();
        for _ in 0..3 {
            let mut inv = invocation(b"");
            inv.timeout = Duration::from_millis(200);
            let mut spinner = Box::pin(s.run(&spin, inv));
            assert!(futures::poll!(spinner.as_mut()).is_pending());
            spinners.push(spinner);
        }
        other(s.clone()).await;
        assert_eq!(
            s.inner.prepared.len(),
            0,
            "the instance made ahead was dropped"
        );
        for spinner in spinners {
            let e = spinner.await.expect("runs");
            assert_eq!(failure(&e).0, FunctionErrorKind::Timeout);
        }
    });
}

#[test]
fn an_instance_made_ahead_gives_its_slot_to_a_run_that_finds_none_free() {
    with_every_slot_taken(|s| async move {
        let hello = s.compile(&wasm(HELLO)).expect("hello compiles");
        let e = s
            .run(&hello, invocation(b"Ada"))
            .await
            .expect("a slot is freed for it");
        assert_eq!((e.failure, e.stdout), (None, b"Hello, Ada!\n".to_vec()));
    });
}

#[test]
fn an_instance_made_ahead_gives_its_slot_to_a_reactor_that_finds_none_free() {
    with_every_slot_taken(|s| async move {
        let counter = s
            .compile(&wasm(include_str!("../../../examples/counter.wat")))
            .expect("counter compiles");
        let key = WarmKey {
            function: crate::model::FunctionKey {
                tenant: crate::model::TenantId::new("t").expect("valid tenant"),
                name: crate::model::FunctionName::new("counter").expect("valid name"),
            },
            version: "$LATEST".into(),
            digest: counter.digest(),
            memory_bytes: 16 << 20,
        };
        let e = s
            .run_reactor(&key, &counter, invocation(b""), None)
            .await
            .expect("a slot is freed for it");
        assert_eq!(e.failure, None);
    });
}

#[test]
fn a_run_makes_ahead_only_after_the_idle_gap() {
    let idle = prepared::Idle::new(Duration::from_millis(1));
    let t0 = Instant::now() + Duration::from_millis(5);
    assert!(idle.starting(t0), "the first run after a quiet start");
    assert!(!idle.starting(t0 + Duration::from_micros(500)));
    assert!(
        !idle.starting(t0 + Duration::from_micros(1_400)),
        "900 us after the last"
    );
    assert!(
        idle.starting(t0 + Duration::from_micros(2_400)),
        "1 ms after the last"
    );
}

#[test]
fn a_busy_node_makes_nothing_ahead() {
    // Runs closer together than the gap (a minute here): the node is busy, and instances
    // are made at once, on the request's path.
    let s = Sandbox::new(SandboxConfig {
        make_ahead_after_idle_us: 60_000_000,
        ..SandboxConfig::default()
    })
    .expect("sandbox starts");
    let m = s.compile(&wasm(ECHO)).expect("echo compiles");
    block_on(async {
        for i in 0..5 {
            let e = run_settled(&s, &m, invocation(b"busy")).await;
            assert_eq!(e.stdout, b"busy", "run {i}");
            settle(&s, 0).await;
        }
    });
}

#[test]
fn a_flood_of_distinct_modules_never_holds_more_than_the_bound_and_the_victim_is_served() {
    // 32 slots: at most 8 instances made ahead, whatever a tenant deploys.
    let s = sandbox_with(SandboxConfig {
        max_instances: 32,
        max_warm_pools: 0,
        ..SandboxConfig::default()
    });
    let victim = s.compile(&wasm(ECHO)).expect("echo compiles");
    let flood: Vec<CompiledModule> = (0..60)
        .map(|i| {
            let wat = format!(r#"(module (memory (export "memory") 1) (data (i32.const 64) "{i}") (func (export "_start")))"#);
            s.compile(&wasm(&wat)).expect("flood module compiles")
        })
        .collect();
    block_on(async {
        for (i, m) in flood.iter().enumerate() {
            let e = run_settled(&s, m, invocation(b"")).await;
            assert_eq!(e.failure, None, "flood run {i}");
            settle(&s, s.inner.prepared.len()).await;
            let (held, _) = s.made_ahead_totals();
            assert!(held <= 8, "{held} made ahead after {} modules", i + 1);
            assert_eq!(
                held,
                s.inner.prepared.len(),
                "the count agrees with the shards"
            );
        }
        assert_eq!(
            s.made_ahead_totals().0,
            8,
            "the bound is reached, not exceeded"
        );
        let e = run_settled(&s, &victim, invocation(b"still here")).await;
        assert_eq!((e.failure, e.stdout), (None, b"still here".to_vec()));
    });
}
