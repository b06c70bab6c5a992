//! `strata logs NAME [--follow]`: a function's log lines (guest stderr) from the region,
//! which also holds what POPs shipped.

use clap::Args;
use serde_json::Value;
use std::time::Duration;
use strata::client::{Context, send_json};

/// How often `--follow` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The function's name.
    name: String,
    /// Keep printing new lines as they arrive (Ctrl-C stops).
    #[arg(long, short)]
    follow: bool,
    /// Start at this sequence number (default: the oldest line kept).
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Most lines per request (1-1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: u64,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (UTC, proleptic
/// Gregorian; Howard Hinnant's days-to-civil algorithm).
pub fn timestamp(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// One line for people: time, where it ran, the request (first 8 digits), the text.
pub fn render_line(l: &Value) -> String {
    let request = l["request_id"].as_str().unwrap_or("?");
    format!(
        "{} {} {} {}",
        timestamp(l["ts"].as_u64().unwrap_or(0)),
        l["node"].as_str().unwrap_or("?"),
        request.get(..8).unwrap_or(request),
        l["line"].as_str().unwrap_or("")
    )
}

pub async fn run(ctx: &Context, a: LogsArgs) -> anyhow::Result<u8> {
    let url = format!("{}/v1/functions/{}/logs", ctx.region()?, a.name);
    let token = ctx.token()?;
    let mut since = a.since;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    loop {
        tick.tick().await;
        let page: Value = send_json(
            ctx.http
                .get(&url)
                .bearer_auth(token)
                .query(&[("since", since), ("limit", a.limit)]),
        )
        .await?;
        let empty = Vec::new();
        let lines = page["lines"].as_array().unwrap_or(&empty);
        if ctx.json && !a.follow {
            println!("{page}");
        } else {
            for l in lines {
                // Following, JSON output is one object per line (NDJSON) so it streams.
                if ctx.json {
                    println!("{l}");
                } else {
                    println!("{}", render_line(l));
                }
            }
        }
        since = page["next"].as_u64().unwrap_or(since);
        // A full page means more is waiting: ask again at once.
        if lines.len() as u64 == a.limit {
            tick.reset_immediately();
            if !a.follow && !ctx.json {
                continue;
            }
        }
        if !a.follow {
            return Ok(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(1_795_435_199_123), "2026-11-23T11:59:59.123Z");
    }

    #[test]
    fn a_line_shows_time_node_request_and_text() {
        let l = serde_json::json!({"seq": 0, "ts": 0, "node": "pop/pop-1",
            "request_id": "0123456789abcdef0123456789abcdef", "line": "hi"});
        assert_eq!(
            render_line(&l),
            "1970-01-01T00:00:00.000Z pop/pop-1 01234567 hi"
        );
    }
}
