//! The CLI's subcommands other than `dev`: parse, call one API, print. Human output by
//! default, one JSON document with `--json`.
//!
//! Exit codes: 0 success; 1 the request failed (the server refused it with 4xx/5xx, the
//! function failed, or no node could be reached), with the error kind, message and a hint
//! on stderr; 2 usage error (from clap).
//!
//! One module per resource: [`route`], [`host`], [`cert`], [`logs`], [`dlq`], [`version`] (publish, aliases); the
//! function, tenant, token and dev CA (`certs init`) commands are here.

pub mod cert;
pub mod dlq;
pub mod host;
pub mod logs;
pub mod route;
mod table;
pub mod version;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use strata::client::{Context, deploy_form, error_message, send, send_json, unreachable};

/// Exit code for a failed request.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The function's name.
    name: String,
    /// The module: WebAssembly binary (.wasm) or text (.wat).
    file: PathBuf,
    /// Memory limit in MiB (default 128).
    #[arg(long)]
    memory_mb: Option<u32>,
    /// Timeout in milliseconds (default 3000).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Guest ABI: command, reactor or http (default: http for a component, command for a
    /// module).
    #[arg(long)]
    abi: Option<String>,
    /// Placement: auto, edge or region.
    #[arg(long)]
    placement: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A destination an http-ABI guest may send requests to, `scheme://host[:port]`
    /// (repeatable; Spin's `allowed_outbound_hosts`). Default: none.
    #[arg(long = "allow-outbound", value_name = "URL")]
    allow_outbound: Vec<String>,
    /// Keep an http-ABI component's instance warm and reuse it for the next requests
    /// (its globals and memory persist between requests; docs/guest-abi.md). Default: a
    /// fresh instance per request.
    #[arg(long)]
    reuse_instances: bool,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function's name.
    name: String,
    /// Payload (stdin of the function).
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the payload from a file.
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Version or alias to invoke.
    #[arg(long)]
    qualifier: Option<String>,
    /// Invoke asynchronously.
    #[arg(long)]
    event: bool,
    /// Route to the instance that served this key before.
    #[arg(long)]
    affinity: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// The tenant's id.
        id: String,
        /// Largest memory any of its functions may use, in MiB.
        #[arg(long)]
        max_memory_mb: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token for a tenant (shown once).
    Create {
        /// The tenant's id.
        tenant: String,
        /// Expire the token this many seconds after it is issued (default: never).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List a tenant's tokens: ids (hashes), creation and expiry, never the tokens.
    Ls {
        /// The tenant's id.
        tenant: String,
    },
    /// Revoke a token: refused at the region at once and at every POP within seconds.
    Revoke {
        /// The tenant's id.
        tenant: String,
        /// The token's id, as `strata token ls` shows it.
        id: String,
    },
    /// Issue a new token and revoke the old one (the new token is shown once).
    Rotate {
        /// The tenant's id.
        tenant: String,
        /// The old token's id, as `strata token ls` shows it.
        id: String,
        /// Expire the new token this many seconds after it is issued (default: never).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a dev CA and region/POP certificates in DIR (kept if present).
    Init {
        /// Target directory.
        dir: PathBuf,
    },
}

/// Reads a module file, converting WebAssembly text to binary.
fn read_module(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    strata::client::module_bytes(bytes)
        .with_context(|| format!("{} is neither a wasm binary nor valid WAT", path.display()))
}

pub async fn deploy(ctx: &Context, a: DeployArgs) -> anyhow::Result<u8> {
    let module = read_module(&a.file)?;
    let mut config = serde_json::Map::new();
    if let Some(v) = a.memory_mb {
        config.insert("memory_mb".into(), json!(v));
    }
    if let Some(v) = a.timeout_ms {
        config.insert("timeout_ms".into(), json!(v));
    }
    // A component is the http ABI's (the region checks it exports the handler).
    let abi = a
        .abi
        .or_else(|| common::sandbox::is_component(&module).then(|| "http".to_owned()));
    if let Some(v) = abi {
        config.insert("abi".into(), json!(v));
    }
    if !a.allow_outbound.is_empty() {
        config.insert(
            "outbound".into(),
            json!({"allowed_outbound_hosts": a.allow_outbound}),
        );
    }
    if a.reuse_instances {
        config.insert("reuse_instances".into(), json!(true));
    }
    if let Some(v) = a.placement {
        config.insert("placement".into(), json!(v));
    }
    if !a.env.is_empty() {
        let mut env = serde_json::Map::new();
        for kv in &a.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env takes KEY=VALUE, got {kv:?}");
            };
            env.insert(k.into(), json!(v));
        }
        config.insert("env".into(), Value::Object(env));
    }
    let form = deploy_form(&Value::Object(config), module)?;
    let url = format!("{}/v1/functions/{}", ctx.region()?, a.name);
    let view: Value =
        send_json(ctx.http.put(url).bearer_auth(ctx.token()?).multipart(form)).await?;
    if ctx.json {
        println!("{view}");
    } else {
        println!(
            "deployed {} ($LATEST, digest {}, revision {})",
            a.name,
            short(&view["digest"]),
            view["revision"]
        );
    }
    Ok(0)
}

