//! `strata dlq ls | show ID | replay ID|--all | purge`: the tenant's dead-letter queue at
//! the region (failed async invocations and failed control functions).

use super::logs::timestamp;
use super::table::Table;
use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;
use strata::client::{Context, send_json};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    Ls {
        /// Only those with a higher id (to page on).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most listed (1-1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Show one dead letter, with its payload.
    Show {
        /// The dead letter's id.
        id: u64,
    },
    /// Re-enqueue one dead letter (or all) with fresh attempts.
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge,
}

/// Runs one `strata dlq` subcommand.
pub async fn run(ctx: &Context, command: DlqCommand) -> anyhow::Result<u8> {
    let base = format!("{}/v1/dlq", ctx.region()?);
    let token = ctx.token()?;
    let http = &ctx.http;
    match command {
        DlqCommand::Ls { after, limit } => {
            let page: Value = send_json(
                http.get(&base)
                    .bearer_auth(token)
                    .query(&[("after", after), ("limit", limit)]),
            )
            .await?;
            if ctx.json {
                println!("{page}");
                return Ok(0);
            }
            let mut t = Table::new([
                "ID", "FUNCTION", "VERSION", "KIND", "ERROR", "REASON", "ATTEMPTS", "LAST",
                "REQUEST",
            ]);
            let empty = Vec::new();
            for d in page["items"].as_array().unwrap_or(&empty) {
                t.row(row(d));
            }
            print!("{}", t.render());
            if let Some(next) = page["next"].as_u64() {
                eprintln!("-- more: strata dlq ls --after {next}");
            }
        }
        DlqCommand::Show { id } => {
            let d: Value = send_json(http.get(format!("{base}/{id}")).bearer_auth(token)).await?;
            if ctx.json {
                println!("{d}");
                return Ok(0);
            }
            let s = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            let ms = |k: &str| d[k].as_u64().map_or_else(|| "-".into(), timestamp);
            println!("id          {}", d["id"]);
            println!("request     {}", s("request_id"));
            println!("function    {} ({})", s("function"), s("kind"));
            println!("qualifier   {}  version {}", s("qualifier"), s("version"));
            println!(
                "error       {}: {}",
                d["error"]["kind"].as_str().unwrap_or("?"),
                d["error"]["message"].as_str().unwrap_or("")
            );
            println!("reason      {}  attempts {}", s("reason"), d["attempts"]);
            println!("enqueued    {}", ms("enqueued_at_ms"));
            println!("first try   {}", ms("first_attempt_ms"));
            println!("last try    {}", ms("last_attempt_ms"));
            println!("payload     {} (base64)", s("payload"));
        }
        DlqCommand::Replay { id, all } => {
            let url = match (id, all) {
                (_, true) => format!("{base}/replay"),
                (Some(id), false) => format!("{base}/{id}/replay"),
                (None, false) => bail!("give a dead letter id or --all"),
            };
            let r: Value = send_json(http.post(url).bearer_auth(token)).await?;
            if ctx.json {
                println!("{r}");
            } else {
                println!("replayed {}", r["count"]);
            }
        }
        DlqCommand::Purge => {
            let r: Value = send_json(http.delete(&base).bearer_auth(token)).await?;
            if ctx.json {
                println!("{r}");
            } else {
                println!("purged {}", r["count"]);
            }
        }
    }
    Ok(0)
}

fn row(d: &Value) -> [String; 9] {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let request = s(&d["request_id"]);
    [
        d["id"].to_string(),
        s(&d["function"]),
        s(&d["version"]),
        s(&d["kind"]),
        s(&d["error"]["kind"]),
        s(&d["reason"]),
        d["attempts"].to_string(),
        d["last_attempt_ms"]
            .as_u64()
            .map_or_else(|| "-".into(), timestamp),
        request.get(..8).unwrap_or(&request).to_owned(),
    ]
}
