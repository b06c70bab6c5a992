//! `GET /v1/openapi.json`: the region describes its control and invoke APIs.

use crate::support::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_serves_an_openapi_3_document_listing_its_paths() {
    let c = TestCluster::start().await;
    let resp = c
        .http
        .get(format!("{}/v1/openapi.json", c.nodes.region_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let doc: serde_json::Value = resp.json().await.expect("JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Strata");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/functions/{name}/invoke", "post"),
        ("/v1/functions", "get"),
        ("/v1/functions/{name}", "put"),
        ("/v1/tenants", "post"),
        ("/v1/routes", "post"),
        ("/v1/routes/{id}", "delete"),
        ("/v1/functions/{name}/logs", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op["responses"].is_object(), "{method} {path} not described");
    }
    // Every schema an operation refers to is defined.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
    c.nodes.shutdown().await;
}
