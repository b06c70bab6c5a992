//! A whole deployment in one process: one region and one POP on loopback sharing a dev CA,
//! a `dev` tenant with a token. `strata dev`, the integration tests and the live scenario
//! runs all start their nodes through [`DevCluster::start`].
//!
//! Deploys go through the region's HTTP control API (not the registry in-process), so what
//! a live run or a test deploys is exactly what a user's `strata deploy` would.

use anyhow::{Context as _, bail};
use common::model::TenantId;
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use pop_node::{PopConfig, PopHandle};
use region_node::{RegionConfig, RegionHandle};
use serde_json::json;
use std::path::Path;

/// The tenant a dev deployment creates.
pub const DEV_TENANT: &str = "dev";

/// The examples `strata dev` deploys: (name, WAT source).
pub const EXAMPLES: &[(&str, &str)] = &[
    ("hello", include_str!("../../examples/hello.wat")),
    ("echo", include_str!("../../examples/echo.wat")),
];

/// Tokens of an earlier run to keep (so a restarted `strata dev` keeps working clients).
#[derive(Debug, Clone, Default)]
pub struct PreviousTokens {
    /// The operator token.
    pub admin_token: Option<String>,
    /// The dev tenant's token.
    pub token: Option<String>,
}

/// How [`DevCluster::start_with`] sets the deployment up.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Tokens to keep from an earlier run.
    pub tokens: PreviousTokens,
    /// The address the POP sends its QUIC traffic to instead of the region's own (a delay
    /// proxy in front of the region, for live scenario runs).
    pub region_via: Option<std::net::SocketAddr>,
    /// The clock of the region's async queue (default: the system's), for tests that age
    /// queued events by hand.
    pub events_clock: Option<std::sync::Arc<dyn region_node::events::WallClock>>,
    /// The monotonic clock both nodes' policies read (default: the system's), for tests
    /// that move time by hand (`common::clock::ManualClock`).
    pub clock: Option<std::sync::Arc<dyn common::clock::Clock>>,
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
    /// The dev CA's certificate (PEM): what clients of the POP's HTTPS trust.
    pub ca_cert: std::path::PathBuf,
}

impl DevCluster {
    /// Starts a region and a POP under `state_dir` (`certs/`, `region/`, `pop/`) with the
    /// given configs' other settings, and fresh tokens.
    ///
    /// # Errors
    /// When either node cannot start or the dev tenant cannot be set up.
    pub async fn start(
        state_dir: &Path,
        region: RegionConfig,
        pop: PopConfig,
    ) -> anyhow::Result<Self> {
        Self::start_with(state_dir, region, pop, StartOptions::default()).await
    }

