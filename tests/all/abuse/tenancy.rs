//! Tenancy attacks: a hostile tenant's long-running calls cannot take every execution
//! slot of the region; a revoked token is refused at the POP; an impostor POP cannot
//! return another POP's lease or write another tenant's logs, and no POP can push real
//! logs out with lines about invented functions.

use crate::support::{
    LOOP_FOREVER, Patience, TestCluster, error_kind, pop_config, region_config, synced,
};
use common::model::TenantId;
use region_node::RegionConfig;
use serde_json::json;

/// A hostile tenant (`dev`) floods the region with calls that never end on their own;
/// the victim's calls still run while every one of them is in flight.
async fn hostile_calls_leave_the_victim_a_slot(
    region_cfg: RegionConfig,
    hostile: usize,
    cap: usize,
) {
    let c = TestCluster::with(region_cfg, pop_config()).await;
    let region = c.nodes.region_url();
    let victim = TenantId::new("victim").expect("valid");
    let registry = c.nodes.region.registry();
    registry
        .create_tenant(victim.clone(), 1024)
        .expect("tenant");
    let victim_token = registry.create_token(&victim).expect("token");
    let hello = wat::parse_str(HELLO).expect("wat");
    c.nodes
        .deploy_as(&victim_token, "hello", json!({}), hello)
        .await
        .expect("deploys");
    c.deploy_wat("forever", json!({"timeout_ms": 8000}), LOOP_FOREVER)
        .await;

    let calls: Vec<_> = (0..hostile)
        .map(|_| {
            let (http, region, token) = (c.http.clone(), region.clone(), c.nodes.token.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{region}/v1/functions/forever/invoke"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("request completes");
                (resp.status().as_u16(), error_kind(resp).await)
            })
        })
        .collect();
    // Every call past the tenant's share is refused at once (never queued); the rest hold
    // their slots.
    let mut patience = Patience::new();
    while calls.iter().filter(|h| h.is_finished()).count() < hostile - cap && patience.more() {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (done, running): (Vec<_>, Vec<_>) = calls.into_iter().partition(|h| h.is_finished());
    assert_eq!(
        (done.len(), running.len()),
        (hostile - cap, cap),
        "calls past the tenant's share are refused at once, the others run"
    );
    for h in done {
        let (status, kind) = h.await.expect("joins");
        assert_eq!((status, kind.as_str()), (429, "throttled"));
    }
    // The victim is served while every hostile call is still running.
    for _ in 0..3 {
        let resp = c
            .http
            .post(format!("{region}/v1/functions/hello/invoke"))
            .bearer_auth(&victim_token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "hello");
    }
    assert!(
        running.iter().all(|h| !h.is_finished()),
        "the victim was served only after the hostile calls ended"
    );
    for h in running {
        assert_eq!(h.await.expect("joins").0, 504, "bounded by its own timeout");
    }
}

