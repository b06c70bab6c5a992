//! `strata cert add|ls|rm`: a tenant's TLS certificates for the hosts it owns, served by
//! POPs for those names (SNI). The key file is sent once and never shown again: listings
//! carry the leaf's subject, issuer, serial, fingerprint and expiry only.

use super::table::Table;
use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use strata::client::{Context, send, send_json};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Upload (or replace) the certificate for HOST (exact, or `*.suffix`): the chain PEM,
    /// leaf first, and the leaf's private key PEM. Claims HOST if nobody owns it.
    Add {
        /// The host it is served for.
        host: String,
        /// The certificate chain, PEM, leaf first.
        cert: PathBuf,
        /// The leaf's private key, PEM.
        key: PathBuf,
    },
    /// List your certificates with their expiry (with --all and the operator token:
    /// every tenant's).
    Ls {
        /// Every certificate, with the operator token.
        #[arg(long)]
        all: bool,
    },
    /// Delete the certificate for HOST (with --operator: anyone's).
    Rm {
        /// The host it was uploaded for.
        host: String,
        /// Use the operator token.
        #[arg(long)]
        operator: bool,
    },
}

/// How long until `not_after` (Unix seconds) from `now`, for a person.
fn expires_in(not_after: i64, now: i64) -> String {
    let left = not_after.saturating_sub(now);
    match left {
        ..=0 => "expired".to_owned(),
        1..86_400 => format!("{}h", left / 3600),
        _ => format!("{}d", left / 86_400),
    }
}

/// The certificates as a table, expiry relative to `now` (Unix seconds).
pub fn render(certs: &[Value], now: i64) -> String {
    let mut t = Table::new(["HOST", "TENANT", "EXPIRES", "IN", "ISSUER", "SHA-256"]);
    for c in certs {
        let not_after = c["not_after"].as_i64().unwrap_or(0);
        let expires = time_of(not_after);
        let fingerprint = c["fingerprint"].as_str().unwrap_or("?");
        t.row([
            c["host"].as_str().unwrap_or("?").to_owned(),
            c["tenant"].as_str().unwrap_or("?").to_owned(),
            expires,
            expires_in(not_after, now),
            c["issuer"].as_str().unwrap_or("?").to_owned(),
            fingerprint.chars().take(16).collect(),
        ]);
    }
    t.render()
}

/// `unix_s` as an HTTP date (`Tue, 15 Jan 2027 08:00:00 GMT`), or the raw seconds
/// before the epoch.
fn time_of(unix_s: i64) -> String {
    u64::try_from(unix_s)
        .ok()
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)))
        .map_or_else(|| unix_s.to_string(), httpdate::fmt_http_date)
}

fn now_unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub async fn run(ctx: &Context, c: CertCommand) -> anyhow::Result<u8> {
    let base = format!("{}/v1/certificates", ctx.region()?);
    match c {
        CertCommand::Add { host, cert, key } => {
            let chain = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let req = ctx
                .http
                .put(format!("{base}/{host}"))
                .bearer_auth(ctx.token()?)
                .json(&json!({ "chain": chain, "key": key_pem }));
            let view: Value = send_json(req).await?;
            if ctx.json {
                println!("{view}");
            } else {
                println!(
                    "certificate for {} stored: {}, expires {} (sha-256 {})",
                    view["host"].as_str().unwrap_or("?"),
                    view["subject"].as_str().unwrap_or("?"),
                    time_of(view["not_after"].as_i64().unwrap_or(0)),
                    view["fingerprint"].as_str().unwrap_or("?"),
                );
            }
        }
        CertCommand::Ls { all } => {
            let token = ctx.token_as(all)?;
            let list: Value = send_json(ctx.http.get(base).bearer_auth(token)).await?;
            if ctx.json {
                println!("{list}");
            } else {
                let empty = Vec::new();
                let certs = list["certificates"].as_array().unwrap_or(&empty);
                print!("{}", render(certs, now_unix_s()));
            }
        }
        CertCommand::Rm { host, operator } => {
            let token = ctx.token_as(operator)?;
            send(ctx.http.delete(format!("{base}/{host}")).bearer_auth(token)).await?;
            if ctx.json {
                println!("{}", json!({ "deleted": host }));
            } else {
                println!("deleted the certificate for {host}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_render_with_their_expiry() {
        let now = 1_800_000_000;
        let out = render(
            &[
                json!({"host": "shop.example", "tenant": "a", "not_after": now + 90 * 86_400,
                       "issuer": "CN=Test CA", "fingerprint": "ab".repeat(32)}),
                json!({"host": "old.example", "tenant": "a", "not_after": now - 1,
                       "issuer": "CN=Test CA", "fingerprint": "cd".repeat(32)}),
            ],
            now,
        );
        assert!(out.contains("shop.example") && out.contains("90d"), "{out}");
        assert!(out.contains("expired") && out.contains("2027 "), "{out}");
    }
}
