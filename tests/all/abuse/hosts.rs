//! Route hijack across tenants (issue 15 item 1): tenant A routes `shop.example /`; tenant
//! B, with its own token, tries every way to answer A's visitors (a path under A's host, a
//! wildcard over it, a public-suffix wildcard, IP literals, localhost, a spelling variant,
//! a claim) and is refused with a typed kind, while a device request to A's host through
//! the real POP still runs A's function.

use crate::routes::{CGI_GUEST, add_route, cluster, other_tenant, wait_for_status};
use crate::support::error_kind;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_route_claim_or_cover_an_owned_host() {
    let c = cluster().await;
    let region = c.nodes.region_url();
    c.deploy_wat("shop", json!({"env": {"WHO": "alice"}}), CGI_GUEST)
        .await;
    let mallory = other_tenant(&c, "mallory").await;
    c.nodes
        .deploy_as(
            &mallory,
            "shop",
            json!({"env": {"WHO": "mallory"}}),
            wat::parse_str(CGI_GUEST).expect("wat"),
        )
        .await
        .expect("deploys");
    let mine = json!({"host": "shop.example", "path_prefix": "/", "function": "shop"});
    assert_eq!(add_route(&c, &c.nodes.token, mine).await.status(), 201);

    for (host, prefix, status, kind) in [
        ("shop.example", "/checkout", 409, "host_owned"),
        ("SHOP.EXAMPLE.", "/checkout", 409, "host_owned"),
        ("x.shop.example", "/", 409, "host_owned"),
        ("*.shop.example", "/", 409, "host_owned"),
        ("*.example", "/", 400, "host_not_allowed"),
        ("*.com", "/", 400, "host_not_allowed"),
        ("*.co.uk", "/", 400, "host_not_allowed"),
        ("127.0.0.1", "/", 400, "host_not_allowed"),
        ("localhost", "/", 400, "host_not_allowed"),
        ("[::1]", "/", 400, "bad_request"),
        ("shop.example:443", "/", 400, "bad_request"),
    ] {
        let body = json!({"host": host, "path_prefix": prefix, "function": "shop"});
        let resp = add_route(&c, &mallory, body).await;
        assert_eq!(resp.status(), status, "{host} {prefix}");
        assert_eq!(error_kind(resp).await, kind, "{host} {prefix}");
    }
    // Nor can the host be claimed or released by mallory.
    let claim = c
        .http
        .put(format!("{region}/v1/hosts/shop.example"))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("sent");
    assert_eq!(claim.status(), 409);
    assert_eq!(error_kind(claim).await, "host_owned");
    let release = c
        .http
        .delete(format!("{region}/v1/hosts/shop.example"))
        .bearer_auth(&mallory)
        .send()
        .await
        .expect("sent");
    assert_eq!(release.status(), 404);

    // The victim is still served, by its own function, through the POP.
    let pop = c.nodes.pop_url();
    let resp = wait_for_status(&c, &pop, "shop.example", "/checkout", 201).await;
    let body = resp.text().await.expect("body");
    assert!(body.contains("WHO=alice"), "{body}");
    assert!(!body.contains("WHO=mallory"), "{body}");

    // Ownership as each side sees it.
    let hosts = |token: String| {
        let req = c.http.get(format!("{region}/v1/hosts")).bearer_auth(token);
        async move {
            let v: Value = req.send().await.expect("sent").json().await.expect("json");
            v["hosts"].as_array().expect("hosts").clone()
        }
    };
    assert!(hosts(mallory.clone()).await.is_empty());
    let all = hosts(c.nodes.admin_token.clone()).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["host"], "shop.example");
    assert_ne!(all[0]["tenant"], "mallory");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_assigns_and_releases_hosts() {
    let c = cluster().await;
    let region = c.nodes.region_url();
    let admin = c.nodes.admin_token.clone();
    let acme = other_tenant(&c, "acme").await;
    c.nodes
        .deploy_as(
            &acme,
            "shop",
            json!({}),
            wat::parse_str(CGI_GUEST).expect("wat"),
        )
        .await
        .expect("deploys");
    let loopback = json!({"host": "127.0.0.1", "path_prefix": "/", "function": "shop"});
    let resp = add_route(&c, &acme, loopback.clone()).await;
    assert_eq!(error_kind(resp).await, "host_not_allowed");
    let assign = |host: &str, tenant: &str| {
        c.http
            .put(format!("{region}/v1/hosts/{host}"))
            .bearer_auth(&admin)
            .json(&json!({ "tenant": tenant }))
            .send()
    };
    assert_eq!(
        assign("127.0.0.1", "acme").await.expect("sent").status(),
        200
    );
    assert_eq!(add_route(&c, &acme, loopback).await.status(), 201);
    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "127.0.0.1", "/", 201).await;
    // Assigning an owned host to someone else is refused until it is released, and the
    // release takes the owner's routes with it.
    other_tenant(&c, "beta").await;
    let other = assign("127.0.0.1", "beta").await.expect("sent");
    assert_eq!(other.status(), 409);
    assert_eq!(error_kind(other).await, "host_owned");
    let released = c
        .http
        .delete(format!("{region}/v1/hosts/127.0.0.1"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(released.status(), 204);
    wait_for_status(&c, &pop, "127.0.0.1", "/", 404).await;
    c.nodes.shutdown().await;
}