/// Writes `hello` to stdout.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_every_execution_slot() {
    let mut region = region_config();
    region.max_concurrency = 4;
    region.fleets.enabled = false;
    hostile_calls_leave_the_victim_a_slot(region, 6, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_every_on_demand_worker() {
    let mut region = region_config();
    region.fleets.workers = 4;
    hostile_calls_leave_the_victim_a_slot(region, 6, 2).await;
}

/// Invokes `name` at `base` with `token`; the status and the error kind (if any).
async fn invoke_as(c: &TestCluster, base: &str, name: &str, token: &str) -> (u16, String) {
    let resp = c
        .http
        .post(format!("{base}/v1/functions/{name}/invoke"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request completes");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let kind = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["kind"].as_str().map(str::to_owned))
        .unwrap_or(body);
    (status, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_the_pop_within_two_seconds() {
    let c = TestCluster::start().await;
    let (pop, region) = (c.nodes.pop_url(), c.nodes.region_url());
    let dev = TenantId::new("dev").expect("valid");
    let registry = c.nodes.region.registry();
    // `hello` runs at the POP itself (popular and prepared there): only the POP's own
    // knowledge of a token decides whether it runs.
    let mut patience = Patience::new();
    let mut local = false;
    while !local && patience.more() {
        let resp = c.invoke_at(&pop, "hello", "").await;
        local = crate::support::header(&resp, "x-strata-executed-at").starts_with("pop/");
    }
    assert!(local, "hello never ran at the POP");
    // The POP learns the token from a forwarded call while unsubscribed, then gets it
    // pushed too once it subscribes again.
    let node = &c.nodes.pop;
    node.set_sync_paused(true);
    assert!(synced(node, |s| !s.live).await, "still subscribed");
    let stolen = registry.create_token(&dev).expect("token");
    assert_eq!(invoke_as(&c, &pop, "hello", &stolen).await.0, 200);
    let subscribed = node.sync_status().subscriptions;
    node.set_sync_paused(false);
    assert!(
        synced(node, |s| s.live && s.subscriptions > subscribed).await,
        "never subscribed again"
    );
    let (status, _) = invoke_as(&c, &pop, "hello", &stolen).await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = c
        .operator_json(&format!("{region}/v1/tenants/dev/tokens"))
        .await;
    let id = common::model::TokenHash::of(&stolen).to_string();
    assert!(
        listed
            .as_array()
            .expect("list")
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "listed by id: {listed}"
    );
    // A bad id and another tenant's token are refused, typed, and change nothing.
    let resp = c
        .http
        .delete(format!("{region}/v1/tenants/dev/tokens/nothex"))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        (resp.status().as_u16(), error_kind(resp).await.as_str()),
        (400, "bad_request")
    );
    let resp = c
        .http
        .delete(format!("{region}/v1/tenants/dev/tokens/{id}"))
        .bearer_auth(&stolen)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 403, "a tenant token cannot revoke");
    let resp = c
        .http
        .delete(format!("{region}/v1/tenants/dev/tokens/{id}"))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 204);
    let revoked_at = std::time::Instant::now();
    let deadline = revoked_at + std::time::Duration::from_secs(2);
    let mut last = (0, String::new());
    while std::time::Instant::now() < deadline {
        last = invoke_as(&c, &pop, "hello", &stolen).await;
        if last.0 == 401 {
            break;
        }
    }
    assert_eq!(
        (last.0, last.1.as_str()),
        (401, "unauthenticated"),
        "still accepted at the POP 2 s after revocation"
    );
    // The victim (the same tenant's other token) is still served at the POP.
    assert_eq!(invoke_as(&c, &pop, "hello", &c.nodes.token).await.0, 200);
    // Rotation: the new token works, the old is refused.
    let old = registry.create_token(&dev).expect("token");
    let rotated: serde_json::Value = c
        .http
        .post(format!(
            "{region}/v1/tenants/dev/tokens/{}/rotate",
            common::model::TokenHash::of(&old)
        ))
        .bearer_auth(&c.nodes.admin_token)
        .json(&json!({"ttl_s": 3600}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let new = rotated["token"].as_str().expect("new token");
    assert_eq!(invoke_as(&c, &region, "hello", new).await.0, 200);
    assert_eq!(invoke_as(&c, &region, "hello", &old).await.0, 401);
}

/// Registry changes a fresh POP's catch-up replays before the token it is asked for.
const HISTORY: usize = 1500;

/// A fresh POP fills its pushed registry change by change. Until the region says it has
/// sent all of it, the POP is not live (it leaves a token it was not pushed yet to the
/// region, never refuses it): here the device's token is the last of many changes. A POP
/// that went live on the stream's first message (as it did) refused valid tokens with 401
/// until the rest arrived; seen in CI on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_catching_up_with_its_region_refuses_no_valid_token() {
    let c = TestCluster::start().await;
    let registry = std::sync::Arc::clone(c.nodes.region.registry());
    let (token, token_revision) = tokio::task::spawn_blocking(move || {
        let dev = TenantId::new("dev").expect("valid");
        for _ in 0..HISTORY {
            registry.create_token(&dev).expect("token");
        }
        let token = registry.create_token(&dev).expect("token");
        (token, registry.store().revision().expect("revision"))
    })
    .await
    .expect("tokens");
    let late = c.another_pop("pop-late").await;
    // Every state the POP publishes while catching up: live only once it has the token.
    let mut sync = late.watch_sync();
    let states = tokio::spawn(async move {
        let mut live_too_early = Vec::new();
        loop {
            let status = *sync.borrow_and_update();
            if status.live {
                if status.revision < token_revision {
                    live_too_early.push(status.revision);
                }
                return live_too_early;
            }
            if sync.changed().await.is_err() {
                return live_too_early;
            }
        }
    });
    // Meanwhile four devices call until the POP is live, and once more after.
    let base = format!("http://{}", late.http_addr);
    let calls = (0..4).map(|_| {
        let (c, base, token, sync) = (&c, &base, &token, late.watch_sync());
        async move {
            let mut statuses = Vec::new();
            let mut patience = Patience::new();
            while patience.more() {
                let live = sync.borrow().live;
                statuses.push(invoke_as(c, base, "hello", token).await);
                if live {
                    break;
                }
            }
            statuses
        }
    });
    let statuses: Vec<(u16, String)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    let live_too_early = tokio::time::timeout(std::time::Duration::from_secs(30), states)
        .await
        .expect("the late POP went live within 30 s")
        .expect("watcher");
    assert_eq!(
        live_too_early,
        Vec::<u64>::new(),
        "live before it had revision {token_revision}"
    );
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} of {} calls refused while the POP caught up: {:?}",
        refused.len(),
        statuses.len(),
        refused.first()
    );
    // Caught up, it knows the token itself.
    assert_eq!(invoke_as(&c, &base, "hello", &token).await.0, 200);
    late.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_pop_cannot_return_another_pops_lease_or_write_its_logs() {
    use common::model::{ErrorKind, FunctionKey, FunctionName, NodeId};
    use common::wire::{MAX_FRAME_LEN, Message, ShippedLog};

    let c = TestCluster::start().await;
    let dev = TenantId::new("dev").expect("valid");
    let ch = pop_channel(&c, "pop-evil").await;
    let refused = |reply: Message| match reply {
        Message::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Forbidden);
            assert!(e.message.contains("pop_identity"), "{}", e.message);
        }
        other => panic!("not refused: {other:?}"),
    };
    let victim = NodeId("pop-1".into());
    refused(
        ch.request(
            &Message::LeaseReturn {
                holder: victim.clone(),
                tenant: dev.clone(),
                slots: 1,
            },
            MAX_FRAME_LEN,
        )
        .await
        .expect("answered"),
    );
    refused(
        ch.request(
            &Message::LeaseAcquire {
                holder: victim,
                tenant: dev.clone(),
                slots: 1,
            },
            MAX_FRAME_LEN,
        )
        .await
        .expect("answered"),
    );
    let line = |node: &str| ShippedLog {
        function: FunctionKey {
            tenant: dev.clone(),
            name: FunctionName::new("hello").expect("name"),
        },
        request_id: "0".repeat(32),
        ts: 1,
        node: node.to_owned(),
        text: "forged".into(),
    };
    refused(
        ch.request(
            &Message::Logs {
                entries: vec![line("pop/pop-1")],
                dropped: 0,
            },
            MAX_FRAME_LEN,
        )
        .await
        .expect("answered"),
    );
    assert_eq!(
        c.nodes.region.pop_identity_refusals(),
        3,
        "each refusal counted"
    );
    // Under its own name it is served.
    assert_eq!(
        ch.request(
            &Message::LeaseReturn {
                holder: NodeId("pop-evil".into()),
                tenant: dev,
                slots: 0,
            },
            MAX_FRAME_LEN,
        )
        .await
        .expect("answered"),
        Message::Ack
    );
    // The victim's traffic is still served.
    let resp = c.invoke("hello", "").await;
    assert_eq!(resp.status(), 200);
}

