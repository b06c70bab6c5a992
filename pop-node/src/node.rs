//! Starting and stopping a POP node.

use crate::artifacts::ArtifactCache;
use crate::config::PopConfig;
use crate::discovery::{Discovery, DiscoveryError};
use crate::https::{Https, HttpsError, TenantCerts};
use crate::invoker::{PopInvoker, PopParts};
use crate::known::Known;
use crate::leases::{LeaseConfig, Leases};
use crate::logship::{LogShipper, ShipLimits};
use crate::prefetch::Prefetcher;
use crate::report::Reporter;
use crate::routes::RouteSync;
use crate::sync::{self, SyncParts, SyncState, SyncStatus};
use crate::upstream::RegionLink;
use crate::warm::WarmPlanner;
use axum::Router;
use axum::routing::get;
use common::clock::{Clock, SystemClock};
use common::edge::tls::CertTable;
use common::edge::{invoke_router, metrics_router, observed, route_fallback, serve};
use common::exec::Executor;
use common::logs::LogBuffer;
use common::metrics::NodeStats;
use common::model::{NodeId, Tier};
use common::policy::PlacementPolicy;
use common::sandbox::{Release, Sandbox, SandboxConfig, SandboxError};
use common::transport::{Client, NodeTls, TransportError, dev_ca};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tower_http::trace::TraceLayer;
use tracing::info;

/// Why a POP could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory or the listener could not be set up.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates could not be loaded or the QUIC client could not bind.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The discovery configuration is unusable.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// The sandbox engine could not be built.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The HTTPS listener or its certificates could not be set up.
    #[error("https: {0}")]
    Https(#[from] HttpsError),
}

/// A running POP. Dropping it stops the node's tasks.
#[derive(Debug)]
pub struct PopHandle {
    /// Where devices connect over plain HTTP (HTTP/1.1 or h2c); with `plain_http =
    /// false`, the HTTPS address.
    pub http_addr: SocketAddr,
    /// Where devices connect over HTTPS (HTTP/1.1 or HTTP/2 by ALPN), if configured.
    pub https_addr: Option<SocketAddr>,
    /// Where devices connect over HTTP/3 (UDP), if configured.
    pub h3_addr: Option<SocketAddr>,
    /// The certificates the HTTPS listener serves, by SNI host (empty without HTTPS).
    pub certs: Arc<CertTable>,
    /// The node's id.
    pub node_id: NodeId,
    invoker: Arc<PopInvoker>,
    leases: Arc<Leases>,
    sync: Arc<SyncState>,
    pause_sync: tokio::sync::watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl PopHandle {
    /// The state of the push stream from the region.
    pub fn sync_status(&self) -> SyncStatus {
        self.sync.status()
    }

    /// The push stream's status from now on, for waiting on a change (it going live, a
    /// revision arriving) instead of polling [`PopHandle::sync_status`].
    pub fn watch_sync(&self) -> tokio::sync::watch::Receiver<SyncStatus> {
        self.sync.watch()
    }

    /// Drops the push stream and stays unsubscribed while `paused` (maintenance, and
    /// tests of catching up); unpausing resubscribes from the last applied revision.
    pub fn set_sync_paused(&self, paused: bool) {
        self.pause_sync.send_replace(paused);
    }

    /// Whether the code `digest` is compiled and ready at this POP (cache inspection for
    /// operators and tests).
    pub fn has_module(&self, digest: &common::model::ArtifactDigest) -> bool {
        self.invoker.has_module(digest)
    }

    /// Whether the code `digest` is compiled for runtime `release` and ready at this POP.
    pub fn has_module_on(&self, release: Release, digest: &common::model::ArtifactDigest) -> bool {
        self.invoker.has_module_on(release, digest)
    }

    /// Waits, at most `within`, until the code `digest` is ready here for `release`
    /// (woken by each module prepared); returns whether it is.
    pub async fn module_ready_on(
        &self,
        release: Release,
        digest: &common::model::ArtifactDigest,
        within: std::time::Duration,
    ) -> bool {
        self.invoker.module_ready_on(release, digest, within).await
    }

    /// Fetches the code `digest` from a region and prepares it at this POP now (what the
    /// first requests of a function start in the background); the cold-start benchmark
    /// times it.
    ///
    /// # Errors
    /// When no region serves the artifact or it cannot be prepared.
    pub async fn prepare(
        &self,
        digest: common::model::ArtifactDigest,
    ) -> Result<(), common::model::ApiError> {
        self.invoker.prepare(digest).await
    }

    /// Slots of `tenant`'s concurrency lease this POP holds and has in use now.
    pub fn lease_holding(&self, tenant: &common::model::TenantId) -> (u32, u32) {
        self.leases.holding(tenant)
    }

    /// `tenant`'s lease at this POP now: held, in use, valid, and whether lease messages are
    /// stalled (the region does not answer them).
    pub fn lease_view(&self, tenant: &common::model::TenantId) -> crate::leases::LeaseView {
        self.leases.view(tenant)
    }

    /// Tenants with a lease book at this POP now (at most about `lease_tenants`).
    pub fn lease_books(&self) -> usize {
        self.leases.books()
    }

    /// The region that counts `tenant`'s lease at this POP (its QUIC address), if any.
    pub fn lease_region(&self, tenant: &common::model::TenantId) -> Option<SocketAddr> {
        self.leases.region_of(tenant)
    }

    /// Lease renewal rounds completed; changes after each round, so a caller can wait for
    /// rounds to pass instead of sleeping.
    pub fn lease_rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.leases.rounds()
    }

