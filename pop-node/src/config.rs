//! The POP node's configuration: a TOML file plus command-line overrides, validated once
//! at start-up and handed down.

use crate::discovery::RegionSource;
use common::edge::{EdgeConfig, HttpLimits};
use common::policy::liveness::LivenessConfig;
use common::policy::region::RegionChoiceConfig;
use common::policy::{PlacementConfig, WarmConfig};
use common::sandbox::SandboxConfig;
use common::transport::{REGION_SERVER_NAME, TlsFiles};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a POP node needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopConfig {
    /// This node's id, shown as `pop/<id>`. Default `pop-1`.
    pub node_id: String,
    /// Directory for caches and, without `tls`, the dev CA. Default `.strata/pop`.
    pub state_dir: PathBuf,
    /// Device-facing HTTP address. Default `127.0.0.1:8081`.
    pub http_listen: SocketAddr,
    /// Whether the plain (cleartext HTTP/1.1 and h2c) listener runs. `false` needs
    /// `https`. Default true.
    pub plain_http: bool,
    /// The device-facing HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN), its certificates
    /// and the HTTP/3 listener. Default none (off).
    pub https: Option<HttpsConfig>,
    /// How regions are found: a static list or a DNS name. Default `127.0.0.1:4433`.
    pub regions: RegionSource,
    /// A DNS server to ask instead of the system resolver. Default none.
    pub dns_server: Option<SocketAddr>,
    /// The TLS name regions' certificates must carry. Default `strata-region`.
    pub region_server_name: String,
    /// CA, certificate and key. Default: a dev CA in `<state_dir>/certs`.
    pub tls: Option<TlsFiles>,
    /// HTTP edge limits (payload size, unverified-token body budget).
    pub edge: EdgeConfig,
    /// HTTP server limits (`[http]`): header/body/idle timeouts, connections, header size
    /// and count.
    pub http: HttpLimits,
    /// Operator token for this POP's operator endpoints (`/metrics`), sent as a bearer
    /// token. Default none: `/metrics` is refused with 403 until one is set.
    pub operator_token: Option<String>,
    /// Sandbox limits.
    pub sandbox: SandboxConfig,
    /// Popularity bar, its hysteresis and the memory budget of the popular set
    /// (`placement.memory_budget_mb`).
    pub placement: PlacementConfig,
    /// Invocations executing locally at once; more spill to a region. Default 32.
    pub local_concurrency: usize,
    /// Forwarded invocations in flight at once; more get 503. Default 1024.
    pub max_forwards: usize,
    /// How long a forwarded invocation may take beyond the function's `timeout_ms` (the
    /// region's queue and the trip) before the POP answers 503 `forward_timeout` and resets
    /// the QUIC stream, in milliseconds. A function the POP does not know yet is bounded
    /// by the longest timeout a function may have (15 min) plus this. Default 5000.
    pub forward_margin_ms: u64,
    /// How long learned tokens and function metadata are trusted before the next request
    /// is forwarded to refresh them, in milliseconds. Default 10 000.
    pub metadata_ttl_ms: u64,
    /// Most tokens and functions remembered. Default 100 000.
    pub max_known: usize,
    /// Compiled-module cache bound, in wasm bytes. Default 128 MiB.
    pub module_cache_bytes: usize,
    /// Bound of the on-disk artifact cache under `<state_dir>/artifacts`, in bytes; the
    /// oldest files are deleted past it. Default 1 GiB. Files are written behind the
    /// fetch (a cold start does not wait on the disk), at most 64 MiB waiting; an artifact
    /// fetched past that is kept in memory only.
    pub artifact_disk_bytes: u64,
    /// Artifact fetches in flight at once. Default 4.
    pub max_prefetches: usize,
    /// How long to wait for a region's QUIC handshake before trying the next one, in
    /// milliseconds. Default 3000.
    pub connect_timeout_ms: u64,
    /// How long a region connection may hear nothing from its region (keep-alives go out
    /// every quarter of it and must be acknowledged) before the region is taken for dead:
    /// the connection is dropped, forwards in flight on it get 503, new ones go to another
    /// region or get 503 at once while the POP reconnects in the background. In
    /// milliseconds. Default 1000.
    pub region_silence_ms: u64,
    /// Wait between the first and second attempt to reconnect to a region that went down
    /// (the first is immediate); doubles with each attempt up to `reconnect_max_ms`. In
    /// milliseconds. Default 50.
    pub reconnect_first_ms: u64,
    /// Longest wait between reconnect attempts, which bounds how long a returning region
    /// stays unused after it listens again. In milliseconds. Default 400.
    pub reconnect_max_ms: u64,
    /// Accept backlog of the device-facing listener (connections the kernel completes
    /// before the node accepts them); the kernel caps it at `net.core.somaxconn`.
    /// Default 4096.
    pub listen_backlog: u32,
    /// How often the POP reports its load to its region for the capacity view, in
    /// milliseconds. Default 1000.
    pub report_interval_ms: u64,
    /// How often the route table is fetched from the region, in milliseconds. Default 1000.
    pub route_refresh_ms: u64,
    /// How often function logs are shipped to the region, in milliseconds. Default 500.
    pub log_ship_ms: u64,
    /// Invocations' log output queued for shipping; the oldest is dropped (and counted)
    /// beyond it. Default 4096.
    pub log_queue_entries: usize,
    /// Bounds of the POP's own function log ring buffers.
    pub function_logs: common::logs::LogLimits,
    /// Warm-pool planning for reactors run here (`warm.mode = "trend" | "reactive"`).
    pub warm: WarmConfig,
    /// Concurrency slots asked of the region per tenant at a time (and kept free while a
    /// tenant is busy). Default 4.
    pub lease_batch: u32,
    /// How often leases are renewed is a third of this, and so is how long a lease message
    /// may go unanswered before the POP's leases stall (cached functions then run here
    /// beyond the lease, capped per tenant; see docs/configuration.md); should match the
    /// region's `limits.lease_ttl_ms`, in milliseconds. Default 3000.
    pub lease_ttl_ms: u64,
    /// Tenants holding leases at this POP at once, kept in 16 shards by tenant, each
    /// holding its share (rounded up); others are forwarded (and the idle hold in their
    /// shard that drew longest ago ends, making room by the next renewal). Default 10 000.
    pub lease_tenants: usize,
    /// How long a tenant that went quiet keeps a floor of free lease slots (its peak in
    /// use over this window, 1 to `lease_batch`) after its last local draw, so its next
    /// request runs here instead of being forwarded while a lease is fetched again; the
    /// floor is counted against the tenant's limit at the region meanwhile. 0: every free
    /// slot goes back after one quiet renewal round. In milliseconds. Default 60 000 (the
    /// placement window).
    pub lease_idle_hold_ms: u64,
    /// How the region for each request is chosen (`[region_choice]`): RTT smoothing, the
    /// per-region circuit breaker and the back-off after a pressure report.
    pub region_choice: RegionChoiceSettings,
}

