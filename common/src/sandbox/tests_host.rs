//! The `strata` host imports and the two runtime releases, with real wasmtime and WAT
//! guests. Shared state here is a small in-memory namespace: the durable one (over the
//! region's store) is tested in region-node and end to end in `tests/all/state.rs`.

use super::tests::{block_on, invocation, sandbox, sandbox_with, wasm};
use super::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

const LEGACY: &str = r#"(module
  (import "strata" "log_v0" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "legacy")
  (func (export "_start") (drop (call $log (i32.const 0) (i32.const 6)))))"#;

/// Calls `strata.get` with the pointer and length given in the WAT and exits with the
/// result plus 10 (so error codes -7..=-1 show as exit codes 3..=9).
fn get_with(key_ptr: i32, key_len: i32, out_ptr: i32, out_cap: i32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "strata" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key")
  (func (export "_start")
    (call $exit (i32.add (i32.const 10)
      (call $get (i32.const {key_ptr}) (i32.const {key_len})
                 (i32.const {out_ptr}) (i32.const {out_cap}))))))"#
    )
}

#[derive(Debug, Default)]
struct Memory(Mutex<BTreeMap<String, Vec<u8>>>);

impl SharedState for Memory {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.lock().expect("lock").get(key).cloned())
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        self.0
            .lock()
            .expect("lock")
            .insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<bool, StateError> {
        Ok(self.0.lock().expect("lock").remove(key).is_some())
    }
    fn cas(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, StateError> {
        let mut map = self.0.lock().expect("lock");
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key.into(), new.into());
        Ok(true)
    }
    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        let map = self.0.lock().expect("lock");
        Ok(map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

fn exit_code(e: &Execution) -> Option<String> {
    e.failure.as_ref().map(|f| f.message.clone())
}

#[test]
fn the_deprecated_log_import_links_on_current_only_and_writes_to_stderr() {
    let current = sandbox();
    let next = sandbox_with(SandboxConfig {
        release: Release::Next,
        ..SandboxConfig::default()
    });
    let module = current
        .compile(&wasm(LEGACY))
        .expect("current links log_v0");
    let e = block_on(current.run(&module, invocation(b""))).expect("runs");
    assert_eq!(e.failure, None);
    assert_eq!(e.stderr, b"legacy\n");
    assert!(matches!(
        next.compile(&wasm(LEGACY)),
        Err(ModuleError::UnknownImport { module, name }) if module == "strata" && name == "log_v0"
    ));
}

#[test]
fn the_two_releases_have_different_fingerprints_and_do_not_share_modules() {
    let current = sandbox();
    let next = sandbox_with(SandboxConfig {
        release: Release::Next,
        ..SandboxConfig::default()
    });
    assert_ne!(current.fingerprint(), next.fingerprint());
    let plain = wasm(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    let m = next.compile(&plain).expect("compiles");
    assert!(next.owns(&m) && !current.owns(&m));
    assert_eq!(Release::from_name("2026.11"), Some(Release::Next));
}

#[test]
fn get_copies_the_value_and_reports_absence_and_small_buffers() {
    let s = sandbox();
    let state = std::sync::Arc::new(Memory::default());
    let run = |wat: &str| {
        let module = s.compile(&wasm(wat)).expect("compiles");
        let mut inv = invocation(b"");
        inv.state = Some(state.clone());
        block_on(s.run(&module, inv)).expect("runs")
    };
    assert_eq!(
        exit_code(&run(&get_with(0, 3, 64, 8))),
        Some("exited with code 9".into())
    );
    state.put("key", b"12345").expect("put");
    // The length comes back whether or not it fits.
    assert_eq!(
        exit_code(&run(&get_with(0, 3, 64, 8))),
        Some("exited with code 15".into())
    );
    assert_eq!(
        exit_code(&run(&get_with(0, 3, 64, 2))),
        Some("exited with code 15".into())
    );
    // Out of bounds and oversize keys are codes, never traps.
    assert_eq!(
        exit_code(&run(&get_with(65_530, 64, 64, 8))),
        Some("exited with code 8".into())
    );
    assert_eq!(
        exit_code(&run(&get_with(0, -1, 64, 8))),
        Some("exited with code 8".into())
    );
    assert_eq!(
        exit_code(&run(&get_with(0, 3, 65_534, 8))),
        Some("exited with code 8".into())
    );
    assert_eq!(
        exit_code(&run(&get_with(0, 300, 64, 8))),
        Some("exited with code 7".into())
    );
}

#[test]
fn without_a_namespace_state_imports_answer_no_state() {
    let s = sandbox();
    let module = s.compile(&wasm(&get_with(0, 3, 64, 8))).expect("compiles");
    assert!(module.uses_shared_state());
    let e = block_on(s.run(&module, invocation(b""))).expect("runs");
    assert_eq!(exit_code(&e), Some("exited with code 4".into()));
    assert!(!e.platform_fault, "the guest chose to exit");
    assert!(matches!(
        module.check_shared_state(false),
        Err(ModuleError::Link(m)) if m.contains("resource_group")
    ));
    assert_eq!(module.check_shared_state(true), Ok(()));
}

#[test]
fn a_trap_is_a_platform_fault_and_an_exit_is_not() {
    let s = sandbox();
    let trap = s
        .compile(&wasm(
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        ))
        .expect("compiles");
    assert!(
        block_on(s.run(&trap, invocation(b"")))
            .expect("runs")
            .platform_fault
    );
}

/// Calls `strata.list` with the prefix at `(ptr, len)` and exits with the result plus 10.
fn list_with(ptr: i32, len: i32) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "strata" "list" (func $list (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.add (i32.const 10)
      (call $list (i32.const {ptr}) (i32.const {len}) (i32.const 64) (i32.const 64))))))"#
    )
}

