//! The region node's configuration: a TOML file plus command-line overrides, validated
//! once at start-up and handed down.

use common::edge::{EdgeConfig, HttpLimits};
use common::sandbox::SandboxConfig;
use common::transport::TlsFiles;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a region node needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionConfig {
    /// This node's id, shown as `region/<id>`. Default `region-1`.
    pub node_id: String,
    /// Directory for the store and, without `tls`, the dev CA. Default `.strata/region`.
    pub state_dir: PathBuf,
    /// Control and invoke HTTP API address. Default `127.0.0.1:8080`.
    pub http_listen: SocketAddr,
    /// QUIC address POPs connect to. Default `127.0.0.1:4433`.
    pub quic_listen: SocketAddr,
    /// Accept backlog of the HTTP listener (connections the kernel completes before the
    /// node accepts them); the kernel caps it at `net.core.somaxconn`. Default 4096.
    pub listen_backlog: u32,
    /// CA, certificate and key. Default: a dev CA generated in `<state_dir>/certs`.
    pub tls: Option<TlsFiles>,
    /// Operator token for tenant administration. Default none (tenant API refused).
    pub admin_token: Option<String>,
    /// HTTP edge limits (payload size, unverified-token body budget).
    pub edge: EdgeConfig,
    /// HTTP server limits (`[http]`): header/body/idle timeouts, connections, header size
    /// and count.
    pub http: HttpLimits,
    /// Sandbox limits.
    pub sandbox: SandboxConfig,
    /// Invocations executing at once. Default 64.
    pub max_concurrency: usize,
    /// Invocations waiting for a slot before new ones get 503. Default 256.
    pub max_queued: usize,
    /// Most of the execution slots (and of the on-demand fleet's workers) one tenant may
    /// hold or wait for at once, in percent (1..=99; at least one slot, always one fewer
    /// than the pool). A tenant at its share gets 429 `tenant_slot_share`, so another
    /// tenant is always served. Default 50.
    pub tenant_slot_share_percent: u8,
    /// Compiled-module cache bound, in wasm bytes. Default 256 MiB.
    pub module_cache_bytes: usize,
    /// Bounds of the function log ring buffers (this region's and what POPs ship).
    pub function_logs: common::logs::LogLimits,
    /// Bound of the precompiled artifacts kept for POPs, in bytes; least recently fetched
    /// are dropped first and rebuilt from the stored wasm when asked for again.
    /// Default 256 MiB.
    pub artifact_cache_bytes: usize,
    /// Where the durable state lives (`[store]`). Default: redb in `state_dir`.
    pub store: StoreConfig,
    /// The async queue and dead-letter queue: workers, bounds, retry backoff.
    pub events: crate::events::EventsConfig,
    /// Share of each undecided function's invocations run on the next runtime release,
    /// in percent (0..=100). Default 0: the canary is off and everything runs on the
    /// current release until an operator starts a rollout (a canaried invocation may
    /// start cold, since the next release has its own compiled code and warm pools).
    pub canary_percent: u8,
    /// Outcomes needed on each runtime release before the canary decides a function.
    /// Default 30.
    pub canary_min_samples: u32,
    /// When a function counts as trending up, so POPs are hinted to prepare its code.
    pub trending: common::policy::TrendingConfig,
    /// Per-tenant adaptive concurrency and leases (`[limits]`).
    pub limits: crate::limits::LimitsConfig,
    /// Frequent and rare functions' fleets (`[fleets]`): the frequency bar, the on-demand
    /// workers and queue.
    pub fleets: crate::fleet::FleetsConfig,
    /// Per-tenant quotas in bytes and counts (`[quotas]`); each refusal names its quota.
    pub quotas: crate::quota::QuotaConfig,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self {
            node_id: "region-1".into(),
            state_dir: PathBuf::from(".strata/region"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            listen_backlog: common::edge::listener::DEFAULT_BACKLOG,
            tls: None,
            admin_token: None,
            edge: EdgeConfig::default(),
            http: HttpLimits::default(),
            sandbox: SandboxConfig::default(),
            max_concurrency: 64,
            max_queued: 256,
            tenant_slot_share_percent: common::policy::share::DEFAULT_TENANT_SHARE_PERCENT,
            module_cache_bytes: 256 << 20,
            function_logs: common::logs::LogLimits::default(),
            artifact_cache_bytes: 256 << 20,
            store: StoreConfig::default(),
            events: crate::events::EventsConfig::default(),
            canary_percent: 0,
            canary_min_samples: 30,
            trending: common::policy::TrendingConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            fleets: crate::fleet::FleetsConfig::default(),
            quotas: crate::quota::QuotaConfig::default(),
        }
    }
}

