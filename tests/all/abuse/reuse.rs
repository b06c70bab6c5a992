//! Instance reuse across tenants: a hostile tenant's component that opts in to reuse
//! (`reuse_instances`) to keep whatever it sees between requests never sees another
//! tenant's request, even with the same code, the same function name and the same
//! affinity key: warm pools are per function version, never shared.

use crate::components::HELLO_HTTP;
use crate::components_reuse::{call_as, deploy_reusing, until_local};
use crate::support::tenant;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_component_instance_never_serves_another_tenant() {
    let c = crate::support::TestCluster::start().await;
    // The hostile tenant (`dev`) and the victim deploy byte-identical components under
    // the same name, both opted in to reuse and placed at the edge.
    let hostile = c.nodes.token.clone();
    deploy_reusing(&c, "hello-http", json!({"placement": "edge"})).await;
    let victim = tenant(&c, "victim").await;
    let config = json!({"abi": "http", "reuse_instances": true, "placement": "edge"});
    let wasm = wat::parse_str(HELLO_HTTP).expect("valid wat");
    c.nodes
        .deploy_as(&victim, "hello-http", config, wasm)
        .await
        .expect("deploys");
    until_local(&c, &hostile, "hello-http").await;
    until_local(&c, &victim, "hello-http").await;
    let key = Some("shared-key");
    let before = call_as(&c, &hostile, "hello-http", key, "probe").await;
    assert_eq!(before.tier, "pop");
    // The victim's requests run in the victim's own instance: its count is its own.
    let v1 = call_as(&c, &victim, "hello-http", key, "card 4242").await;
    let v2 = call_as(&c, &victim, "hello-http", key, "card 4242").await;
    assert_eq!((v1.tier.as_str(), v2.tier.as_str()), ("pop", "pop"));
    assert_eq!(v2.count, v1.count + 1);
    // The hostile instance goes on from its own last request, and sees only its own.
    let after = call_as(&c, &hostile, "hello-http", key, "probe").await;
    assert_eq!(
        (after.tier.as_str(), after.count),
        ("pop", before.count + 1)
    );
    assert_eq!(after.body, "POST /v1/functions/hello-http/invoke\nprobe");
    c.nodes.shutdown().await;
}
