//! Region choice by RTT, live: a POP listing a far region first and a near one second
//! forwards to the near one. It has to measure both to know: it dials every listed region
//! in the background and feeds each connection's RTT estimate to the region choice, not
//! only the RTT of the region it happens to forward to.

use crate::failover::seeded_pair;
use crate::support::{Patience, any_port, header, pop_config, region_config};
use common::model::{FunctionConfig, FunctionName, Placement};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use std::time::Duration;
use testkit::proxy::DelayProxy;

const HELLO: &str = include_str!("../../examples/hello.wat");

/// One way between the POP and the far region: 50 ms of RTT, ten times the choice's margin.
const FAR: Duration = Duration::from_millis(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_forwards_to_the_nearest_region_not_the_first_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
    let deploy = |a: &region_node::RegionHandle, tenant: &common::model::TenantId| {
        let config = FunctionConfig {
            placement: Placement::Region,
            ..FunctionConfig::default()
        };
        let wasm = wat::parse_str(HELLO).expect("wat");
        a.registry()
            .deploy(
                tenant,
                &FunctionName::new("hello").expect("name"),
                config,
                &wasm,
                None,
            )
            .expect("deploys");
    };
    let configs = (region_config(), region_config());
    let (a, b, token) = seeded_pair(dir.path(), &certs.region, deploy, configs).await;
    let far = DelayProxy::start(FAR).await.expect("proxy binds");
    far.set_upstream(a.quic_addr);
    let pop = pop_node::start(pop_node::PopConfig {
        state_dir: dir.path().join("pop"),
        tls: Some(certs.pop.clone()),
        // The far region first: discovery order alone would pick it.
        regions: RegionSource::Static(vec![far.addr(), b.quic_addr]),
        http_listen: any_port(),
        ..pop_config()
    })
    .await
    .expect("POP starts");
    let url = format!("http://{}/v1/functions/hello/invoke", pop.http_addr);
    let http = reqwest::Client::new();
    let invoke = || async {
        let resp = http
            .post(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("the POP answers");
        assert_eq!(resp.status(), 200, "hello answers");
        header(&resp, "x-strata-executed-at")
    };

    // Until the POP has measured both regions, a request may go to either.
    let mut patience = Patience::new();
    let mut seen = Vec::new();
    while patience.more() {
        let at = invoke().await;
        let near = at == "region/b";
        seen.push(at);
        if near {
            break;
        }
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("region/b"),
        "never forwarded to the near region; went to {:?}",
        seen.iter().collect::<std::collections::BTreeSet<_>>()
    );
    // Then every request goes there.
    for _ in 0..20 {
        assert_eq!(invoke().await, "region/b", "the near region serves");
    }
    pop.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}
