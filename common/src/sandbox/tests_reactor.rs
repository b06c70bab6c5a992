//! The reactor ABI, warm pools, affinity, fuel and precompiled artifacts, one behaviour
//! per test, with real wasmtime and WAT guests.

use super::tests::{block_on, failure, invocation, sandbox, sandbox_with, wasm};
use super::*;
use crate::model::{Abi, FunctionErrorKind, FunctionKey, FunctionName, StartKind, TenantId};
use std::time::Duration;

const COUNTER: &str = include_str!("../../../examples/counter.wat");
const HELLO: &str = include_str!("../../../examples/hello.wat");

fn key(name: &str, digest: ArtifactDigest) -> WarmKey {
    WarmKey {
        function: FunctionKey {
            tenant: TenantId::new("t").expect("valid tenant"),
            name: FunctionName::new(name).expect("valid name"),
        },
        version: "$LATEST".into(),
        digest,
        memory_bytes: 16 << 20,
    }
}

fn call(s: &Sandbox, k: &WarmKey, m: &CompiledModule, affinity: Option<&str>) -> Execution {
    block_on(s.run_reactor(k, m, invocation(b""), affinity)).expect("sandbox runs the reactor")
}

fn counter(s: &Sandbox) -> (CompiledModule, WarmKey) {
    let m = s.compile(&wasm(COUNTER)).expect("counter compiles");
    let k = key("counter", m.digest());
    (m, k)
}

#[test]
fn reactor_keeps_linear_memory_between_invocations() {
    let s = sandbox();
    let (m, k) = counter(&s);
    let first = call(&s, &k, &m, Some("user-1"));
    assert_eq!(
        (first.failure.clone(), first.start),
        (None, StartKind::Cold)
    );
    assert_eq!(first.stdout, b"1");
    let second = call(&s, &k, &m, Some("user-1"));
    assert_eq!(
        (second.stdout.as_slice(), second.start),
        (&b"2"[..], StartKind::Warm)
    );
    assert_eq!(second.instantiate, Duration::ZERO);
    assert_eq!(s.warm_instances(&k), 1);
}

#[test]
fn same_affinity_key_reaches_the_same_instance() {
    let s = sandbox();
    let (m, k) = counter(&s);
    // Interleave two keys: each key's count goes up by one per request with that key,
    // unless both keys happen to hash to the same slot, when they share one count.
    let mut counts = Vec::new();
    for _ in 0..3 {
        for key in ["alice", "bob"] {
            let e = call(&s, &k, &m, Some(key));
            counts.push(String::from_utf8(e.stdout).expect("digits"));
        }
    }
    let same_slot = crate::policy::affinity::choose_slot(b"alice", 4)
        == crate::policy::affinity::choose_slot(b"bob", 4);
    if same_slot {
        assert_eq!(counts, ["1", "2", "3", "4", "5", "6"]);
    } else {
        assert_eq!(counts, ["1", "1", "2", "2", "3", "3"]);
    }
}

#[test]
fn different_functions_with_the_same_code_never_share_an_instance() {
    let s = sandbox();
    let (m, k) = counter(&s);
    let other = key("counter-2", m.digest());
    assert_eq!(call(&s, &k, &m, Some("x")).stdout, b"1");
    assert_eq!(call(&s, &other, &m, Some("x")).stdout, b"1");
}

const TRAP_ON_THIRD: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "strata_handle") (result i32)
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (if (i32.eq (i32.load (i32.const 0)) (i32.const 3)) (then unreachable))
    (i32.const 0)))"#;

#[test]
fn instance_that_trapped_is_discarded_and_the_next_call_is_cold() {
    let s = sandbox();
    let m = s.compile(&wasm(TRAP_ON_THIRD)).expect("compiles");
    let k = key("trap", m.digest());
    for _ in 0..2 {
        assert_eq!(call(&s, &k, &m, Some("a")).failure, None);
    }
    let third = call(&s, &k, &m, Some("a"));
    assert_eq!(failure(&third).0, FunctionErrorKind::Unhandled);
    assert_eq!(s.warm_instances(&k), 0);
    let fourth = call(&s, &k, &m, Some("a"));
    assert_eq!((fourth.failure, fourth.start), (None, StartKind::Cold));
}

