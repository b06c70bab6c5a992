//! `strata publish` and `strata alias set|ls|rm`: immutable versions and the aliases that
//! point at one version or split traffic between two.

use super::table::Table;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use strata::client::{Context, send, send_json};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The function whose $LATEST becomes a new numbered version.
    name: String,
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at one version (`3`) or split it between two (`3=90 4=10`).
    Set {
        /// The function's name.
        name: String,
        /// The alias (e.g. `live`).
        alias: String,
        /// VERSION or VERSION=WEIGHT, once or twice; weights are percentages summing to 100.
        #[arg(required = true, num_args = 1..=2, value_name = "V[=W]")]
        routing: Vec<String>,
        /// Roll a two-version split back to the older version automatically when the
        /// newer one fails more often (the runtime canary's test).
        #[arg(long)]
        auto_rollback: bool,
    },
    /// List a function's aliases.
    Ls {
        /// The function's name.
        name: String,
    },
    /// Delete an alias.
    Rm {
        /// The function's name.
        name: String,
        /// The alias.
        alias: String,
    },
}

/// One entry of an alias's routing, as the API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Weighted {
    /// A published version number.
    pub version: u32,
    /// Percentage of the alias's traffic.
    pub weight: u32,
}

/// Parses `V[=W] [V2=W2]`: one version alone gets 100; two need weights summing to 100.
///
/// # Errors
/// A message saying what is wrong with the spec.
pub fn parse_routing(specs: &[String]) -> anyhow::Result<Vec<Weighted>> {
    let mut out = Vec::new();
    for spec in specs {
        let (v, w) = match spec.split_once('=') {
            Some((v, w)) => (v, Some(w)),
            None => (spec.as_str(), None),
        };
        let version: u32 = v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{spec:?}: the version must be a number from 1"))?;
        let weight = match w {
            None => None,
            Some(w) => Some(
                w.parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 100)
                    .with_context(|| format!("{spec:?}: the weight must be 0 to 100"))?,
            ),
        };
        out.push((version, weight));
    }
    match out.as_slice() {
        [(v, None | Some(100))] => Ok(vec![Weighted {
            version: *v,
            weight: 100,
        }]),
        [(_, Some(w))] => bail!("a single version takes all traffic; drop the weight {w}"),
        [(v1, Some(w1)), (v2, Some(w2))] if w1 + w2 == 100 && v1 != v2 => Ok(vec![
            Weighted {
                version: *v1,
                weight: *w1,
            },
            Weighted {
                version: *v2,
                weight: *w2,
            },
        ]),
        [(v1, _), (v2, _)] if v1 == v2 => bail!("the two versions must differ"),
        [_, _] => bail!("two versions need weights that sum to 100, e.g. `3=90 4=10`"),
        _ => bail!("give one version or two with weights"),
    }
}

fn routing_text(routing: &Value) -> String {
    let empty = Vec::new();
    routing
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| format!("{}={}%", r["version"], r["weight"]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Aliases as a table.
pub fn render_aliases(aliases: &[Value]) -> String {
    let mut t = Table::new(["ALIAS", "ROUTING", "REVISION"]);
    for a in aliases {
        t.row([
            a["name"].as_str().unwrap_or("?").to_owned(),
            routing_text(&a["routing"]),
            a["revision"].to_string(),
        ]);
    }
    t.render()
}

pub async fn publish(ctx: &Context, a: PublishArgs) -> anyhow::Result<u8> {
    let url = format!("{}/v1/functions/{}/versions", ctx.region()?, a.name);
    let v: Value = send_json(ctx.http.post(url).bearer_auth(ctx.token()?)).await?;
    if ctx.json {
        println!("{v}");
    } else {
        // Just the number, so `V=$(strata publish f)` works.
        println!("{}", v["version"]);
    }
    Ok(0)
}

pub async fn alias(ctx: &Context, c: AliasCommand) -> anyhow::Result<u8> {
    let region = ctx.region()?;
    match c {
        AliasCommand::Set {
            name,
            alias,
            routing,
            auto_rollback,
        } => {
            let routing = parse_routing(&routing)?;
            let url = format!("{region}/v1/functions/{name}/aliases/{alias}");
            let v: Value = send_json(
                ctx.http
                    .put(url)
                    .bearer_auth(ctx.token()?)
                    .json(&json!({ "routing": routing, "auto_rollback": auto_rollback })),
            )
            .await?;
            if ctx.json {
                println!("{v}");
            } else {
                println!("{name}:{alias} -> {}", routing_text(&v["routing"]));
            }
        }
        AliasCommand::Ls { name } => {
            let url = format!("{region}/v1/functions/{name}/aliases");
            let v: Value = send_json(ctx.http.get(url).bearer_auth(ctx.token()?)).await?;
            if ctx.json {
                println!("{v}");
            } else {
                let empty = Vec::new();
                print!(
                    "{}",
                    render_aliases(v["aliases"].as_array().unwrap_or(&empty))
                );
            }
        }
        AliasCommand::Rm { name, alias } => {
            let url = format!("{region}/v1/functions/{name}/aliases/{alias}");
            send(ctx.http.delete(url).bearer_auth(ctx.token()?)).await?;
            if ctx.json {
                println!("{}", json!({"deleted": alias, "function": name}));
            } else {
                println!("deleted alias {name}:{alias}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(specs: &[&str]) -> anyhow::Result<Vec<(u32, u32)>> {
        let owned: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
        Ok(parse_routing(&owned)?
            .into_iter()
            .map(|w| (w.version, w.weight))
            .collect())
    }

    #[test]
    fn one_version_takes_everything_and_two_split_by_weight() {
        assert_eq!(parse(&["3"]).expect("ok"), [(3, 100)]);
        assert_eq!(parse(&["3=100"]).expect("ok"), [(3, 100)]);
        assert_eq!(parse(&["3=90", "4=10"]).expect("ok"), [(3, 90), (4, 10)]);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (bad, says) in [
            (&["0"][..], "number from 1"),
            (&["x"][..], "number from 1"),
            (&["3=101"][..], "0 to 100"),
            (&["3=50"][..], "single version"),
            (&["3=90", "4=20"][..], "sum to 100"),
            (&["3", "4"][..], "sum to 100"),
            (&["3=50", "3=50"][..], "must differ"),
        ] {
            let err = parse(bad).expect_err("refused").to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_request_body_has_the_agreed_shape() {
        let body = json!({"routing": parse_routing(&["3=90".into(), "4=10".into()]).expect("ok")});
        assert_eq!(
            body,
            json!({"routing": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]})
        );
    }

    #[test]
    fn aliases_render_with_their_split() {
        let out = render_aliases(&[json!({"name": "live", "function": "f",
            "routing": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}],
            "revision": 7})]);
        assert!(
            out.lines().nth(1).expect("row").contains("3=90% 4=10%"),
            "{out}"
        );
    }
}
