//! The control plane with real nodes: tenant isolation on every resource, config
//! validation, versions and weighted aliases at both tiers, push propagation, dynamic
//! deployment under load, a POP catching up after being offline, racing deploys.

use crate::support::{TestCluster, error_kind, header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use strata::client::deploy_form;

/// Generous bound for anything that waits on propagation; never a timing assertion.
const DEADLINE: Duration = Duration::from_secs(20);

/// A command module that prints `text` and exits 0.
fn say(text: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{text}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {len}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = text.len()
    );
    wat::parse_str(wat).expect("valid wat")
}

struct Api<'a> {
    c: &'a TestCluster,
    token: String,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.c.nodes.region_url())
    }

    async fn deploy(&self, name: &str, config: Value, wasm: Vec<u8>) -> reqwest::Response {
        self.deploy_at(name, config, wasm, None).await
    }

    async fn deploy_at(
        &self,
        name: &str,
        config: Value,
        wasm: Vec<u8>,
        expect_revision: Option<u64>,
    ) -> reqwest::Response {
        let mut url = self.url(&format!("/v1/functions/{name}"));
        if let Some(r) = expect_revision {
            url.push_str(&format!("?expect_revision={r}"));
        }
        self.c
            .http
            .put(url)
            .bearer_auth(&self.token)
            .multipart(deploy_form(&config, wasm).expect("form"))
            .send()
            .await
            .expect("request completes")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .c
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request completes")
    }

    async fn invoke(&self, base: &str, name: &str, qualifier: Option<&str>) -> reqwest::Response {
        let mut url = format!("{base}/v1/functions/{name}/invoke");
        if let Some(q) = qualifier {
            url.push_str(&format!("?qualifier={q}"));
        }
        self.c
            .http
            .post(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request completes")
    }
}

fn dev(c: &TestCluster) -> Api<'_> {
    Api {
        c,
        token: c.nodes.token.clone(),
    }
}

