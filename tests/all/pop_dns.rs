//! A POP that knows its regions only by DNS name finds them through a real DNS server.

use crate::dns::TestDns;
use crate::support::{TestCluster, header, pop_config};
use common::transport::dev_ca;
use pop_node::discovery::RegionSource;
use std::net::IpAddr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_finds_its_region_through_dns_srv() {
    let c = TestCluster::start().await;
    let dns = TestDns::start().await.expect("dns server");
    let port = c.nodes.region.quic_addr.port();
    dns.set_srv(
        "_strata._udp.regions.strata.test.",
        30,
        vec![(10, 10, port, "region-1.strata.test.".to_owned())],
    );
    dns.set_a(
        "region-1.strata.test.",
        30,
        vec![IpAddr::from([127, 0, 0, 1])],
    );
    let pop = pop_node::start(pop_node::PopConfig {
        state_dir: c.dir.path().join("pop-dns"),
        // The dev CA in the cluster's state dir is reused: same CA, the POP's certificate.
        tls: Some(
            dev_ca::init(&c.dir.path().join("certs"))
                .expect("certs")
                .pop,
        ),
        regions: RegionSource::Dns {
            name: "regions.strata.test.".into(),
            port: 4433,
        },
        dns_server: Some(dns.addr),
        ..pop_config()
    })
    .await
    .expect("POP starts");
    let resp = c
        .invoke_at(&format!("http://{}", pop.http_addr), "hello", "dns")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-strata-executed-at"), "region/region-1");
    assert_eq!(resp.text().await.expect("body"), "Hello, dns!\n");
    pop.shutdown().await;
    c.nodes.shutdown().await;
}
