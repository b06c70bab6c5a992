//! Benchmark server: a Strata region and POP on loopback in this process (`DevCluster`),
//! with the benchmark's guests deployed and the POP-local ones prepared and warm. Prints
//! one JSON line with the URL of every path (plain HTTP; HTTPS and HTTP/3 for the local
//! reactor), the token and the dev CA, then serves until its stdin
//! closes (`scenarios bench` drives it).
//!
//! With `--cold N` it measures cold starts instead: N distinct ~100 KB modules deployed
//! with `placement = "edge"`, each fetched from the region, deserialized at the POP
//! (`PopHandle::prepare`) and run once there over HTTP; prints the N times and exits.
//!
//! Each `--component NAME=PATH` (an `http`-ABI component, see `bench::components`) is
//! deployed at the edge too: warm, its URL is reported as `components.NAME`; with
//! `--cold`, its cold start at the POP is measured like the modules'.

use anyhow::{Context as _, bail, ensure};
use common::model::ArtifactDigest;
use scenarios::bench::components::{self, Component};
use scenarios::bench::{guests, wrk::BODY_BYTES};
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::cluster::DevCluster;

/// The POP binary's allocator (`pop-node`'s `main.rs`), so the benchmarked POP allocates
/// as a deployed one does (glibc's malloc took ~11% of this process's samples).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Slots for local runs and region executions: above the benchmark's 64 connections, so
/// no request is forwarded or refused for want of one.
const SLOTS: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init(common::telemetry::LogFormat::Text, "warn");
    let mut cold: Option<u32> = None;
    let mut http_components = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cold" => {
                cold = Some(
                    args.next()
                        .context("--cold N")?
                        .parse()
                        .context("--cold N")?,
                )
            }
            "--component" => http_components.push(components::parse_arg(
                &args.next().context("--component NAME=PATH")?,
            )?),
            other => bail!("unknown argument {other:?} (expected --cold N, --component NAME=PATH)"),
        }
    }
    let dir = tempfile::tempdir()?;
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let region = region_node::RegionConfig {
        http_listen: any,
        quic_listen: any,
        max_concurrency: SLOTS,
        ..Default::default()
    };
    let pop = pop_node::PopConfig {
        http_listen: any,
        local_concurrency: SLOTS,
        // HTTPS and HTTP/3 too, for the rows over TLS (the `localhost` certificate).
        https: Some(pop_node::config::HttpsConfig {
            h3_listen: Some(any),
            ..pop_node::config::HttpsConfig::on(any)
        }),
        ..Default::default()
    };
    let cluster = DevCluster::start(dir.path(), region, pop).await?;
    testkit::cluster::wait_connected(&cluster.pop, Duration::from_secs(30)).await?;
    let http = reqwest::Client::new();
    let result = match cold {
        Some(n) => cold_starts(&cluster, &http, n, &http_components).await,
        None => serve(&cluster, &http, &http_components).await,
    };
    cluster.shutdown().await;
    result
}

async fn serve(
    cluster: &DevCluster,
    http: &reqwest::Client,
    http_components: &[Component],
) -> anyhow::Result<()> {
    let command = wat::parse_str(guests::ECHO_COMMAND_WAT)?;
    let reactor = wat::parse_str(guests::ECHO_REACTOR_WAT)?;
    let edge = json!({"placement": "edge"});
    cluster.deploy("cmd", edge.clone(), command.clone()).await?;
    cluster
        .deploy(
            "rx",
            json!({"placement": "edge", "abi": "reactor"}),
            reactor.clone(),
        )
        .await?;
    cluster
        .deploy("fwd", json!({"placement": "region"}), command.clone())
        .await?;
    let pop = cluster.pop_url();
    for (name, wasm) in [("cmd", &command), ("rx", &reactor)] {
        prepare(cluster, ArtifactDigest::of(wasm)).await?;
        let url = format!("{pop}/v1/functions/{name}/invoke");
        until_at(http, &url, &cluster.token, "pop/", true).await?;
    }
    let fwd = format!("{pop}/v1/functions/fwd/invoke");
    until_at(http, &fwd, &cluster.token, "region/", true).await?;
    let mut urls = serde_json::Map::new();
    let mut reused = serde_json::Map::new();
    for c in http_components {
        let (name, url, _) = deploy_component(cluster, http, c, "http").await?;
        urls.insert(c.name.clone(), json!(url));
        eprintln!("bench-strata: component {name} warm at the POP");
        let (name, url, _) = deploy_component(cluster, http, c, "reuse").await?;
        reused.insert(c.name.clone(), json!(url));
        eprintln!("bench-strata: component {name} (instances reused) warm at the POP");
    }
    let region = cluster.region_url();
    let ready = json!({
        "token": cluster.token,
        "pop_command": format!("{pop}/v1/functions/cmd/invoke"),
        "pop_reactor": format!("{pop}/v1/functions/rx/invoke"),
        "pop_forward": fwd,
        "region_direct": format!("{region}/v1/functions/fwd/invoke"),
        "pop_reactor_https": format!("{}/v1/functions/rx/invoke", cluster.pop_https_url().context("HTTPS")?),
        "pop_reactor_h3": format!("{}/v1/functions/rx/invoke", cluster.pop_h3_url().context("HTTP/3")?),
        "pop_https_addr": cluster.pop.https_addr.context("HTTPS")?.to_string(),
        "pop_h3_addr": cluster.pop.h3_addr.context("HTTP/3")?.to_string(),
        "ca_cert": cluster.ca_cert.display().to_string(),
        "components": urls,
        "components_reused": reused,
    });
    scenarios::bench::server::announce_and_wait(&ready).await
}

