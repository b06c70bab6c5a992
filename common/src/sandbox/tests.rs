//! The sandbox's contract, one behaviour per test, with real wasmtime and WAT guests.

use super::*;
use crate::model::{FunctionErrorKind, StartKind};
use bytes::Bytes;
use std::time::Duration;

const HELLO: &str = include_str!("../../../examples/hello.wat");
const ECHO: &str = include_str!("../../../examples/echo.wat");

/// Writes its environment (as `environ_get` lays it out) to stdout.
pub(super) const ENV_GUEST: &str = r#"(module
      (import "wasi_snapshot_preview1" "environ_sizes_get"
        (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $sizes (i32.const 32) (i32.const 36)))
        (drop (call $get (i32.const 1024) (i32.const 4096)))
        (i32.store (i32.const 0) (i32.const 4096))
        (i32.store (i32.const 4) (i32.load (i32.const 36)))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

pub(super) fn sandbox_with(cfg: SandboxConfig) -> Sandbox {
    Sandbox::new(cfg).expect("sandbox starts")
}

pub(super) fn sandbox() -> Sandbox {
    sandbox_with(SandboxConfig::default())
}

pub(super) fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("test guest is valid WAT")
}

pub(super) fn invocation(stdin: &[u8]) -> Invocation {
    Invocation {
        stdin: Bytes::copy_from_slice(stdin),
        env: Vec::new(),
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(10),
        fuel: None,
        state: None,
    }
}

/// Runs `f` to completion on a current-thread runtime with timers: guests run as futures,
/// and a guest's sleep is a tokio timer.
pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime starts")
        .block_on(f)
}

pub(super) fn run_in(sandbox: &Sandbox, wat: &str, inv: Invocation) -> Execution {
    let module = sandbox.compile(&wasm(wat)).expect("test guest compiles");
    block_on(sandbox.run(&module, inv)).expect("sandbox runs the guest")
}

pub(super) fn run(wat: &str, inv: Invocation) -> Execution {
    run_in(&sandbox(), wat, inv)
}

/// The failure's kind and message; panics with the execution when it succeeded.
pub(super) fn failure(e: &Execution) -> (FunctionErrorKind, &str) {
    let f = e
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure: {e:?}"));
    (f.kind, f.message.as_str())
}

/// A guest whose `_start` is `body`, with WASI's `proc_exit` and `fd_write` imported.
pub(super) fn guest(body: &str) -> String {
    format!(
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
             (import "wasi_snapshot_preview1" "fd_write"
               (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func $recurse (call $recurse))
             (func (export "_start") {body}))"#
    )
}

/// Writes `len` bytes of memory at 1024 to `fd`, ignoring errors, `times` times.
fn writes(fd: u32, len: u32, times: u32) -> String {
    format!(
        "(i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const {len}))
         {}",
        format!(
            "(drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))"
        )
        .repeat(times as usize)
    )
}

#[test]
fn echo_guest_returns_stdin_on_stdout() {
    let e = run(ECHO, invocation(b"ping \x00 pong"));
    assert_eq!(e.failure, None);
    assert_eq!(e.stdout, b"ping \x00 pong");
    assert_eq!(e.start, StartKind::Cold);
    assert_eq!(e.peak_memory_bytes, 64 << 10);
}

#[test]
fn echo_example_copies_input_larger_than_its_buffer() {
    let input = vec![7u8; 200_000];
    let e = run(ECHO, invocation(&input));
    assert_eq!(e.failure, None);
    assert_eq!(e.stdout, input);
}

#[test]
fn hello_example_greets_stdin() {
    let e = run(HELLO, invocation(b"Ada"));
    assert_eq!(e.failure, None);
    assert_eq!(String::from_utf8_lossy(&e.stdout), "Hello, Ada!\n");
}

#[test]
fn hello_example_greets_world_on_empty_stdin() {
    let e = run(HELLO, invocation(b""));
    assert_eq!(e.failure, None);
    assert_eq!(String::from_utf8_lossy(&e.stdout), "Hello, world!\n");
}

#[test]
fn hello_example_grows_memory_for_large_input() {
    let input = vec![b'a'; 100_000];
    let e = run(HELLO, invocation(&input));
    assert_eq!(e.failure, None);
    assert_eq!(e.stdout.len(), "Hello, !\n".len() + input.len());
    assert!(e.peak_memory_bytes > 64 << 10);
}

