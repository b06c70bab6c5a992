//! Starting and stopping a region node: store, sandbox, HTTP and QUIC listeners.

use crate::admission::Admission;
use crate::api::{self, ControlState};
use crate::config::RegionConfig;
use crate::invoker::RegionInvoker;
use crate::quic;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use axum::Router;
use axum::routing::get;
use common::edge::invoke_router;
use common::exec::Executor;
use common::model::NodeId;
use common::sandbox::{Sandbox, SandboxError};
use common::transport::{NodeTls, Server, TlsFiles, TransportError, dev_ca};
use std::net::SocketAddr;
use std::sync::Arc;
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
    invoker: Arc<RegionInvoker>,
    server: Arc<Server>,
    tasks: JoinSet<()>,
}

impl RegionHandle {
    /// The registry, for operators' tooling and tests.
    pub fn registry(&self) -> &Arc<Registry> {
        self.invoker.registry()
    }

    /// How many artifact fetches POPs have made, for tests and operators.
    pub fn artifact_fetches(&self) -> u64 {
        self.invoker.artifacts().fetches()
    }

    /// Stops accepting, closes POP connections and waits for the node's tasks to end and
    /// its QUIC socket to be released.
    pub async fn shutdown(mut self) {
        self.server.close();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.server.wait_idle().await;
    }
}

/// Starts a region with `config`; returns once both listeners are bound.
///
/// # Errors
/// [`StartError`] when the state directory, store, certificates, sandbox or a listener
/// cannot be set up.
pub async fn start(config: RegionConfig) -> Result<RegionHandle, StartError> {
    std::fs::create_dir_all(&config.state_dir)?;
    let tls_files = match &config.tls {
        Some(files) => files.clone(),
        None => dev_ca::init(&config.state_dir.join("certs"))?.region,
    };
    let tls = NodeTls::load(&tls_files)?;
    let store = Store::open(&config.state_dir.join("region.redb"))?;
    let registry = Arc::new(Registry::new(store));
    let sandbox = Sandbox::new(config.sandbox.clone())?;
    let node_id = NodeId(config.node_id.clone());
    let invoker = Arc::new(RegionInvoker::new(
        node_id.clone(),
        registry,
        Executor::new(sandbox, config.module_cache_bytes),
        Admission::new(config.max_concurrency, config.max_queued),
        config.edge.max_payload_bytes,
        config.artifact_cache_bytes,
    ));

    let server = Arc::new(Server::bind(config.quic_listen, &tls)?);
    let quic_addr = server.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.http_listen).await?;
    let http_addr = listener.local_addr()?;

    let control = ControlState {
        invoker: Arc::clone(&invoker),
        admin_token: config.admin_token.as_deref().map(Arc::from),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api::router(control, config.sandbox.max_module_bytes))
        .merge(invoke_router(Arc::clone(&invoker), config.edge))
        // One span per HTTP request, so every log line of an invocation can be traced back.
        .layer(TraceLayer::new_for_http());

    let mut tasks = JoinSet::new();
    tasks.spawn(quic::serve(Arc::clone(&server), Arc::clone(&invoker)));
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "region HTTP server stopped");
        }
    });
    info!(%http_addr, %quic_addr, node = %node_id, "region started");
    Ok(RegionHandle {
        http_addr,
        quic_addr,
        node_id,
        tls: tls_files,
        invoker,
        server,
        tasks,
    })
}
