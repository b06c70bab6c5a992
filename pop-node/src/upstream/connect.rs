//! Establishing the POP's connections: one handshake at a time per region, on a request's
//! path (the first request to a region nobody dialled yet) or in the background (every
//! region discovery lists is dialled as soon as it is listed, [`Connector::dial_listed`], so
//! the region choice learns each region's RTT, and a region that cannot be reached is known
//! down before a request picks it).
//!
//! Both go through [`Connector::connect`]: a request for a region being dialled waits for
//! that handshake instead of starting its own, and requests that queued behind a failed
//! attempt fail at once instead of each waiting out another connect timeout. Once a region
//! has a supervisor, it owns reconnecting, off the request path.

use super::supervise::{Links, Supervisors, lock};
use common::transport::{Channel, TransportError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Instant;
use tokio::sync::Mutex;
use tracing::{debug, info};

/// Held while connecting to one region: when and why the last attempt failed.
type ConnectGate = Arc<Mutex<Option<(Instant, String)>>>;

/// The handshakes in progress and the supervisors of connected (or reconnecting) regions.
#[derive(Debug)]
pub(super) struct Connector {
    /// Live connections and the region choice, shared with the supervisors.
    pub(super) links: Arc<Links>,
    /// One per region tried since it was listed: watches its connection, reconnects.
    pub(super) supervisors: Supervisors,
    /// Serialises the first connection to one region, so a burst (or a request and the
    /// background dial) triggers one handshake each.
    connecting: SyncMutex<HashMap<SocketAddr, ConnectGate>>,
}

impl Connector {
    pub(super) fn new(links: Arc<Links>) -> Self {
        Self {
            links,
            supervisors: Supervisors::default(),
            connecting: SyncMutex::new(HashMap::new()),
        }
    }

    /// Forgets regions not in `listed`: their supervisors stop, their connections close.
    pub(super) fn retain(&self, listed: &[SocketAddr]) {
        self.supervisors.retain(listed);
        lock(&self.links.channels).retain(|addr, _| listed.contains(addr));
        lock(&self.connecting).retain(|addr, _| listed.contains(addr));
    }

    /// The live connection to `addr`, if any.
    pub(super) fn live(&self, addr: SocketAddr) -> Option<Channel> {
        lock(&self.links.channels)
            .get(&addr)
            .filter(|ch| !ch.is_closed())
            .cloned()
    }

    /// Dials, in the background, every region of `listed` that has neither a connection
    /// nor a supervisor. Must be called inside a tokio runtime.
    pub(super) fn dial_listed(self: &Arc<Self>, listed: &[SocketAddr]) {
        for &addr in listed {
            if self.live(addr).is_some() || self.supervisors.contains(addr) {
                continue;
            }
            let connector = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = connector.connect(addr).await {
                    debug!(region = %addr, error = %e, "background dial failed; reconnecting");
                }
            });
        }
    }

    /// A live connection to `addr`, connecting if it was never tried. A region whose
    /// supervisor is reconnecting fails at once (nothing was sent).
    pub(super) async fn connect(&self, addr: SocketAddr) -> Result<Channel, TransportError> {
        if let Some(ch) = self.live(addr) {
            return Ok(ch);
        }
        if self.supervisors.contains(addr) {
            return Err(down());
        }
        let queued_at = Instant::now();
        let gate = Arc::clone(lock(&self.connecting).entry(addr).or_default());
        let mut last_failure = gate.lock().await;
        if let Some(ch) = self.live(addr) {
            return Ok(ch);
        }
        if let Some((at, error)) = last_failure.as_ref()
            && *at >= queued_at
        {
            return Err(TransportError::Connect(error.clone()));
        }
        if self.supervisors.contains(addr) {
            return Err(down());
        }
        let ch = match self.links.dial(addr).await {
            Ok(ch) => ch,
            Err(e) => {
                *last_failure = Some((Instant::now(), e.to_string()));
                // From now on the supervisor connects, off the request path.
                self.supervisors.start(&self.links, addr, None);
                return Err(e);
            }
        };
        info!(region = %addr, "connected to region");
        self.supervisors.start(&self.links, addr, Some(ch.clone()));
        Ok(ch)
    }
}

fn down() -> TransportError {
    TransportError::Connect("region down; reconnecting in the background".into())
}