#[test]
fn only_guests_importing_the_environment_read_it() {
    let s = sandbox();
    let reader = r#"(module
      (import "wasi_snapshot_preview1" "environ_sizes_get"
        (func $sizes (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")))"#;
    let reads = |wat: &str| s.compile(&wasm(wat)).expect("compiles").reads_environment();
    assert!(reads(reader));
    assert!(!reads(HELLO));
}

#[test]
fn env_var_is_visible_to_guest() {
    let wat = ENV_GUEST;
    let mut inv = invocation(b"");
    inv.env = vec![
        ("GREETING".into(), "hi".into()),
        ("STRATA_FUNCTION".into(), "f".into()),
    ];
    let e = run(wat, inv);
    assert_eq!(e.failure, None);
    assert_eq!(e.stdout, b"GREETING=hi\0STRATA_FUNCTION=f\0");
}

#[test]
fn proc_exit_zero_is_success() {
    let e = run(&guest("(call $proc_exit (i32.const 0))"), invocation(b""));
    assert_eq!(e.failure, None);
}

#[test]
fn non_zero_exit_is_unhandled_with_its_code() {
    let e = run(&guest("(call $proc_exit (i32.const 3))"), invocation(b""));
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Unhandled, "exited with code 3")
    );
}

#[test]
fn unreachable_is_unhandled() {
    let e = run(&guest("unreachable"), invocation(b""));
    let (kind, message) = failure(&e);
    assert_eq!(kind, FunctionErrorKind::Unhandled);
    assert!(message.contains("unreachable"), "{message}");
}

/// A guest runs on its caller's thread, and a spinning one gives that thread back at every
/// epoch tick: on a one-thread runtime, another guest runs to completion while the spinner
/// is still running, and the spinner still ends at its own timeout.
#[test]
fn a_spinning_guest_yields_its_thread_and_another_guest_runs_meanwhile() {
    let sandbox = sandbox();
    let spin = sandbox
        .compile(&wasm(&guest("(loop (br 0))")))
        .expect("spinner compiles");
    let echo = sandbox.compile(&wasm(ECHO)).expect("echo compiles");
    block_on(async {
        let mut inv = invocation(b"");
        inv.timeout = Duration::from_millis(300);
        let mut spinning = std::pin::pin!(sandbox.run(&spin, inv));
        assert!(
            futures::poll!(spinning.as_mut()).is_pending(),
            "the spinner yields once it has run a whole tick"
        );
        let echoed = sandbox
            .run(&echo, invocation(b"meanwhile"))
            .await
            .expect("echo runs");
        assert_eq!(
            (echoed.failure, echoed.stdout),
            (None, b"meanwhile".to_vec())
        );
        assert!(
            futures::poll!(spinning.as_mut()).is_pending(),
            "the spinner is still running"
        );
        let spun = spinning.await.expect("spinner runs");
        assert_eq!(
            failure(&spun),
            (FunctionErrorKind::Timeout, "timed out after 300 ms")
        );
    });
}

#[test]
fn infinite_loop_times_out_and_sandbox_runs_next_guest() {
    let sandbox = sandbox();
    let mut inv = invocation(b"");
    inv.timeout = Duration::from_millis(50);
    let e = run_in(&sandbox, &guest("(loop (br 0))"), inv);
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Timeout, "timed out after 50 ms")
    );
    let next = run_in(&sandbox, ECHO, invocation(b"still alive"));
    assert_eq!(next.failure, None);
    assert_eq!(next.stdout, b"still alive");
}

#[test]
fn memory_grow_bomb_is_out_of_memory() {
    let bomb = "(loop
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br 0))";
    let mut inv = invocation(b"");
    inv.memory_bytes = 2 << 20;
    let e = run(&guest(bomb), inv);
    assert_eq!(failure(&e).0, FunctionErrorKind::OutOfMemory);
    assert_eq!(e.peak_memory_bytes, 2 << 20);
}

#[test]
fn initial_memory_over_limit_is_out_of_memory() {
    let wat = r#"(module (memory 64) (func (export "_start")))"#;
    let mut inv = invocation(b"");
    inv.memory_bytes = 2 << 20;
    let e = run(wat, inv);
    assert_eq!(failure(&e).0, FunctionErrorKind::OutOfMemory);
    assert_eq!(e.exec, Duration::ZERO);
}

#[test]
fn unbounded_recursion_is_unhandled_stack_overflow() {
    let e = run(&guest("(call $recurse)"), invocation(b""));
    let (kind, message) = failure(&e);
    assert_eq!(kind, FunctionErrorKind::Unhandled);
    assert!(message.contains("stack"), "{message}");
}

#[test]
fn stdout_flood_beyond_cap_is_unhandled() {
    let sandbox = sandbox_with(SandboxConfig {
        max_stdout_bytes: 1000,
        ..SandboxConfig::default()
    });
    // The guest ignores the write errors and exits 0: still a failure, never truncation.
    let e = run_in(&sandbox, &guest(&writes(1, 600, 3)), invocation(b""));
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Unhandled, "stdout over 1000 bytes")
    );
    assert_eq!(e.stdout.len(), 1000);
}

#[test]
fn stdout_exactly_at_cap_is_kept() {
    let sandbox = sandbox_with(SandboxConfig {
        max_stdout_bytes: 1000,
        ..SandboxConfig::default()
    });
    let e = run_in(&sandbox, &guest(&writes(1, 500, 2)), invocation(b""));
    assert_eq!(e.failure, None);
    assert_eq!(e.stdout.len(), 1000);
}

