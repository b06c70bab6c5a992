//! Tenant isolation, config validation, versions and weighted aliases, racing writes.

use super::{dev, publish, say, tenant};
use crate::support::{TestCluster, error_kind, header};
use reqwest::StatusCode;
use serde_json::{Value, json};

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
    // Eight calls at once from one tenant: within its share of the on-demand workers
    // (`tenant_slot_share_percent` of 16 is 8), so none is refused for fairness.
    let mut region = crate::support::region_config();
    region.fleets.workers = 16;
    let c = TestCluster::with(region, crate::support::pop_config()).await;
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
    // With an affinity key, one client stays on one version, at both tiers; 200 keys
    // still split 90/10 (sigma = sqrt(200 * 0.1 * 0.9) = 4.2: within 4 sigma of 20).
    let mut keyed_twos = 0;
    for chunk in 0..25 {
        let calls = (0..8).map(|i| {
            let key = format!("client-{}", chunk * 8 + i);
            let api = &api;
            async move {
                let mut seen = Vec::new();
                let (pop, region) = (api.c.nodes.pop_url(), api.c.nodes.region_url());
                for base in [&pop, &region, &pop, &region] {
                    let r = api
                        .c
                        .http
                        .post(format!("{base}/v1/functions/shift/invoke?qualifier=live"))
                        .bearer_auth(&api.token)
                        .header("x-strata-affinity", &key)
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(r.status(), StatusCode::OK, "key {key} at {base}");
                    seen.push(header(&r, "x-strata-version"));
                }
                (key, seen)
            }
        });
        for (key, seen) in futures::future::join_all(calls).await {
            assert!(
                seen.iter().all(|v| *v == seen[0]),
                "key {key} moved between versions: {seen:?}"
            );
            keyed_twos += i32::from(seen[0] == "2");
        }
    }
    println!("alias live with affinity keys: {keyed_twos}/200 keys on version 2");
    assert!(
        (20 - keyed_twos).abs() <= 17,
        "{keyed_twos}/200 keys on version 2"
    );
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