/// Creates tenant `id` with the operator token and returns an [`Api`] with its token.
async fn tenant<'a>(c: &'a TestCluster, id: &str) -> Api<'a> {
    let admin = Api {
        c,
        token: c.nodes.admin_token.clone(),
    };
    let r = admin
        .send(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(json!({"id": id, "max_memory_mb": 256})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = admin
        .send(
            reqwest::Method::POST,
            &format!("/v1/tenants/{id}/tokens"),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    Api {
        c,
        token: v["token"].as_str().expect("token").to_owned(),
    }
}

async fn publish(api: &Api<'_>, name: &str) -> u64 {
    let r = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/functions/{name}/versions"),
            None,
        )
        .await;
    assert!(r.status().is_success(), "publish: {}", r.status());
    let v: Value = r.json().await.expect("json");
    v["version"].as_u64().expect("version number")
}

/// Waits until the POP has applied registry revision `revision`; returns how long it took.
async fn pop_reaches(c: &TestCluster, revision: u64) -> Duration {
    let started = Instant::now();
    while c.nodes.pop.sync_status().revision < revision {
        assert!(
            started.elapsed() < DEADLINE,
            "POP did not reach revision {revision}: {:?}",
            c.nodes.pop.sync_status()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

fn region_revision(c: &TestCluster) -> u64 {
    c.nodes
        .region
        .registry()
        .store()
        .revision()
        .expect("revision")
}

/// Invokes at the POP until `done` holds for a response (body, executed-at); bounded.
async fn invoke_until(api: &Api<'_>, name: &str, done: impl Fn(&str, &str) -> bool) {
    let started = Instant::now();
    loop {
        let r = api.invoke(&api.c.nodes.pop_url(), name, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let at = header(&r, "x-strata-executed-at");
        let body = r.text().await.expect("body");
        if done(&body, &at) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "condition not met; last {body:?} at {at}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn another_tenant_can_never_see_or_touch_functions_versions_or_aliases() {
    let c = TestCluster::start().await;
    let owner = dev(&c);
    assert_eq!(
        owner
            .deploy("secret", json!({}), say("mine"))
            .await
            .status(),
        StatusCode::OK
    );
    publish(&owner, "secret").await;
    let r = owner
        .send(
            reqwest::Method::PUT,
            "/v1/functions/secret/aliases/prod",
            Some(json!({"routing": [{"version": 1}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let other = tenant(&c, "other").await;
    use reqwest::Method as M;
    for (method, path, body) in [
        (M::GET, "/v1/functions/secret", None),
        (M::DELETE, "/v1/functions/secret", None),
        (M::POST, "/v1/functions/secret/versions", None),
        (M::GET, "/v1/functions/secret/versions", None),
        (M::DELETE, "/v1/functions/secret/versions/1", None),
        (M::GET, "/v1/functions/secret/aliases", None),
        (M::GET, "/v1/functions/secret/aliases/prod", None),
        (
            M::PUT,
            "/v1/functions/secret/aliases/prod",
            Some(json!({"routing": [{"version": 1}]})),
        ),
        (M::DELETE, "/v1/functions/secret/aliases/prod", None),
    ] {
        let r = other.send(method.clone(), path, body).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(error_kind(r).await, "not_found");
    }
    let listed: Value = other
        .send(M::GET, "/v1/functions", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["functions"], json!([]));
    for base in [c.nodes.pop_url(), c.nodes.region_url()] {
        for q in [None, Some("1"), Some("prod"), Some("$LATEST")] {
            let r = other.invoke(&base, "secret", q).await;
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "invoke at {base} with {q:?}"
            );
        }
    }
    // A tenant token is not the operator's.
    let r = other
        .send(M::POST, "/v1/tenants", Some(json!({"id": "sneaky"})))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The other tenant's own function of the same name is its own.
    assert_eq!(
        other
            .deploy("secret", json!({}), say("theirs"))
            .await
            .status(),
        StatusCode::OK
    );
    let r = owner
        .invoke(&c.nodes.region_url(), "secret", Some("prod"))
        .await;
    assert_eq!(r.text().await.expect("body"), "mine");
    let r = other.invoke(&c.nodes.region_url(), "secret", None).await;
    assert_eq!(r.text().await.expect("body"), "theirs");
}

#[tokio::test]
async fn bad_function_config_is_refused_with_a_clear_error_and_nothing_stored() {
    let c = TestCluster::start().await;
    let small = tenant(&c, "small").await;
    for (name, config, says) in [
        ("f", json!({"memry_mb": 64}), "unknown field"),
        ("f", json!({"memory_mb": 512}), "memory_mb"),
        ("f", json!({"timeout_ms": 0}), "timeout_ms"),
        ("f", json!({"timeout_ms": 900_001}), "timeout_ms"),
        ("Bad_Name", json!({}), "function name"),
    ] {
        let r = small.deploy(name, config.clone(), say("x")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{config}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["kind"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{message:?} should mention {says:?}"
        );
    }
    let listed: Value = small
        .send(reqwest::Method::GET, "/v1/functions", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["functions"], json!([]));
}

#[tokio::test]
async fn versions_and_a_weighted_alias_are_honoured_at_both_tiers() {
    let c = TestCluster::start().await;
    let api = dev(&c);
    use reqwest::Method as M;
    api.deploy("shift", json!({}), say("one")).await;
    assert_eq!(publish(&api, "shift").await, 1);
    api.deploy("shift", json!({}), say("two")).await;
    assert_eq!(publish(&api, "shift").await, 2);
    // Missing version: 400; bad weights: 400; both leave nothing behind.
    let r = api
        .send(
            M::PUT,
            "/v1/functions/shift/aliases/live",
            Some(json!({"routing": [{"version": 9}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .send(
            M::PUT,
            "/v1/functions/shift/aliases/live",
            Some(json!({"routing": [{"version": 1, "weight": 90}, {"version": 2, "weight": 20}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_kind(r).await, "bad_request");
    let r = api
        .send(
            M::PUT,
            "/v1/functions/shift/aliases/live",
            Some(json!({"routing": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let alias: Value = r.json().await.expect("json");
    assert_eq!(alias["routing"][1], json!({"version": 2, "weight": 10}));
    // Version 2 is pinned by the alias.
    let r = api
        .send(M::DELETE, "/v1/functions/shift/versions/2", None)
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Explicit versions are served exactly, at both tiers.
    for base in [c.nodes.region_url(), c.nodes.pop_url()] {
        let r = api.invoke(&base, "shift", Some("1")).await;
        assert_eq!(header(&r, "x-strata-version"), "1");
        assert_eq!(r.text().await.expect("body"), "one");
        let r = api.invoke(&base, "shift", Some("nope")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = api.invoke(&base, "shift", Some("7")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // 1000 invocations through each tier: version 2 gets 10% within 4 binomial sigmas
    // (sigma = sqrt(1000 * 0.1 * 0.9) = 9.5).
    for base in [c.nodes.pop_url(), c.nodes.region_url()] {
        let mut twos = 0;
        for chunk in 0..125 {
            let calls = (0..8).map(|_| api.invoke(&base, "shift", Some("live")));
            for r in futures::future::join_all(calls).await {
                assert_eq!(r.status(), StatusCode::OK, "chunk {chunk}");
                let version = header(&r, "x-strata-version");
                let body = r.text().await.expect("body");
                match version.as_str() {
                    "1" => assert_eq!(body, "one"),
                    "2" => {
                        assert_eq!(body, "two");
                        twos += 1;
                    }
                    other => panic!("alias ran version {other:?}"),
                }
            }
        }
        println!("alias live at {base}: {twos}/1000 invocations ran version 2");
        assert!(
            (100i32 - twos).abs() <= 38,
            "{twos}/1000 ran version 2 at {base}"
        );
    }
}

#[tokio::test]
async fn a_deploy_propagates_to_the_pop_which_then_serves_it() {
    let c = TestCluster::start().await;
    let api = dev(&c);
    let r = api
        .deploy("prop", json!({"placement": "edge"}), say("old"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    invoke_until(&api, "prop", |body, at| {
        body == "old" && at.starts_with("pop/")
    })
    .await;
    // Measured from sending the deploy: the push usually lands before the deploy's own
    // HTTP response does, so "after the response" would read as zero.
    let mut samples = Vec::new();
    for i in 0..5 {
        let text = format!("new{i}");
        let sent = Instant::now();
        let r = api
            .deploy("prop", json!({"placement": "edge"}), say(&text))
            .await;
        let answered = sent.elapsed();
        let deployed: Value = r.json().await.expect("json");
        pop_reaches(&c, deployed["revision"].as_u64().expect("revision")).await;
        samples.push((sent.elapsed(), answered));
        invoke_until(&api, "prop", |body, at| {
            body == text && at.starts_with("pop/")
        })
        .await;
    }
    samples.sort();
    println!(
        "push propagation on loopback (deploy sent -> POP applied; deploy response time), \
         5 deploys: min {:?} ({:?}) median {:?} ({:?}) max {:?} ({:?})",
        samples[0].0, samples[0].1, samples[2].0, samples[2].1, samples[4].0, samples[4].1
    );
}

#[tokio::test]
async fn a_deploy_under_load_fails_nothing_and_never_cold_starts_the_old_version_at_the_pop() {
    let c = TestCluster::start().await;
    let api = dev(&c);
    api.deploy("busy", json!({"placement": "edge"}), say("v1"))
        .await;
    invoke_until(&api, "busy", |body, at| {
        body == "v1" && at.starts_with("pop/")
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = (0..4).map(|_| {
        let http = c.http.clone();
        let url = format!("{}/v1/functions/busy/invoke", c.nodes.pop_url());
        let token = c.nodes.token.clone();
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("completes");
                let status = r.status();
                let at = header(&r, "x-strata-executed-at");
                let start = header(&r, "x-strata-start");
                seen.push((status, r.text().await.expect("body"), at, start));
            }
            seen
        })
    });
    let load: Vec<_> = load.collect();
    api.deploy("busy", json!({"placement": "edge"}), say("v2"))
        .await;
    invoke_until(&api, "busy", |body, at| {
        body == "v2" && at.starts_with("pop/")
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    let mut v1_at_pop = 0;
    for task in load {
        for (status, body, at, start) in task.await.expect("load task") {
            total += 1;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body == "v1" || body == "v2", "torn response {body:?}");
            if body == "v1" && at.starts_with("pop/") {
                v1_at_pop += 1;
                assert_ne!(start, "cold", "the old version cold-started at the POP");
            }
        }
    }
    println!(
        "deploy under load: {total} requests, {v1_at_pop} served by v1 at the POP, none failed"
    );
    assert!(total > 0);
}

#[tokio::test]
async fn a_pop_offline_during_two_deploys_catches_up_from_its_revision() {
    let c = TestCluster::start().await;
    let api = dev(&c);
    api.deploy("away", json!({"placement": "edge"}), say("first"))
        .await;
    invoke_until(&api, "away", |body, at| {
        body == "first" && at.starts_with("pop/")
    })
    .await;
    let before = c.nodes.pop.sync_status();
    assert!(before.live);
    c.nodes.pop.set_sync_paused(true);
    let started = Instant::now();
    while c.nodes.pop.sync_status().live {
        assert!(
            started.elapsed() < DEADLINE,
            "POP did not drop its subscription"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    api.deploy("away", json!({"placement": "edge"}), say("second"))
        .await;
    api.deploy("away", json!({"placement": "edge"}), say("third"))
        .await;
    assert_eq!(
        c.nodes.pop.sync_status().revision,
        before.revision,
        "offline POP got pushes"
    );
    c.nodes.pop.set_sync_paused(false);
    pop_reaches(&c, region_revision(&c)).await;
    let after = c.nodes.pop.sync_status();
    assert_eq!(after.subscriptions, before.subscriptions + 1);
    assert_eq!(
        after.snapshots, 0,
        "caught up from history, not from a snapshot"
    );
    invoke_until(&api, "away", |body, at| {
        body == "third" && at.starts_with("pop/")
    })
    .await;
}

#[tokio::test]
async fn racing_deploys_resolve_by_revision_one_wins_one_gets_409() {
    let c = TestCluster::start().await;
    let api = dev(&c);
    let r = api.deploy("race", json!({}), say("base")).await;
    let base: Value = r.json().await.expect("json");
    let rev = base["revision"].as_u64().expect("revision");
    let (a, b) = tokio::join!(
        api.deploy_at("race", json!({}), say("left"), Some(rev)),
        api.deploy_at("race", json!({"memory_mb": 64}), say("right"), Some(rev)),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let (winner, loser) = if a.status() == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(error_kind(loser).await, "conflict");
    let won: Value = winner.json().await.expect("json");
    let now: Value = api
        .send(reqwest::Method::GET, "/v1/functions/race", None)
        .await
        .json()
        .await
        .expect("json");
    // Never torn: code and config are both the winner's.
    assert_eq!(now["digest"], won["digest"]);
    assert_eq!(now["config"], won["config"]);
    let r = api.invoke(&c.nodes.region_url(), "race", None).await;
    let body = r.text().await.expect("body");
    let expected = if won["config"]["memory_mb"] == 64 {
        "right"
    } else {
        "left"
    };
    assert_eq!(body, expected);
    // Racing publishes of the same `$LATEST`: one creates version 1; the other loses
    // (409) or sees it (200); never two versions of the same code.
    let path = "/v1/functions/race/versions";
    let (a, b) = tokio::join!(
        api.send(reqwest::Method::POST, path, None),
        api.send(reqwest::Method::POST, path, None),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert!(
        statuses == [StatusCode::OK, StatusCode::CREATED]
            || statuses == [StatusCode::CREATED, StatusCode::CONFLICT],
        "{statuses:?}"
    );
    let versions: Value = api
        .send(reqwest::Method::GET, path, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(1));
}
