//! The POP's link to its regions: discovery, a QUIC connection per listed region
//! (dialled as soon as it is listed, [`connect`], then kept healthy by a supervisor:
//! [`supervise`]),
//! region choice per request, and the requests themselves (forwarded invocations,
//! artifacts, routes, logs).
//!
//! Failover: a region whose connection was lost or went silent, or that could not be
//! reached, is *down* until its supervisor reconnects. Requests never wait on a down
//! region (no handshake on the request path once a region is supervised): they go to
//! another listed region, or get 503 with `retry-after` at once when every region is down.
//!
//! Which region serves a request is decided by [`RegionChoice`] (lowest smoothed RTT
//! among healthy regions not under pressure); this module feeds it RTT samples from each
//! QUIC connection, every outcome, and the pressure regions report with their results.
//! Artifact fetches, route and log traffic, load reports and the push subscription go to
//! the region the policy currently prefers, like invocations.
//!
//! Retries follow the failover policy ([`Failover`], shared with the simulator): a request
//! is sent to another region only when the first one certainly never received it ([`TransportError::request_was_not_sent`]: no connection could be
//! established, or the connection was already gone before the request's stream opened).
//! A failure after the request was written (a reset, a lost connection, a timeout) is
//! never retried, because the region may have run it: request-response invocations are
//! at most once, and the device gets 503 for them.

mod connect;
mod supervise;

use crate::discovery::{Discovery, Resolution};
use common::model::{
    ApiError, ArtifactDigest, Fault, InvokeRequest, InvokeResponse, ResolvedFunction, Route,
};
use common::policy::failover::{Failover, Failure, Mark};
use common::policy::liveness::LivenessConfig;
use common::policy::region::{RegionChoice, RegionChoiceConfig};
use common::transport::{Channel, Client, TransportError};
use common::wire::{
    ArtifactEncoding, ArtifactKind, EngineFingerprint, MAX_FRAME_LEN, Message, ShippedLog,
};
use connect::Connector;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use supervise::{Links, lock};
use tokio::sync::Mutex;
use tracing::warn;

const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The result of a forwarded invocation: the region's answer and what it resolved.
pub type Forwarded = (Result<InvokeResponse, ApiError>, Option<ResolvedFunction>);

/// An artifact fetched from a region that passed [`RegionLink::fetch`]'s checks.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Whether `bytes` is wasm or precompiled code.
    pub kind: ArtifactKind,
    /// How `bytes` is encoded: decode with [`common::artifact_encoding::decode`] (on the
    /// blocking pool) before use. Always `Identity` for wasm.
    pub encoding: ArtifactEncoding,
    /// The bytes as received.
    pub bytes: bytes::Bytes,
    /// Their SHA-256 as received, checked against the reply's checksum (for wasm: the
    /// digest).
    pub checksum: ArtifactDigest,
}

/// Connection management towards the regions.
#[derive(Debug)]
pub struct RegionLink {
    /// Live connections and the region choice, shared with the supervisors.
    links: Arc<Links>,
    /// Handshakes and supervisors, shared with the background dials.
    connector: Arc<Connector>,
    discovery: Discovery,
    /// The regions discovery listed last, and until when that list is valid. The async
    /// lock serialises re-resolution so a burst of requests triggers one lookup.
    resolution: Mutex<Option<Resolution>>,
    /// Until when the list under `resolution` is valid, in nanoseconds after `born` (0:
    /// resolve first): a forward reads it without taking the lock, which only the request
    /// that finds it expired takes.
    fresh_until: AtomicU64,
    born: Instant,
}

/// 503 for a request no region could be reached for: the peer's fault.
fn unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        format!("no reachable region: {what}; the POP cannot run this function itself"),
        RETRY_AFTER,
    )
    .with_fault(Fault::Peer)
}