fn short(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().take(12).collect())
        .unwrap_or_default()
}

pub async fn invoke(ctx: &Context, a: InvokeArgs) -> anyhow::Result<u8> {
    let payload = match (&a.data, &a.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => Vec::new(),
    };
    let mut req = ctx
        .http
        .post(format!("{}/v1/functions/{}/invoke", ctx.pop()?, a.name))
        .bearer_auth(ctx.token()?)
        .body(payload);
    if let Some(q) = &a.qualifier {
        req = req.query(&[("qualifier", q)]);
    }
    if a.event {
        req = req.header("x-strata-invocation-type", "event");
    }
    if let Some(k) = &a.affinity {
        req = req.header("x-strata-affinity", k);
    }
    let resp = req.send().await.map_err(unreachable)?;
    let status = resp.status();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (request_id, executed_at, start, version, function_error) = (
        header("x-strata-request-id"),
        header("x-strata-executed-at"),
        header("x-strata-start"),
        header("x-strata-version"),
        header("x-strata-function-error"),
    );
    let body = resp.bytes().await.context("reading response")?;
    let ok = status.is_success();
    if ctx.json {
        println!(
            "{}",
            json!({
                "status": status.as_u16(),
                "body": String::from_utf8_lossy(&body),
                "request_id": request_id,
                "executed_at": executed_at,
                "start": start,
                "version": version,
                "function_error": function_error,
            })
        );
    } else if ok {
        print!("{}", String::from_utf8_lossy(&body));
        eprintln!(
            "-- {status} from {} ({} start, version {}, request {})",
            executed_at.as_deref().unwrap_or("?"),
            start.as_deref().unwrap_or("?"),
            version.as_deref().unwrap_or("?"),
            request_id.as_deref().unwrap_or("?"),
        );
    } else {
        eprintln!("error: {}", error_message(status, &body));
    }
    Ok(if ok { 0 } else { EXIT_FAILURE })
}

pub async fn ls(ctx: &Context) -> anyhow::Result<u8> {
    let list: Value = send_json(
        ctx.http
            .get(format!("{}/v1/functions", ctx.region()?))
            .bearer_auth(ctx.token()?),
    )
    .await?;
    if ctx.json {
        println!("{list}");
        return Ok(0);
    }
    let empty = Vec::new();
    let functions = list["functions"].as_array().unwrap_or(&empty);
    println!(
        "{:<24} {:<12} {:>8} {:>10} {:<8} {:<9} {:>8} {:>20} {:>6}",
        "NAME",
        "DIGEST",
        "MEMORY",
        "TIMEOUT",
        "ABI",
        "PLACEMENT",
        "REVISION",
        "PEAK P50/P90/P99",
        "REC"
    );
    for f in functions {
        let c = &f["config"];
        let num = |v: &Value| v.as_u64().unwrap_or_default();
        println!(
            "{:<24} {:<12} {:>6}Mi {:>8}ms {:<8} {:<9} {:>8} {:>20} {:>6}",
            f["name"].as_str().unwrap_or("?"),
            short(&f["digest"]),
            num(&c["memory_mb"]),
            num(&c["timeout_ms"]),
            c["abi"].as_str().unwrap_or("?"),
            c["placement"].as_str().unwrap_or("?"),
            num(&f["revision"]),
            peaks_text(&f["memory"]),
            recommended_text(&f["memory"]),
        );
    }
    Ok(0)
}

/// Observed peak memory as `p50/p90/p99` MiB, or `-` before any sample.
fn peaks_text(memory: &Value) -> String {
    let p = &memory["observed_peak_mb"];
    match (p["p50"].as_f64(), p["p90"].as_f64(), p["p99"].as_f64()) {
        (Some(a), Some(b), Some(c)) => format!("{a:.1}/{b:.1}/{c:.1}Mi"),
        _ => "-".into(),
    }
}

/// The recommended `memory_mb`, or `-` before any sample.
fn recommended_text(memory: &Value) -> String {
    memory["recommended_mb"]
        .as_u64()
        .map_or_else(|| "-".into(), |mb| format!("{mb}Mi"))
}

