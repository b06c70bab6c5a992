//! The workload replay's deployment: several regions and POPs in this process on loopback,
//! one delay proxy per (POP, region) pair injecting that pair's one-way latency, the
//! scaled population deployed as `sleep` reactors (each function its own module: the
//! `sleep` guest with a custom section naming it, so each has its own digest), and one
//! token per tenant.
//!
//! Regions do not share a store here, so they are made identical the way a restore from
//! a backup would: region 0 is started alone, the tenants and functions are created
//! through its API, it is shut down cleanly and its state directory is copied to every
//! other region's before all of them start. Every region then knows every token and
//! function, so a POP may fail over to any of them.

use crate::scenario::Scenario;
use crate::sim::FnSpec;
use anyhow::Context as _;
use common::model::{Placement, TenantId};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use pop_node::{PopConfig, PopHandle};
use region_node::{RegionConfig, RegionHandle};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use testkit::proxy::DelayProxy;

/// The guest every replayed function runs: waits for the microseconds in its request.
pub const SLEEP_WAT: &str = include_str!("../../../examples/sleep.wat");
/// Each replayed function's timeout, ms: far beyond any execution time the scenarios draw,
/// so the replay measures latency, not timeouts.
const TIMEOUT_MS: u64 = 10_000;

/// A running replay deployment.
#[derive(Debug)]
pub struct Fleet {
    /// The regions, in the scenario's order.
    pub regions: Vec<RegionHandle>,
    /// The POPs, in the scenario's order.
    pub pops: Vec<PopHandle>,
    /// `proxies[pop][region]`: the delay proxy between them.
    pub proxies: Vec<Vec<DelayProxy>>,
    /// One token per tenant index.
    pub tokens: Vec<String>,
    /// The operator token (every region's).
    pub admin_token: String,
    /// When each POP was started (its lease renewal rounds count from then).
    pub pops_started: Vec<tokio::time::Instant>,
}

/// The name the replay deploys function `i` under.
pub fn function_name(i: usize) -> String {
    format!("f{i:04}")
}

impl Fleet {
    /// Starts the deployment of the scaled scenario `m` with population `functions` under
    /// `dir`.
    ///
    /// # Errors
    /// When a node cannot start, the tenants or functions cannot be set up, or the state
    /// cannot be copied.
    pub async fn start(dir: &Path, m: &Scenario, functions: &[FnSpec]) -> anyhow::Result<Self> {
        let certs = dev_ca::init(&dir.join("certs"))?;
        let admin_token = format!("sa_{}", hex::encode(rand::random::<[u8; 24]>()));
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let region_config = |i: usize| {
            let mut c = RegionConfig {
                node_id: format!("region-{i}"),
                state_dir: dir.join(format!("region-{i}")),
                http_listen: any,
                quic_listen: any,
                tls: Some(certs.region.clone()),
                admin_token: Some(admin_token.clone()),
                max_concurrency: m.region.slots as usize,
                ..RegionConfig::default()
            };
            c.sandbox.warm_idle_ms = (m.region.keep_alive_s * 1e3) as u64;
            // The model's region pools are bounded by memory only; the node's pools by its
            // instance slots (`max_warm_pools * warm_pool_size < max_instances`).
            c.sandbox.warm_pool_size = max_pool(&c.sandbox);
            if let Some(n) = m.region.tenant_concurrency {
                c.limits.tenant.hard_max = n;
                c.limits.tenant.burst = m.region.tenant_burst.unwrap_or(n);
                c.limits.tenant.step = m.region.tenant_step;
                c.limits.tenant.interval_ms = m.region.tenant_interval_ms;
            }
            c
        };

        // Region 0 alone: tenants, tokens and functions, then a clean stop.
        let first = region_node::start(region_config(0))
            .await
            .context("starting region 0")?;
        let tokens = setup(&first, m, functions).await;
        first.shutdown().await;
        let tokens = tokens?;
        for i in 1..m.topology.regions {
            copy_dir(&dir.join("region-0"), &dir.join(format!("region-{i}")))
                .with_context(|| format!("copying region 0's state to region {i}"))?;
        }
        let mut regions = Vec::with_capacity(m.topology.regions);
        for i in 0..m.topology.regions {
            regions.push(
                region_node::start(region_config(i))
                    .await
                    .with_context(|| format!("starting region {i}"))?,
            );
        }

        let rtt = m.topology.rtt_ms.clone().unwrap_or_default();
        let mut proxies = Vec::with_capacity(m.topology.pops);
        let mut pops = Vec::with_capacity(m.topology.pops);
        let mut pops_started = Vec::with_capacity(m.topology.pops);
        for p in 0..m.topology.pops {
            let mut row = Vec::with_capacity(regions.len());
            for (r, region) in regions.iter().enumerate() {
                let one_way = rtt
                    .get(p)
                    .and_then(|row| row.get(r))
                    .copied()
                    .unwrap_or(0.0)
                    / 2.0;
                let proxy = DelayProxy::start(Duration::from_secs_f64(one_way / 1e3)).await?;
                proxy.set_upstream(region.quic_addr);
                row.push(proxy);
            }
            let mut c = PopConfig {
                node_id: format!("pop-{p}"),
                state_dir: dir.join(format!("pop-{p}")),
                http_listen: any,
                regions: RegionSource::Static(row.iter().map(DelayProxy::addr).collect()),
                tls: Some(certs.pop.clone()),
                placement: m.pop.placement.clone(),
                warm: m.pop.warm.clone(),
                local_concurrency: m.pop.slots as usize,
                operator_token: Some(admin_token.clone()),
                ..PopConfig::default()
            };
            c.sandbox.warm_idle_ms = (m.pop.keep_alive_s * 1e3) as u64;
            c.sandbox.warm_pool_size =
                (m.pop.warm.max_pool.max(1) as usize).min(max_pool(&c.sandbox));
            pops_started.push(tokio::time::Instant::now());
            pops.push(
                pop_node::start(c)
                    .await
                    .with_context(|| format!("starting POP {p}"))?,
            );
            proxies.push(row);
        }
        for pop in &pops {
            testkit::cluster::wait_connected(pop, Duration::from_secs(30)).await?;
        }
        Ok(Self {
            regions,
            pops,
            proxies,
            tokens,
            admin_token,
            pops_started,
        })
    }