    /// As [`DevCluster::start`], with `options`: previous tokens are kept when they are
    /// still valid for the state directory's registry.
    ///
    /// # Errors
    /// When either node cannot start or the dev tenant cannot be set up.
    pub async fn start_with(
        state_dir: &Path,
        mut region: RegionConfig,
        mut pop: PopConfig,
        options: StartOptions,
    ) -> anyhow::Result<Self> {
        let previous = options.tokens;
        let certs = dev_ca::init(&state_dir.join("certs"))?;
        let admin_token = previous.admin_token.unwrap_or_else(random_token);
        region.state_dir = state_dir.join("region");
        region.tls = Some(certs.region);
        region.admin_token = Some(admin_token.clone());
        let mut clocks = common::clock::Clocks::default();
        if let Some(wall) = options.events_clock {
            clocks.wall = wall;
        }
        if let Some(mono) = &options.clock {
            clocks.mono = std::sync::Arc::clone(mono);
        }
        let region = region_node::start_with_clocks(region, clocks)
            .await
            .context("starting the region")?;

        pop.state_dir = state_dir.join("pop");
        pop.tls = Some(certs.pop);
        // One operator for the deployment: the POP's `/metrics` takes the same token.
        pop.operator_token
            .get_or_insert_with(|| admin_token.clone());
        // HTTPS, when asked for, serves `localhost` with the dev CA's certificate.
        if let Some(https) = &mut pop.https
            && !https.certificates.iter().any(|c| c.host == "localhost")
        {
            https.certificates.push(pop_node::config::HostCertFiles {
                host: "localhost".into(),
                cert: certs.https.cert.clone(),
                key: certs.https.key.clone(),
            });
        }
        pop.regions = RegionSource::Static(vec![options.region_via.unwrap_or(region.quic_addr)]);
        let pop = match &options.clock {
            Some(clock) => pop_node::start_with_clock(pop, std::sync::Arc::clone(clock)).await,
            None => pop_node::start(pop).await,
        }
        .context("starting the POP")?;

        let registry = region.registry();
        let tenant = TenantId::new(DEV_TENANT)?;
        if registry.tenant(&tenant).is_err() {
            registry.create_tenant(tenant.clone(), 1024)?;
        }
        let token = match previous.token {
            Some(t) if registry.authenticate(Some(&t)).is_ok_and(|id| id == tenant) => t,
            _ => registry.create_token(&tenant)?,
        };
        Ok(Self {
            region,
            pop,
            token,
            admin_token,
            ca_cert: certs.https.ca_cert,
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

    /// The POP's HTTPS base URL for `localhost` (what the dev certificate names), if the
    /// POP has an HTTPS listener.
    pub fn pop_https_url(&self) -> Option<String> {
        self.pop
            .https_addr
            .map(|a| format!("https://localhost:{}", a.port()))
    }

    /// The POP's HTTP/3 base URL for `localhost` (its UDP port), if HTTP/3 is on.
    pub fn pop_h3_url(&self) -> Option<String> {
        self.pop
            .h3_addr
            .map(|a| format!("https://localhost:{}", a.port()))
    }

    /// Deploys `wasm` as `name` with `config` (JSON) through the control API; returns the
    /// API's answer.
    ///
    /// # Errors
    /// The API's status and error body when the deploy is refused.
    pub async fn deploy(
        &self,
        name: &str,
        config: serde_json::Value,
        wasm: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        self.deploy_as(&self.token, name, config, wasm).await
    }

    /// Deploys `wasm` as `name` with `config` for the tenant of `token` (tests with more
    /// than one tenant).
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
        deploy_at(&self.region_url(), token, name, config, wasm).await
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

/// Deploys `wasm` as `name` with `config` (JSON) at the region `region_url` for the tenant
/// of `token`, through the control API; returns the API's answer.
///
/// # Errors
/// The API's status and error message when the deploy is refused.
pub async fn deploy_at(
    region_url: &str,
    token: &str,
    name: &str,
    config: serde_json::Value,
    wasm: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{region_url}/v1/functions/{name}");
    let form = reqwest::multipart::Form::new()
        .text("config", config.to_string())
        .part("module", reqwest::multipart::Part::bytes(wasm));
    let resp = reqwest::Client::new()
        .put(url)
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .context("deploy request")?;
    let status = resp.status();
    let body = resp.bytes().await.context("deploy response")?;
    if !status.is_success() {
        // `400 Bad Request: invalid_module: ...`, the shape the CLI prints too.
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        match (v["error"]["kind"].as_str(), v["error"]["message"].as_str()) {
            (Some(kind), Some(message)) => bail!("{status}: {kind}: {message}"),
            _ => bail!("{status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    serde_json::from_slice(&body).context("deploy response body")
}

/// Waits until `pop`'s push stream from its region is up (it has connected), at most
/// `within`: a POP answers 503 to what it must forward until then.
///
/// # Errors
/// When it is not up in time.
pub async fn wait_connected(pop: &PopHandle, within: std::time::Duration) -> anyhow::Result<()> {
    wait_sync(pop, within, |s| s.live)
        .await
        .with_context(|| format!("POP {} did not reach a region", pop.node_id))
}

/// Waits until `pop`'s push stream status satisfies `condition`, at most `within`
/// (woken by each change, never polling).
///
/// # Errors
/// When it does not in time.
pub async fn wait_sync(
    pop: &PopHandle,
    within: std::time::Duration,
    condition: impl FnMut(&pop_node::sync::SyncStatus) -> bool,
) -> anyhow::Result<()> {
    let mut changes = pop.watch_sync();
    match tokio::time::timeout(within, changes.wait_for(condition)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => bail!("the POP stopped"),
        Err(_) => bail!("not within {within:?}"),
    }
}

fn random_token() -> String {
    format!("sa_{}", hex::encode(rand::random::<[u8; 24]>()))
}
