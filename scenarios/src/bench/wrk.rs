//! The load generator: `wrk` (Debian's `wrk` package), run as its own process against one
//! server at a time, POSTing the benchmark's 1 KiB body with the tenant's token; its
//! summary is parsed into a [`LoadResult`].

use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The request body every guest echoes.
pub const BODY_BYTES: usize = 1024;

/// One `wrk` run's summary.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadResult {
    /// Completed requests per second.
    pub requests_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Requests completed.
    pub requests: u64,
    /// Non-2xx answers plus socket errors.
    pub errors: u64,
    /// The server process's CPU time per completed request, microseconds ([`super::cpu`]);
    /// `None` where it was not measured.
    pub server_cpu_us: Option<f64>,
}

/// Fails with installation advice when `wrk` is not on the `PATH`.
///
/// # Errors
/// When `wrk` cannot be run.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "the benchmark's load generator `wrk` is not installed ({e}); install it with \
             `apt-get update && apt-get install -y wrk` (Debian/Ubuntu) and run again"
        ),
    }
}

/// Writes the Lua script that makes `wrk` POST the body with `token` to `dir`.
///
/// # Errors
/// When the file cannot be written.
pub fn script(dir: &Path, token: Option<&str>) -> anyhow::Result<std::path::PathBuf> {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {BODY_BYTES})\n\
         wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    );
    if let Some(t) = token {
        lua.push_str(&format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n"
        ));
    }
    let path = dir.join(format!("post-{}.lua", token.is_some()));
    std::fs::write(&path, lua).context("writing the wrk script")?;
    Ok(path)
}

/// Runs `wrk` against `url` for `duration` with `connections` (and as many threads as
/// that allows, at most 2), then parses its summary.
///
/// # Errors
/// When `wrk` fails or its output cannot be parsed.
pub fn run(
    url: &str,
    script: &Path,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let threads = connections.clamp(1, 2);
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("parsing wrk's output:\n{text}"))
}

/// Parses `wrk --latency`'s summary.
fn parse(text: &str) -> anyhow::Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut seen_rps = false;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(v)) => r.p50_us = micros(v)?,
            (Some("99%"), Some(v)) => r.p99_us = micros(v)?,
            (Some("Requests/sec:"), Some(v)) => {
                r.requests_per_sec = v.parse().context("Requests/sec")?;
                seen_rps = true;
            }
            (Some("Non-2xx"), _) => {
                r.errors += last_number(line)?;
            }
            (Some("Socket"), Some("errors:")) => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                for part in line.trim_start_matches("Socket errors:").split(',') {
                    if let Some(n) = part.split_whitespace().last() {
                        r.errors += n.parse::<u64>().unwrap_or(0);
                    }
                }
            }
            (Some(n), Some("requests")) if line.contains(" requests in ") => {
                r.requests = n.parse().context("requests")?;
            }
            _ => {}
        }
    }
    if !seen_rps {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

fn last_number(line: &str) -> anyhow::Result<u64> {
    line.split_whitespace()
        .last()
        .context("empty line")?
        .parse()
        .context("a count")
}

/// `78.00us`, `1.20ms`, `2.00s`, `1.00m` in microseconds.
fn micros(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a latency without a unit")?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().context("a latency")?;
    Ok(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        other => bail!("unknown latency unit {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summaries_parse() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n\
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            Latency   480.12us  200.00us   9.00ms   90.00%\n\
            Latency Distribution\n     50%  412.00us\n     75%  500.00us\n     90%  700.00us\n\
                 99%    1.20ms\n  1347000 requests in 10.00s, 1.5GB read\n\
            Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Non-2xx or 3xx responses: 4\nRequests/sec: 134700.12\nTransfer/sec: 150MB\n";
        let r = parse(text).expect("parses");
        assert_eq!(r.requests, 1_347_000);
        assert_eq!(r.errors, 7);
        assert!((r.p50_us - 412.0).abs() < 1e-9);
        assert!((r.p99_us - 1200.0).abs() < 1e-9);
        assert!((r.requests_per_sec - 134_700.12).abs() < 1e-6);
        assert!(parse("garbage").is_err());
    }
}
