//! A warm reactor instance keeps one WASI context for life: nothing of one call (output,
//! unread input, environment) reaches the next, the caps still fail a call, and an
//! instance whose call went wrong (a trap, closed stdio) is still discarded. One behaviour
//! per test, with real wasmtime and WAT guests.

use super::tests::{block_on, failure, sandbox, sandbox_with, wasm};
use super::*;
use crate::model::{FunctionErrorKind, FunctionKey, FunctionName, StartKind, TenantId};
use bytes::Bytes;
use std::time::Duration;

/// A reactor that reads one chunk of at most 4 bytes of stdin and writes it to stdout and
/// to stderr. A chunk starting with `t` then traps; one starting with `c` closes stdout.
const ECHO4: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  ;; [0, 8) stdin iovec, [8, 12) bytes read, [16, 24) output iovec, [24, 28) written,
  ;; [1024, 1028) the chunk.
  (memory (export "memory") 1)
  (func (export "strata_handle") (result i32)
    (i32.store (i32.const 8) (i32.const 0))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 24)))
    (if (i32.eqz (i32.load (i32.const 8))) (then (return (i32.const 0))))
    (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 116)) (then unreachable))
    (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 99))
      (then (drop (call $fd_close (i32.const 1)))))
    (i32.const 0)))"#;

/// A reactor that writes its arguments' strings then its environment's strings to stdout,
/// and the environment's pointer array to stderr (laid out at 2048).
const ARGS_ENV: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; [0, 8) iovec, [8, 12) written, [32, 48) sizes, [512, 1024) pointer arrays,
  ;; [1024, 2048) argument strings, [2048, 4096) environment strings.
  (memory (export "memory") 1)
  (func $out (param $fd i32) (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "strata_handle") (result i32)
    (drop (call $args_sizes (i32.const 32) (i32.const 36)))
    (drop (call $args_get (i32.const 512) (i32.const 1024)))
    (call $out (i32.const 1) (i32.const 1024) (i32.load (i32.const 36)))
    (drop (call $env_sizes (i32.const 40) (i32.const 44)))
    (drop (call $env_get (i32.const 768) (i32.const 2048)))
    (call $out (i32.const 1) (i32.const 2048) (i32.load (i32.const 44)))
    (call $out (i32.const 2) (i32.const 768) (i32.shl (i32.load (i32.const 40)) (i32.const 2)))
    (i32.const 0)))"#;

fn key(name: &str, m: &CompiledModule) -> WarmKey {
    WarmKey {
        function: FunctionKey {
            tenant: TenantId::new("t").expect("valid tenant"),
            name: FunctionName::new(name).expect("valid name"),
        },
        version: "$LATEST".into(),
        digest: m.digest(),
        memory_bytes: 16 << 20,
    }
}

fn call(s: &Sandbox, k: &WarmKey, m: &CompiledModule, stdin: &[u8]) -> Execution {
    call_with_env(s, k, m, stdin, Vec::new())
}

fn call_with_env(
    s: &Sandbox,
    k: &WarmKey,
    m: &CompiledModule,
    stdin: &[u8],
    env: Vec<(String, String)>,
) -> Execution {
    let inv = Invocation {
        stdin: Bytes::copy_from_slice(stdin),
        env,
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(10),
        fuel: None,
        state: None,
    };
    block_on(s.run_reactor(k, m, inv, None)).expect("sandbox runs the reactor")
}

fn echo4(s: &Sandbox) -> (CompiledModule, WarmKey) {
    let m = s.compile(&wasm(ECHO4)).expect("echo4 compiles");
    let k = key("echo4", &m);
    (m, k)
}