    /// Whether the POP has a live connection to any region now (a region that went
    /// silent stops counting once the POP drops its connection, about `region_silence_ms`
    /// after the silence began).
    pub fn region_connected(&self) -> bool {
        self.invoker.region_connected()
    }

    /// Idle warm reactor instances across every pool at this POP.
    pub fn warm_instances(&self) -> usize {
        self.invoker.warm_instances()
    }

    /// Stops serving and waits for the node's tasks to end.
    pub async fn shutdown(mut self) {
        self.invoker.stop();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        // After the tasks: nothing learns any more, so this write is the last.
        self.invoker.flush_known().await;
    }
}

/// Starts a POP with `config`; returns once its listener is bound. Regions need not be
/// reachable yet: requests that need one get 503 until one is.
///
/// # Errors
/// [`StartError`] when the state directory, certificates, sandbox or listener cannot be
/// set up.
pub async fn start(config: PopConfig) -> Result<PopHandle, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// As [`start`], with placement, rates, leases, warm pools and the known tables reading
/// the time from `clock` (tests move it by hand instead of waiting). Connections to
/// regions (connect timeouts, liveness, discovery's TTLs, failover cool-downs) keep real
/// time: they are timed against the network's.
///
/// # Errors
/// As [`start`].
pub async fn start_with_clock(
    config: PopConfig,
    clock: Arc<dyn Clock>,
) -> Result<PopHandle, StartError> {
    std::fs::create_dir_all(&config.state_dir)?;
    let tls_files = match &config.tls {
        Some(files) => files.clone(),
        None => dev_ca::init(&config.state_dir.join("certs"))?.pop,
    };
    let tls = NodeTls::load(&tls_files)?;
    let liveness = config.liveness();
    let client = Client::with_keep_alive(&tls, liveness.keep_alive())?;
    let discovery = Discovery::new(config.regions.clone(), config.dns_server)?;
    let link = Arc::new(RegionLink::new(
        client,
        discovery,
        config.region_server_name.clone(),
        std::time::Duration::from_millis(config.connect_timeout_ms),
        liveness,
        config.region_choice.config(),
    ));
    let node_id = NodeId(config.node_id.clone());
    let stats = NodeStats::new(node_id.clone(), Tier::Pop, std::time::Instant::now());
    let logs = Arc::new(LogShipper::new(
        format!("pop/{node_id}"),
        LogBuffer::new(format!("pop/{node_id}"), config.function_logs),
        Arc::clone(&link),
        ShipLimits {
            max_entries: config.log_queue_entries,
            // Each entry is cut to 64 KiB; this keeps a full queue within a few batches.
            max_bytes: 8 << 20,
        },
    ));
    let routes = Arc::new(RouteSync::new(Arc::clone(&link)));
    let executor = Executor::new(
        Sandbox::new(config.sandbox.clone())?,
        config.module_cache_bytes,
    )
    // The next runtime release too: functions the region's canary promoted run on it here.
    .with_next_runtime(Sandbox::new(SandboxConfig {
        release: Release::Next,
        ..config.sandbox.clone()
    })?)
    .with_stats(Arc::clone(&stats))
    .with_log_sink(Arc::clone(&logs) as Arc<dyn common::logs::LogSink>);
    let reporter = Reporter {
        stats: Arc::clone(&stats),
        link: Arc::clone(&link),
        executor: executor.clone(),
        slots: config.local_concurrency,
        every: std::time::Duration::from_millis(config.report_interval_ms),
    };
    let artifacts = Arc::new(ArtifactCache::open(
        &config.state_dir.join("artifacts"),
        executor.clone(),
        config.module_cache_bytes,
        config.artifact_disk_bytes,
        config.max_known,
        config.metadata_ttl(),
    )?);
    let known = Arc::new(Known::new(
        config.metadata_ttl(),
        config.max_known,
        clock.now(),
    ));
    // A restarted POP is warm again: cached artifacts and the functions they belong to
    // are back before the first request.
    let restore = Arc::clone(&artifacts);
    let restored = Arc::clone(&known);
    tokio::task::spawn_blocking(move || {
        restore.warm_up();
        restore.restore(&restored);
    })
    .await
    .map_err(|e| std::io::Error::other(format!("artifact warm-up failed: {e}")))?;
    let prefetcher = Arc::new(Prefetcher::new(
        Arc::clone(&link),
        Arc::clone(&artifacts),
        config.max_prefetches,
    ));
    config
        .warm
        .validate()
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
    let warm = Arc::new(
        WarmPlanner::new(config.warm.clone(), executor.clone()).with_clock(Arc::clone(&clock)),
    );
    let https = match &config.https {
        Some(https) => Some(Https::bind(https, config.listen_backlog, &config.http).await?),
        None if !config.plain_http => return Err(HttpsError::NoListener.into()),
        None => None,
    };
    let https_addr = https.as_ref().map(|h| h.addr);
    let h3_addr = https.as_ref().and_then(|h| h.h3_addr);
    let certs = https
        .as_ref()
        .map_or_else(|| Arc::new(CertTable::new()), |h| Arc::clone(&h.certs));
    let sync_state = Arc::new(SyncState::default());
    let sync_parts = SyncParts {
        link: Arc::clone(&link),
        known: Arc::clone(&known),
        executor: executor.clone(),
        prefetcher: Arc::clone(&prefetcher),
        state: Arc::clone(&sync_state),
        certs: Arc::new(TenantCerts::new(Arc::clone(&certs))),
        clock: Arc::clone(&clock),
    };
    let leases = Arc::new(
        Leases::new(
            node_id.clone(),
            Arc::clone(&link),
            LeaseConfig {
                batch: config.lease_batch,
                max_tenants: config.lease_tenants,
                idle_hold: std::time::Duration::from_millis(config.lease_idle_hold_ms),
                // One renewal period: a region that has not answered by the next renewal is
                // noticed before the lease it counts expires (see `common::policy::lease::Answers`).
                stall_after: common::policy::lease::renew_every(std::time::Duration::from_millis(
                    config.lease_ttl_ms,
                )),
            },
        )
        .with_clock(Arc::clone(&clock)),
    );
    let invoker = Arc::new(PopInvoker::new(PopParts {
        node: node_id.clone(),
        executor: executor.clone(),
        link: Arc::clone(&link),
        known,
        artifacts: Arc::clone(&artifacts),
        placement: PlacementPolicy::new(config.placement.clone()),
        prefetcher,
        warm: Arc::clone(&warm),
        local_concurrency: config.local_concurrency,
        max_forwards: config.max_forwards,
        leases: Arc::clone(&leases),
        max_rate_keys: config.max_known,
        forward_margin: std::time::Duration::from_millis(config.forward_margin_ms),
        clock,
    }));
    let listener = match config.plain_http {
        true => Some(common::edge::listener::bind(
            config.http_listen,
            config.listen_backlog,
        )?),
        false => None,
    };
    let http_addr = match (&listener, https_addr) {
        (Some(l), _) => l.local_addr()?,
        (None, Some(addr)) => addr,
        (None, None) => return Err(HttpsError::NoListener.into()),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(observed(
            invoke_router(Arc::clone(&invoker), config.edge),
            Arc::clone(&stats),
        ))
        .merge(metrics_router(
            Arc::clone(&stats),
            config.operator_token.as_deref().map(Arc::from),
        ))
        // Everything the invoke API does not claim is a device request for an HTTP route.
        .merge(observed(
            route_fallback(Arc::clone(&invoker), Arc::clone(&routes), config.edge),
            stats,
        ))
        // One span per HTTP request, so every log line of an invocation can be traced back.
        .layer(TraceLayer::new_for_http());
    let mut tasks = JoinSet::new();
    tasks.spawn(reporter.run());
    tasks.spawn(Arc::clone(&artifacts).persist());
    tasks.spawn(Arc::clone(&artifacts).write_behind());
    tasks.spawn(warm.run());
    tasks.spawn(Arc::clone(&leases).run(std::time::Duration::from_millis(config.lease_ttl_ms)));
    tasks.spawn(routes.run(std::time::Duration::from_millis(config.route_refresh_ms)));
    tasks.spawn(logs.run(std::time::Duration::from_millis(config.log_ship_ms)));
    let (pause_sync, paused) = tokio::sync::watch::channel(false);
    tasks.spawn(sync::run(sync_parts, paused));
    if let Some(https) = https {
        tasks.spawn(https.serve(app.clone(), config.http));
    }
    if let Some(listener) = listener {
        // Stops when the task is aborted (shutdown), which cuts its connections. HTTP/1.1
        // and, by the client's preface, h2c.
        tasks.spawn(serve(listener, app, config.http, std::future::pending()));
    }
    info!(%http_addr, ?https_addr, ?h3_addr, node = %node_id, "POP started");
    Ok(PopHandle {
        http_addr,
        https_addr,
        h3_addr,
        certs,
        node_id,
        invoker,
        leases,
        sync: sync_state,
        pause_sync,
        tasks,
    })
}
