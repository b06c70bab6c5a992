//! The control plane with real nodes: tenant isolation on every resource, config
//! validation, versions and weighted aliases at both tiers, racing writes
//! ([`resources`]); push propagation, dynamic deployment under load, a POP catching up
//! after being offline ([`deploy`]). This file holds their shared helpers.

mod deploy;
mod resources;

use crate::support::{TestCluster, header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use strata::client::deploy_form;

/// Generous bound for anything that waits on propagation; never a timing assertion.
pub(super) const DEADLINE: Duration = Duration::from_secs(20);

/// A command module that prints `text` and exits 0.
pub(super) fn say(text: &str) -> Vec<u8> {
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

pub(super) struct Api<'a> {
    pub(super) c: &'a TestCluster,
    pub(super) token: String,
}

impl Api<'_> {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.c.nodes.region_url())
    }

    pub(super) async fn deploy(
        &self,
        name: &str,
        config: Value,
        wasm: Vec<u8>,
    ) -> reqwest::Response {
        self.deploy_at(name, config, wasm, None).await
    }

    pub(super) async fn deploy_at(
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

    pub(super) async fn send(
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

    pub(super) async fn invoke(
        &self,
        base: &str,
        name: &str,
        qualifier: Option<&str>,
    ) -> reqwest::Response {
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

pub(super) fn dev(c: &TestCluster) -> Api<'_> {
    Api {
        c,
        token: c.nodes.token.clone(),
    }
}

/// Creates tenant `id` with the operator token and returns an [`Api`] with its token.
pub(super) async fn tenant<'a>(c: &'a TestCluster, id: &str) -> Api<'a> {
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

pub(super) async fn publish(api: &Api<'_>, name: &str) -> u64 {
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
pub(super) async fn pop_reaches(c: &TestCluster, revision: u64) -> Duration {
    let started = Instant::now();
    let mut changes = c.nodes.pop.watch_sync();
    let reached =
        tokio::time::timeout(DEADLINE, changes.wait_for(|s| s.revision >= revision)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "POP did not reach revision {revision}: {:?}",
        c.nodes.pop.sync_status()
    );
    started.elapsed()
}

pub(super) fn region_revision(c: &TestCluster) -> u64 {
    c.nodes
        .region
        .registry()
        .store()
        .revision()
        .expect("revision")
}

/// Invokes at the POP until `done` holds for a response (body, executed-at); bounded.
pub(super) async fn invoke_until(api: &Api<'_>, name: &str, done: impl Fn(&str, &str) -> bool) {
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
