//! A gate a test opens: guests that wait (polling their resource group's shared state,
//! sleeping 1 ms between looks) until the test's `open` function writes the key `go`.
//! They hold an event worker, or show that something ran after a point the test chose,
//! without the test sleeping. Bounded by the waiting function's `timeout_ms`.

use crate::support::TestCluster;
use serde_json::json;

/// The resource group holding the gate's key.
const GROUP: &str = "gate";

/// Writes `go` = `1`.
const OPEN: &str = r#"(module
  (import "strata" "put" (func $put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "go")
  (data (i32.const 16) "1")
  (func (export "_start") (drop (call $put (i32.const 0) (i32.const 2) (i32.const 16) (i32.const 1)))))"#;

/// What a gated guest does once the gate is open.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Exit 0.
    Succeed,
    /// Trap (so its dead letter shows what it was given).
    Trap,
}

/// A command module that waits for the gate, then does `then`.
pub fn gated(then: Then) -> String {
    let tail = match then {
        Then::Succeed => "",
        Then::Trap => "unreachable",
    };
    // A WASI clock subscription at 1024 (48 bytes: userdata, tag 0 = clock at +8, clock id
    // 1 = monotonic at +16, timeout 1 ms in ns at +24, precision at +32, flags 0 = relative
    // at +40); its event is written at 1088, the event count at 1152.
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "strata" "get" (func $get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "go")
  (func (export "_start")
    (i32.store (i32.const 1040) (i32.const 1))
    (i64.store (i32.const 1048) (i64.const 1000000))
    (block $open
      (loop $wait
        (br_if $open (i32.ge_s
          (call $get (i32.const 0) (i32.const 2) (i32.const 256) (i32.const 8))
          (i32.const 0)))
        (drop (call $poll (i32.const 1024) (i32.const 1088) (i32.const 1) (i32.const 1152)))
        (br $wait)))
    {tail}))"#
    )
}

/// Deploys `name` as a gated guest doing `then`, with `config` merged into its own.
pub async fn deploy_gated(c: &TestCluster, name: &str, then: Then, config: serde_json::Value) {
    let mut full = json!({"resource_group": GROUP, "timeout_ms": 60_000, "retries": 0});
    if let (Some(full), Some(extra)) = (full.as_object_mut(), config.as_object()) {
        full.extend(extra.clone());
    }
    c.deploy_wat(name, full, &gated(then)).await;
}

/// Deploys the function that opens the gate.
pub async fn deploy_opener(c: &TestCluster) {
    c.deploy_wat("open", json!({"resource_group": GROUP}), OPEN)
        .await;
}

/// Opens the gate (a synchronous invocation at the region, where shared state lives).
pub async fn open(c: &TestCluster) {
    let resp = c.invoke_at(&c.nodes.region_url(), "open", "").await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}
