//! The region's QUIC service: one task per POP connection, one task per stream, one
//! request and one reply per stream, except [`Message::Subscribe`], which turns its stream
//! into the long-lived push stream ([`crate::push`]). Garbage on a stream resets that
//! stream only.
//!
//! POP identity: a connection whose certificate names a POP id ([`common::transport::dev_ca::pop_id_of`]) is
//! bound to it. Lease requests and returns, load reports and log lines that claim another
//! POP are refused with 403 `pop_identity` (logged and counted in
//! [`PopServices::identity_refusals`]), so a CA-signed impostor cannot return another POP's
//! lease or write as it. A certificate naming no POP is accepted as before (anonymous).
//! Log lines and per-function load about a function the registry does not have are
//! dropped (and counted there too), so no POP can evict real tenants' logs or fill the
//! dashboard with invented functions.

use crate::capacity::Capacity;
use crate::invoke::RegionInvoker;
use crate::trend::TrendWatch;
use common::logs::LogBuffer;
use common::model::{ApiError, FunctionName, TenantId};
use common::transport::{PeerConnection, Server, ServerStream};
use common::wire::{MAX_FRAME_LEN, Message};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// What POPs reach besides invocations and the region's services (the route table, the
/// leases: [`crate::region::Region`]): the function log, the capacity view, the trends.
#[derive(Debug, Clone)]
pub struct PopServices {
    /// Receives [`Message::Logs`].
    pub logs: Arc<LogBuffer>,
    /// Receives [`Message::LoadReport`].
    pub capacity: Arc<Capacity>,
    /// Learns rates and code from POPs; sends trending hints on push streams.
    pub trending: Arc<TrendWatch>,
    /// Messages refused because they claimed a POP other than the connection's
    /// certificate names.
    pub identity_refusals: Arc<AtomicU64>,
}

/// Accepts POP connections until the server is closed. Connection and stream tasks live in
/// [`JoinSet`]s owned by this future, so dropping or aborting it stops them all.
pub async fn serve(server: Arc<Server>, invoker: Arc<RegionInvoker>, services: PopServices) {
    let mut connections = JoinSet::new();
    while let Some(connecting) = server.accept().await {
        let invoker = Arc::clone(&invoker);
        let services = services.clone();
        connections.spawn(async move {
            let remote = connecting.remote_address();
            match connecting.handshake().await {
                Ok(conn) => serve_connection(conn, invoker, services).await,
                Err(e) => warn!(%remote, error = %e, "refused POP connection"),
            }
        });
        // Reap finished connection tasks so the set does not grow with churn.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(
    conn: PeerConnection,
    invoker: Arc<RegionInvoker>,
    services: PopServices,
) {
    let mut streams = JoinSet::new();
    let pop: Option<Arc<str>> = conn.pop_id().map(Arc::from);
    loop {
        match conn.accept_stream().await {
            Ok(Some(stream)) => {
                let invoker = Arc::clone(&invoker);
                let pop = pop.clone();
                streams.spawn(serve_stream(stream, invoker, services.clone(), pop));
            }
            Ok(None) => break,
            Err(e) => {
                debug!(remote = %conn.remote_address(), error = %e, "POP connection ended");
                break;
            }
        }
        while streams.try_join_next().is_some() {}
    }
}

async fn serve_stream(
    mut stream: ServerStream,
    invoker: Arc<RegionInvoker>,
    services: PopServices,
    pop: Option<Arc<str>>,
) {
    let request = match stream.read_request(MAX_FRAME_LEN).await {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "rejecting malformed stream");
            stream.reject("malformed request");
            return;
        }
    };
    if let Message::Subscribe { since_revision } = request {
        let region = invoker.region();
        let store = region.registry.store().clone();
        let hints = services.trending.subscribe();
        // Verdicts are pushed only by a region that hosts the next release (as
        // `release_for_pops` names releases only then).
        let canary = region.live_canary().cloned();
        return crate::push::serve(stream, store, since_revision, hints, canary).await;
    }
    let reply = match impostor(pop.as_deref(), &request) {
        Some(claimed) => {
            services.identity_refusals.fetch_add(1, Ordering::Relaxed);
            warn!(pop = ?pop, claimed, message = message_name(&request),
                "refused a message claiming another POP");
            Message::Error(ApiError::forbidden(format!(
                "pop_identity: this connection's certificate names POP {}, not {claimed}",
                pop.as_deref().unwrap_or_default()
            )))
        }
        None => {
            let mut request = request;
            let dropped = drop_unknown_functions(&mut request, &invoker.region().registry).await;
            if dropped > 0 {
                services
                    .identity_refusals
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                warn!(pop = ?pop, dropped, message = message_name(&request),
                    "dropped what a POP said about functions this region does not have");
            }
            handle(request, &invoker, &services).await
        }
    };
    if let Err(e) = stream.reply(&reply).await {
        debug!(error = %e, "could not send reply");
    }
}

