//! `strata host ls|claim|assign|release`: which tenant owns which host. A route's host
//! must belong to its tenant; adding a route claims an unowned host, `claim` keeps it
//! after the last route goes, and the operator assigns or releases any host.

use super::table::Table;
use clap::Subcommand;
use serde_json::{Value, json};
use strata::client::{Context, send, send_json};

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List your hosts (with --all and the operator token: every tenant's).
    Ls {
        /// Every claim, with the operator token.
        #[arg(long)]
        all: bool,
    },
    /// Claim HOST (and every name under it) for your tenant until you release it.
    Claim {
        /// A hostname (no wildcard: a claim covers its subdomains).
        host: String,
    },
    /// Assign HOST to TENANT (operator token; IP literals and localhost allowed).
    Assign {
        /// A hostname.
        host: String,
        /// The tenant that will own it.
        tenant: String,
    },
    /// Release HOST: yours (kept while your routes are under it), or with --operator
    /// anyone's, deleting the owner's routes under it.
    Release {
        /// The claimed host.
        host: String,
        /// Use the operator token.
        #[arg(long)]
        operator: bool,
    },
}

/// The claims as a table.
pub fn render(hosts: &[Value]) -> String {
    let mut t = Table::new(["HOST", "TENANT", "KIND"]);
    for h in hosts {
        let kind = if h["explicit"].as_bool() == Some(true) {
            "claimed"
        } else {
            "by route"
        };
        t.row([
            h["host"].as_str().unwrap_or("?").to_owned(),
            h["tenant"].as_str().unwrap_or("?").to_owned(),
            kind.to_owned(),
        ]);
    }
    t.render()
}

fn print_claim(ctx: &Context, claim: &Value) {
    if ctx.json {
        println!("{claim}");
    } else {
        println!(
            "host {} belongs to {}",
            claim["host"].as_str().unwrap_or("?"),
            claim["tenant"].as_str().unwrap_or("?")
        );
    }
}

pub async fn run(ctx: &Context, c: HostCommand) -> anyhow::Result<u8> {
    let base = format!("{}/v1/hosts", ctx.region()?);
    match c {
        HostCommand::Ls { all } => {
            let token = ctx.token_as(all)?;
            let list: Value = send_json(ctx.http.get(base).bearer_auth(token)).await?;
            if ctx.json {
                println!("{list}");
            } else {
                let empty = Vec::new();
                print!("{}", render(list["hosts"].as_array().unwrap_or(&empty)));
            }
        }
        HostCommand::Claim { host } => {
            let req = ctx
                .http
                .put(format!("{base}/{host}"))
                .bearer_auth(ctx.token()?);
            print_claim(ctx, &send_json(req).await?);
        }
        HostCommand::Assign { host, tenant } => {
            let req = ctx
                .http
                .put(format!("{base}/{host}"))
                .bearer_auth(ctx.admin_token()?)
                .json(&json!({ "tenant": tenant }));
            print_claim(ctx, &send_json(req).await?);
        }
        HostCommand::Release { host, operator } => {
            let token = ctx.token_as(operator)?;
            send(ctx.http.delete(format!("{base}/{host}")).bearer_auth(token)).await?;
            if ctx.json {
                println!("{}", json!({ "released": host }));
            } else {
                println!("released host {host}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_render_as_a_table() {
        let out = render(&[
            json!({"host": "shop.example", "tenant": "a", "explicit": false}),
            json!({"host": "127.0.0.1", "tenant": "b", "explicit": true}),
        ]);
        assert!(
            out.contains("shop.example") && out.contains("by route"),
            "{out}"
        );
        assert!(out.contains("claimed"), "{out}");
    }
}
