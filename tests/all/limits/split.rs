//! A tenant's concurrency limit split between two regions (`[limits] regions = 2`), each
//! with its own store and its own POP: each region admits its share, so both together
//! admit at most the limit.

use crate::failover::seeded_pair;
use crate::support::{LOOP_FOREVER, any_port, eventually, pop_config, region_config};
use common::model::{FunctionConfig, FunctionName, Placement, TenantId};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use region_node::RegionConfig;
use region_node::limits::{LimitsConfig, TenantLimits};

/// Region `index` of two, with a tenant limit of 2 (so 1 each).
fn half_of_two(index: u32) -> RegionConfig {
    RegionConfig {
        limits: LimitsConfig {
            tenant: TenantLimits {
                hard_max: 2,
                burst: 2,
                step: 1,
                ..TenantLimits::default()
            },
            regions: 2,
            region_index: index,
            ..LimitsConfig::default()
        },
        ..region_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_together_admit_at_most_the_tenants_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
    let deploy = |a: &region_node::RegionHandle, tenant: &TenantId| {
        let config = FunctionConfig {
            placement: Placement::Region,
            timeout_ms: 1500,
            ..FunctionConfig::default()
        };
        let wasm = wat::parse_str(LOOP_FOREVER).expect("wat");
        let spin = FunctionName::new("spin").expect("name");
        a.registry()
            .deploy(tenant, &spin, config, &wasm, None)
            .expect("deploys");
    };
    let configs = (half_of_two(0), half_of_two(1));
    let (a, b, token) = seeded_pair(dir.path(), &certs.region, deploy, configs).await;
    let pop = |name: &str, region: std::net::SocketAddr| pop_node::PopConfig {
        state_dir: dir.path().join(name),
        tls: Some(certs.pop.clone()),
        regions: RegionSource::Static(vec![region]),
        http_listen: any_port(),
        ..pop_config()
    };
    let pop_a = pop_node::start(pop("pop-a", a.quic_addr))
        .await
        .expect("POP A");
    let pop_b = pop_node::start(pop("pop-b", b.quic_addr))
        .await
        .expect("POP B");

    // Both POPs hold their region's pushed state (tokens included) before the spins.
    for pop in [&pop_a, &pop_b] {
        assert!(
            eventually(|| pop.sync_status().live).await,
            "a POP's push stream never went live"
        );
    }
    let http = reqwest::Client::new();
    let spin_at = |addr: std::net::SocketAddr| {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move {
            http.post(format!("http://{addr}/v1/functions/spin/invoke"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("answered")
                .status()
                .as_u16()
        })
    };
    // Two at once through A's POP, one through B's: A admits its one slot and refuses the
    // other (429); B admits its own. Each admitted one runs until its timeout (504).
    let (a1, a2, b1) = (
        spin_at(pop_a.http_addr),
        spin_at(pop_a.http_addr),
        spin_at(pop_b.http_addr),
    );
    let (a1, a2, b1) = (
        a1.await.expect("task"),
        a2.await.expect("task"),
        b1.await.expect("task"),
    );
    let mut at_a = [a1, a2];
    at_a.sort_unstable();
    assert_eq!(at_a, [429, 504], "region A admitted more than its share");
    assert_eq!(b1, 504, "region B refused its own share");
    pop_a.shutdown().await;
    pop_b.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}