#[test]
fn reactor_that_loops_times_out_and_is_discarded() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module (func (export "strata_handle") (result i32) (loop $l (br $l)) (i32.const 0)))"#,
        ))
        .expect("compiles");
    let k = key("spin", m.digest());
    let mut inv = invocation(b"");
    inv.timeout = Duration::from_millis(50);
    let e = block_on(s.run_reactor(&k, &m, inv, None)).expect("runs");
    assert_eq!(failure(&e).0, FunctionErrorKind::Timeout);
    assert_eq!(s.warm_instances(&k), 0);
}

#[test]
fn reactor_out_of_memory_is_discarded() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module (memory 1)
                 (func (export "strata_handle") (result i32)
                   (if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1)) (then unreachable))
                   (i32.const 0)))"#,
        ))
        .expect("compiles");
    let k = key("bomb", m.digest());
    let e = call(&s, &k, &m, None);
    assert_eq!(failure(&e).0, FunctionErrorKind::OutOfMemory);
    assert_eq!(s.warm_instances(&k), 0);
}

#[test]
fn non_zero_status_is_unhandled_but_the_instance_stays_warm() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module (func (export "strata_handle") (result i32) (i32.const 7)))"#,
        ))
        .expect("compiles");
    let k = key("seven", m.digest());
    let e = call(&s, &k, &m, None);
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Unhandled, "strata_handle returned 7")
    );
    assert_eq!(s.warm_instances(&k), 1);
}

#[test]
fn trapping_initialize_is_unhandled_and_nothing_is_kept() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module (func (export "_initialize") unreachable)
                       (func (export "strata_handle") (result i32) (i32.const 0)))"#,
        ))
        .expect("compiles");
    let k = key("bad-init", m.digest());
    let e = call(&s, &k, &m, None);
    assert_eq!(failure(&e).0, FunctionErrorKind::Unhandled);
    assert_eq!(e.start, StartKind::Cold);
    assert_eq!(s.warm_instances(&k), 0);
}

#[test]
fn idle_instances_past_keep_alive_are_reaped() {
    let s = sandbox_with(SandboxConfig {
        warm_idle_ms: 0,
        ..SandboxConfig::default()
    });
    let (m, k) = counter(&s);
    call(&s, &k, &m, None);
    assert_eq!(s.reap_idle(), 0);
    assert_eq!(s.warm_instances(&k), 0);
    assert_eq!(call(&s, &k, &m, None).start, StartKind::Cold);
}

#[test]
fn pools_are_bounded_least_recently_used_dropped() {
    let s = sandbox_with(SandboxConfig {
        max_warm_pools: 2,
        ..SandboxConfig::default()
    });
    let (m, _) = counter(&s);
    let keys: Vec<WarmKey> = (0..3).map(|i| key(&format!("f{i}"), m.digest())).collect();
    for k in &keys {
        call(&s, k, &m, None);
    }
    assert_eq!(s.warm_instances(&keys[0]), 0, "the oldest pool was dropped");
    assert_eq!(s.warm_instances(&keys[1]), 1);
    assert_eq!(s.warm_instances(&keys[2]), 1);
}

#[test]
fn fuel_bounds_cpu_deterministically() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module (func (export "_start") (loop $l (br $l))))"#,
        ))
        .expect("compiles");
    let mut inv = invocation(b"");
    inv.fuel = Some(10_000);
    let e = block_on(s.run(&m, inv)).expect("runs");
    let (kind, message) = failure(&e);
    assert_eq!(kind, FunctionErrorKind::Timeout);
    assert!(message.contains("fuel"), "{message}");
}

