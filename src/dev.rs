//! `strata dev`: a whole deployment in one process (one region and one POP on loopback,
//! started by `testkit::cluster::DevCluster`, which the integration tests and the live
//! scenarios use too), the example functions deployed, and dev.json for the CLI.

use crate::client::DevFile;
use anyhow::Context as _;
use clap::Args;
use pop_node::PopConfig;
use pop_node::config::HttpsConfig;
use region_node::RegionConfig;
use std::net::SocketAddr;
use std::path::Path;
use testkit::cluster::{PreviousTokens, StartOptions};

pub use testkit::cluster::{DEV_TENANT, DevCluster, EXAMPLES};

/// `strata dev` options.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Region HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub region_listen: SocketAddr,
    /// Region QUIC address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic_listen: SocketAddr,
    /// POP HTTP address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub pop_listen: SocketAddr,
    /// POP HTTPS address (certificate for `localhost` from the dev CA).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub pop_https_listen: SocketAddr,
    /// POP HTTP/3 address (UDP; same certificate as HTTPS).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub pop_h3_listen: SocketAddr,
}

/// What dev.json records for `cluster`.
pub fn dev_file(cluster: &DevCluster) -> DevFile {
    DevFile {
        pop_url: cluster.pop_url(),
        region_url: cluster.region_url(),
        token: cluster.token.clone(),
        admin_token: Some(cluster.admin_token.clone()),
        pop_https_url: cluster.pop_https_url(),
        pop_h3_url: cluster.pop_h3_url(),
        ca_cert: Some(cluster.ca_cert.clone()),
    }
}

/// Runs `strata dev` until Ctrl-C.
///
/// # Errors
/// When the deployment cannot start or dev.json cannot be written.
pub async fn run(state_dir: &Path, args: &DevArgs) -> anyhow::Result<()> {
    let region = RegionConfig {
        http_listen: args.region_listen,
        quic_listen: args.quic_listen,
        ..RegionConfig::default()
    };
    let pop = PopConfig {
        http_listen: args.pop_listen,
        https: Some(HttpsConfig {
            h3_listen: Some(args.pop_h3_listen),
            ..HttpsConfig::on(args.pop_https_listen)
        }),
        ..PopConfig::default()
    };
    // Keep the tokens of an earlier run so clients configured from dev.json keep working.
    let previous = DevFile::load(state_dir).ok().flatten();
    let tokens = PreviousTokens {
        admin_token: previous.as_ref().and_then(|d| d.admin_token.clone()),
        token: previous.map(|d| d.token),
    };
    let options = StartOptions {
        tokens,
        ..StartOptions::default()
    };
    let cluster = DevCluster::start_with(state_dir, region, pop, options).await?;
    cluster.deploy_examples().await?;
    let dev = dev_file(&cluster);
    let path = DevFile::path(state_dir);
    std::fs::write(&path, serde_json::to_vec_pretty(&dev)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Strata dev deployment is up (state in {})",
        state_dir.display()
    );
    println!(
        "  region  {}   (control API; invoke works here too)",
        dev.region_url
    );
    println!("  pop     {}   (invoke here)", dev.pop_url);
    if let Some(https) = &dev.pop_https_url {
        println!("  pop     {https}   (HTTPS: HTTP/1.1 and HTTP/2)");
    }
    if let Some(h3) = &dev.pop_h3_url {
        println!("  pop     {h3}   (HTTP/3 over UDP; advertised by alt-svc on HTTPS)");
    }
    println!("  token   {}", dev.token);
    if let Some(admin) = &dev.admin_token {
        println!(
            "  dashboard {}/dashboard#token={admin}   (operators' capacity view)",
            dev.region_url
        );
        println!(
            "  metrics   {}/metrics and {}/metrics   (with 'authorization: Bearer {admin}')",
            dev.region_url, dev.pop_url
        );
    }
    println!(
        "  examples deployed: {}",
        EXAMPLES.iter().map(|e| e.0).collect::<Vec<_>>().join(", ")
    );
    println!();
    println!("Try:");
    println!(
        "  curl -s -X POST {}/v1/functions/hello/invoke -H 'authorization: Bearer {}' -d Strata -i",
        dev.pop_url, dev.token
    );
    if let (Some(https), Some(ca)) = (&dev.pop_https_url, &dev.ca_cert) {
        println!(
            "  curl -s --cacert {} -X POST {https}/v1/functions/hello/invoke -H 'authorization: Bearer {}' -d Strata -i",
            ca.display(),
            dev.token
        );
    }
    if let (Some(h3), Some(ca)) = (&dev.pop_h3_url, &dev.ca_cert) {
        println!(
            "  curl -s --http3-only --cacert {} -X POST {h3}/v1/functions/hello/invoke -H 'authorization: Bearer {}' -d Strata -i   (a curl built with HTTP/3)",
            ca.display(),
            dev.token
        );
    }
    println!("  cargo run -- invoke hello --data Strata");
    println!();
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    cluster.shutdown().await;
    Ok(())
}
