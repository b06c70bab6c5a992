//! Starting and stopping a region node: store, sandbox, HTTP and QUIC listeners.

use crate::admission::Admission;
use crate::api::{self, CapacityState, ControlState};
use crate::artifacts::Artifacts;
use crate::canary::RuntimeCanary;
use crate::capacity::{Capacity, CapacityConfig};
use crate::certs::Certificates;
use crate::config::{RegionConfig, StoreBackend};
use crate::events::{self, Events};
use crate::invoke::RegionInvoker;
use crate::limits::Limits;
use crate::quic::{self, PopServices};
use crate::region::{Region, Shares};
use crate::registry::Registry;
use crate::rollout::Rollouts;
use crate::routes::Routes;
use crate::sizes::Sizes;
use crate::state::RegionState;
use crate::store::{JetStreamBackend, Store, StoreError};
use crate::trend::TrendWatch;
use axum::Router;
use axum::routing::get;
use common::clock::Clocks;
use common::edge::{invoke_router, metrics_router, observed, route_fallback, serve};
use common::exec::Executor;
use common::logs::LogBuffer;
use common::metrics::{Levels, NodeStats};
use common::model::{ApiError, ArtifactDigest, NodeId, Tier};
use common::policy::canary::CanaryConfig;
use common::sandbox::{Release, Sandbox, SandboxConfig, SandboxError};
use common::transport::{NodeTls, Server, TlsFiles, TransportError, dev_ca};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tower_http::trace::TraceLayer;
use tracing::info;

/// Why a region could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory or a listener could not be set up.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Certificates could not be loaded or generated, or QUIC could not bind.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The sandbox engine could not be built.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The route table could not be loaded.
    #[error("routes: {0}")]
    Routes(#[from] ApiError),
    /// The configuration is incomplete or inconsistent.
    #[error("config: {0}")]
    Config(String),
}

/// A running region. Dropping it stops the node's tasks.
#[derive(Debug)]
pub struct RegionHandle {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where POPs connect over QUIC.
    pub quic_addr: SocketAddr,
    /// The node's id.
    pub node_id: NodeId,
    /// The TLS files in use (so a co-located POP can share the dev CA).
    pub tls: TlsFiles,
    region: Arc<Region>,
    server: Arc<Server>,
    tasks: JoinSet<()>,
    http: HttpServer,
    identity_refusals: Arc<std::sync::atomic::AtomicU64>,
    /// Stored once more at shutdown.
    sizes: Sizes,
}

/// The HTTP server's task and the signal that starts its graceful shutdown.
#[derive(Debug)]
struct HttpServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// How long shutdown waits for open HTTP connections (a long invocation, an SSE stream)
/// to finish before cutting them.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

impl RegionHandle {
    /// Idle warm reactor instances across every pool at this region.
    pub fn warm_instances(&self) -> usize {
        self.region.executor.sandbox().warm_totals().0
    }

    /// Whether the code `digest` is compiled for `release` and cached here.
    pub fn has_module_on(&self, release: Release, digest: &ArtifactDigest) -> bool {
        self.region.executor.cached_on(release, digest).is_some()
    }

    /// Messages refused because a POP claimed another POP's identity (see
    /// [`crate::quic`]).
    pub fn pop_identity_refusals(&self) -> u64 {
        self.identity_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The registry, for operators' tooling and tests.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.region.registry
    }

    /// How many artifact fetches POPs have made, for tests and operators.
    pub fn artifact_fetches(&self) -> u64 {
        self.region.artifacts.fetches()
    }

    /// How many of those fetches had to compile their module (its precompiled code was not
    /// cached); a deployed module's fetches are reads.
    pub fn artifact_compiles_on_fetch(&self) -> u64 {
        self.region.artifacts.compiles_on_fetch()
    }

    /// Stops accepting, closes POP connections and waits for the node's tasks to end and
    /// its QUIC socket to be released. Open HTTP connections get [`HTTP_DRAIN`] to finish:
    /// their tasks hold the store, so returning while they run would leave the state
    /// directory locked for a node restarted on it.
    pub async fn shutdown(mut self) {
        let HttpServer { stop, mut task } = self.http;
        // The server may already have stopped on an error; then there is nothing to signal.
        let _ = stop.send(());
        self.server.close();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        if tokio::time::timeout(HTTP_DRAIN, &mut task).await.is_err() {
            tracing::warn!("HTTP connections still open after the drain time; cutting them");
            task.abort();
            let _ = task.await;
        }
        self.server.wait_idle().await;
        // What changed since the last periodic flush.
        let sizes = self.sizes;
        if let Err(e) = tokio::task::spawn_blocking(move || sizes.flush()).await {
            tracing::warn!(error = %e, "size flush at shutdown failed");
        }
    }
}