async fn handle(request: Message, invoker: &RegionInvoker, services: &PopServices) -> Message {
    let region = invoker.region();
    match request {
        Message::FetchRoutes { since_revision } => {
            let (revision, routes) = region.routes.fetch(since_revision);
            Message::RouteTable { revision, routes }
        }
        Message::Logs { entries, dropped } => {
            if dropped > 0 {
                debug!(dropped, "a POP dropped function log lines before shipping");
            }
            for e in entries {
                services
                    .logs
                    .append(&e.function, &e.node, &e.request_id, e.ts, &e.text);
            }
            Message::Ack
        }
        Message::Invoke(req) => {
            let (result, mut function) = invoker.execute(req).await;
            if let Err(e) = &result {
                debug!(fault = %e.fault(), error = %crate::invoke::chain(e), "forwarded invocation not run");
            }
            // The QUIC edge's one mapping of the pipeline's error.
            let result = result.map_err(ApiError::from);
            if let Some(f) = &mut function {
                services.trending.resolved(f);
                f.release = region.release_for_pops(f);
            }
            let pressure = Some(region.pressure(&result));
            Message::InvokeResult {
                result,
                function,
                pressure,
            }
        }
        Message::FetchArtifact { digest, engine } => region.artifacts.fetch(digest, &engine).await,
        Message::Ping { nonce } => Message::Pong { nonce },
        Message::LeaseAcquire {
            holder,
            tenant,
            slots,
        } => {
            let (granted, limit, held) = region.limits.lease(&holder.0, &tenant, slots);
            Message::LeaseGranted {
                tenant,
                slots: granted,
                ttl_ms: u64::try_from(region.limits.lease_ttl().as_millis()).unwrap_or(u64::MAX),
                limit,
                held,
            }
        }
        Message::LeaseReturn {
            holder,
            tenant,
            slots,
        } => {
            region.limits.return_lease(&holder.0, &tenant, slots);
            Message::Ack
        }
        Message::LoadReport(mut load) => {
            services.trending.reported(&load);
            // The POP's runs judged like the region's own: runtime canary and rollouts.
            crate::outcomes::fold(region, std::mem::take(&mut load.outcomes)).await;
            match services.capacity.report(load, services.capacity.now()) {
                Ok(()) => Message::Ack,
                Err(e) => Message::Error(e),
            }
        }
        other => Message::Error(ApiError::bad_request(format!(
            "unexpected message from a POP: {}",
            message_name(&other)
        ))),
    }
}

/// Drops the log lines and per-function load in `request` that name a function the
/// registry does not have; returns how many. A POP is sent every function of the registry
/// (the push stream), so a line about any other function is forged or stale, and keeping
/// it would let one POP (or an impostor with a CA-signed certificate) push real tenants'
/// logs out of the bounded log buffer or fill the dashboard with names of its choosing.
/// A store failure keeps the entries (nothing is refused on the region's own fault).
async fn drop_unknown_functions(
    request: &mut Message,
    registry: &Arc<crate::registry::Registry>,
) -> usize {
    let named: HashSet<String> = match request {
        Message::Logs { entries, .. } => entries
            .iter()
            .map(|e| format!("{}/{}", e.function.tenant, e.function.name))
            .collect(),
        Message::LoadReport(load) => load
            .functions
            .iter()
            .map(|f| f.function.clone())
            .chain(load.outcomes.iter().map(|o| o.function.to_string()))
            .collect(),
        _ => return 0,
    };
    if named.is_empty() {
        return 0;
    }
    let registry = Arc::clone(registry);
    let unknown = tokio::task::spawn_blocking(move || {
        named
            .into_iter()
            .filter(|key| !registry_has(&registry, key))
            .collect::<HashSet<String>>()
    })
    .await
    .unwrap_or_default();
    if unknown.is_empty() {
        return 0;
    }
    match request {
        Message::Logs { entries, .. } => {
            let before = entries.len();
            entries.retain(|e| {
                !unknown.contains(&format!("{}/{}", e.function.tenant, e.function.name))
            });
            before - entries.len()
        }
        Message::LoadReport(load) => {
            let before = load.functions.len() + load.outcomes.len();
            load.functions.retain(|f| !unknown.contains(&f.function));
            load.outcomes
                .retain(|o| !unknown.contains(&o.function.to_string()));
            before - load.functions.len() - load.outcomes.len()
        }
        _ => 0,
    }
}

/// Whether the registry has the function `tenant/name` (true on a store failure).
fn registry_has(registry: &crate::registry::Registry, key: &str) -> bool {
    let Some((tenant, name)) = key.split_once('/') else {
        return false;
    };
    let (Ok(tenant), Ok(name)) = (TenantId::new(tenant), FunctionName::new(name)) else {
        return false;
    };
    match registry.function(&tenant, &name) {
        Ok(_) => true,
        Err(e) => !e.is_missing(),
    }
}

/// The POP `request` claims to come from, when the connection is bound to `pop` and the
/// claim names another one.
fn impostor(pop: Option<&str>, request: &Message) -> Option<String> {
    let pop = pop?;
    let own = format!("pop/{pop}");
    match request {
        Message::LeaseAcquire { holder, .. } | Message::LeaseReturn { holder, .. } => {
            (holder.0 != pop).then(|| holder.0.clone())
        }
        Message::LoadReport(load) => (load.node.0 != pop).then(|| load.node.0.clone()),
        Message::Logs { entries, .. } => entries
            .iter()
            .find(|e| e.node != own)
            .map(|e| e.node.clone()),
        _ => None,
    }
}

fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Invoke(_) => "Invoke",
        Message::InvokeResult { .. } => "InvokeResult",
        Message::FetchArtifact { .. } => "FetchArtifact",
        Message::Artifact { .. } => "Artifact",
        Message::Ping { .. } => "Ping",
        Message::Pong { .. } => "Pong",
        Message::LoadReport(_) => "LoadReport",
        Message::Subscribe { .. } => "Subscribe",
        Message::Updates { .. } => "Updates",
        Message::Error(_) => "Error",
        Message::FetchRoutes { .. } => "FetchRoutes",
        Message::RouteTable { .. } => "RouteTable",
        Message::Logs { .. } => "Logs",
        Message::Ack => "Ack",
        Message::Trending { .. } => "Trending",
        Message::LeaseAcquire { .. } => "LeaseAcquire",
        Message::LeaseGranted { .. } => "LeaseGranted",
        Message::LeaseReturn { .. } => "LeaseReturn",
        Message::Releases { .. } => "Releases",
        Message::CaughtUp { .. } => "CaughtUp",
    }
}
