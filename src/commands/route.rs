//! `strata route add|ls|rm`: a tenant's HTTP routes.

use super::table::Table;
use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use strata::client::{Context, send, send_json};

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Route plain HTTP requests for HOST under PATH_PREFIX to FUNCTION[:QUALIFIER].
    Add {
        /// Exact hostname, or `*.suffix` for every host under suffix.
        host: String,
        /// Path prefix, starting with `/` (matched on segment boundaries; not under /v1).
        path_prefix: String,
        /// The function, optionally with a version or alias: `shop` or `shop:live`.
        target: String,
        /// Take each request's affinity key from this cookie (a session id): one visitor
        /// reaches one warm instance and stays on one version of a weighted alias.
        #[arg(long, value_name = "NAME", conflicts_with = "affinity_header")]
        affinity_cookie: Option<String>,
        /// Take each request's affinity key from this request header.
        #[arg(long, value_name = "NAME")]
        affinity_header: Option<String>,
    },
    /// List your routes.
    Ls,
    /// Delete a route by id (from `strata route ls`).
    Rm {
        /// The route's id.
        id: String,
    },
}

/// Splits `FUNCTION[:QUALIFIER]`.
///
/// # Errors
/// When either part is empty.
pub fn parse_target(target: &str) -> anyhow::Result<(&str, Option<&str>)> {
    let (function, qualifier) = match target.split_once(':') {
        Some((f, q)) => (f, Some(q)),
        None => (target, None),
    };
    if function.is_empty() || qualifier.is_some_and(str::is_empty) {
        bail!("the target is FUNCTION or FUNCTION:QUALIFIER, got {target:?}");
    }
    Ok((function, qualifier))
}

fn target_of(r: &Value) -> String {
    let f = r["function"].as_str().unwrap_or("?");
    match r["qualifier"].as_str() {
        Some(q) => format!("{f}:{q}"),
        None => f.to_owned(),
    }
}

/// The routes as a table.
pub fn render(routes: &[Value]) -> String {
    let mut t = Table::new(["ID", "HOST", "PATH_PREFIX", "TARGET"]);
    for r in routes {
        t.row([
            r["id"].as_str().unwrap_or("?").to_owned(),
            r["host"].as_str().unwrap_or("?").to_owned(),
            r["path_prefix"].as_str().unwrap_or("?").to_owned(),
            target_of(r),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Context, c: RouteCommand) -> anyhow::Result<u8> {
    let base = format!("{}/v1/routes", ctx.region()?);
    match c {
        RouteCommand::Add {
            host,
            path_prefix,
            target,
            affinity_cookie,
            affinity_header,
        } => {
            let (function, qualifier) = parse_target(&target)?;
            let affinity = match (affinity_cookie, affinity_header) {
                (Some(name), _) => json!({ "cookie": name }),
                (None, Some(name)) => json!({ "header": name }),
                (None, None) => Value::Null,
            };
            let body = json!({
                "host": host, "path_prefix": path_prefix,
                "function": function, "qualifier": qualifier, "affinity": affinity,
            });
            let route: Value =
                send_json(ctx.http.post(base).bearer_auth(ctx.token()?).json(&body)).await?;
            if ctx.json {
                println!("{route}");
            } else {
                println!(
                    "route {}: http://{}{} -> {}",
                    route["id"].as_str().unwrap_or("?"),
                    route["host"].as_str().unwrap_or("?"),
                    route["path_prefix"].as_str().unwrap_or("?"),
                    target_of(&route)
                );
            }
        }
        RouteCommand::Ls => {
            let list: Value = send_json(ctx.http.get(base).bearer_auth(ctx.token()?)).await?;
            if ctx.json {
                println!("{list}");
            } else {
                let empty = Vec::new();
                print!("{}", render(list["routes"].as_array().unwrap_or(&empty)));
            }
        }
        RouteCommand::Rm { id } => {
            send(
                ctx.http
                    .delete(format!("{base}/{id}"))
                    .bearer_auth(ctx.token()?),
            )
            .await?;
            if ctx.json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted route {id}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_function_and_qualifier() {
        assert_eq!(parse_target("shop").expect("ok"), ("shop", None));
        assert_eq!(
            parse_target("shop:live").expect("ok"),
            ("shop", Some("live"))
        );
        assert!(parse_target("shop:").is_err());
        assert!(parse_target(":live").is_err());
    }

    #[test]
    fn routes_render_as_an_aligned_table() {
        let routes = [
            json!({"id": "0123456789abcdef", "host": "shop.example", "path_prefix": "/api",
                   "function": "shop", "qualifier": "live"}),
            json!({"id": "fedcba9876543210", "host": "a.example", "path_prefix": "/",
                   "function": "hello", "qualifier": null}),
        ];
        let out = render(&routes);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID"));
        assert!(lines[1].contains("shop:live"));
        assert!(lines[2].ends_with("hello"));
        // Columns line up: HOST starts at the same offset on every line.
        let col = lines[0].find("HOST").expect("header");
        assert_eq!(lines[1].find("shop.example"), Some(col));
    }
}