/// Tuning of the POP's region choice (`[region_choice]`); each field's default is the
/// policy's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionChoiceSettings {
    /// Weight of a new RTT sample in a region's smoothed RTT, `0..=1`. Default 0.25.
    pub rtt_weight: f64,
    /// How much lower a region's smoothed RTT must be to win over one listed before it,
    /// in milliseconds (RTTs within it of the lowest count as tied). Default 5.
    pub rtt_margin_ms: u64,
    /// Half-life of a region's error score, in milliseconds. Default 10 000.
    pub error_half_life_ms: u64,
    /// Error score at which a region's circuit opens (requests avoid it). Default 3.0
    /// (three quick failures).
    pub open_at_score: f64,
    /// How long a circuit first stays open, in milliseconds; doubles with each failed
    /// probe. Default 1000.
    pub open_for_ms: u64,
    /// Longest a circuit stays open, in milliseconds. Default 30 000.
    pub max_open_for_ms: u64,
    /// First back-off from a region after it reports pressure, in milliseconds; doubles
    /// with each consecutive report. Default 500.
    pub backoff_ms: u64,
    /// Longest back-off, in milliseconds. Default 10 000.
    pub max_backoff_ms: u64,
}

impl Default for RegionChoiceSettings {
    fn default() -> Self {
        let d = RegionChoiceConfig::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            rtt_weight: d.rtt_weight,
            rtt_margin_ms: ms(d.rtt_margin),
            error_half_life_ms: ms(d.error_half_life),
            open_at_score: d.open_at_score,
            open_for_ms: ms(d.open_for),
            max_open_for_ms: ms(d.max_open_for),
            backoff_ms: ms(d.backoff),
            max_backoff_ms: ms(d.max_backoff),
        }
    }
}

