//! `pop-node`: runs one POP node.

use anyhow::Context;
use clap::Parser;
use common::telemetry::LogFormat;
use pop_node::PopConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Strata POP node: runs popular functions at the edge, forwards the rest to a region.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides `http_listen`.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    common::telemetry::init(args.log_format, "info");
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            PopConfig::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => PopConfig::default(),
    };
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    if let Some(a) = args.http_listen {
        config.http_listen = a;
    }
    let pop = pop_node::start(config).await?;
    println!("pop {} http://{}", pop.node_id, pop.http_addr);
    tokio::signal::ctrl_c().await?;
    pop.shutdown().await;
    Ok(())
}
