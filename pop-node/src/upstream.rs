//! The POP's link to its regions: discovery, one persistent QUIC connection at a time
//! (reconnected on demand), forwarding invocations and fetching artifacts.
//!
//! Region choice here is the simplest correct one: the first region in discovery order
//! that accepts a connection; the connection is kept until it closes or discovery stops
//! listing its region. Smarter choice (RTT, capacity, failover) belongs to a policy.

use crate::discovery::{Discovery, Resolution};
use common::model::{
    ApiError, ArtifactDigest, InvokeRequest, InvokeResponse, ResolvedFunction, Route,
};
use common::transport::{Channel, Client, TransportError};
use common::wire::{ArtifactKind, EngineFingerprint, MAX_FRAME_LEN, Message, ShippedLog};
use std::sync::Mutex as SyncMutex;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::{info, warn};

const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct LinkState {
    resolution: Option<Resolution>,
}

/// The result of a forwarded invocation: the region's answer and what it resolved.
pub type Forwarded = (Result<InvokeResponse, ApiError>, Option<ResolvedFunction>);

/// Connection management towards the regions.
#[derive(Debug)]
pub struct RegionLink {
    client: Client,
    discovery: Discovery,
    server_name: String,
    connect_timeout: Duration,
    /// The live channel, read on every request without awaiting.
    current: SyncMutex<Option<(Channel, Instant)>>,
    /// Serialises (re)connection so a burst of requests triggers one connect.
    connecting: Mutex<LinkState>,
}

fn unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        format!("no reachable region: {what}; the POP cannot run this function itself"),
        RETRY_AFTER,
    )
}