/// A second, real QUIC client of the region holding a CA-signed certificate for POP `id`.
async fn pop_channel(c: &TestCluster, id: &str) -> common::transport::Channel {
    use common::transport::{Client, NodeTls, REGION_SERVER_NAME, dev_ca};
    let ca_dir = c
        .nodes
        .region
        .tls
        .ca_cert
        .parent()
        .expect("certs dir")
        .to_owned();
    let files = dev_ca::issue_pop(&ca_dir, id).expect("issued");
    let client = Client::new(&NodeTls::load(&files).expect("loads")).expect("client");
    client
        .connect(c.nodes.region.quic_addr, REGION_SERVER_NAME)
        .await
        .expect("the CA-signed POP connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_cannot_push_real_logs_out_with_invented_functions() {
    use common::model::{FunctionKey, FunctionName};
    use common::wire::{MAX_FRAME_LEN, Message, ShippedLog};

    let mut region = region_config();
    region.function_logs.max_functions = 2;
    let c = TestCluster::with(region, pop_config()).await;
    let ch = pop_channel(&c, "pop-evil").await;
    let line = |tenant: &str, name: &str, text: &str| ShippedLog {
        function: FunctionKey {
            tenant: TenantId::new(tenant).expect("tenant"),
            name: FunctionName::new(name).expect("name"),
        },
        request_id: "0".repeat(32),
        ts: 1,
        node: "pop/pop-evil".into(),
        text: text.into(),
    };
    let ship = |entries: Vec<ShippedLog>| {
        let ch = &ch;
        async move {
            ch.request(
                &Message::Logs {
                    entries,
                    dropped: 0,
                },
                MAX_FRAME_LEN,
            )
            .await
            .expect("answered")
        }
    };
    // A line about a function the POP runs is kept.
    assert_eq!(ship(vec![line("dev", "hello", "kept")]).await, Message::Ack);
    // Lines about invented functions (more than the buffer keeps) are dropped, so they
    // cannot push the real function's log out.
    let invented = (0..3)
        .map(|i| line("dev", &format!("ghost{i}"), "forged"))
        .chain([line("nobody", "hello", "forged")])
        .collect();
    assert_eq!(ship(invented).await, Message::Ack);
    assert_eq!(
        c.nodes.region.pop_identity_refusals(),
        4,
        "each line counted"
    );
    let resp = c
        .http
        .get(format!("{}/v1/functions/hello/logs", c.nodes.region_url()))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.contains("kept"), "the victim's log is intact: {body}");
    assert!(!body.contains("forged"), "{body}");
    // The victim is still served.
    assert_eq!(c.invoke("hello", "").await.status(), 200);
}
