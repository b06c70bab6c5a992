//! A tenant's concurrency limit split between two regions (`[limits] regions = 2`), each
//! with its own POP: each region admits its share, so both together admit at most the
//! limit. With their own stores the split is static; on one JetStream store
//! (`rebalance_ms`) the shares follow the demand.

use crate::failover::seeded_pair;
use crate::support::{LOOP_FOREVER, Patience, any_port, pop_config, region_config, synced};
use common::model::{FunctionConfig, FunctionName, Placement, TenantId};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use region_node::limits::{LimitsConfig, TenantLimits};
use region_node::store::jetstream::nats_server::NatsServer;
use region_node::{RegionConfig, StoreBackend, StoreConfig};
use strata::dev::DevCluster;

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

/// Invokes `spin` through the POP at `pop_url` in a task: its status (504 once it ran to
/// its timeout, 429 when refused).
fn spin(http: &reqwest::Client, pop_url: String, token: &str) -> tokio::task::JoinHandle<u16> {
    let (http, token) = (http.clone(), token.to_owned());
    tokio::spawn(async move {
        http.post(format!("{pop_url}/v1/functions/spin/invoke"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answered")
            .status()
            .as_u16()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_together_admit_at_most_the_tenants_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
    let deploy = |a: &region_node::RegionHandle, tenant: &TenantId| {
        let config = FunctionConfig {
            placement: Placement::Region,
            // Long enough that a loaded machine admits the second call while the first runs.
            timeout_ms: 4000,
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
            synced(pop, |s| s.live).await,
            "a POP's push stream never went live"
        );
    }
    let http = reqwest::Client::new();
    let spin_at = |addr: std::net::SocketAddr| spin(&http, format!("http://{addr}"), &token);
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

/// Region `index` of two on `nats`, rebalancing every 100 ms a tenant limit of 4.
fn rebalancing(nats: &NatsServer, index: u32) -> RegionConfig {
    RegionConfig {
        node_id: format!("r{index}"),
        store: StoreConfig {
            backend: StoreBackend::Jetstream,
            nats_url: Some(nats.url()),
            prefix: "split".into(),
            ..StoreConfig::default()
        },
        limits: LimitsConfig {
            tenant: TenantLimits {
                hard_max: 4,
                burst: 4,
                step: 1,
                ..TenantLimits::default()
            },
            regions: 2,
            region_index: index,
            rebalance_ms: 100,
            ..LimitsConfig::default()
        },
        ..region_config()
    }
}

/// The dev tenant's share of the limit at `c`'s region, as its capacity view shows it.
async fn dev_share(http: &reqwest::Client, c: &DevCluster) -> Option<u64> {
    let view: serde_json::Value = http
        .get(format!("{}/v1/capacity", c.region_url()))
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    view["budgets"]
        .as_array()?
        .iter()
        .find(|b| b["tenant"] == "dev")
        .and_then(|b| b["hard_max"].as_u64())
}

#[ignore = "needs nats-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_on_one_store_move_a_tenants_limit_to_where_the_demand_is() {
    let nats = NatsServer::start().expect("nats-server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = DevCluster::start(&dir.path().join("a"), rebalancing(&nats, 0), pop_config())
        .await
        .expect("region a starts");
    let b = DevCluster::start(&dir.path().join("b"), rebalancing(&nats, 1), pop_config())
        .await
        .expect("region b starts");
    let config = FunctionConfig {
        placement: Placement::Region,
        timeout_ms: 8000,
        ..FunctionConfig::default()
    };
    let wasm = wat::parse_str(LOOP_FOREVER).expect("wat");
    let dev = TenantId::new("dev").expect("tenant");
    a.region
        .registry()
        .deploy(
            &dev,
            &FunctionName::new("spin").expect("name"),
            config,
            &wasm,
            None,
        )
        .expect("deploys");
    for c in [&a, &b] {
        assert!(
            synced(&c.pop, |s| s.live).await,
            "a POP's push stream never went live"
        );
    }
    let http = reqwest::Client::new();
    let spin_at = |c: &DevCluster| spin(&http, c.pop_url(), &a.token);
    // Four at once through A: its static half (2) runs, 2 are refused.
    let first: Vec<_> = (0..4).map(|_| spin_at(&a)).collect();
    // B wants nothing, so A's share grows to 3 of 4; B keeps the one slot every region
    // keeps (B has no books for the tenant yet, so only A's view shows it).
    let mut patience = Patience::new();
    let mut share = None;
    while share != Some(3) && patience.more() {
        share = dev_share(&http, &a).await;
    }
    assert_eq!(share, Some(3), "A's share never followed the demand");
    // While A's two still run: A admits a third; B admits one of two: 4 across both.
    let a_third = spin_at(&a);
    let (b1, b2) = (spin_at(&b), spin_at(&b));
    let mut at_b = [b1.await.expect("task"), b2.await.expect("task")];
    at_b.sort_unstable();
    assert_eq!(
        at_b,
        [429, 504],
        "region B admitted other than its one slot"
    );
    let mut at_a = Vec::new();
    for task in first {
        at_a.push(task.await.expect("task"));
    }
    at_a.push(a_third.await.expect("task"));
    at_a.sort_unstable();
    assert_eq!(
        at_a,
        [429, 429, 504, 504, 504],
        "region A ran other than its 3 slots"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_regions_with_their_own_stores_is_refused_at_start() {
    // Each would see only its own demand and grow into the others' static shares.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = half_of_two(0);
    config.state_dir = dir.path().to_path_buf();
    config.limits.rebalance_ms = 100;
    let err = region_node::start(config)
        .await
        .expect_err("rebalancing needs a shared store");
    assert!(
        matches!(&err, region_node::node::StartError::Config(m) if m.contains("rebalance_ms")),
        "{err}"
    );
}