/// Starts a region with `config`; returns once both listeners are bound.
///
/// # Errors
/// [`StartError`] when the state directory, store, certificates, sandbox or a listener
/// cannot be set up.
pub async fn start(config: RegionConfig) -> Result<RegionHandle, StartError> {
    start_with_clocks(config, Clocks::default()).await
}

/// As [`start`], reading the time from `clocks`: the async queue from `clocks.wall`, the
/// tenants' limits and leases, the capacity view and the trend watch from `clocks.mono`
/// (tests move them by hand instead of waiting).
///
/// # Errors
/// As [`start`].
pub async fn start_with_clocks(
    config: RegionConfig,
    clocks: Clocks,
) -> Result<RegionHandle, StartError> {
    std::fs::create_dir_all(&config.state_dir)?;
    let tls_files = match &config.tls {
        Some(files) => files.clone(),
        None => dev_ca::init(&config.state_dir.join("certs"))?.region,
    };
    let tls = NodeTls::load(&tls_files)?;
    let store = open_store(&config).await?;
    let canary_config = CanaryConfig {
        percent: config.canary_percent.min(100),
        min_samples: config.canary_min_samples.max(1),
        ..CanaryConfig::default()
    };
    let canary = Arc::new(RuntimeCanary::open(store.clone(), canary_config)?);
    let shared_state = Arc::new(RegionState::new(store.clone()).with_quotas(config.quotas));
    let registry = Arc::new(Registry::new(store).with_quotas(config.quotas));
    let routes = Arc::new(Routes::open(Arc::clone(&registry))?);
    // Alias rollouts are judged with the runtime canary's test and sample sizes.
    let rollouts = Arc::new(Rollouts::open(Arc::clone(&registry), canary_config)?);
    let certs = Arc::new(Certificates::open(
        Arc::clone(&registry),
        Arc::clone(&routes),
    )?);
    let sandbox = Sandbox::new(config.sandbox.clone())?;
    let next = Sandbox::new(SandboxConfig {
        release: Release::Next,
        ..config.sandbox.clone()
    })?;
    let node_id = NodeId(config.node_id.clone());
    let stats = NodeStats::new(node_id.clone(), Tier::Region, Instant::now());
    let events = Arc::new(
        Events::open(registry.store().clone(), config.events)?
            .with_stats(Arc::clone(&stats))
            .with_clock(Arc::clone(&clocks.wall))
            .with_quotas(config.quotas),
    );
    let logs = Arc::new(LogBuffer::new(
        format!("region/{node_id}"),
        config.function_logs,
    ));
    let executor = Executor::new(sandbox, config.module_cache_bytes)
        .with_next_runtime(next)
        .with_shared_state(shared_state)
        .with_stats(Arc::clone(&stats))
        .with_log_sink(Arc::clone(&logs) as Arc<dyn common::logs::LogSink>);
    config
        .limits
        .split()
        .map_err(|e| StartError::Config(format!("[limits] {e}")))?;
    if config.limits.rebalance_ms > 0 && !matches!(config.store.backend, StoreBackend::Jetstream) {
        // Regions with their own stores never see each other's demand: each would grow
        // into the others' static shares.
        return Err(StartError::Config(
            "[limits] rebalance_ms needs the jetstream store shared by all the regions".into(),
        ));
    }
    let limits = Arc::new(
        Limits::open(config.limits, registry.store().clone())?.with_clock(Arc::clone(&clocks.mono)),
    );
    config
        .fleets
        .validate(config.sandbox.max_warm_pools)
        .map_err(|e| StartError::Config(e.to_string()))?;
    common::policy::share::validate_percent(config.tenant_slot_share_percent)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let fleets = Arc::new(crate::fleet::Fleets::new(config.fleets.clone(), &executor));
    let admission = Admission::new(config.max_concurrency, config.max_queued);
    let shares = Shares::new(
        admission.slots(),
        config.fleets.workers,
        config.tenant_slot_share_percent,
    );
    // The region's services, built once: the invoke pipeline, the control API, the QUIC
    // service and the outcome folding take what they need from it.
    let region = Arc::new(Region {
        node: node_id.clone(),
        artifacts: Arc::new(Artifacts::new(
            executor.clone(),
            Arc::clone(&registry),
            config.artifact_cache_bytes,
        )),
        registry,
        executor,
        events: Arc::clone(&events),
        limits: Arc::clone(&limits),
        fleets: Arc::clone(&fleets),
        canary: Arc::clone(&canary),
        rollouts: Arc::clone(&rollouts),
        routes: Arc::clone(&routes),
        admission,
        shares,
        clock: Arc::clone(&clocks.mono),
        max_payload_bytes: config.edge.max_payload_bytes,
    });
    let invoker = Arc::new(RegionInvoker::new(Arc::clone(&region)));

    // Right-size statistics from before the restart (peaks, learned sizes).
    let sizes = Sizes::new(region.registry.store().clone(), region.executor.clone());
    sizes.restore()?;

    let server = Arc::new(Server::bind(config.quic_listen, &tls)?);
    let quic_addr = server.local_addr()?;
    let listener = common::edge::listener::bind(config.http_listen, config.listen_backlog)?;
    let http_addr = listener.local_addr()?;

    let capacity = Arc::new(
        Capacity::new(CapacityConfig::default())
            .with_canary(Arc::clone(&canary))
            .with_rollouts(Arc::clone(&rollouts))
            .with_memory(region.executor.clone())
            .with_clock(Arc::clone(&clocks.mono)),
    );
    let trending =
        Arc::new(TrendWatch::new(config.trending.clone()).with_clock(Arc::clone(&clocks.mono)));
    let control = ControlState {
        region: Arc::clone(&region),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        logs: Arc::clone(&logs),
        certs: Arc::clone(&certs),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api::capacity_router(CapacityState {
            control: control.clone(),
            capacity: Arc::clone(&capacity),
        }))
        .merge(metrics_router(
            Arc::clone(&stats),
            config.admin_token.as_deref().map(Arc::from),
        ))
        .merge(api::router(control, config.sandbox.max_module_bytes))
        .merge(observed(
            invoke_router(Arc::clone(&invoker), config.edge),
            Arc::clone(&stats),
        ))
        // Everything the API does not claim is a device request for an HTTP route.
        .merge(observed(
            route_fallback(Arc::clone(&invoker), Arc::clone(&routes), config.edge),
            Arc::clone(&stats),
        ))
        // One span per HTTP request, so every log line of an invocation can be traced back.
        .layer(TraceLayer::new_for_http());

    let mut tasks = JoinSet::new();
    let identity_refusals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    events::spawn_workers(&events, &invoker, &mut tasks);
    fleets.spawn_workers(&mut tasks);
    tasks.spawn(quic::serve(
        Arc::clone(&server),
        Arc::clone(&invoker),
        PopServices {
            logs,
            capacity: Arc::clone(&capacity),
            trending: Arc::clone(&trending),
            identity_refusals: Arc::clone(&identity_refusals),
        },
    ));
    tasks.spawn(trending.run());
    tasks.spawn(sizes.clone().run());
    if matches!(config.store.backend, StoreBackend::Jetstream) {
        // Other regions on the same store change tenant overrides too.
        tasks.spawn(Arc::clone(&limits).follow());
        tasks.spawn(Arc::clone(&limits).rebalance());
    }
    tasks.spawn(snapshot_loop(
        stats,
        capacity,
        Arc::clone(&region),
        certs,
        config.max_concurrency,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let http = HttpServer {
        stop,
        task: tokio::spawn(serve(listener, app, config.http, shutdown)),
    };
    info!(%http_addr, %quic_addr, node = %node_id, "region started");
    Ok(RegionHandle {
        identity_refusals,
        http_addr,
        quic_addr,
        node_id,
        tls: tls_files,
        region,
        server,
        tasks,
        http,
        sizes,
    })
}

/// Opens the configured store: the redb file in the state directory, or a connection to
/// JetStream (made on the blocking pool: connecting waits for the server).
async fn open_store(config: &RegionConfig) -> Result<Store, StartError> {
    match config.store.backend {
        StoreBackend::Redb => Ok(Store::open(&config.state_dir.join("region.redb"))?),
        StoreBackend::Jetstream => {
            let js = config.store.jetstream().map_err(StartError::Config)?;
            let backend = tokio::task::spawn_blocking(move || JetStreamBackend::connect(&js))
                .await
                .map_err(|e| StartError::Config(format!("connecting to NATS: {e}")))??;
            info!(url = ?config.store.nats_url, prefix = %config.store.prefix, "store: JetStream");
            Ok(Store::with_backend(backend))
        }
    }
}

/// How often the region snapshots its own load into the capacity view.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Samples the region's gauges (certificate expiries included) and adds its own load to
/// the capacity view, every [`SNAPSHOT_INTERVAL`], until the node stops.
async fn snapshot_loop(
    stats: Arc<NodeStats>,
    capacity: Arc<Capacity>,
    region: Arc<Region>,
    certs: Arc<Certificates>,
    slots: usize,
) {
    let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        stats.set_levels(Levels {
            concurrency_limit: slots as u64,
            ..region.levels()
        });
        let usage = region.limits.usage();
        for u in &usage {
            stats.tenant_budget(&u.tenant, u64::from(u.charged), u64::from(u.limit));
        }
        capacity.set_budgets(usage);
        let now_s = i64::try_from(unix_ms() / 1000).unwrap_or(i64::MAX);
        let expiries = certs.expiries();
        stats.certificate_expiries(&expiries, now_s);
        capacity.set_certificates(&expiries, now_s);
        capacity.own(stats.snapshot(Instant::now(), unix_ms()), capacity.now());
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