#[test]
fn list_refuses_an_oversize_prefix_before_reading_guest_memory() {
    let s = sandbox();
    let module = s
        .compile(&wasm(&list_with(0, 1_000_000)))
        .expect("compiles");
    let mut inv = invocation(b"");
    inv.state = Some(std::sync::Arc::new(Memory::default()));
    // BAD_KEY (-3), not BAD_POINTER (-2): the length is judged before any copy.
    let e = block_on(s.run(&module, inv)).expect("runs");
    assert_eq!(exit_code(&e), Some("exited with code 7".into()));
}

#[test]
fn log_v0_copies_no_more_than_stderr_can_hold() {
    let s = sandbox_with(SandboxConfig {
        max_stderr_bytes: 4,
        ..SandboxConfig::default()
    });
    let wat = r#"(module
  (import "strata" "log_v0" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $log (i32.const 0) (i32.const 65536)))))"#;
    let module = s.compile(&wasm(wat)).expect("compiles");
    let e = block_on(s.run(&module, invocation(b""))).expect("runs");
    assert_eq!(e.stderr.len(), 4, "cut to the cap");
    assert!(
        e.failure.is_some(),
        "a line over the cap fails the invocation"
    );
}

/// A writer the test reads back: the node log as a terminal would show it.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_stderr_reaches_the_node_log_escaped_in_one_line() {
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\1b[31mred\0aERROR forged=line\0d\07")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 28))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let e = super::tests::run(wat, invocation(b""));
    assert_eq!(e.stderr, b"\x1b[31mred\nERROR forged=line\r\x07");
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let key = crate::model::FunctionKey {
        tenant: crate::model::TenantId::new("t").expect("id"),
        name: crate::model::FunctionName::new("f").expect("name"),
    };
    tracing::subscriber::with_default(subscriber, || {
        crate::logs::trace_guest_stderr(&key, crate::model::RequestId(7), &e.stderr);
    });
    let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "one event, one line: {text:?}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no raw control character: {text:?}"
    );
    assert!(
        text.contains(r"stderr=\u{1b}[31mred\nERROR forged=line\r\u{7}"),
        "{text:?}"
    );
    assert!(
        text.contains("guest stderr"),
        "the message is fixed: {text:?}"
    );
}
