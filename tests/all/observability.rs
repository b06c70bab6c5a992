//! Operators' view: Prometheus `/metrics` on both tiers, `GET /v1/capacity` fed by POP
//! load reports over QUIC, and the `/dashboard` page driven in real headless Chromium.

use crate::support::{TestCluster, pop_config, region_config};
use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster whose POP reports every 100 ms (the default is every second).
async fn cluster() -> TestCluster {
    let mut pop = pop_config();
    pop.report_interval_ms = 100;
    TestCluster::with(region_config(), pop).await
}

/// The region's capacity view, as the operator sees it.
pub(crate) async fn capacity(c: &TestCluster) -> Value {
    let resp = c
        .http
        .get(format!("{}/v1/capacity", c.nodes.region_url()))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("capacity answers");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("capacity JSON")
}

/// Waits until the region's view shows `n` requests at `pop-1` and, in the region's own
/// (once-a-second) snapshot, the executions of those it forwarded; fails after 20 s.
async fn wait_for_requests(c: &TestCluster, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = capacity(c).await;
        if let Some(pop) = view["pops"].as_array().and_then(|p| p.first())
            && total(pop, "executed") + total(pop, "forwarded") == n
            && view["region"]["load"]["totals"]["executed"].as_u64()
                == Some(total(pop, "forwarded"))
        {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "capacity never matched: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn invoke_n(c: &TestCluster, n: usize) {
    for _ in 0..n {
        let resp = c.invoke("hello", "ops").await;
        assert_eq!(resp.status(), 200);
    }
}

fn total(pop: &Value, field: &str) -> u64 {
    pop["load"]["totals"][field].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_load_reports_reach_the_regions_capacity_view() {
    let c = cluster().await;
    invoke_n(&c, 30).await;
    let view = wait_for_requests(&c, 30).await;
    let pop = &view["pops"][0];
    assert_eq!(pop["load"]["node"], "pop-1");
    assert_eq!(pop["load"]["tier"], "pop");
    assert_eq!(pop["stale"], false);
    // The first requests were rare at the POP and went to the region.
    assert!(total(pop, "forwarded") >= 1, "{pop:#}");
    let reasons = pop["load"]["forwards_by_reason"]
        .as_array()
        .expect("reasons");
    assert!(!reasons.is_empty(), "{pop:#}");
    assert!(pop["history"].as_array().is_some_and(|h| !h.is_empty()));
    let region = &view["region"];
    assert_eq!(region["load"]["node"], "region-1");
    assert_eq!(
        region["load"]["totals"]["executed"].as_u64(),
        Some(total(pop, "forwarded")),
        "the region executed exactly what the POP forwarded: {view:#}"
    );
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_needs_the_operator_token() {
    let c = cluster().await;
    let url = format!("{}/v1/capacity", c.nodes.region_url());
    let anonymous = c.http.get(&url).send().await.expect("answers");
    assert_eq!(anonymous.status(), 401);
    let tenant = c
        .http
        .get(&url)
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("answers");
    assert_eq!(tenant.status(), 403);
    let stream = c
        .http
        .get(format!("{url}/stream"))
        .bearer_auth(&c.nodes.token)
        .send()
        .await
        .expect("answers");
    assert_eq!(stream.status(), 403);
    c.nodes.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tiers_export_prometheus_metrics() {
    let c = cluster().await;
    // Invoke until the function has run at the POP a few times (it starts rare, so the
    // first requests are forwarded); bounded.
    let mut sent = 0u64;
    let mut local = 0;
    let mut patience = crate::support::Patience::new();
    while local < 3 {
        assert!(patience.more(), "the function never ran at the POP");
        let resp = c.invoke("hello", "ops").await;
        assert_eq!(resp.status(), 200);
        sent += 1;
        if crate::support::header(&resp, "x-strata-executed-at").starts_with("pop/") {
            local += 1;
        }
    }
    // Executions are recorded before the response is sent; the RTT gauge is set by the
    // first load report, so wait for that one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pop = loop {
        let text = c.pop_metrics().await;
        if text.contains("strata_quic_rtt_seconds{") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no load report after 20 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let region = c
        .http
        .get(format!("{}/metrics", c.nodes.region_url()))
        .bearer_auth(&c.nodes.admin_token)
        .send()
        .await
        .expect("region metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        r#"strata_invocations_total{tier="pop",function="dev/hello",outcome="ok",start="#,
        r#"strata_forwards_total{reason=""#,
        r#"strata_request_duration_seconds_count{tier="pop",served="forwarded"}"#,
        r#"strata_request_duration_seconds_count{tier="pop",served="local"}"#,
        &format!(r#"strata_invoke_responses_total{{tier="pop",code="200",fault="none"}} {sent}"#),
        "strata_node_concurrency_limit",
    ] {
        assert!(pop.contains(needle), "POP /metrics lacks {needle}:\n{pop}");
    }
    assert!(
        region.contains(
            r#"strata_invocations_total{tier="region",function="dev/hello",outcome="ok",start="#
        ),
        "{region}"
    );
    assert!(
        region.contains("# TYPE strata_execution_duration_seconds histogram"),
        "{region}"
    );
    c.nodes.shutdown().await;
}

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium and ChromeDriver. The test that drives them is `#[ignore = "needs chromium"]`
/// (see tests/all/README.md), so a missing browser fails it instead of letting it pass.
fn browser() -> (&'static str, &'static str) {
    let chromium = "/usr/bin/chromium";
    let driver = "/usr/bin/chromedriver";
    assert!(
        Path::new(chromium).exists() && Path::new(driver).exists(),
        "{chromium} or {driver} is not installed (apt-get install chromium chromium-driver; \
         .ci/test installs them)"
    );
    (chromium, driver)
}

async fn start_driver(http: &reqwest::Client, path: &str) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn webdriver(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("webdriver answers");
    let v: Value = resp.json().await.expect("webdriver JSON");
    assert!(v["value"]["error"].is_null(), "webdriver {url}: {v:#}");
    v["value"].clone()
}

/// The numbers the page shows for each node: `{node: {field: text}}`.
const READ_NODES: &str = r#"
const out = {};
for (const tr of document.querySelectorAll('#nodes tbody tr')) {
  const row = {};
  for (const td of tr.querySelectorAll('td[data-field]')) row[td.dataset.field] = td.textContent;
  out[tr.dataset.node] = row;
}
const cards = {};
for (const v of document.querySelectorAll('#cards [data-field]')) cards[v.dataset.field] = v.textContent;
return { nodes: out, cards, status: document.querySelector('#status').dataset.state };
"#;

/// The limit the page shows for the dev tenant's budget, or null.
const READ_DEV_BUDGET: &str = r#"
const td = document.querySelector('#budgets tr[data-budget="dev"] td[data-field="limit"]');
return td ? td.textContent : null;
"#;

fn page_matches(page: &Value, view: &Value) -> bool {
    let mut nodes: Vec<&Value> = view["pops"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    nodes.extend(view.get("region").filter(|r| !r.is_null()));
    !nodes.is_empty()
        && nodes.iter().all(|n| {
            let id = n["load"]["node"].as_str().unwrap_or_default();
            let row = &page["nodes"][id];
            ["executed", "forwarded", "cold_starts"].iter().all(|f| {
                let field = f.replace('_', "-");
                row[&field].as_str() == Some(&n["load"]["totals"][f].to_string())
            }) && row["warm"].as_str() == Some(&n["load"]["warm_instances"].to_string())
        })
        // The runtime canary's verdict counts.
        && ["pinned", "promoted", "undecided"].iter().all(|v| {
            page["cards"][format!("canary-{v}")].as_str()
                == Some(&view["runtime"][v].to_string())
        })
}

#[ignore = "needs chromium"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_capacity_reports_in_a_real_browser() {
    let (chromium, driver_path) = browser();
    let c = cluster().await;
    invoke_n(&c, 20).await;
    wait_for_requests(&c, 20).await;

    let http = reqwest::Client::new();
    let driver = start_driver(&http, driver_path).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let session = webdriver(
        &http,
        reqwest::Method::POST,
        format!("{}/session", driver.url),
        Some(json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}})),
    )
    .await;
    let sid = session["sessionId"]
        .as_str()
        .expect("session id")
        .to_owned();
    let s = format!("{}/session/{sid}", driver.url);
    webdriver(
        &http,
        reqwest::Method::POST,
        format!("{s}/url"),
        Some(json!({"url": format!("{}/dashboard#token={}", c.nodes.region_url(), c.nodes.admin_token)})),
    )
    .await;

    // The page follows the SSE stream: what it shows must converge to /v1/capacity, first
    // now and again after more traffic.
    for round in 0..2 {
        if round == 1 {
            invoke_n(&c, 15).await;
            wait_for_requests(&c, 35).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = webdriver(
                &http,
                reqwest::Method::POST,
                format!("{s}/execute/sync"),
                Some(json!({"script": READ_NODES, "args": []})),
            )
            .await;
            let view = capacity(&c).await;
            if page["status"] == "live" && page_matches(&page, &view) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: page never matched /v1/capacity\npage: {page:#}\nview: {view:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The dev tenant's budget row shows the limit the region reports for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = webdriver(
            &http,
            reqwest::Method::POST,
            format!("{s}/execute/sync"),
            Some(json!({"script": READ_DEV_BUDGET, "args": []})),
        )
        .await;
        let view = capacity(&c).await;
        let want = view["budgets"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["tenant"] == "dev"))
            .map(|b| b["limit"].to_string());
        if want.is_some() && shown.as_str() == want.as_deref() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget row never matched: page {shown}, view {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let shot = webdriver(&http, reqwest::Method::GET, format!("{s}/screenshot"), None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().expect("base64 screenshot"))
        .expect("valid base64");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).expect("screenshot saved");
    eprintln!("dashboard screenshot: {}", out.display());
    webdriver(&http, reqwest::Method::DELETE, s, None).await;
    drop(driver);
    c.nodes.shutdown().await;
}