#[test]
fn enough_fuel_lets_the_guest_finish() {
    let s = sandbox();
    let m = s.compile(&wasm(HELLO)).expect("compiles");
    let mut inv = invocation(b"Ada");
    inv.fuel = Some(1_000_000);
    let e = block_on(s.run(&m, inv)).expect("runs");
    assert_eq!((e.failure, e.stdout), (None, b"Hello, Ada!\n".to_vec()));
}

#[test]
fn too_many_imports_are_refused() {
    let s = sandbox_with(SandboxConfig {
        max_imports: 1,
        ..SandboxConfig::default()
    });
    let r = s.compile(&wasm(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
             (import "wasi_snapshot_preview1" "sched_yield" (func (result i32))))"#,
    ));
    assert_eq!(
        r.map(|_| ()),
        Err(ModuleError::TooManyImports { count: 2, limit: 1 })
    );
}

#[test]
fn abi_checks_name_what_is_missing() {
    let s = sandbox();
    let (c, _) = counter(&s);
    assert_eq!(c.check_abi(Abi::Reactor), Ok(()));
    assert!(matches!(
        c.check_abi(Abi::Command),
        Err(ModuleError::Abi { abi: "command", .. })
    ));
    let h = s.compile(&wasm(HELLO)).expect("compiles");
    assert_eq!(h.check_abi(Abi::Command), Ok(()));
    let err = h
        .check_abi(Abi::Reactor)
        .expect_err("hello is not a reactor");
    assert!(err.to_string().contains("strata_handle"), "{err}");
}

#[test]
#[allow(unsafe_code)]
fn precompiled_artifact_loads_and_runs_like_the_source() {
    let s = sandbox();
    let source = wasm(HELLO);
    let m = s.compile(&source).expect("compiles");
    let bytes = s.precompile(&m).expect("serializes");
    // SAFETY: the bytes were produced just above by this test's own sandbox.
    let loaded = unsafe { s.load_precompiled(m.digest(), &bytes) }.expect("loads");
    assert_eq!(loaded.digest(), ArtifactDigest::of(&source));
    let e = block_on(s.run(&loaded, invocation(b"Bo"))).expect("runs");
    assert_eq!(e.stdout, b"Hello, Bo!\n");
}

#[test]
#[allow(unsafe_code)]
fn wasm_bytes_are_not_a_precompiled_artifact() {
    let s = sandbox();
    // SAFETY: the bytes are refused before wasmtime would trust them.
    let r = unsafe { s.load_precompiled(ArtifactDigest::of(b"x"), &wasm(HELLO)) };
    assert!(matches!(r, Err(ModuleError::Artifact(_))));
}

/// A reactor whose `strata_handle` spins forever when its stdin is not empty.
const SPIN_ON_INPUT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "strata_handle") (result i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (i32.store (i32.const 8) (i32.const 0))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.load (i32.const 8)) (then (loop (br 0))))
    (i32.const 0)))"#;

/// A call whose future is dropped mid-run (its caller went away) takes its instance with
/// it and empties its pool slot: the next calls with the same affinity key get that slot
/// (cold, then warm) instead of finding it busy for good and running one-off instances.
#[test]
fn a_dropped_call_empties_its_pool_slot() {
    let s = sandbox();
    let m = s.compile(&wasm(SPIN_ON_INPUT)).expect("spinner compiles");
    let k = key("spinner", m.digest());
    block_on(async {
        let call = s.run_reactor(&k, &m, invocation(b"spin"), Some("user-1"));
        let mut call = std::pin::pin!(call);
        assert!(
            futures::poll!(call.as_mut()).is_pending(),
            "the call is spinning"
        );
    });
    let first = call(&s, &k, &m, Some("user-1"));
    let second = call(&s, &k, &m, Some("user-1"));
    assert_eq!((first.failure, second.failure), (None, None));
    assert_eq!(
        (first.start, second.start),
        (StartKind::Cold, StartKind::Warm)
    );
}
