//! Instance reuse for `http`-ABI components through real nodes (`reuse_instances`): the
//! hello component counts the requests its instance has handled (`x-count`), so each
//! response shows whether it ran in a fresh instance (`001`) or in a warm one, at the POP
//! (once the function is popular there) and at the region (forwarded by the POP).

use crate::components::HELLO_HTTP;
use crate::support::{Patience, TestCluster, header, until_served};
use serde_json::json;

/// Deploys the hello component as `name`, opted in to reuse, with `config` added.
pub async fn deploy_reusing(c: &TestCluster, name: &str, mut config: serde_json::Value) {
    config["abi"] = json!("http");
    config["reuse_instances"] = json!(true);
    c.deploy_wat(name, config, HELLO_HTTP).await;
}

/// What one request through the POP showed.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// `pop` or `region`.
    pub tier: String,
    /// The instance's request count.
    pub count: u32,
    /// `cold` or `warm`.
    pub start: String,
    /// The response body (`<method> <path>\n<request body>`).
    pub body: String,
}

/// Invokes `name` through the POP with `token` and `payload`, with an affinity key when
/// given.
pub async fn call_as(
    c: &TestCluster,
    token: &str,
    name: &str,
    key: Option<&str>,
    payload: &'static str,
) -> Seen {
    let mut req = c
        .http
        .post(format!("{}/v1/functions/{name}/invoke", c.nodes.pop_url()))
        .bearer_auth(token)
        .body(payload);
    if let Some(key) = key {
        req = req.header("x-strata-affinity", key);
    }
    let resp = req.send().await.expect("request completes");
    assert_eq!(resp.status(), 200, "{name}");
    let at = header(&resp, "x-strata-executed-at");
    Seen {
        tier: at.split('/').next().unwrap_or_default().to_owned(),
        count: header(&resp, "x-count")
            .parse()
            .expect("x-count is a number"),
        start: header(&resp, "x-strata-start"),
        body: resp.text().await.expect("body"),
    }
}

/// Invokes `name` through the POP as `token`'s tenant until the POP runs it itself.
pub async fn until_local(c: &TestCluster, token: &str, name: &str) {
    let mut patience = Patience::new();
    while patience.more() {
        // Each call is the traffic that makes the function popular there: no pause.
        if call_as(c, token, name, None, "").await.tier == "pop" {
            return;
        }
    }
    panic!("{name} never ran at the POP");
}

async fn call(c: &TestCluster, name: &str, key: Option<&str>) -> Seen {
    call_as(c, &c.nodes.token, name, key, "payload").await
}

impl Seen {
    /// Where it ran, the instance's count and the start kind.
    fn at(&self) -> (&str, u32, &str) {
        (&self.tier, self.count, &self.start)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_in_component_keeps_its_instance_at_the_pop_and_at_the_region() {
    let c = TestCluster::start().await;
    deploy_reusing(&c, "near", json!({})).await;
    deploy_reusing(&c, "far", json!({"placement": "region"})).await;
    c.deploy_wat("fresh", json!({"abi": "http"}), HELLO_HTTP)
        .await;
    // Popular at the POP: it runs there, in an instance of the POP's own.
    until_served(&c, "near", "pop/").await;
    let first = call(&c, "near", None).await;
    assert_eq!((first.tier.as_str(), first.start.as_str()), ("pop", "warm"));
    for n in 1..=3 {
        let next = call(&c, "near", None).await;
        assert_eq!(next.at(), ("pop", first.count + n, "warm"));
    }
    // Forwarded to the region, which keeps the instance too; each request sees only its
    // own request.
    for (n, start) in [(1, "cold"), (2, "warm"), (3, "warm")] {
        let far = call(&c, "far", None).await;
        assert_eq!(far.at(), ("region", n, start));
        assert_eq!(far.body, "POST /v1/functions/far/invoke\npayload");
    }
    // Without the opt-in, every request gets a fresh instance.
    until_served(&c, "fresh", "pop/").await;
    for _ in 0..3 {
        let fresh = call(&c, "fresh", None).await;
        assert_eq!((fresh.tier.as_str(), fresh.count), ("pop", 1));
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_key_finds_its_component_instance_again_at_both_tiers() {
    let c = TestCluster::start().await;
    deploy_reusing(&c, "near", json!({})).await;
    deploy_reusing(&c, "far", json!({"placement": "region"})).await;
    until_served(&c, "near", "pop/").await;
    // Two keys that map to different slots of a pool of the default size.
    let slots = common::sandbox::SandboxConfig::default().warm_pool_size;
    let slot = |k: &str| common::policy::affinity::choose_slot(k.as_bytes(), slots);
    let a = "visitor-0";
    let b = (1..64)
        .map(|i| format!("visitor-{i}"))
        .find(|k| slot(k) != slot(a))
        .expect("a key in another slot");
    for (name, tier) in [("near", "pop"), ("far", "region")] {
        let a1 = call(&c, name, Some(a)).await;
        let b1 = call(&c, name, Some(&b)).await;
        assert_eq!((a1.tier.as_str(), b1.tier.as_str()), (tier, tier));
        // Each key comes back to its own instance, whatever the other did in between.
        for n in 1..=2 {
            let again = call(&c, name, Some(a)).await;
            assert_eq!(again.at(), (tier, a1.count + n, "warm"), "{name}");
            let again = call(&c, name, Some(&b)).await;
            assert_eq!(again.at(), (tier, b1.count + n, "warm"), "{name}");
        }
    }
    c.nodes.shutdown().await;
}

/// Deploys the `lang` example (built to `file`) with `reuse_instances` and checks its
/// interpreter starts once: the next requests find its instance warm.
async fn a_handler_that_drops_its_resources_is_reused(lang: &str, file: &str) {
    let wasm = crate::components::build_example(lang, file);
    let c = TestCluster::start().await;
    let config = json!({"abi": "http", "reuse_instances": true, "placement": "region"});
    c.nodes.deploy(lang, config, wasm).await.expect("deploys");
    let mut starts = Vec::new();
    for _ in 0..3 {
        let resp = c.invoke(lang, "payload").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-guest"), lang);
        starts.push(header(&resp, "x-strata-start"));
        assert_eq!(
            resp.text().await.expect("body"),
            format!("POST /v1/functions/{lang}/invoke\npayload")
        );
    }
    assert_eq!(starts, ["cold", "warm", "warm"]);
    c.nodes.shutdown().await;
}

#[ignore = "needs componentize-py"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_that_drops_its_resources_is_reused() {
    a_handler_that_drops_its_resources_is_reused("python", "hello-py.wasm").await;
}

#[ignore = "needs componentize-js"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_that_drops_its_resources_is_reused() {
    a_handler_that_drops_its_resources_is_reused("js", "hello-js.wasm").await;
}
