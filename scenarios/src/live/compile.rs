//! The region's compile cost (`cold_start.region_compile_ms`), as the workload replay
//! meets it: a region restarted on the state it had (the replay's `Fleet` starts every
//! region that way) has no module compiled, and its first run of each function compiles
//! the module, reporting how long in `server-timing: compile`.
//!
//! One region on loopback: [`PROBES`] functions deployed (each the `sleep` guest with its
//! own custom section, so each its own digest, as in the replay), the region stopped
//! cleanly and started again on the same state directory, then each function invoked once
//! at the region's own HTTP edge, one at a time.

use super::fleet::SLEEP_WAT;
use anyhow::Context as _;
use common::model::TenantId;
use common::transport::dev_ca;
use region_node::{RegionConfig, RegionHandle};
use serde_json::json;
use std::path::Path;

/// Functions deployed and run once each after the restart.
pub const PROBES: u32 = 15;

/// The `compile` durations the restarted region reported for its first run of each of
/// `probes` functions, ms (a run that reported none is left out).
///
/// # Errors
/// When the region cannot start, a deploy or an invocation fails.
pub(crate) async fn region_compiles(probes: u32) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let certs = dev_ca::init(&dir.path().join("certs"))?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let config = |state: &Path| RegionConfig {
        node_id: "compile-probe".into(),
        state_dir: state.to_path_buf(),
        http_listen: any,
        quic_listen: any,
        tls: Some(certs.region.clone()),
        ..RegionConfig::default()
    };
    let state = dir.path().join("region");
    let region = region_node::start(config(&state))
        .await
        .context("starting the compile probe's region")?;
    let token = deploy(&region, probes).await;
    region.shutdown().await;
    let token = token?;
    let region = region_node::start(config(&state))
        .await
        .context("restarting the compile probe's region")?;
    let compiles = first_runs(&region, &token, probes).await;
    region.shutdown().await;
    compiles
}

/// A tenant and its token, and `probes` functions deployed at `region`.
async fn deploy(region: &RegionHandle, probes: u32) -> anyhow::Result<String> {
    let registry = region.registry();
    let tenant = TenantId::new("compile-probe".to_owned())?;
    registry.create_tenant(tenant.clone(), 1024)?;
    let token = registry.create_token(&tenant)?;
    let sleep = wat::parse_str(SLEEP_WAT)?;
    let url = format!("http://{}", region.http_addr);
    for i in 0..probes {
        let config = json!({"abi": "reactor", "placement": "region"});
        testkit::cluster::deploy_at(&url, &token, &name(i), config, super::variant(&sleep, i))
            .await
            .with_context(|| format!("deploying {}", name(i)))?;
    }
    Ok(token)
}

/// Each function run once at `region`; the `compile` each run reported, ms.
async fn first_runs(region: &RegionHandle, token: &str, probes: u32) -> anyhow::Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let mut compiles = Vec::with_capacity(probes as usize);
    for i in 0..probes {
        let resp = http
            .post(format!(
                "http://{}/v1/functions/{}/invoke",
                region.http_addr,
                name(i)
            ))
            .bearer_auth(token)
            .body("0")
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "{} answered {}",
            name(i),
            resp.status()
        );
        let timing = super::ServerTiming::parse(&super::header(&resp, "server-timing"));
        compiles.extend(timing.compile);
    }
    Ok(compiles)
}

fn name(i: u32) -> String {
    format!("probe{i:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_regions_first_run_of_each_function_reports_its_compile() {
        let compiles = region_compiles(3).await.expect("measures");
        assert_eq!(compiles.len(), 3, "{compiles:?}");
        assert!(compiles.iter().all(|&ms| ms > 0.0), "{compiles:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_module_compiled_at_deploy_or_by_an_earlier_run_reports_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let region = region_node::start(RegionConfig {
            state_dir: dir.path().join("region"),
            http_listen: any,
            quic_listen: any,
            tls: Some(certs.region),
            ..RegionConfig::default()
        })
        .await
        .expect("starts");
        let token = deploy(&region, 2).await.expect("deploys");
        // Compiled at deploy: no run compiles, the first or any later one.
        let compiles = first_runs(&region, &token, 2).await;
        let again = first_runs(&region, &token, 2).await;
        region.shutdown().await;
        assert_eq!(compiles.expect("runs"), Vec::<f64>::new());
        assert_eq!(again.expect("runs"), Vec::<f64>::new());
    }
}
