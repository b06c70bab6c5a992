//! Latency of store operations, redb against JetStream on a local `nats-server`: what a
//! caller blocks for per call (docs/architecture.md quotes the numbers).
//!
//! `cargo run --release -p region-node --example store_latency [N]` (default N = 2000).

use region_node::store::jetstream::nats_server::NatsServer;
use region_node::store::{Bucket, Expect, JetStreamBackend, JetStreamConfig, Store};
use std::time::{Duration, Instant};

fn main() -> Result<(), String> {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(Ok(2000), |a| a.parse())
        .map_err(|e| format!("N: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let redb = Store::open(&dir.path().join("bench.redb")).map_err(|e| e.to_string())?;
    measure("redb", &redb, n)?;
    let server = NatsServer::start()?;
    let js = Store::with_backend(
        JetStreamBackend::connect(&JetStreamConfig {
            url: server.url(),
            prefix: "bench".into(),
            timeout: Duration::from_secs(5),
        })
        .map_err(|e| e.to_string())?,
    );
    measure("jetstream", &js, n)
}

fn measure(name: &str, s: &Store, n: usize) -> Result<(), String> {
    let value = vec![7u8; 512];
    let put = time(n, |i| {
        s.put(Bucket::Functions, &format!("t/f{i}"), &value, Expect::Any)
            .map(drop)
    })?;
    let cas = time(n, |i| {
        let key = format!("t/f{i}");
        let rev = s.get(Bucket::Functions, &key)?.map_or(0, |e| e.revision);
        s.put(Bucket::Functions, &key, &value, Expect::Revision(rev))
            .map(drop)
    })?;
    let get = time(n, |i| {
        s.get(Bucket::Functions, &format!("t/f{i}")).map(drop)
    })?;
    let append = time(n, |_| s.append("bench", &value, u64::MAX).map(drop))?;
    let list = time(10, |_| s.list(Bucket::Functions, "t/").map(drop))?;
    println!(
        "{name:>9}: put {put}  get+cas {cas}  get {get}  append {append}  list({n} keys) {list}"
    );
    Ok(())
}

/// Runs `op` `n` times; "p50/p99" in microseconds.
fn time(
    n: usize,
    mut op: impl FnMut(usize) -> Result<(), region_node::store::StoreError>,
) -> Result<String, String> {
    let mut us = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(i).map_err(|e| e.to_string())?;
        us.push(t.elapsed().as_micros());
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    Ok(format!("{}/{}us", at(0.5), at(0.99)))
}
