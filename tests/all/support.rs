//! Starting deployments and invoking them.

use pop_node::PopConfig;
use region_node::RegionConfig;
use region_node::events::WallClock;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata::dev::DevCluster;
use tempfile::TempDir;
use testkit::cluster::{PreviousTokens, StartOptions};
use testkit::proxy::DelayProxy;

/// A deployment on ephemeral loopback ports, with its state directory.
pub struct TestCluster {
    pub dir: TempDir,
    pub nodes: DevCluster,
    pub http: reqwest::Client,
}

pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn region_config() -> RegionConfig {
    RegionConfig {
        http_listen: any_port(),
        quic_listen: any_port(),
        ..RegionConfig::default()
    }
}

pub fn pop_config() -> PopConfig {
    PopConfig {
        http_listen: any_port(),
        ..PopConfig::default()
    }
}

impl TestCluster {
    /// GETs `url` with the operator token and returns its JSON body.
    pub async fn operator_json(&self, url: &str) -> serde_json::Value {
        self.http
            .get(url)
            .bearer_auth(&self.nodes.admin_token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Default configs, examples deployed.
    pub async fn start() -> Self {
        Self::with(region_config(), pop_config()).await
    }

    /// Custom configs (listen addresses are forced to ephemeral ports), examples deployed.
    pub async fn with(region: RegionConfig, pop: PopConfig) -> Self {
        Self::with_options(region, pop, StartOptions::default()).await
    }

    /// As [`TestCluster::with`], the region's async queue reading time from `clock`.
    pub async fn with_clock(region: RegionConfig, pop: PopConfig, clock: Arc<TestClock>) -> Self {
        let options = StartOptions {
            events_clock: Some(clock),
            ..StartOptions::default()
        };
        Self::with_options(region, pop, options).await
    }

    /// As [`TestCluster::with`], both nodes' policies reading monotonic time from `clock`
    /// (limits, leases, placement, warm pools: moved by hand instead of waited for).
    pub async fn with_manual_time(
        region: RegionConfig,
        pop: PopConfig,
        clock: common::clock::ManualClock,
    ) -> Self {
        let options = StartOptions {
            clock: Some(Arc::new(clock)),
            ..StartOptions::default()
        };
        Self::with_options(region, pop, options).await
    }

    /// As [`TestCluster::with`], the POP's QUIC traffic to the region going through
    /// `proxy` (which can cut the link silently, like a dead region or a cut cable).
    pub async fn via(region: RegionConfig, pop: PopConfig, proxy: &DelayProxy) -> Self {
        let options = StartOptions {
            region_via: Some(proxy.addr()),
            ..StartOptions::default()
        };
        Self::with_proxy(region, pop, options, Some(proxy)).await
    }

    async fn with_options(region: RegionConfig, pop: PopConfig, options: StartOptions) -> Self {
        Self::with_proxy(region, pop, options, None).await
    }

    async fn with_proxy(
        region: RegionConfig,
        pop: PopConfig,
        options: StartOptions,
        proxy: Option<&DelayProxy>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = start_in(&dir, region, pop, options).await;
        if let Some(proxy) = proxy {
            proxy.set_upstream(nodes.region.quic_addr);
        }
        nodes.deploy_examples().await.expect("examples deploy");
        Self {
            dir,
            nodes,
            http: reqwest::Client::new(),
        }
    }

    /// Stops both nodes and starts them again on the same state directory (and so the
    /// same store) with `region` and `pop`, the same tokens, and the queue on `clock`.
    pub async fn restart(
        self,
        region: RegionConfig,
        pop: PopConfig,
        clock: Option<Arc<TestClock>>,
    ) -> Self {
        let token = self.nodes.token.clone();
        let tokens = PreviousTokens {
            admin_token: Some(self.nodes.admin_token.clone()),
            token: Some(token.clone()),
        };
        self.nodes.shutdown().await;
        let options = StartOptions {
            tokens,
            events_clock: clock.map(|c| c as Arc<dyn WallClock>),
            ..StartOptions::default()
        };
        let nodes = start_in(&self.dir, region, pop, options).await;
        assert_eq!(
            nodes.token, token,
            "the tenant's token survives the restart"
        );
        Self {
            dir: self.dir,
            nodes,
            http: self.http,
        }
    }

    /// Another POP, named `node_id`, with default settings, on this cluster's region and
    /// CA, starting with nothing (its own state directory).
    pub async fn another_pop(&self, node_id: &str) -> pop_node::PopHandle {
        pop_node::start(PopConfig {
            node_id: node_id.into(),
            state_dir: self.dir.path().join(node_id),
            tls: Some(
                common::transport::dev_ca::init(&self.dir.path().join("certs"))
                    .expect("certs")
                    .pop,
            ),
            regions: pop_node::discovery::RegionSource::Static(vec![self.nodes.region.quic_addr]),
            ..pop_config()
        })
        .await
        .expect("another POP starts")
    }

    pub async fn deploy_wat(&self, name: &str, config: serde_json::Value, wat: &str) {
        let wasm = wat::parse_str(wat).expect("valid wat");
        self.nodes
            .deploy(name, config, wasm)
            .await
            .expect("deploys");
    }

    /// POSTs `body` to `name`'s invoke URL at `base` with the dev token.
    pub async fn invoke_at(&self, base: &str, name: &str, body: &'static str) -> reqwest::Response {
        self.http
            .post(format!("{base}/v1/functions/{name}/invoke"))
            .bearer_auth(&self.nodes.token)
            .body(body)
            .send()
            .await
            .expect("request completes")
    }

    pub async fn invoke(&self, name: &str, body: &'static str) -> reqwest::Response {
        self.invoke_at(&self.nodes.pop_url(), name, body).await
    }

    /// The POP's `/metrics` text (read with the operator token).
    pub async fn pop_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.nodes.pop_url()))
            .bearer_auth(&self.nodes.admin_token)
            .send()
            .await
            .expect("POP metrics")
            .text()
            .await
            .expect("text")
    }
}