async fn prepare(cluster: &DevCluster, digest: ArtifactDigest) -> anyhow::Result<()> {
    cluster
        .pop
        .prepare(digest)
        .await
        .map_err(|e| anyhow::anyhow!("preparing {digest} at the POP: {}", e.message))
}

/// Deploys component `c` at the edge as `<prefix>-<name>` (prefix `reuse`: with
/// `reuse_instances`), prepares it at the POP and runs it there once; returns its name,
/// URL and the (prepare, first run) times.
async fn deploy_component(
    cluster: &DevCluster,
    http: &reqwest::Client,
    c: &Component,
    prefix: &str,
) -> anyhow::Result<(String, String, (Duration, Duration, usize))> {
    let wasm = std::fs::read(&c.path).with_context(|| format!("reading {}", c.path.display()))?;
    let name = format!("{prefix}-{}", c.name);
    cluster
        .deploy(
            &name,
            json!({"placement": "edge", "abi": "http", "reuse_instances": prefix == "reuse"}),
            wasm.clone(),
        )
        .await?;
    let url = format!("{}/v1/functions/{name}/invoke", cluster.pop_url());
    let started = Instant::now();
    prepare(cluster, ArtifactDigest::of(&wasm)).await?;
    let prepared = started.elapsed();
    let (run, _) = until_at(http, &url, &cluster.token, "pop/", false).await?;
    Ok((name, url, (prepared, run, wasm.len())))
}

/// Posts the benchmark body to `url` until it runs at the tier `at` (at most 200 times),
/// checking that it was echoed when `echo`; returns the latency of the answer from there
/// and whether it was a cold start.
async fn until_at(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    at: &str,
    echo: bool,
) -> anyhow::Result<(Duration, bool)> {
    let body = vec![b'x'; BODY_BYTES];
    for _ in 0..200 {
        let started = Instant::now();
        let resp = http
            .post(url)
            .bearer_auth(token)
            .body(body.clone())
            .send()
            .await?;
        let header = |name: &str| scenarios::live::header(&resp, name);
        let (executed_at, start) = (header("x-strata-executed-at"), header("x-strata-start"));
        let status = resp.status();
        let echoed = resp.bytes().await?;
        let elapsed = started.elapsed();
        ensure!(status == 200, "{url} answered {status}");
        ensure!(
            !echo || echoed.as_ref() == body.as_slice(),
            "{url} did not echo"
        );
        if executed_at.starts_with(at) {
            return Ok((elapsed, start == "cold"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{url} never ran at {at}")
}

async fn cold_starts(
    cluster: &DevCluster,
    http: &reqwest::Client,
    n: u32,
    http_components: &[Component],
) -> anyhow::Result<()> {
    // A distinct seed per process, so a rerun on the same machine never finds these
    // modules anywhere.
    let seed = std::process::id().wrapping_mul(1000);
    let mut modules = Vec::new();
    for i in 0..n {
        let wasm = wat::parse_str(guests::cold_module_wat(seed.wrapping_add(i)))?;
        let name = format!("cold{i}");
        cluster
            .deploy(&name, json!({"placement": "edge"}), wasm.clone())
            .await?;
        modules.push((name, ArtifactDigest::of(&wasm), wasm.len()));
    }
    let pop = cluster.pop_url();
    let mut results = Vec::new();
    for (name, digest, bytes) in modules {
        let url = format!("{pop}/v1/functions/{name}/invoke");
        let started = Instant::now();
        prepare(cluster, digest).await?;
        let prepared = started.elapsed();
        let (run, cold) = until_at(http, &url, &cluster.token, "pop/", true).await?;
        // The same request again: what the first run paid that a warm one does not.
        let (again, _) = until_at(http, &url, &cluster.token, "pop/", true).await?;
        results.push(json!({
            "module_bytes": bytes,
            "prepare_us": prepared.as_micros() as u64,
            "run_us": run.as_micros() as u64,
            "second_run_us": again.as_micros() as u64,
            "total_us": (prepared + run).as_micros() as u64,
            "first_run_cold": cold,
        }));
    }
    let mut per_component = Vec::new();
    for c in http_components {
        let (_, _, (prepared, run, bytes)) = deploy_component(cluster, http, c, "cold").await?;
        per_component.push(json!({
            "name": c.name,
            "component_bytes": bytes,
            "prepare_us": prepared.as_micros() as u64,
            "run_us": run.as_micros() as u64,
            "total_us": (prepared + run).as_micros() as u64,
        }));
    }
    println!(
        "{}",
        json!({ "cold": results, "cold_components": per_component })
    );
    Ok(())
}
