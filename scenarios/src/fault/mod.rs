//! `scenarios fault ...`: fault runs against the real node binaries, as an operator would
//! see them: `region-node` and `pop-node` as separate processes on loopback sharing a dev
//! CA, driven over HTTP.
//!
//! - [`region_kill`]: mixed closed-loop load, `kill -9` of the region, restart on the same
//!   state; status counts, the zero-completion gap, time to recovery, local-path p99.
//! - [`burst`]: 10,000 idle connections to the POP, several rounds; connect latency and
//!   the POP's resident memory before, holding and after.
//!
//! The binaries are looked up next to this executable (`target/release/` for
//! `cargo run --release`), so build them first:
//! `cargo build --release -p region-node -p pop-node`. Every run is bounded in time and
//! requests; child processes are killed when their [`Node`] is dropped.

pub mod burst;
pub mod region_kill;

use anyhow::{Context as _, bail};
use common::transport::{TlsFiles, dev_ca};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A node process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Node {
    child: Child,
}

impl Node {
    /// Starts `binary` (found next to this executable) with `--config config`, its output
    /// appended to `log`.
    ///
    /// # Errors
    /// When the binary is missing or cannot be started.
    pub fn spawn(binary: &str, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let path = binary_path(binary)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(&path)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Self { child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown, no close frame to its peers.
    pub fn kill(mut self) {
        // Already exited is fine: it is gone either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` next to the running executable.
fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p region-node -p pop-node)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port for TCP (`udp` false) or UDP, released for the node to bind.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port(udp: bool) -> anyhow::Result<SocketAddr> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(if udp {
        std::net::UdpSocket::bind(any)?.local_addr()?
    } else {
        std::net::TcpListener::bind(any)?.local_addr()?
    })
}

/// Polls `GET http://addr/healthz` until it answers 200, at most `within`; returns when
/// it did.
///
/// # Errors
/// When it does not answer in time.
pub async fn wait_healthy(addr: SocketAddr, within: Duration) -> anyhow::Result<Instant> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!("{addr} not healthy within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A deployment's files under `dir`: a dev CA shared by both nodes and their configs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The region's config file.
    pub region_config: PathBuf,
    /// The POP's config file.
    pub pop_config: PathBuf,
    /// The region's HTTP address.
    pub region_http: SocketAddr,
    /// The POP's HTTP address.
    pub pop_http: SocketAddr,
    /// Where node output goes.
    pub logs: PathBuf,
    /// The operator token.
    pub admin_token: String,
}

fn tls_table(files: &TlsFiles) -> String {
    format!(
        "[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
        files.ca_cert, files.cert, files.key
    )
}

/// Writes the configs of a region and a POP on fresh loopback ports under `dir`, the POP
/// configured with `pop_extra` (TOML lines before any table).
///
/// # Errors
/// When the CA or the files cannot be written, or no port is free.
pub fn layout(dir: &Path, pop_extra: &str) -> anyhow::Result<Layout> {
    let certs = dev_ca::init(&dir.join("certs"))?;
    let (region_http, quic, pop_http) = (free_port(false)?, free_port(true)?, free_port(false)?);
    let admin_token = format!("fault-{}", hex::encode(rand::random::<[u8; 12]>()));
    let region = format!(
        "node_id = \"region-1\"\nstate_dir = {:?}\nhttp_listen = \"{region_http}\"\n\
         quic_listen = \"{quic}\"\nadmin_token = \"{admin_token}\"\n{}",
        dir.join("region"),
        tls_table(&certs.region)
    );
    let pop = format!(
        "node_id = \"pop-1\"\nstate_dir = {:?}\nhttp_listen = \"{pop_http}\"\n\
         regions = {{ static = [\"{quic}\"] }}\n{pop_extra}\n{}",
        dir.join("pop"),
        tls_table(&certs.pop)
    );
    let region_config = dir.join("region.toml");
    let pop_config = dir.join("pop.toml");
    std::fs::write(&region_config, region)?;
    std::fs::write(&pop_config, pop)?;
    Ok(Layout {
        region_config,
        pop_config,
        region_http,
        pop_http,
        logs: dir.join("nodes.log"),
        admin_token,
    })
}

/// Creates tenant `t` at the region and returns a token for it.
///
/// # Errors
/// When the control API refuses.
pub async fn tenant(layout: &Layout) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let base = format!("http://{}", layout.region_http);
    let resp = http
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&layout.admin_token)
        .json(&serde_json::json!({"id": "t"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "tenant: {}", resp.status());
    let resp = http
        .post(format!("{base}/v1/tenants/t/tokens"))
        .bearer_auth(&layout.admin_token)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "token: {}", resp.status());
    let body: serde_json::Value = resp.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

/// The resident set size of process `pid`, in bytes (Linux `/proc`).
///
/// # Errors
/// When `/proc/<pid>/status` cannot be read or has no `VmRSS`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}