/// Which store backend a region uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded redb file `<state_dir>/region.redb`: this region alone.
    #[default]
    Redb,
    /// A NATS JetStream server: every region configured with the same server and prefix
    /// shares functions, queues and state.
    Jetstream,
}

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `redb` (default) or `jetstream`.
    pub backend: StoreBackend,
    /// The NATS server for `jetstream`, e.g. `nats://127.0.0.1:4222`. Required then.
    pub nats_url: Option<String>,
    /// Prefix of the JetStream bucket and stream names; regions sharing state use the
    /// same one. `[A-Za-z0-9_-]{1,32}`, default `strata`.
    pub prefix: String,
    /// Deadline of each store operation against NATS, and of connecting. Default 5000.
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Redb,
            nats_url: None,
            prefix: "strata".into(),
            timeout_ms: 5000,
        }
    }
}

impl StoreConfig {
    /// The JetStream connection settings, for `backend = "jetstream"`.
    ///
    /// # Errors
    /// A message naming the missing `nats_url`.
    pub fn jetstream(&self) -> Result<crate::store::JetStreamConfig, String> {
        let url = self
            .nats_url
            .clone()
            .ok_or("[store] backend = \"jetstream\" needs nats_url")?;
        Ok(crate::store::JetStreamConfig {
            url,
            prefix: self.prefix.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms.max(1)),
        })
    }
}

impl RegionConfig {
    /// Parses a TOML configuration.
    ///
    /// # Errors
    /// The TOML error, naming the offending field.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_to_the_defaults_it_claims() {
        let c = RegionConfig::from_toml(include_str!("../../docs/examples/region.toml"))
            .expect("docs/examples/region.toml parses");
        let d = RegionConfig::default();
        assert_eq!(
            (
                c.http_listen,
                c.quic_listen,
                c.max_concurrency,
                c.max_queued
            ),
            (
                d.http_listen,
                d.quic_listen,
                d.max_concurrency,
                d.max_queued
            )
        );
        assert_eq!(c.sandbox, d.sandbox);
        assert_eq!(c.http, d.http);
        assert_eq!(c.edge, d.edge);
        assert_eq!(c.function_logs, d.function_logs);
        assert_eq!(c.store, d.store);
        assert_eq!(c.events, d.events);
        assert_eq!(c.trending, d.trending);
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.fleets, d.fleets);
        assert_eq!(c.quotas, d.quotas);
        assert!(c.tls.is_some());
        assert_eq!(
            c.admin_token, None,
            "the example must not ship a usable operator token"
        );
    }

    #[test]
    fn the_store_section_selects_jetstream() {
        let c = RegionConfig::from_toml(
            "[store]\nbackend = \"jetstream\"\nnats_url = \"nats://127.0.0.1:4222\"\nprefix = \"eu\"",
        )
        .expect("parses");
        assert_eq!(c.store.backend, StoreBackend::Jetstream);
        let js = c.store.jetstream().expect("complete");
        assert_eq!(
            (js.url.as_str(), js.prefix.as_str()),
            ("nats://127.0.0.1:4222", "eu")
        );
        let c = RegionConfig::from_toml("[store]\nbackend = \"jetstream\"").expect("parses");
        assert!(
            c.store
                .jetstream()
                .expect_err("no url")
                .contains("nats_url")
        );
        assert!(RegionConfig::from_toml("[store]\nbackend = \"etcd\"").is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = RegionConfig::from_toml("max_concurency = 3").expect_err("typo refused");
        assert!(err.to_string().contains("max_concurency"), "{err}");
    }
}