impl RegionChoiceSettings {
    /// The policy's config; an RTT weight outside `0..=1` is clamped into it.
    pub fn config(&self) -> RegionChoiceConfig {
        RegionChoiceConfig {
            rtt_weight: if self.rtt_weight.is_finite() {
                self.rtt_weight.clamp(0.0, 1.0)
            } else {
                RegionChoiceConfig::default().rtt_weight
            },
            rtt_margin: Duration::from_millis(self.rtt_margin_ms),
            error_half_life: Duration::from_millis(self.error_half_life_ms.max(1)),
            open_at_score: self.open_at_score,
            open_for: Duration::from_millis(self.open_for_ms),
            max_open_for: Duration::from_millis(self.max_open_for_ms.max(self.open_for_ms)),
            backoff: Duration::from_millis(self.backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms.max(self.backoff_ms)),
        }
    }
}

/// The POP's HTTPS listener (`[https]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// TCP address of the HTTPS listener.
    pub listen: SocketAddr,
    /// Served when a client's SNI names no host below (or names none). Without it such
    /// handshakes fail. Default none.
    #[serde(default)]
    pub default_certificate: Option<CertFiles>,
    /// Certificates per host, chosen by SNI (`*.example.com` covers one label).
    #[serde(default)]
    pub certificates: Vec<HostCertFiles>,
    /// UDP address of the HTTP/3 (QUIC) listener, serving the same certificates and the
    /// same API; when set, HTTPS responses over TCP advertise it with `alt-svc`. The
    /// `[http]` limits apply to it too. Default none (HTTP/3 off).
    #[serde(default)]
    pub h3_listen: Option<SocketAddr>,
    /// Request streams one HTTP/3 connection may have open at once; the client gets no
    /// credit for more until one ends. Default 100.
    #[serde(default = "default_h3_max_streams")]
    pub h3_max_streams: u32,
}

fn default_h3_max_streams() -> u32 {
    100
}

