//! A region that dies without a word (its traffic cut, then the node stopped behind the
//! cut: no close frame reaches the POP, as with `kill -9` or a power loss) and comes back
//! on the same state and port. The POP notices the silence well before the transport's
//! idle timeout and answers forwards with a fast 503 instead of hanging them; its local
//! path keeps answering 200 throughout; devices only ever see 200 or 503; the restarted
//! region is used again with everything it had (tenant, token, functions).
//!
//! Waiting is on conditions with deadlines, never on sleeps. How fast each step is, is
//! measured by `scenarios fault region-kill` (docs/performance.md), not asserted here.

use crate::support::{TestCluster, header, pop_config, region_config, until_served};
use common::transport::dev_ca;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use strata::dev::DevCluster;
use testkit::proxy::DelayProxy;

const HELLO: &str = include_str!("../../examples/hello.wat");

/// Phases of the run, as seen by a request when it is sent.
const STEADY: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;
const DONE: u8 = 3;

/// What one request saw: the function, the phase it was sent in, its status and where it
/// ran.
type Outcome = (&'static str, u8, u16, String);

/// A closed-loop worker invoking `name` at `url` until the phase is [`DONE`].
async fn worker(
    http: reqwest::Client,
    url: String,
    token: String,
    name: &'static str,
    phase: Arc<AtomicU8>,
) -> Vec<Outcome> {
    let mut seen = Vec::new();
    loop {
        let sent_in = phase.load(Ordering::Acquire);
        if sent_in == DONE {
            return seen;
        }
        let resp = http
            .post(format!("{url}/v1/functions/{name}/invoke"))
            .bearer_auth(&token)
            .body("x")
            .send()
            .await
            .expect("the POP answers every request");
        let at = header(&resp, "x-strata-executed-at");
        seen.push((name, sent_in, resp.status().as_u16(), at));
        if resp.status() == 503 {
            // A device honouring retry-after would wait; the test only needs not to spin.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_dies_silently_and_returns_costs_only_fast_503s_and_never_the_local_path() {
    let proxy = DelayProxy::start(Duration::ZERO)
        .await
        .expect("proxy binds");
    let c = TestCluster::via(region_config(), pop_config(), &proxy).await;
    c.deploy_wat("near", json!({"placement": "edge"}), HELLO)
        .await;
    c.deploy_wat("far", json!({"placement": "region"}), HELLO)
        .await;
    until_served(&c, "near", "pop/").await;
    until_served(&c, "far", "region/").await;

    let phase = Arc::new(AtomicU8::new(STEADY));
    let mut workers = tokio::task::JoinSet::new();
    for name in ["near", "near", "far", "far"] {
        workers.spawn(worker(
            c.http.clone(),
            c.nodes.pop_url(),
            c.nodes.token.clone(),
            name,
            Arc::clone(&phase),
        ));
    }

    // The region goes silent.
    proxy.set_down(true);
    phase.store(DOWN, Ordering::Release);
    // The POP drops the silent connection on its own rule (1 s by default), well before
    // the transport's 5 s idle timeout, which is all the POP had before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while c.nodes.pop.region_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the POP still holds its silent region's connection after 4 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A forward now fails fast, telling the device when to retry.
    let resp = c.invoke("far", "x").await;
    assert_eq!(resp.status(), 503);
    assert!(
        !header(&resp, "retry-after").is_empty(),
        "503 without retry-after"
    );

    // Behind the cut the region stops (its close frames are lost: a kill, as the POP sees
    // it), and starts again on the same state directory and ports.
    let TestCluster { dir, nodes, http } = c;
    let DevCluster {
        region,
        pop,
        token,
        admin_token,
        ca_cert,
    } = nodes;
    let (http_listen, quic_listen) = (region.http_addr, region.quic_addr);
    region.shutdown().await;
    let certs = dev_ca::init(&dir.path().join("certs")).expect("certs");
    let region = region_node::start(region_node::RegionConfig {
        state_dir: dir.path().join("region"),
        tls: Some(certs.region),
        admin_token: Some(admin_token.clone()),
        http_listen,
        quic_listen,
        ..region_config()
    })
    .await
    .expect("the region restarts on its state and ports");
    proxy.set_upstream(region.quic_addr);
    proxy.set_down(false);
    phase.store(BACK, Ordering::Release);
    let c = TestCluster {
        dir,
        nodes: DevCluster {
            region,
            pop,
            token,
            admin_token,
            ca_cert,
        },
        http,
    };
    // The POP reconnects on its own and forwards again.
    until_served(&c, "far", "region/").await;
    phase.store(DONE, Ordering::Release);
    let mut outcomes = Vec::new();
    while let Some(done) = workers.join_next().await {
        outcomes.extend(done.expect("worker"));
    }

    let odd: Vec<_> = outcomes
        .iter()
        .filter(|(_, _, status, _)| *status != 200 && *status != 503)
        .collect();
    assert!(odd.is_empty(), "statuses other than 200 and 503: {odd:?}");
    let near: Vec<_> = outcomes.iter().filter(|o| o.0 == "near").collect();
    assert!(
        near.iter().all(|o| o.2 == 200),
        "a POP-local call failed while the region was away: {:?}",
        near.iter().find(|o| o.2 != 200)
    );
    assert!(
        near.iter().any(|o| o.1 == DOWN),
        "no POP-local call was answered while the region was down"
    );
    // Nothing the region had accepted was lost: the tenant, its token and its functions
    // answer at the restarted region itself.
    let resp = c.invoke_at(&c.nodes.region_url(), "far", "x").await;
    assert_eq!(resp.status(), 200, "the restarted region lost the function");
    let count = |phase: u8, status: u16| {
        outcomes
            .iter()
            .filter(|o| o.0 == "far" && o.1 == phase && o.2 == status)
            .count()
    };
    eprintln!(
        "far: steady {} x 200; down {} x 200, {} x 503; back {} x 200, {} x 503; near: {} \
         answered, {} while down",
        count(STEADY, 200),
        count(DOWN, 200),
        count(DOWN, 503),
        count(BACK, 200),
        count(BACK, 503),
        near.len(),
        near.iter().filter(|o| o.1 == DOWN).count(),
    );
    c.nodes.shutdown().await;
}
