//! `scenarios fault conn-burst`: a burst of idle connections against a POP process, in
//! rounds: how long the connects take (the listen backlog's effect) and the POP's
//! resident memory before, while holding and after closing them (the allocator's
//! effect).
//!
//! Each connection makes one `GET /healthz` (so the POP has read from it and allocated
//! its buffers) and then stays open, idle, until every connection of the round is up.
//! The measuring process needs one file descriptor per connection: raise its limit
//! (`ulimit -n`) above `connections` plus a few hundred.

use super::{Node, layout, rss_bytes, wait_healthy};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One round's measurements.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Connections that were established and answered.
    pub held: usize,
    /// Connections that failed (connect or the request).
    pub errors: usize,
    /// Connect latency percentiles (ms).
    pub connect_p50_ms: f64,
    /// 99th percentile connect latency (ms).
    pub connect_p99_ms: f64,
    /// The POP's RSS before the round (MiB).
    pub rss_before_mib: f64,
    /// The POP's RSS while holding every connection (MiB).
    pub rss_holding_mib: f64,
    /// The POP's RSS `settle` after the connections closed (MiB).
    pub rss_after_mib: f64,
}

/// Opens one connection and makes one request on it; returns the stream (kept open) and
/// how long the connect took.
async fn open(addr: SocketAddr) -> anyhow::Result<(TcpStream, Duration)> {
    let started = Instant::now();
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await??;
    let took = started.elapsed();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: pop\r\n\r\n")
        .await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
    anyhow::ensure!(buf[..n].starts_with(b"HTTP/1.1 200"), "not a 200");
    Ok((s, took))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn pct(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// How a burst run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Connections per round.
    pub connections: usize,
    /// Rounds.
    pub rounds: usize,
    /// Wait after closing a round's connections before measuring RSS.
    pub settle: Duration,
    /// The POP's `listen_backlog`.
    pub backlog: u32,
}

/// Starts a POP (its region absent: idle connections never need it) listening with
/// `p.backlog` and runs `p.rounds` bursts of `p.connections`, waiting `p.settle` after
/// each close before measuring.
///
/// # Errors
/// When the POP does not start or its memory cannot be read.
pub async fn run(p: Params) -> anyhow::Result<Vec<Round>> {
    let Params {
        connections,
        rounds,
        settle,
        backlog,
    } = p;
    let dir = tempfile::tempdir()?;
    let layout = layout(dir.path(), &format!("listen_backlog = {backlog}"))?;
    let pop = Node::spawn("pop-node", &layout.pop_config, &layout.logs)?;
    wait_healthy(layout.pop_http, Duration::from_secs(20)).await?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let before = rss_bytes(pop.pid())?;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..connections {
            set.spawn(open(layout.pop_http));
        }
        let (mut streams, mut took, mut errors) = (Vec::new(), Vec::new(), 0);
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok((s, t))) => {
                    streams.push(s);
                    took.push(t);
                }
                _ => errors += 1,
            }
        }
        took.sort();
        let holding = rss_bytes(pop.pid())?;
        let held = streams.len();
        drop(streams);
        tokio::time::sleep(settle).await;
        let after = rss_bytes(pop.pid())?;
        out.push(Round {
            held,
            errors,
            connect_p50_ms: pct(&took, 0.5),
            connect_p99_ms: pct(&took, 0.99),
            rss_before_mib: mib(before),
            rss_holding_mib: mib(holding),
            rss_after_mib: mib(after),
        });
    }
    Ok(out)
}

/// A Markdown rendering of `rounds`.
pub fn table(rounds: &[Round]) -> String {
    let mut s = String::from(
        "| round | held | errors | connect p50 | connect p99 | RSS before | holding | after |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (i, r) in rounds.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.0} MiB | {:.0} MiB | {:.0} MiB |\n",
            i + 1,
            r.held,
            r.errors,
            r.connect_p50_ms,
            r.connect_p99_ms,
            r.rss_before_mib,
            r.rss_holding_mib,
            r.rss_after_mib
        ));
    }
    s
}