impl HttpsConfig {
    /// HTTPS on `listen` with no certificates configured and HTTP/3 off.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            default_certificate: None,
            certificates: Vec::new(),
            h3_listen: None,
            h3_max_streams: default_h3_max_streams(),
        }
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A certificate for one host (`[[https.certificates]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCertFiles {
    /// The SNI host name it is served for.
    pub host: String,
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

impl Default for PopConfig {
    fn default() -> Self {
        Self {
            node_id: "pop-1".into(),
            state_dir: PathBuf::from(".strata/pop"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            plain_http: true,
            https: None,
            regions: RegionSource::Static(vec![SocketAddr::from(([127, 0, 0, 1], 4433))]),
            dns_server: None,
            region_server_name: REGION_SERVER_NAME.to_owned(),
            tls: None,
            edge: EdgeConfig::default(),
            http: HttpLimits::default(),
            operator_token: None,
            sandbox: SandboxConfig::default(),
            placement: PlacementConfig::default(),
            local_concurrency: 32,
            max_forwards: 1024,
            forward_margin_ms: 5000,
            metadata_ttl_ms: 10_000,
            max_known: 100_000,
            module_cache_bytes: 128 << 20,
            artifact_disk_bytes: 1 << 30,
            max_prefetches: 4,
            connect_timeout_ms: 3000,
            region_silence_ms: 1000,
            reconnect_first_ms: 50,
            reconnect_max_ms: 400,
            listen_backlog: common::edge::listener::DEFAULT_BACKLOG,
            report_interval_ms: 1000,
            route_refresh_ms: 1000,
            log_ship_ms: 500,
            log_queue_entries: 4096,
            function_logs: common::logs::LogLimits::default(),
            warm: WarmConfig::default(),
            lease_batch: 4,
            lease_ttl_ms: 3000,
            lease_tenants: 10_000,
            lease_idle_hold_ms: 60_000,
            region_choice: RegionChoiceSettings::default(),
        }
    }
}

impl PopConfig {
    /// Parses a TOML configuration.
    ///
    /// # Errors
    /// The TOML error, naming the offending field.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The region liveness rule this configuration asks for.
    pub fn liveness(&self) -> LivenessConfig {
        LivenessConfig {
            suspect_after: Duration::from_millis(self.region_silence_ms.max(1)),
            first_backoff: Duration::from_millis(self.reconnect_first_ms),
            max_backoff: Duration::from_millis(self.reconnect_max_ms),
        }
    }

    /// [`Self::metadata_ttl_ms`] as a [`Duration`].
    pub fn metadata_ttl(&self) -> Duration {
        Duration::from_millis(self.metadata_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_choice_tuning_reaches_the_policy_config() {
        let c = PopConfig::from_toml(
            "[region_choice]\nopen_at_score = 5.0\nopen_for_ms = 2000\nmax_open_for_ms = 10\n",
        )
        .expect("parses");
        let policy = c.region_choice.config();
        assert_eq!(policy.open_at_score, 5.0);
        assert_eq!(policy.open_for, Duration::from_secs(2));
        // A maximum below the first period is raised to it.
        assert_eq!(policy.max_open_for, Duration::from_secs(2));
        assert!(PopConfig::from_toml("[region_choice]\nopen_at = 1\n").is_err());
    }

    #[test]
    fn the_documented_example_parses_to_the_defaults_it_claims() {
        let c = PopConfig::from_toml(include_str!("../../docs/examples/pop.toml"))
            .expect("docs/examples/pop.toml parses");
        let d = PopConfig::default();
        assert_eq!(
            (
                c.http_listen,
                c.local_concurrency,
                c.max_forwards,
                c.metadata_ttl_ms
            ),
            (
                d.http_listen,
                d.local_concurrency,
                d.max_forwards,
                d.metadata_ttl_ms
            )
        );
        assert_eq!(c.placement, d.placement);
        assert_eq!(c.http, d.http);
        assert_eq!(c.edge, d.edge);
        assert_eq!(c.operator_token, None);
        assert_eq!(c.warm, d.warm);
        assert_eq!(c.function_logs, d.function_logs);
        assert_eq!(
            (
                c.lease_batch,
                c.lease_ttl_ms,
                c.lease_tenants,
                c.lease_idle_hold_ms
            ),
            (
                d.lease_batch,
                d.lease_ttl_ms,
                d.lease_tenants,
                d.lease_idle_hold_ms
            )
        );
        assert_eq!(
            (c.route_refresh_ms, c.log_ship_ms, c.log_queue_entries),
            (d.route_refresh_ms, d.log_ship_ms, d.log_queue_entries)
        );
        assert_eq!(c.liveness(), d.liveness());
        assert_eq!(c.region_choice, d.region_choice);
        assert_eq!(c.region_choice.config(), RegionChoiceConfig::default());
        assert_eq!(c.listen_backlog, d.listen_backlog);
        assert!(matches!(c.regions, RegionSource::Static(ref v) if v.len() == 1));
    }

    #[test]
    fn a_dns_region_source_parses() {
        let c = PopConfig::from_toml(r#"regions = { dns = { name = "regions.example.net" } }"#)
            .expect("parses");
        assert!(
            matches!(c.regions, RegionSource::Dns { ref name, .. } if name == "regions.example.net")
        );
    }
}