#[test]
fn stderr_flood_beyond_cap_is_unhandled() {
    let sandbox = sandbox_with(SandboxConfig {
        max_stderr_bytes: 100,
        ..SandboxConfig::default()
    });
    let e = run_in(&sandbox, &guest(&writes(2, 101, 1)), invocation(b""));
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Unhandled, "stderr over 100 bytes")
    );
}

#[test]
fn unknown_import_is_refused_with_its_name() {
    let wat = r#"(module (import "env" "foo" (func)) (func (export "_start")))"#;
    let err = sandbox()
        .compile(&wasm(wat))
        .expect_err("env.foo is not provided");
    assert_eq!(
        err,
        ModuleError::UnknownImport {
            module: "env".into(),
            name: "foo".into()
        }
    );
}

#[test]
fn wasi_import_with_wrong_type_is_a_link_error() {
    let wat = r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i64))))"#;
    let err = sandbox().compile(&wasm(wat)).expect_err("wrong signature");
    assert!(matches!(err, ModuleError::Link(_)), "{err:?}");
}

#[test]
fn non_wasm_bytes_are_refused() {
    let sandbox = sandbox();
    let text = br#"(module (func (export "_start")))"#;
    assert_eq!(sandbox.compile(text).err(), Some(ModuleError::NotWasm));
    assert_eq!(sandbox.compile(b"").err(), Some(ModuleError::NotWasm));
}

#[test]
fn malformed_binary_is_invalid() {
    let err = sandbox()
        .compile(b"\0asm\x01\0\0\0\x7f")
        .expect_err("garbage section");
    assert!(matches!(err, ModuleError::Invalid(_)), "{err:?}");
}

#[test]
fn too_large_module_is_refused() {
    let sandbox = sandbox_with(SandboxConfig {
        max_module_bytes: 16,
        ..SandboxConfig::default()
    });
    let bytes = wasm(HELLO);
    let err = sandbox.compile(&bytes).expect_err("over 16 bytes");
    assert_eq!(
        err,
        ModuleError::TooLarge {
            size: bytes.len(),
            limit: 16
        }
    );
}

#[test]
fn trapping_start_function_is_unhandled() {
    let wat = r#"(module (func $boom unreachable) (start $boom) (func (export "_start")))"#;
    let e = run(wat, invocation(b""));
    assert_eq!(failure(&e).0, FunctionErrorKind::Unhandled);
}

#[test]
fn module_without_start_export_is_unhandled() {
    let e = run("(module)", invocation(b""));
    let (kind, message) = failure(&e);
    assert_eq!(kind, FunctionErrorKind::Unhandled);
    assert!(message.contains("_start"), "{message}");
}

#[test]
fn compiled_module_reports_digest_and_size() {
    let bytes = wasm(ECHO);
    let module = sandbox().compile(&bytes).expect("echo compiles");
    assert_eq!(module.digest(), ArtifactDigest::of(&bytes));
    assert_eq!(module.size_bytes(), bytes.len());
}

#[test]
fn module_from_another_sandbox_is_refused() {
    let module = sandbox().compile(&wasm(ECHO)).expect("echo compiles");
    let err = block_on(sandbox().run(&module, invocation(b""))).expect_err("other engine");
    assert_eq!(err, SandboxError::ForeignModule);
}

#[test]
fn fingerprint_is_equal_for_equal_configs() {
    let a = sandbox().fingerprint();
    assert_eq!(a, sandbox().fingerprint());
    assert!(a.0.starts_with("wasmtime-48/"), "{a:?}");
}

#[test]
fn dropping_last_sandbox_stops_epoch_ticker() {
    let sandbox = sandbox();
    let clone = sandbox.clone();
    // The ticker thread holds a strong engine reference until it has stopped.
    let engine = sandbox.inner.engine.weak();
    drop(sandbox);
    assert!(engine.upgrade().is_some(), "a clone is still alive");
    drop(clone);
    assert!(
        engine.upgrade().is_none(),
        "ticker thread still holds the engine"
    );
}

#[test]
fn back_to_back_commands_reuse_the_slot_freed_after_each_response() {
    // One instance slot: each run's instance is freed on a task of its own after it
    // returns, so the next run, started at once on the same thread, must wait for that
    // task rather than fail for want of a slot.
    let sandbox = sandbox_with(SandboxConfig {
        max_instances: 1,
        max_warm_pools: 0,
        ..SandboxConfig::default()
    });
    let module = sandbox.compile(&wasm(ECHO)).expect("echo compiles");
    block_on(async {
        for i in 0..50u32 {
            let stdin = i.to_string();
            let out = sandbox
                .run(&module, invocation(stdin.as_bytes()))
                .await
                .unwrap_or_else(|e| panic!("run {i}: {e}"));
            assert_eq!(out.stdout, stdin.as_bytes(), "run {i}: {out:?}");
        }
    });
}
