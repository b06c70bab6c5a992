//! The HTTP/2 (and HTTP/1.1 over TLS) load generator: `h2load` (Debian's
//! `nghttp2-client`; built without HTTP/3 there, see [`super::h3`]), run as its own
//! process, POSTing the benchmark's 1 KiB body with the tenant's token, one stream per
//! connection. Latency percentiles come from its per-request log (`--log-file`), as its
//! summary has no median.

use super::wrk::{BODY_BYTES, LoadResult};
use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Which protocol `h2load` speaks over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/2, ALPN `h2`.
    H2,
    /// HTTP/1.1, ALPN `http/1.1`.
    H1,
}

/// Fails with installation advice when `h2load` is not on the `PATH`.
///
/// # Errors
/// When `h2load` cannot be run.
pub fn check_installed() -> anyhow::Result<()> {
    match Command::new("h2load").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "the benchmark's HTTP/2 load generator `h2load` is not installed ({e}); install it \
             with `apt-get update && apt-get install -y nghttp2-client` and run again"
        ),
    }
}

/// Runs `h2load` against `url` (an `https://localhost:PORT/...` URL; it connects to
/// 127.0.0.1 with SNI `localhost`) for `duration` after a one-second warm-up, with
/// `connections` connections of one stream each.
///
/// # Errors
/// When `h2load` fails or its output cannot be parsed.
pub fn run(
    dir: &Path,
    url: &str,
    token: &str,
    protocol: Protocol,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let body = dir.join("h2load-body");
    std::fs::write(&body, vec![b'x'; BODY_BYTES]).context("writing the h2load body")?;
    let log = dir.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .context("a port in the URL")?;
    let mut cmd = Command::new("h2load");
    cmd.arg(format!("-c{connections}"))
        .arg(format!("-t{}", connections.clamp(1, 2)))
        .arg("-m1")
        .arg(format!("-D{}", duration.as_secs().max(1)))
        .arg("--warm-up-time=1")
        .arg(format!("--connect-to=127.0.0.1:{port}"))
        .arg("-d")
        .arg(&body)
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg("-H")
        .arg("content-type: application/octet-stream")
        .arg(format!("--log-file={}", log.display()));
    if protocol == Protocol::H1 {
        cmd.arg("--h1");
    }
    let out = cmd.arg(url).output().context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r =
        parse_summary(&text).with_context(|| format!("parsing h2load's output:\n{text}"))?;
    let log = std::fs::read_to_string(&log).context("reading h2load's log")?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for line in log.lines() {
        let mut cols = line.split('\t');
        let (Some(_start), Some(status), Some(us)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        if status.starts_with('2') {
            hist.record(us.trim().parse().context("a duration in the log")?)?;
        }
    }
    if hist.is_empty() {
        bail!("h2load logged no successful request to {url}");
    }
    r.p50_us = hist.value_at_quantile(0.5) as f64;
    r.p99_us = hist.value_at_quantile(0.99) as f64;
    Ok(r)
}

/// Requests per second and the failed count from `h2load`'s summary.
fn parse_summary(text: &str) -> anyhow::Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        // "finished in 10.00s, 13570.40 req/s, 15.03MB/s"
        if let Some(rest) = line.strip_prefix("finished in ") {
            let rps = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" req/s"))
                .context("req/s")?;
            r.requests_per_sec = rps.parse().context("req/s")?;
            seen = true;
        }
        // "requests: 135704 total, 135768 started, 135704 done, 135704 succeeded, 0 failed, 0 errored, 0 timeout"
        if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                match part.split_once(' ') {
                    Some((n, "succeeded")) => r.requests = n.parse().context("succeeded")?,
                    Some((n, "failed" | "errored" | "timeout")) => {
                        r.errors += n.parse::<u64>().context("failed")?;
                    }
                    _ => {}
                }
            }
        }
        // "status codes: 135704 2xx, 0 3xx, 0 4xx, 0 5xx"
        if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(", ") {
                if let Some((n, "4xx" | "5xx")) = part.split_once(' ') {
                    r.errors += n.parse::<u64>().context("status count")?;
                }
            }
        }
    }
    if !seen {
        bail!("no `finished in` line");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_summaries_parse() {
        let text = "starting benchmark...\n\
            finished in 10.00s, 13570.40 req/s, 15.03MB/s\n\
            requests: 135704 total, 135768 started, 135704 done, 135700 succeeded, 4 failed, 4 errored, 0 timeout\n\
            status codes: 135700 2xx, 0 3xx, 0 4xx, 4 5xx\n";
        let r = parse_summary(text).expect("parses");
        assert!((r.requests_per_sec - 13_570.4).abs() < 1e-6);
        assert_eq!(r.requests, 135_700);
        assert_eq!(r.errors, 12);
        assert!(parse_summary("garbage").is_err());
    }
}
