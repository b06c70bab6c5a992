//! A whole deployment in one process: one region and one POP on loopback sharing a dev CA,
//! a `dev` tenant with a token, and the example functions deployed. Used by `strata dev`,
//! the integration tests and the live scenarios.

use crate::client::{DevFile, deploy_form, send_json};
use anyhow::Context as _;
use clap::Args;
use common::model::TenantId;
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use pop_node::{PopConfig, PopHandle};
use region_node::{RegionConfig, RegionHandle};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;

/// The tenant `strata dev` creates.
pub const DEV_TENANT: &str = "dev";

/// The examples `strata dev` deploys: (name, WAT source).
pub const EXAMPLES: &[(&str, &str)] = &[
    ("hello", include_str!("../examples/hello.wat")),
    ("echo", include_str!("../examples/echo.wat")),
];

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
}

/// A running single-process deployment.
#[derive(Debug)]
pub struct DevCluster {
    /// The region.
    pub region: RegionHandle,
    /// The POP.
    pub pop: PopHandle,
    /// The `dev` tenant's token.
    pub token: String,
    /// The operator token.
    pub admin_token: String,
}

impl DevCluster {
    /// Starts a region and a POP under `state_dir` (`certs/`, `region/`, `pop/`), with the
    /// given configs' other settings. Reuses the tokens of an earlier run's dev.json.
    ///
    /// # Errors
    /// When either node cannot start or the dev tenant cannot be set up.
    pub async fn start(
        state_dir: &Path,
        mut region: RegionConfig,
        mut pop: PopConfig,
    ) -> anyhow::Result<Self> {
        let certs = dev_ca::init(&state_dir.join("certs"))?;
        let previous = DevFile::load(state_dir).ok().flatten();
        let admin_token = previous
            .as_ref()
            .and_then(|d| d.admin_token.clone())
            .unwrap_or_else(random_token);
        region.state_dir = state_dir.join("region");
        region.tls = Some(certs.region);
        region.admin_token = Some(admin_token.clone());
        let region = region_node::start(region)
            .await
            .context("starting the region")?;

        pop.state_dir = state_dir.join("pop");
        pop.tls = Some(certs.pop);
        pop.regions = RegionSource::Static(vec![region.quic_addr]);
        let pop = pop_node::start(pop).await.context("starting the POP")?;

        let registry = region.registry();
        let tenant = TenantId::new(DEV_TENANT)?;
        if registry.tenant(&tenant).is_err() {
            registry.create_tenant(tenant.clone(), 1024)?;
        }
        let token = match previous.map(|d| d.token) {
            Some(t) if registry.authenticate(Some(&t)).is_ok_and(|id| id == tenant) => t,
            _ => registry.create_token(&tenant)?,
        };
        Ok(Self {
            region,
            pop,
            token,
            admin_token,
        })
    }

    /// The region's base URL.
    pub fn region_url(&self) -> String {
        format!("http://{}", self.region.http_addr)
    }

    /// The POP's base URL.
    pub fn pop_url(&self) -> String {
        format!("http://{}", self.pop.http_addr)
    }

    /// What dev.json records for this deployment.
    pub fn dev_file(&self) -> DevFile {
        DevFile {
            pop_url: self.pop_url(),
            region_url: self.region_url(),
            token: self.token.clone(),
            admin_token: Some(self.admin_token.clone()),
        }
    }

    /// Deploys `wasm` as `name` with `config` (JSON) through the control API.
    ///
    /// # Errors
    /// The API's error message when the deploy is refused.
    pub async fn deploy(
        &self,
        name: &str,
        config: serde_json::Value,
        wasm: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        self.deploy_as(&self.token, name, config, wasm).await
    }

    /// Deploys `wasm` as `name` with `config` for the tenant of `token`.
    ///
    /// # Errors
    /// The API's error message when the deploy is refused.
    pub async fn deploy_as(
        &self,
        token: &str,
        name: &str,
        config: serde_json::Value,
        wasm: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1/functions/{name}", self.region_url());
        send_json(
            reqwest::Client::new()
                .put(url)
                .bearer_auth(token)
                .multipart(deploy_form(&config, wasm)?),
        )
        .await
    }

    /// Deploys every example in [`EXAMPLES`].
    ///
    /// # Errors
    /// When an example does not parse or deploy.
    pub async fn deploy_examples(&self) -> anyhow::Result<()> {
        for (name, wat) in EXAMPLES {
            let wasm = wat::parse_str(wat).with_context(|| format!("example {name}"))?;
            self.deploy(name, json!({}), wasm).await?;
        }
        Ok(())
    }

    /// Stops both nodes.
    pub async fn shutdown(self) {
        self.pop.shutdown().await;
        self.region.shutdown().await;
    }
}

fn random_token() -> String {
    format!("sa_{}", hex::encode(rand::random::<[u8; 24]>()))
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
        ..PopConfig::default()
    };
    let cluster = DevCluster::start(state_dir, region, pop).await?;
    cluster.deploy_examples().await?;
    let dev = cluster.dev_file();
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
    println!("  token   {}", dev.token);
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
    println!("  cargo run -- invoke hello --data Strata");
    println!();
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    cluster.shutdown().await;
    Ok(())
}