    /// A POP's base URL.
    pub fn pop_url(&self, pop: usize) -> Option<String> {
        self.pops
            .get(pop)
            .map(|p| format!("http://{}", p.http_addr))
    }

    /// A region's base URL.
    pub fn region_url(&self, region: usize) -> Option<String> {
        self.regions
            .get(region)
            .map(|r| format!("http://{}", r.http_addr))
    }

    /// Makes `region` unreachable from every POP (or reachable again): its proxies drop
    /// every datagram, as a failed region or a cut link would look from the POPs.
    pub fn set_region_down(&self, region: usize, down: bool) {
        for row in &self.proxies {
            if let Some(p) = row.get(region) {
                p.set_down(down);
            }
        }
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for p in self.pops {
            p.shutdown().await;
        }
        for r in self.regions {
            r.shutdown().await;
        }
    }
}

/// Creates the tenants with a token each and deploys every function at `region`; returns
/// the tokens by tenant index.
async fn setup(
    region: &RegionHandle,
    m: &Scenario,
    functions: &[FnSpec],
) -> anyhow::Result<Vec<String>> {
    let registry = region.registry();
    let mut tokens = Vec::with_capacity(m.functions.tenants);
    for t in 0..m.functions.tenants {
        let id = TenantId::new(format!("tenant-{t}"))?;
        registry.create_tenant(id.clone(), 1024)?;
        tokens.push(registry.create_token(&id)?);
    }
    let wasm = wat::parse_str(SLEEP_WAT)?;
    let url = format!("http://{}", region.http_addr);
    for (i, f) in functions.iter().enumerate() {
        let token = tokens
            .get(f.tenant as usize % tokens.len().max(1))
            .context("a tenant's token")?;
        let config = json!({
            "abi": "reactor",
            "memory_mb": f.memory_mb,
            "timeout_ms": TIMEOUT_MS,
            "placement": if f.placement == Placement::Region { "region" } else { "auto" },
        });
        testkit::cluster::deploy_at(&url, token, &function_name(i), config, code_of(&wasm, i)?)
            .await
            .with_context(|| format!("deploying {}", function_name(i)))?;
    }
    Ok(tokens)
}

/// Function `i`'s module: the `sleep` guest made its own code (as in production, each
/// function has its own): a POP prepares each function's artifact on its own. One shared
/// module made every function ready at a POP as soon as any one was (the module cache is
/// keyed by digest), and with it the tenant's lease drawn by invocations still rare there,
/// which the model (and a real population) does not do.
fn code_of(sleep: &[u8], i: usize) -> anyhow::Result<Vec<u8>> {
    Ok(super::variant(sleep, u32::try_from(i)?))
}

/// The largest warm pool per function the sandbox's instance slots allow.
fn max_pool(c: &common::sandbox::SandboxConfig) -> usize {
    ((c.max_instances as usize).saturating_sub(1) / c.max_warm_pools.max(1)).max(1)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replayed_function_is_its_own_valid_module() {
        let sleep = wat::parse_str(SLEEP_WAT).expect("the sleep guest");
        let engine = wasmtime::Engine::default();
        let codes: Vec<Vec<u8>> = (0..3).map(|i| code_of(&sleep, i).expect("code")).collect();
        for code in &codes {
            wasmtime::Module::validate(&engine, code).expect("a valid module");
        }
        assert_ne!(codes[0], codes[1]);
        assert_ne!(codes[1], codes[2]);
    }
}
