//! Push propagation, dynamic deployment under load, catching up after being offline.

use super::{dev, invoke_until, pop_reaches, region_revision, say};
use crate::support::{TestCluster, header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Instant;

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
    assert!(
        crate::support::synced(&c.nodes.pop, |s| !s.live).await,
        "POP did not drop its subscription"
    );
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