/// Starts a deployment in `dir` (listen addresses forced to ephemeral ports).
async fn start_in(
    dir: &TempDir,
    mut region: RegionConfig,
    mut pop: PopConfig,
    options: StartOptions,
) -> DevCluster {
    region.http_listen = any_port();
    region.quic_listen = any_port();
    pop.http_listen = any_port();
    DevCluster::start_with(dir.path(), region, pop, options)
        .await
        .expect("cluster starts")
}

/// A wall clock for a region's async queue that stands still until the test moves it:
/// events become due, and old, only when the test says so (no sleeping for an age).
#[derive(Debug)]
pub struct TestClock {
    now_ms: AtomicU64,
}

impl TestClock {
    /// Stopped at the system's current time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicU64::new(region_node::events::SystemClock.now_ms()),
        })
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl WallClock for TestClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

pub use testkit::header;

/// Whether `condition` holds within [`Patience`]'s bound, polled every 5 ms: for node
/// state that has no notification to wait on (the POP's sync state, its module cache).
/// Waits (up to 30 s, woken by each change) until `pop`'s push stream status satisfies
/// `condition`; returns whether it did.
pub async fn synced(
    pop: &pop_node::PopHandle,
    condition: impl FnMut(&pop_node::sync::SyncStatus) -> bool,
) -> bool {
    testkit::cluster::wait_sync(pop, std::time::Duration::from_secs(30), condition)
        .await
        .is_ok()
}

pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    let mut patience = Patience::new();
    while patience.more() {
        if condition() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    condition()
}

/// Invokes `name` at the POP until it answers 200 from `at` (a prefix of
/// `x-strata-executed-at`, e.g. `pop/`), bounded by [`Patience`].
pub async fn until_served(c: &TestCluster, name: &str, at: &str) {
    let mut patience = Patience::new();
    while patience.more() {
        let resp = c.invoke(name, "x").await;
        if resp.status() == 200 && header(&resp, "x-strata-executed-at").starts_with(at) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{name} was never served from {at}");
}

/// The `error.kind` of an error body.
pub async fn error_kind(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.expect("JSON error body");
    v["error"]["kind"].as_str().unwrap_or_default().to_owned()
}

/// Checks that `resp` is a 429 `throttled` whose body names its limit and wait (and
/// whose `retry-after` header is that wait rounded up to seconds); returns the limit as
/// `(scope, kind, value)` and the wait in milliseconds.
pub async fn throttled(resp: reqwest::Response) -> ((String, String, u64), u64) {
    assert_eq!(resp.status(), 429);
    let header: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a numeric retry-after");
    let v: serde_json::Value = resp.json().await.expect("JSON error body");
    let e = &v["error"];
    assert_eq!(e["kind"], "throttled", "{v}");
    let ms = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        (10..=10_000).contains(&ms),
        "a wait from the limiter's state: {v}"
    );
    assert_eq!(
        header,
        ms.div_ceil(1000),
        "the header rounds the wait up: {v}"
    );
    let s = |k: &str| e["limit"][k].as_str().unwrap_or_default().to_owned();
    let value = e["limit"]["value"].as_u64().expect("a limit value");
    ((s("scope"), s("kind"), value), ms)
}