impl RegionLink {
    /// A link using `client` to reach regions found by `discovery`, verified against
    /// `server_name`, giving each region `connect_timeout` to complete a handshake.
    pub fn new(
        client: Client,
        discovery: Discovery,
        server_name: String,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            client,
            discovery,
            server_name,
            connect_timeout,
            current: SyncMutex::new(None),
            connecting: Mutex::new(LinkState::default()),
        }
    }

    fn live(&self, now: Instant) -> Option<Channel> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((ch, valid_until)) if !ch.is_closed() && now < *valid_until => Some(ch.clone()),
            _ => None,
        }
    }

    /// A live channel to a region, connecting (and re-resolving) if needed.
    ///
    /// # Errors
    /// 503 when discovery fails and no connection is up, or no listed region answers.
    pub async fn channel(&self) -> Result<Channel, ApiError> {
        if let Some(ch) = self.live(Instant::now()) {
            return Ok(ch);
        }
        let mut state = self.connecting.lock().await;
        let now = Instant::now();
        if let Some(ch) = self.live(now) {
            return Ok(ch);
        }
        let stale = state
            .resolution
            .as_ref()
            .is_none_or(|r| now >= r.valid_until);
        if stale {
            match self.discovery.resolve().await {
                Ok(r) => state.resolution = Some(r),
                Err(e) => {
                    warn!(error = %e, "region discovery failed");
                    // Keep using a connection that is still up while DNS is unhappy.
                    let current = self
                        .current
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some((ch, _)) = current.filter(|(ch, _)| !ch.is_closed()) {
                        let retry = now + RETRY_AFTER;
                        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((ch.clone(), retry));
                        return Ok(ch);
                    }
                    return Err(unavailable(e));
                }
            }
        }
        let Some(resolution) = state.resolution.as_ref() else {
            return Err(unavailable("discovery returned nothing"));
        };
        let valid_until = resolution.valid_until;
        // Keep the current connection if its region is still listed.
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((ch, _)) = current
            && !ch.is_closed()
            && resolution.regions.contains(&ch.remote_address())
        {
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((ch.clone(), valid_until));
            return Ok(ch);
        }
        let mut last_error = None;
        for addr in &resolution.regions {
            let attempt = self.client.connect(*addr, &self.server_name);
            let outcome = tokio::time::timeout(self.connect_timeout, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Connect(format!(
                        "no handshake within {:?}",
                        self.connect_timeout
                    )))
                });
            match outcome {
                Ok(ch) => {
                    info!(region = %addr, "connected to region");
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((ch.clone(), valid_until));
                    return Ok(ch);
                }
                Err(e) => {
                    warn!(region = %addr, error = %e, "region connection failed");
                    last_error = Some(e);
                }
            }
        }
        // Nothing answered: make the next request re-resolve.
        state.resolution = None;
        Err(unavailable(last_error.map_or_else(
            || "no regions listed".to_owned(),
            |e| e.to_string(),
        )))
    }

    async fn request(&self, msg: &Message) -> Result<Message, ApiError> {
        let ch = self.channel().await?;
        ch.request(msg, MAX_FRAME_LEN).await.map_err(|e| match e {
            TransportError::Wire(w) => {
                ApiError::internal(format!("region sent a malformed reply: {w}"))
            }
            other => unavailable(other),
        })
    }

    /// Sends `req` to a region and returns its answer.
    ///
    /// # Errors
    /// 503 when no region is reachable or the connection fails during the request.
    pub async fn forward(&self, req: InvokeRequest) -> Result<Forwarded, ApiError> {
        match self.request(&Message::Invoke(req)).await? {
            Message::InvokeResult { result, function } => Ok((result, function)),
            Message::Error(e) => Err(e),
            _ => Err(ApiError::internal(
                "region answered an invocation with another message",
            )),
        }
    }

    /// Fetches the artifact for the module with `digest`, precompiled for `engine` when
    /// the region can, and checks it: the reply names `digest`, the bytes hash to the
    /// reply's checksum, and wasm bytes hash to `digest` itself.
    ///
    /// # Errors
    /// 503 when no region is reachable, 404 when the region does not have it, 500 when the
    /// reply fails a check.
    pub async fn fetch(
        &self,
        digest: ArtifactDigest,
        engine: EngineFingerprint,
    ) -> Result<(ArtifactKind, bytes::Bytes), ApiError> {
        match self
            .request(&Message::FetchArtifact { digest, engine })
            .await?
        {
            Message::Artifact {
                digest: d,
                kind,
                checksum,
                bytes,
            } if d == digest => {
                let actual = ArtifactDigest::of(&bytes);
                let consistent = match kind {
                    ArtifactKind::Wasm => actual == digest,
                    ArtifactKind::Precompiled => actual == checksum,
                };
                if consistent {
                    Ok((kind, bytes))
                } else {
                    Err(ApiError::internal(format!(
                        "artifact {digest} failed its digest check"
                    )))
                }
            }
            Message::Error(e) => Err(e),
            _ => Err(ApiError::internal(
                "region answered a fetch with another message",
            )),
        }
    }

    /// The region's route table if its revision differs from `since`.
    ///
    /// # Errors
    /// 503 when no region is reachable.
    pub async fn fetch_routes(&self, since: u64) -> Result<(u64, Option<Vec<Route>>), ApiError> {
        match self
            .request(&Message::FetchRoutes {
                since_revision: since,
            })
            .await?
        {
            Message::RouteTable { revision, routes } => Ok((revision, routes)),
            Message::Error(e) => Err(e),
            _ => Err(ApiError::internal(
                "region answered a route fetch with another message",
            )),
        }
    }

    /// Sends a batch of function logs to the region.
    ///
    /// # Errors
    /// 503 when no region is reachable.
    pub async fn ship_logs(&self, entries: Vec<ShippedLog>, dropped: u64) -> Result<(), ApiError> {
        match self.request(&Message::Logs { entries, dropped }).await? {
            Message::Ack => Ok(()),
            Message::Error(e) => Err(e),
            _ => Err(ApiError::internal(
                "region answered a log batch with another message",
            )),
        }
    }

    /// Whether a connection to a region is up now.
    pub fn connected(&self) -> bool {
        self.live(Instant::now()).is_some()
    }

    /// Sends a lease message ([`Message::LeaseAcquire`] or [`Message::LeaseReturn`]) and
    /// returns the region's reply as is; [`crate::leases`] interprets it.
    ///
    /// # Errors
    /// 503 when no region is reachable.
    pub async fn lease(&self, msg: &Message) -> Result<Message, ApiError> {
        self.request(msg).await
    }
}