/// `strata info NAME`: one function's configuration and observed memory.
pub async fn info(ctx: &Context, name: &str) -> anyhow::Result<u8> {
    let f: Value = send_json(
        ctx.http
            .get(format!("{}/v1/functions/{name}", ctx.region()?))
            .bearer_auth(ctx.token()?),
    )
    .await?;
    if ctx.json {
        println!("{f}");
        return Ok(0);
    }
    let c = &f["config"];
    let m = &f["memory"];
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let num = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
    println!("name:            {}", text(&f["name"]));
    println!("digest:          {}", text(&f["digest"]));
    println!("memory_mb:       {}", num(&c["memory_mb"]));
    println!("timeout_ms:      {}", num(&c["timeout_ms"]));
    println!("abi:             {}", text(&c["abi"]));
    println!("placement:       {}", text(&c["placement"]));
    if c["abi"] == "http" {
        let reuse = c["reuse_instances"].as_bool().unwrap_or(false);
        let shown = if reuse { "reused" } else { "fresh per request" };
        println!("instances:       {shown}");
    }
    println!("peak p50/p90/p99: {}", peaks_text(m));
    println!("samples:         {}", num(&m["samples"]));
    println!("recommended:     {}", recommended_text(m));
    println!("learned:         {}", num(&m["learned_mb"]));
    println!("oom retries:     {}", num(&m["oom_retries"]));
    Ok(0)
}

pub async fn rm(ctx: &Context, name: &str) -> anyhow::Result<u8> {
    let resp = ctx
        .http
        .delete(format!("{}/v1/functions/{name}", ctx.region()?))
        .bearer_auth(ctx.token()?)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "{}",
            error_message(status, &resp.bytes().await.unwrap_or_default())
        );
    }
    if ctx.json {
        println!("{}", json!({"deleted": name}));
    } else {
        println!("deleted {name}");
    }
    Ok(0)
}

pub async fn tenant(ctx: &Context, c: TenantCommand) -> anyhow::Result<u8> {
    let TenantCommand::Create { id, max_memory_mb } = c;
    let rec: Value = send_json(
        ctx.http
            .post(format!("{}/v1/tenants", ctx.region()?))
            .bearer_auth(ctx.admin_token()?)
            .json(&json!({"id": id, "max_memory_mb": max_memory_mb})),
    )
    .await?;
    if ctx.json {
        println!("{rec}");
    } else {
        println!(
            "created tenant {id} (max memory {} MiB)",
            rec["max_memory_mb"]
        );
    }
    Ok(0)
}

pub async fn token(ctx: &Context, c: TokenCommand) -> anyhow::Result<u8> {
    let base = format!("{}/v1/tenants", ctx.region()?);
    let admin = ctx.admin_token()?;
    let ttl_body = |ttl: Option<u64>| ttl.map_or_else(|| json!({}), |t| json!({"ttl_s": t}));
    let (tenant, created): (String, Value) = match c {
        TokenCommand::Create { tenant, ttl } => {
            let url = format!("{base}/{tenant}/tokens");
            let req = ctx.http.post(url).bearer_auth(admin).json(&ttl_body(ttl));
            (tenant, send_json(req).await?)
        }
        TokenCommand::Rotate { tenant, id, ttl } => {
            let url = format!("{base}/{tenant}/tokens/{id}/rotate");
            let req = ctx.http.post(url).bearer_auth(admin).json(&ttl_body(ttl));
            (tenant, send_json(req).await?)
        }
        TokenCommand::Ls { tenant } => {
            let url = format!("{base}/{tenant}/tokens");
            let list: Value = send_json(ctx.http.get(url).bearer_auth(admin)).await?;
            if ctx.json {
                println!("{list}");
                return Ok(0);
            }
            for t in list.as_array().into_iter().flatten() {
                let expiry = match (t["expires_at_ms"].as_u64(), t["expired"].as_bool()) {
                    (None, _) => "never expires".to_owned(),
                    (Some(at), Some(true)) => format!("expired at {at} ms"),
                    (Some(at), _) => format!("expires at {at} ms"),
                };
                println!("{}  {expiry}", t["id"].as_str().unwrap_or_default());
            }
            return Ok(0);
        }
        TokenCommand::Revoke { tenant, id } => {
            let url = format!("{base}/{tenant}/tokens/{id}");
            send(ctx.http.delete(url).bearer_auth(admin)).await?;
            if ctx.json {
                println!("{}", json!({"revoked": id}));
            } else {
                eprintln!("-- token {id} of tenant {tenant} revoked");
            }
            return Ok(0);
        }
    };
    if ctx.json {
        println!("{created}");
    } else {
        println!("{}", created["token"].as_str().unwrap_or_default());
        eprintln!("-- token for tenant {tenant}; it is shown only once");
    }
    Ok(0)
}

pub fn certs(ctx: &Context, c: CertsCommand) -> anyhow::Result<u8> {
    let CertsCommand::Init { dir } = c;
    let certs = common::transport::dev_ca::init(&dir)?;
    if ctx.json {
        println!(
            "{}",
            json!({
                "ca": certs.region.ca_cert,
                "region": {"cert": certs.region.cert, "key": certs.region.key},
                "pop": {"cert": certs.pop.cert, "key": certs.pop.key},
            })
        );
    } else {
        println!("dev CA and node certificates in {}", dir.display());
        println!("  CA      {}", certs.region.ca_cert.display());
        println!(
            "  region  {} / {}",
            certs.region.cert.display(),
            certs.region.key.display()
        );
        println!(
            "  pop     {} / {}",
            certs.pop.cert.display(),
            certs.pop.key.display()
        );
    }
    Ok(0)
}
