//! `region-node`: runs one region node.

use anyhow::Context;
use clap::Parser;
use common::telemetry::LogFormat;
use region_node::RegionConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Strata region node: function registry, execution of everything POPs send, durable state.
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
    /// Overrides `quic_listen`.
    #[arg(long)]
    quic_listen: Option<SocketAddr>,
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
            RegionConfig::from_toml(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => RegionConfig::default(),
    };
    if let Some(d) = args.state_dir {
        config.state_dir = d;
    }
    if let Some(a) = args.http_listen {
        config.http_listen = a;
    }
    if let Some(a) = args.quic_listen {
        config.quic_listen = a;
    }
    let region = region_node::start(config).await?;
    println!(
        "region {} http://{} quic {}",
        region.node_id, region.http_addr, region.quic_addr
    );
    tokio::signal::ctrl_c().await?;
    region.shutdown().await;
    Ok(())
}
