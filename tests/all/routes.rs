//! HTTP routes (DESIGN §4): a plain device request whose host and path match a route runs
//! the route's function in CGI form, through the POP or the region, with no token.

use crate::support::{TestCluster, error_kind, header, pop_config, region_config};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long a route change may take to reach the POP in these tests (it polls every 20 ms).
const PROPAGATION: Duration = Duration::from_secs(10);

/// Prints a CGI header block, then its environment (one variable per line), then stdin.
pub const CGI_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 256) "Status: 201 Created\r\nContent-Type: text/x-env\r\nX-Guest: cgi\r\n\r\n")
  (func $out (param $p i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $p))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "_start")
    (local $n i32) (local $i i32) (local $p i32) (local $len i32)
    (call $out (i32.const 256) (i32.const 63))
    ;; counts at 0 and 4; pointers at 1024; strings at 8192
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 8192)))
    (local.set $n (i32.load (i32.const 0)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $p (i32.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 4)))))
        (local.set $len (i32.const 0))
        (block $end (loop $scan
          (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $len)))))
          (local.set $len (i32.add (local.get $len) (i32.const 1)))
          (br $scan)))
        (i32.store8 (i32.add (local.get $p) (local.get $len)) (i32.const 10))
        (call $out (local.get $p) (i32.add (local.get $len) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; stdin (one read of up to 64 KiB is plenty for these tests) to stdout
    (i32.store (i32.const 32) (i32.const 65536))
    (i32.store (i32.const 36) (i32.const 65536))
    (drop (call $read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $out (i32.const 65536) (i32.load (i32.const 40)))))"#;

/// Prints a header block whose status is not a number.
const BAD_CGI_GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Status: lots\n\nbody")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 18))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// A cluster whose POP refreshes its route table every 20 ms.
pub async fn cluster() -> TestCluster {
    let pop = pop_node::PopConfig {
        route_refresh_ms: 20,
        log_ship_ms: 20,
        ..pop_config()
    };
    TestCluster::with(region_config(), pop).await
}

/// A second tenant with its own token, created with the operator token.
pub async fn other_tenant(c: &TestCluster, id: &str) -> String {
    let region = c.nodes.region_url();
    let admin = &c.nodes.admin_token;
    let resp = c
        .http
        .post(format!("{region}/v1/tenants"))
        .bearer_auth(admin)
        .json(&json!({"id": id}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let resp = c
        .http
        .post(format!("{region}/v1/tenants/{id}/tokens"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    v["token"].as_str().expect("token").to_owned()
}

pub async fn add_route(c: &TestCluster, token: &str, body: Value) -> reqwest::Response {
    c.http
        .post(format!("{}/v1/routes", c.nodes.region_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent")
}

async fn list_routes(c: &TestCluster, token: &str) -> Vec<Value> {
    let v: Value = c
        .http
        .get(format!("{}/v1/routes", c.nodes.region_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    v["routes"].as_array().expect("routes").clone()
}

/// A plain device request: no token, just a Host header.
pub async fn get(c: &TestCluster, base: &str, host: &str, path: &str) -> reqwest::Response {
    c.http
        .get(format!("{base}{path}"))
        .header("host", host)
        .send()
        .await
        .expect("sent")
}

/// Polls `base` until a request for (host, path) answers `wanted`.
pub async fn wait_for_status(
    c: &TestCluster,
    base: &str,
    host: &str,
    path: &str,
    wanted: u16,
) -> reqwest::Response {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let resp = get(c, base, host, path).await;
        if resp.status() == wanted {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} does not answer {wanted} after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_serves_a_plain_request_through_the_pop_in_cgi_form() {
    let c = cluster().await;
    c.deploy_wat("shop", json!({}), CGI_GUEST).await;
    let resp = add_route(
        &c,
        &c.nodes.token,
        json!({"host": "Shop.Example", "path_prefix": "/api", "function": "shop"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let route: Value = resp.json().await.expect("json");
    assert_eq!(route["host"], "shop.example");
    assert_eq!(route["id"].as_str().map(str::len), Some(16));

    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "shop.example", "/api", 201).await;
    let resp = c
        .http
        .post(format!("{pop}/api/items?id=3&x=y"))
        .header("host", "shop.example:8081")
        .header("x-custom", "yes")
        .body("the body")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "content-type"), "text/x-env");
    assert_eq!(header(&resp, "x-guest"), "cgi");
    assert_eq!(header(&resp, "x-strata-request-id").len(), 32);
    let body = resp.text().await.expect("body");
    for expected in [
        "REQUEST_METHOD=POST",
        "PATH_INFO=/api/items",
        "QUERY_STRING=id=3&x=y",
        "SERVER_NAME=shop.example",
        "HTTP_X_CUSTOM=yes",
        "CONTENT_LENGTH=8",
        "STRATA_FUNCTION=shop",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    assert!(body.ends_with("the body"), "{body}");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popular_route_traffic_runs_at_the_pop_without_any_token() {
    let c = cluster().await;
    c.deploy_wat("shop", json!({}), CGI_GUEST).await;
    let resp = add_route(
        &c,
        &c.nodes.token,
        json!({"host": "shop.example", "path_prefix": "/", "function": "shop"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "shop.example", "/", 201).await;
    // Route requests carry no token; the POP knows the owner from the route table and the
    // function from the region's pushes, so once the route is popular it runs locally.
    let mut ran_at_pop = false;
    let mut patience = crate::support::Patience::new();
    while patience.more() {
        let resp = c
            .http
            .get(format!("{pop}/page"))
            .header("host", "shop.example")
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 201);
        if header(&resp, "x-strata-executed-at").starts_with("pop/") {
            ran_at_pop = true;
            break;
        }
    }
    assert!(ran_at_pop, "route traffic never ran at the POP");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_prefix_wins_and_anything_else_is_404_at_both_tiers() {
    let c = cluster().await;
    c.deploy_wat("shop", json!({}), CGI_GUEST).await;
    let token = c.nodes.token.clone();
    for (prefix, function) in [("/", "hello"), ("/api", "shop")] {
        let body = json!({"host": "shop.example", "path_prefix": prefix, "function": function});
        assert_eq!(add_route(&c, &token, body).await.status(), 201);
    }
    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "shop.example", "/api/x", 201).await;
    for base in [pop, c.nodes.region_url()] {
        let api = get(&c, &base, "shop.example", "/api/x").await;
        assert_eq!(
            (api.status().as_u16(), header(&api, "x-guest")),
            (201, "cgi".into())
        );
        let root = get(&c, &base, "shop.example", "/apix").await;
        assert_eq!(root.status(), 200);
        assert_eq!(root.text().await.expect("body"), "Hello, world!\n");
        let other = get(&c, &base, "elsewhere.example", "/api").await;
        assert_eq!(other.status(), 404);
        assert_eq!(error_kind(other).await, "not_found");
        // The API's path space is never routed, even under a "/" route.
        let api_space = get(&c, &base, "shop.example", "/v1/nothing").await;
        assert_eq!(api_space.status(), 404);
        assert_eq!(error_kind(api_space).await, "not_found");
    }
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_patterns_are_400_and_a_taken_pair_is_409_for_any_tenant() {
    let c = cluster().await;
    let token = c.nodes.token.clone();
    let other = other_tenant(&c, "acme").await;
    for (host, prefix) in [
        ("shop.example", "api"),
        ("shop.example:80", "/"),
        ("*", "/"),
        ("shop.example", "/v1/functions"),
        ("shop.example", "/a b"),
    ] {
        let body = json!({"host": host, "path_prefix": prefix, "function": "hello"});
        let resp = add_route(&c, &token, body).await;
        assert_eq!(resp.status(), 400, "{host} {prefix}");
        assert_eq!(error_kind(resp).await, "bad_request");
    }
    let unknown_field =
        json!({"host": "a.example", "path_prefix": "/", "function": "hello", "x": 1});
    assert_eq!(add_route(&c, &token, unknown_field).await.status(), 400);
    assert!(list_routes(&c, &token).await.is_empty());

    let body = json!({"host": "shop.example", "path_prefix": "/", "function": "hello"});
    assert_eq!(add_route(&c, &token, body.clone()).await.status(), 201);
    let again = add_route(&c, &token, body).await;
    assert_eq!(again.status(), 409);
    assert_eq!(error_kind(again).await, "conflict");
    // acme has its own hello, but the pair is taken.
    c.nodes
        .deploy_as(
            &other,
            "hello",
            json!({}),
            wat::parse_str(CGI_GUEST).expect("wat"),
        )
        .await
        .expect("deploys");
    let theirs = json!({"host": "SHOP.example", "path_prefix": "/", "function": "hello"});
    assert_eq!(add_route(&c, &other, theirs).await.status(), 409);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_invisible_and_untouchable_to_other_tenants() {
    let c = cluster().await;
    let token = c.nodes.token.clone();
    let other = other_tenant(&c, "acme").await;
    let body = json!({"host": "shop.example", "path_prefix": "/", "function": "hello"});
    let route: Value = add_route(&c, &token, body)
        .await
        .json()
        .await
        .expect("json");
    let id = route["id"].as_str().expect("id");
    assert!(list_routes(&c, &other).await.is_empty());
    assert_eq!(list_routes(&c, &token).await.len(), 1);
    let url = format!("{}/v1/routes/{id}", c.nodes.region_url());
    let theirs = c
        .http
        .delete(&url)
        .bearer_auth(&other)
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status(), 404);
    // Another tenant cannot route to this tenant's function either.
    let steal = json!({"host": "evil.example", "path_prefix": "/", "function": "hello"});
    let resp = add_route(&c, &other, steal).await;
    assert_eq!(resp.status(), 400);
    let anonymous = c
        .http
        .get(format!("{}/v1/routes", c.nodes.region_url()))
        .send()
        .await;
    assert_eq!(anonymous.expect("sent").status(), 401);
    let mine = c
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(mine.status(), 204);
    assert!(list_routes(&c, &token).await.is_empty());
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_route_stops_serving_at_the_pop() {
    let c = cluster().await;
    let token = c.nodes.token.clone();
    let body = json!({"host": "gone.example", "path_prefix": "/", "function": "hello"});
    let route: Value = add_route(&c, &token, body)
        .await
        .json()
        .await
        .expect("json");
    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "gone.example", "/", 200).await;
    let url = format!(
        "{}/v1/routes/{}",
        c.nodes.region_url(),
        route["id"].as_str().expect("id")
    );
    let resp = c
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let after = wait_for_status(&c, &pop, "gone.example", "/", 404).await;
    assert_eq!(error_kind(after).await, "not_found");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cgi_output_is_a_502_flagged_as_the_functions_error() {
    let c = cluster().await;
    c.deploy_wat("bad", json!({}), BAD_CGI_GUEST).await;
    let body = json!({"host": "bad.example", "path_prefix": "/", "function": "bad"});
    assert_eq!(add_route(&c, &c.nodes.token, body).await.status(), 201);
    let resp = get(&c, &c.nodes.region_url(), "bad.example", "/").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        header(&resp, "x-strata-function-error"),
        "invalid-cgi-response"
    );
    assert_eq!(error_kind(resp).await, "invalid_cgi_response");
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_affinity_cookie_keeps_a_visitor_on_one_version_of_a_rollout() {
    let c = cluster().await;
    let (region, token) = (c.nodes.region_url(), c.nodes.token.clone());
    for v in ["1", "2"] {
        c.deploy_wat("shop", json!({"env": {"V": v}}), CGI_GUEST)
            .await;
        let r = c
            .http
            .post(format!("{region}/v1/functions/shop/versions"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");
        assert!(r.status().is_success(), "publish: {}", r.status());
    }
    let r = c
        .http
        .put(format!("{region}/v1/functions/shop/aliases/live"))
        .bearer_auth(&token)
        .json(&json!({"routing": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    // A malformed cookie name is refused and changes nothing.
    let bad = json!({"host": "shop.example", "path_prefix": "/", "function": "shop",
                     "affinity": {"cookie": "no spaces"}});
    assert_eq!(add_route(&c, &token, bad).await.status(), 400);
    let resp = add_route(
        &c,
        &token,
        json!({"host": "shop.example", "path_prefix": "/", "function": "shop",
               "qualifier": "live", "affinity": {"cookie": "sid"}}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let route: Value = resp.json().await.expect("json");
    assert_eq!(route["affinity"], json!({"cookie": "sid"}));
    let pop = c.nodes.pop_url();
    wait_for_status(&c, &pop, "shop.example", "/", 201).await;
    // 100 visitors, three requests each (four visitors at a time): each visitor's session
    // cookie keeps it on one version; visitors still split about 90/10.
    let mut twos = 0;
    for chunk in 0..25 {
        let visits = (0..4).map(|i| {
            let (c, pop) = (&c, &pop);
            async move {
                let mut seen = Vec::new();
                for _ in 0..3 {
                    let resp = c
                        .http
                        .get(format!("{pop}/cart"))
                        .header("host", "shop.example")
                        .header(
                            "cookie",
                            format!("theme=dark; sid=visitor-{}", chunk * 4 + i),
                        )
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(resp.status(), 201);
                    seen.push(header(&resp, "x-strata-version"));
                }
                seen
            }
        });
        for seen in futures::future::join_all(visits).await {
            assert!(
                seen.iter().all(|v| *v == seen[0]),
                "a visitor moved between versions: {seen:?}"
            );
            twos += usize::from(seen[0] == "2");
        }
    }
    // Binomial(100, 0.1): 10 +- 4 sigma (3) is 0..22; none at all would be a 2.7e-5 event.
    assert!(
        (1..=22).contains(&twos),
        "{twos} of 100 visitors on version 2"
    );
    c.nodes.shutdown().await;
}