#[test]
fn output_of_one_call_never_appears_in_the_next_calls_output() {
    let s = sandbox();
    let (m, k) = echo4(&s);
    let first = call(&s, &k, &m, b"one");
    assert_eq!((first.failure, first.start), (None, StartKind::Cold));
    assert_eq!(
        (first.stdout, first.stderr),
        (b"one".to_vec(), b"one".to_vec())
    );
    let second = call(&s, &k, &m, b"22");
    assert_eq!((second.failure, second.start), (None, StartKind::Warm));
    assert_eq!(
        (second.stdout, second.stderr),
        (b"22".to_vec(), b"22".to_vec())
    );
    // A call that writes nothing captures nothing.
    let third = call(&s, &k, &m, b"");
    assert_eq!(
        (third.start, third.stdout, third.stderr),
        (StartKind::Warm, vec![], vec![])
    );
}

#[test]
fn stdin_left_unread_by_one_call_never_reaches_the_next() {
    let s = sandbox();
    let (m, k) = echo4(&s);
    // The guest reads 4 bytes and leaves "efgh" unread.
    assert_eq!(call(&s, &k, &m, b"abdefgh").stdout, b"abde");
    let next = call(&s, &k, &m, b"xy");
    assert_eq!((next.start, next.stdout), (StartKind::Warm, b"xy".to_vec()));
    // An empty payload reads as end of input, not as the rest of an earlier one.
    assert_eq!(call(&s, &k, &m, b"").stdout, b"");
}

#[test]
fn stdout_over_its_cap_fails_a_warm_call_and_the_next_call_starts_empty() {
    let s = sandbox_with(SandboxConfig {
        max_stdout_bytes: 3,
        ..SandboxConfig::default()
    });
    let (m, k) = echo4(&s);
    assert_eq!(
        call(&s, &k, &m, b"abc").stdout,
        b"abc",
        "exactly the cap is kept"
    );
    let over = call(&s, &k, &m, b"abcd");
    assert_eq!(over.start, StartKind::Warm);
    assert_eq!(
        failure(&over),
        (FunctionErrorKind::Unhandled, "stdout over 3 bytes")
    );
    let next = call(&s, &k, &m, b"ok");
    assert_eq!((next.failure, next.stdout), (None, b"ok".to_vec()));
}

#[test]
fn stderr_over_its_cap_fails_a_warm_call_and_the_next_call_starts_empty() {
    let s = sandbox_with(SandboxConfig {
        max_stderr_bytes: 3,
        ..SandboxConfig::default()
    });
    let (m, k) = echo4(&s);
    call(&s, &k, &m, b"ab");
    let over = call(&s, &k, &m, b"abcd");
    assert_eq!(
        failure(&over),
        (FunctionErrorKind::Unhandled, "stderr over 3 bytes")
    );
    let next = call(&s, &k, &m, b"ok");
    assert_eq!((next.failure, next.stderr), (None, b"ok".to_vec()));
}

#[test]
fn a_trapped_instance_is_discarded_and_its_output_is_not_seen_again() {
    let s = sandbox();
    let (m, k) = echo4(&s);
    call(&s, &k, &m, b"a");
    let trapped = call(&s, &k, &m, b"trap");
    assert_eq!(trapped.start, StartKind::Warm);
    assert_eq!(failure(&trapped).0, FunctionErrorKind::Unhandled);
    assert_eq!(
        trapped.stdout, b"trap",
        "output up to the trap is the call's own"
    );
    assert_eq!(s.warm_instances(&k), 0);
    let next = call(&s, &k, &m, b"b");
    assert_eq!((next.start, next.stdout), (StartKind::Cold, b"b".to_vec()));
}

#[test]
fn a_call_that_closes_its_stdout_discards_the_instance() {
    let s = sandbox();
    let (m, k) = echo4(&s);
    let closing = call(&s, &k, &m, b"c");
    assert_eq!((closing.failure, closing.stdout), (None, b"c".to_vec()));
    assert_eq!(
        s.warm_instances(&k),
        0,
        "a closed stdout must not outlive the call"
    );
    let next = call(&s, &k, &m, b"ok");
    assert_eq!((next.start, next.stdout), (StartKind::Cold, b"ok".to_vec()));
    let again = call(&s, &k, &m, b"ok2");
    assert_eq!(
        (again.start, again.stdout),
        (StartKind::Warm, b"ok2".to_vec())
    );
}