impl RegionLink {
    /// A link using `client` to reach regions found by `discovery`, verified against
    /// `server_name`, giving each region `connect_timeout` to complete a handshake, and
    /// dropping connections that go silent per `liveness` (the client's keep-alives
    /// should be [`LivenessConfig::keep_alive`]), and choosing regions per `choice`.
    pub fn new(
        client: Client,
        discovery: Discovery,
        server_name: String,
        connect_timeout: Duration,
        liveness: LivenessConfig,
        choice: RegionChoiceConfig,
    ) -> Self {
        let policy = RegionChoice::new(choice);
        let links = Arc::new(Links::new(
            client,
            server_name,
            connect_timeout,
            liveness,
            policy,
        ));
        Self {
            connector: Arc::new(Connector::new(Arc::clone(&links))),
            links,
            discovery,
            resolution: Mutex::new(None),
            fresh_until: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// The listed regions, re-resolving when the list has expired. While discovery fails,
    /// the previous list stays in use for another [`RETRY_AFTER`].
    async fn listed(&self) -> Result<Vec<SocketAddr>, ApiError> {
        let mut resolution = self.resolution.lock().await;
        let now = Instant::now();
        if let Some(r) = resolution.as_ref().filter(|r| now < r.valid_until) {
            return Ok(r.regions.clone());
        }
        match self.discovery.resolve().await {
            Ok(r) => {
                let regions = r.regions.clone();
                lock(&self.links.policy).set_regions(&regions);
                self.connector.retain(&regions);
                self.connector.dial_listed(&regions);
                self.set_fresh_until(Some(r.valid_until));
                *resolution = Some(r);
                Ok(regions)
            }
            Err(e) => {
                warn!(error = %e, "region discovery failed");
                match resolution.as_mut() {
                    Some(old) => {
                        old.valid_until = now + RETRY_AFTER;
                        self.set_fresh_until(Some(old.valid_until));
                        Ok(old.regions.clone())
                    }
                    None => Err(unavailable(e)),
                }
            }
        }
    }

    /// Resolves the regions unless the list is still valid (without a lock then).
    async fn ensure_listed(&self) -> Result<(), ApiError> {
        let until = self.fresh_until.load(Ordering::Acquire);
        if until != 0 && self.nanos(Instant::now()) < until {
            return Ok(());
        }
        self.listed().await.map(drop)
    }

    /// Forgets the list (under `resolution`'s lock): the next request re-resolves.
    async fn forget_listed(&self) {
        let mut resolution = self.resolution.lock().await;
        *resolution = None;
        self.set_fresh_until(None);
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Called with `resolution`'s lock held, so the mark follows the list it describes.
    fn set_fresh_until(&self, until: Option<Instant>) {
        let nanos = until.map_or(0, |u| self.nanos(u).max(1));
        self.fresh_until.store(nanos, Ordering::Release);
    }

    fn live(&self, addr: SocketAddr) -> Option<Channel> {
        self.connector.live(addr)
    }

    /// A live connection to `addr` ([`Connector::connect`]).
    async fn connect(&self, addr: SocketAddr) -> Result<Channel, TransportError> {
        self.connector.connect(addr).await
    }

    /// Tells the region choice how an attempt at `addr` failed (the failover policy's
    /// [`Mark`]).
    fn mark(&self, addr: &SocketAddr, mark: Mark) {
        mark.apply(&mut lock(&self.links.policy), Instant::now(), addr);
    }

    fn choose(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        lock(&self.links.policy).choose(Instant::now(), tried)
    }

    /// The region for `msg`: by its affinity key when it is a keyed invocation (the
    /// region's address is its identity), else the policy's preferred one.
    fn choose_for(&self, msg: &Message, tried: &[SocketAddr]) -> Option<SocketAddr> {
        if let Message::Invoke(req) = msg
            && let Some(key) = req.affinity.as_deref()
        {
            let identity = |a: &SocketAddr| a.to_string().into_bytes();
            return lock(&self.links.policy).choose_keyed(
                Instant::now(),
                tried,
                key.as_bytes(),
                identity,
            );
        }
        self.choose(tried)
    }

    /// A live channel to the region the policy prefers now, trying the others in the
    /// policy's order when a connection cannot be established. For traffic that is not a
    /// single request (the push subscription, load reports).
    ///
    /// # Errors
    /// 503 when discovery fails and has never succeeded, or no listed region answers.
    pub async fn channel(&self) -> Result<Channel, ApiError> {
        let listed = self.listed().await?;
        let mut failover = Failover::new();
        let mut last_error = None;
        while let Some(&addr) = failover.attempt(self.choose(failover.tried())) {
            match self.connect(addr).await {
                Ok(ch) => return Ok(ch),
                Err(e) => {
                    warn!(region = %addr, error = %e, "region connection failed");
                    self.mark(&addr, failover.failed(Failure::Unreachable).mark);
                    last_error = Some(e);
                }
            }
        }
        // Nothing answered: make the next request re-resolve.
        self.forget_listed().await;
        Err(unavailable(last_error.map_or_else(
            || format!("none of {} listed regions answered", listed.len()),
            |e| e.to_string(),
        )))
    }

    /// Sends `msg` to the preferred region, and to the next one only while the request
    /// certainly was not received (see the module docs). Returns the reply and the region
    /// that sent it.
    async fn request(&self, msg: &Message) -> Result<(Message, SocketAddr), ApiError> {
        self.request_bounded(msg, None).await
    }

    /// [`Self::request`], giving the region at most `bound` to answer once the request's
    /// stream is open (then the stream is reset and the request ends with 503).
    async fn request_bounded(
        &self,
        msg: &Message,
        bound: Option<Duration>,
    ) -> Result<(Message, SocketAddr), ApiError> {
        self.ensure_listed().await?;
        let mut failover = Failover::new();
        let mut last_error = None;
        while let Some(&addr) = failover.attempt(self.choose_for(msg, failover.tried())) {
            let ch = match self.connect(addr).await {
                Ok(ch) => ch,
                Err(e) => {
                    warn!(region = %addr, error = %e, "region connection failed");
                    self.mark(&addr, failover.failed(Failure::Unreachable).mark);
                    last_error = Some(e);
                    continue;
                }
            };
            let sent = match bound {
                Some(b) => ch.request_within(msg, MAX_FRAME_LEN, b).await,
                None => ch.request(msg, MAX_FRAME_LEN).await,
            };
            match sent {
                Ok(reply) => {
                    // The RTT is fed by the connection's supervisor each liveness sample
                    // (its minimum moves rarely); a reply only reports success.
                    lock(&self.links.policy).handle_success(Instant::now(), &addr);
                    return Ok((reply, addr));
                }
                Err(e) => {
                    let failure = if e.request_was_not_sent() {
                        Failure::NotSent
                    } else {
                        Failure::Sent
                    };
                    let step = failover.failed(failure);
                    self.mark(&addr, step.mark);
                    if step.retry {
                        warn!(region = %addr, error = %e, "request not sent; trying another region");
                        last_error = Some(e);
                        continue;
                    }
                    // Whatever broke, the region (or the way to it) did: the peer's fault.
                    return Err(match e {
                        TransportError::Wire(w) => {
                            ApiError::internal(format!("region sent a malformed reply: {w}"))
                        }
                        TransportError::TimedOut(b) => ApiError::unavailable(
                            format!(
                                "forward_timeout: the region did not answer within {b:?} (the \
                                 function's timeout plus the margin); it may or may not have run"
                            ),
                            RETRY_AFTER,
                        ),
                        // The region may have received it: never sent elsewhere.
                        other => ApiError::unavailable(
                            format!(
                                "the region connection failed after the request was sent \
                                 ({other}); it may or may not have run"
                            ),
                            RETRY_AFTER,
                        ),
                    }
                    .with_fault(Fault::Peer));
                }
            }
        }
        self.forget_listed().await;
        Err(unavailable(last_error.map_or_else(
            || "no listed region answered".to_owned(),
            |e| e.to_string(),
        )))
    }

    /// Sends `req` to a region and returns its answer, waiting at most `bound` for it once
    /// sent (the function's timeout plus a margin for the region's queue and the trip).
    ///
    /// # Errors
    /// 503 when no region is reachable, the connection fails during the request, or no
    /// answer came within `bound` (the stream is reset).
    pub async fn forward(
        &self,
        req: InvokeRequest,
        bound: Duration,
    ) -> Result<Forwarded, ApiError> {
        match self
            .request_bounded(&Message::Invoke(req), Some(bound))
            .await?
        {
            (
                Message::InvokeResult {
                    result,
                    function,
                    pressure,
                },
                addr,
            ) => {
                if let Some(p) = pressure {
                    lock(&self.links.policy).handle_pressure(
                        Instant::now(),
                        &addr,
                        p.busy,
                        p.spare_slots,
                    );
                }
                Ok((result, function))
            }
            (Message::Error(e), _) => Err(e),
            _ => Err(ApiError::internal(
                "region answered an invocation with another message",
            )),
        }
    }

    /// Fetches the artifact for the module with `digest`, precompiled for `engine` when
    /// the region can, and checks it: the reply names `digest`, the bytes (as sent,
    /// encoded) hash to the reply's checksum, and wasm bytes are sent as they are and hash
    /// to `digest` itself. The bytes are hashed once, here; the checksum they matched
    /// comes back with them. Decoding is the caller's, off the async workers.
    ///
    /// # Errors
    /// 503 when no region is reachable, 404 when the region does not have it, 500 when the
    /// reply fails a check.
    pub async fn fetch(
        &self,
        digest: ArtifactDigest,
        engine: EngineFingerprint,
    ) -> Result<Fetched, ApiError> {
        match self
            .request(&Message::FetchArtifact { digest, engine })
            .await?
            .0
        {
            Message::Artifact {
                digest: d,
                kind,
                encoding,
                checksum,
                bytes,
            } if d == digest => {
                let actual = ArtifactDigest::of(&bytes);
                let consistent = match kind {
                    ArtifactKind::Wasm => {
                        actual == digest && encoding == ArtifactEncoding::Identity
                    }
                    ArtifactKind::Precompiled => actual == checksum,
                };
                if consistent {
                    Ok(Fetched {
                        kind,
                        encoding,
                        bytes,
                        checksum: actual,
                    })
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
            .0
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
        match self.request(&Message::Logs { entries, dropped }).await?.0 {
            Message::Ack => Ok(()),
            Message::Error(e) => Err(e),
            _ => Err(ApiError::internal(
                "region answered a log batch with another message",
            )),
        }
    }

    /// Whether the connection to `region` is up now (no connection attempt).
    pub fn is_live(&self, region: SocketAddr) -> bool {
        self.live(region).is_some()
    }

    /// Whether a connection to any region is up now.
    pub fn connected(&self) -> bool {
        lock(&self.links.channels)
            .values()
            .any(|ch| !ch.is_closed())
    }

    /// Sends a lease request ([`Message::LeaseAcquire`]) to the preferred region, like any
    /// request, and returns the region's reply as is and which region sent it;
    /// [`crate::leases`] interprets it.
    ///
    /// # Errors
    /// 503 when no region is reachable.
    pub async fn lease(&self, msg: &Message) -> Result<(Message, SocketAddr), ApiError> {
        self.request(msg).await
    }

    /// Sends a lease message ([`Message::LeaseReturn`]) to `region` only, over the
    /// connection already open to it: a lease is given back to the region that counts it,
    /// never to another, and a region this POP is not connected to any more reclaims the
    /// slots when the lease expires instead (no connection attempt: a dead region would
    /// hold every other lease message up for a connect timeout).
    ///
    /// # Errors
    /// 503 when there is no live connection to `region` or the request fails.
    pub async fn lease_at(&self, region: SocketAddr, msg: &Message) -> Result<Message, ApiError> {
        let ch = self
            .live(region)
            .ok_or_else(|| unavailable(format!("not connected to {region}")))?;
        ch.request(msg, MAX_FRAME_LEN).await.map_err(|e| {
            lock(&self.links.policy).handle_failure(Instant::now(), &region);
            unavailable(e)
        })
    }
}