pub const LOOP_FOREVER: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

pub const TRAP: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))"#;

/// Bounds a loop that polls for a condition by time, not by a request count: on a loaded
/// machine (CI compiling in the background) the POP may need many more requests before
/// its background artifact fetch completes. Fails nothing itself; the caller asserts.
pub struct Patience {
    deadline: std::time::Instant,
    tries: u64,
}

impl Patience {
    /// Up to 30 s and 20 000 tries.
    pub fn new() -> Self {
        Self {
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(30),
            tries: 0,
        }
    }

    /// Whether to try again; counts the try.
    pub fn more(&mut self) -> bool {
        self.tries += 1;
        self.tries <= 20_000 && std::time::Instant::now() < self.deadline
    }

    /// Tries so far (the first try is 1).
    pub fn tries(&self) -> u64 {
        self.tries
    }
}

/// Slots of `tenant` the region at `base` counts as leased to POPs, from its capacity view
/// (refreshed every second); 0 when the tenant has no books there.
pub async fn leased_at(http: &reqwest::Client, base: &str, admin_token: &str, tenant: &str) -> u64 {
    let view: serde_json::Value = http
        .get(format!("{base}/v1/capacity"))
        .bearer_auth(admin_token)
        .send()
        .await
        .expect("capacity view answers")
        .json()
        .await
        .expect("capacity view is JSON");
    view["budgets"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["tenant"] == tenant))
        .and_then(|b| b["leased"].as_u64())
        .unwrap_or(0)
}

/// The POP's `strata_forwards_total{reason="over_capacity"}`, 0 when absent.
pub async fn over_capacity_forwards(c: &TestCluster) -> u64 {
    let text = c.pop_metrics().await;
    text.lines()
        .filter(|l| l.starts_with("strata_forwards_total{") && l.contains("over_capacity"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// PUTs `wat` as `name` with `config` at the region, as `token`'s tenant.
pub async fn deploy_as(
    c: &TestCluster,
    token: &str,
    name: &str,
    config: serde_json::Value,
    wat: &str,
) -> reqwest::Response {
    let wasm = wat::parse_str(wat).expect("valid wat");
    c.http
        .put(format!("{}/v1/functions/{name}", c.nodes.region_url()))
        .bearer_auth(token)
        .multipart(strata::client::deploy_form(&config, wasm).expect("form"))
        .send()
        .await
        .expect("request completes")
}

/// Creates tenant `id` and returns its token.
pub async fn tenant(c: &TestCluster, id: &str) -> String {
    let admin = |path: String| {
        c.http
            .post(format!("{}{path}", c.nodes.region_url()))
            .bearer_auth(&c.nodes.admin_token)
    };
    let r = admin("/v1/tenants".into())
        .json(&serde_json::json!({"id": id}))
        .send()
        .await
        .expect("request completes");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let r = admin(format!("/v1/tenants/{id}/tokens"))
        .send()
        .await
        .expect("request completes");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let v: serde_json::Value = r.json().await.expect("json");
    v["token"].as_str().expect("token").to_owned()
}

/// Limits the dev tenant to one invocation at a time and fills it with a call of `forever`
/// (deployed here, bounded by a 3 s timeout) at the region, waiting until the region's
/// books (the capacity view's budgets) show it charged, without sending anything that
/// could take the slot first. Returns the call, which ends with 504.
pub async fn dev_hogged(c: &TestCluster) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let region = c.nodes.region_url();
    let resp = c
        .http
        .put(format!("{region}/v1/tenants/dev/limits"))
        .bearer_auth(&c.nodes.admin_token)
        .json(&serde_json::json!({"hard_max": 1, "burst": 1, "step": 0, "interval_ms": 1000}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    c.deploy_wat(
        "forever",
        serde_json::json!({"timeout_ms": 3000}),
        LOOP_FOREVER,
    )
    .await;
    let hog = {
        let (http, region, token) = (c.http.clone(), region.clone(), c.nodes.token.clone());
        tokio::spawn(async move {
            http.post(format!("{region}/v1/functions/forever/invoke"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("request completes")
                .status()
        })
    };
    let mut patience = Patience::new();
    let mut charged = false;
    while !charged && patience.more() {
        let view: serde_json::Value = c.operator_json(&format!("{region}/v1/capacity")).await;
        charged = view["budgets"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["tenant"] == "dev" && b["charged"] == 1 && b["limit"] == 1)
        });
    }
    assert!(charged, "the hog never showed in the dev tenant's budget");
    hog
}
