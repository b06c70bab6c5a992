//! `pop-node`: runs one POP node.

use anyhow::Context;
use clap::Parser;
use common::telemetry::LogFormat;
use pop_node::PopConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// jemalloc with a background thread that purges dirty pages: memory freed after a burst
/// of connections goes back to the system within about a second (docs/performance.md,
/// "Connection bursts", has the numbers against glibc and mimalloc).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read by jemalloc itself, as a C string): purge freed pages
/// from a background thread, 1 s after they became unused, returning them outright.
// Exporting a symbol is `unsafe_code`: jemalloc looks this one up, nothing else defines it.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