/// Splits the guest's output into its argument and environment strings, and checks that
/// the environment's pointer array (on stderr) points at each string in turn.
fn args_and_env(e: &Execution, args_len: usize) -> (Vec<u8>, Vec<u8>) {
    let (args, env) = e.stdout.split_at(args_len);
    let pointers: Vec<u32> = e
        .stderr
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut at = 2048;
    let mut expected = Vec::new();
    for s in env.split_inclusive(|b| *b == 0) {
        expected.push(at);
        at += u32::try_from(s.len()).expect("short");
    }
    assert_eq!(pointers, expected, "environ points at each string");
    (args.to_vec(), env.to_vec())
}

#[test]
fn every_call_sees_its_own_environment_and_the_same_arguments() {
    let s = sandbox();
    let m = s.compile(&wasm(ARGS_ENV)).expect("compiles");
    let k = key("args-env", &m);
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let argv0 = b"function\0".len();
    let first = call_with_env(
        &s,
        &k,
        &m,
        b"",
        vars(&[("SECRET", "first-call"), ("STRATA_REQUEST_ID", "r1")]),
    );
    assert_eq!(first.failure, None);
    assert_eq!(
        args_and_env(&first, argv0),
        (
            b"function\0".to_vec(),
            b"SECRET=first-call\0STRATA_REQUEST_ID=r1\0".to_vec()
        )
    );
    let second = call_with_env(&s, &k, &m, b"", vars(&[("STRATA_REQUEST_ID", "r2")]));
    assert_eq!(second.start, StartKind::Warm);
    assert_eq!(
        args_and_env(&second, argv0),
        (b"function\0".to_vec(), b"STRATA_REQUEST_ID=r2\0".to_vec())
    );
    let third = call_with_env(&s, &k, &m, b"", Vec::new());
    assert_eq!(
        args_and_env(&third, argv0),
        (b"function\0".to_vec(), Vec::new())
    );
}

#[test]
fn environ_get_with_a_bad_pointer_is_efault_not_a_trap() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module
                 (import "wasi_snapshot_preview1" "environ_get"
                   (func $get (param i32 i32) (result i32)))
                 (memory (export "memory") 1)
                 (func (export "strata_handle") (result i32)
                   (call $get (i32.const 65534) (i32.const 0))))"#,
        ))
        .expect("compiles");
    let k = key("bad-env", &m);
    let inv = |env| {
        let mut inv = super::tests::invocation(b"");
        inv.env = env;
        inv
    };
    let e =
        block_on(s.run_reactor(&k, &m, inv(vec![("A".into(), "1".into())]), None)).expect("runs");
    assert_eq!(
        failure(&e),
        (FunctionErrorKind::Unhandled, "strata_handle returned 21")
    );
    // The instance is intact (a clean return) and the next call is served warm.
    let e = block_on(s.run_reactor(&k, &m, inv(Vec::new()), None)).expect("runs");
    assert_eq!((e.start, e.failure), (StartKind::Warm, None));
}

#[test]
fn an_initialize_that_closes_stdout_does_not_take_it_from_the_calls() {
    let s = sandbox();
    let m = s
        .compile(&wasm(
            r#"(module
                 (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
                 (import "wasi_snapshot_preview1" "fd_write"
                   (func $write (param i32 i32 i32 i32) (result i32)))
                 (memory (export "memory") 1)
                 (data (i32.const 64) "hi")
                 (func (export "_initialize") (drop (call $close (i32.const 1))))
                 (func (export "strata_handle") (result i32)
                   (i32.store (i32.const 0) (i32.const 64))
                   (i32.store (i32.const 4) (i32.const 2))
                   (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#,
        ))
        .expect("compiles");
    let k = key("init-closes", &m);
    for start in [StartKind::Cold, StartKind::Warm] {
        let e = call(&s, &k, &m, b"");
        assert_eq!(
            (e.start, e.failure, e.stdout),
            (start, None, b"hi".to_vec())
        );
    }
}
