//! Keeping the POP's region connections healthy and measured: one supervisor task per
//! region the POP has dialled (every listed region, see [`super::connect`]).
//!
//! A supervisor watches its region's connection and, when the region goes silent
//! ([`Silence`]: nothing received for `suspect_after`, about a second, while keep-alives
//! should have drawn acknowledgements) or the connection closes, drops it, marks the
//! region down in the [`RegionChoice`] (new forwards go elsewhere or fail fast) and
//! reconnects in the background on the [`Reconnect`] schedule (at once, then 50 ms,
//! doubling to 400 ms by default). Handshakes to a dead address only end at the connect
//! timeout, so attempts overlap, at most [`MAX_ATTEMPTS`] at once; the first to succeed
//! wins and the region is up again.
//!
//! Never sends requests and never picks a region: it only maintains [`Links`]. Its tasks
//! are aborted when the [`Supervisors`] holding them is dropped or the region is no
//! longer listed.

use common::policy::liveness::{LivenessConfig, Reconnect, Silence};
use common::policy::region::RegionChoice;
use common::transport::{Channel, Client, TransportError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// Reconnect handshakes in flight at once per region (each lasts up to the connect
/// timeout when the region is dead; with the default 3 s and 400 ms cap, about 8 are).
const MAX_ATTEMPTS: usize = 16;

/// What the POP's requests and the supervisors share: the live connections and the region
/// choice policy.
#[derive(Debug)]
pub(super) struct Links {
    client: Client,
    server_name: String,
    connect_timeout: Duration,
    liveness: LivenessConfig,
    /// Live connections by region, read on every request without awaiting.
    pub(super) channels: SyncMutex<HashMap<SocketAddr, Channel>>,
    /// Which region gets the next request.
    pub(super) policy: SyncMutex<RegionChoice<SocketAddr>>,
}

pub(super) fn lock<T>(m: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the maps and
    // the policy stay consistent between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Links {
    /// Links using `client`, verifying regions for `server_name`, giving each handshake
    /// `connect_timeout`, suspecting regions per `liveness`.
    pub(super) fn new(
        client: Client,
        server_name: String,
        connect_timeout: Duration,
        liveness: LivenessConfig,
        policy: RegionChoice<SocketAddr>,
    ) -> Self {
        Self {
            client,
            server_name,
            connect_timeout,
            liveness,
            channels: SyncMutex::new(HashMap::new()),
            policy: SyncMutex::new(policy),
        }
    }

    /// One handshake with `addr`, bounded by the connect timeout.
    pub(super) async fn dial(&self, addr: SocketAddr) -> Result<Channel, TransportError> {
        let attempt = self.client.connect(addr, &self.server_name);
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::Connect(format!(
                    "no handshake within {:?}",
                    self.connect_timeout
                )))
            })
    }

    /// `addr` is connected over `ch`: requests use it, the policy may choose it.
    pub(super) fn up(&self, addr: SocketAddr, ch: Channel) {
        lock(&self.channels).insert(addr, ch);
        lock(&self.policy).handle_up(&addr);
    }

    /// `addr` has no connection: requests skip it until [`Self::up`].
    fn down(&self, addr: SocketAddr) {
        lock(&self.channels).remove(&addr);
        lock(&self.policy).handle_down(&addr);
    }
}

/// The supervisor tasks, by region. Dropping it aborts them.
#[derive(Debug, Default)]
pub(super) struct Supervisors {
    tasks: SyncMutex<HashMap<SocketAddr, JoinHandle<()>>>,
}

impl Supervisors {
    /// Whether `addr` has a supervisor (it is up, or down and being reconnected).
    pub(super) fn contains(&self, addr: SocketAddr) -> bool {
        lock(&self.tasks).contains_key(&addr)
    }

    /// Starts supervising `addr` unless it already is: from `first`, a connection just
    /// established (marked up now), or from reconnecting (marked down now). Must be called
    /// inside a tokio runtime.
    pub(super) fn start(&self, links: &Arc<Links>, addr: SocketAddr, first: Option<Channel>) {
        let mut tasks = lock(&self.tasks);
        if tasks.contains_key(&addr) {
            if let Some(ch) = first {
                links.up(addr, ch);
            }
            return;
        }
        // Marked before the task runs, so the next request already sees the state.
        match &first {
            Some(ch) => links.up(addr, ch.clone()),
            None => links.down(addr),
        }
        tasks.insert(
            addr,
            tokio::spawn(supervise(Arc::clone(links), addr, first)),
        );
    }

    /// Stops supervising regions not in `listed`.
    pub(super) fn retain(&self, listed: &[SocketAddr]) {
        lock(&self.tasks).retain(|addr, task| {
            let keep = listed.contains(addr);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

impl Drop for Supervisors {
    fn drop(&mut self) {
        for task in lock(&self.tasks).values() {
            task.abort();
        }
    }
}

/// Watches `addr`'s connection, and reconnects whenever it is lost, until aborted.
async fn supervise(links: Arc<Links>, addr: SocketAddr, mut current: Option<Channel>) {
    loop {
        let ch = match current.take() {
            Some(ch) => ch,
            None => {
                let ch = reconnect(&links, addr).await;
                info!(region = %addr, "reconnected to region");
                links.up(addr, ch.clone());
                ch
            }
        };
        watch(&links, addr, &ch).await;
        links.down(addr);
    }
}

/// Returns once `ch` is closed, closing it first if its region went silent. Meanwhile
/// feeds the connection's path RTT (its lowest RTT, see [`Channel::min_rtt`]) to the region
/// choice every sample, so a region the POP does not forward to is still measured, and the
/// region serving the POP does not look farther away than an idle one just because it is
/// busy acknowledging (that moved traffic between two loopback regions under load).
async fn watch(links: &Links, addr: SocketAddr, ch: &Channel) {
    let liveness = &links.liveness;
    let mut silence = Silence::new(liveness, Instant::now(), ch.received());
    let mut tick = tokio::time::interval(liveness.sample_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ch.closed() => {
                warn!(region = %addr, "region connection closed; reconnecting");
                return;
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        lock(&links.policy).handle_rtt(&addr, ch.min_rtt());
        silence.handle_received(now, ch.received());
        if silence.is_suspect(now) {
            warn!(
                region = %addr,
                silent_for = ?liveness.suspect_after,
                "region silent; dropping its connection and reconnecting"
            );
            ch.close_silent();
            return;
        }
    }
}

/// Connects to `addr` on the [`Reconnect`] schedule until a handshake succeeds.
async fn reconnect(links: &Arc<Links>, addr: SocketAddr) -> Channel {
    let mut schedule = Reconnect::new(&links.liveness, Instant::now());
    let mut attempts = JoinSet::new();
    loop {
        let due = tokio::time::Instant::from_std(schedule.poll_timeout());
        tokio::select! {
            () = tokio::time::sleep_until(due) => {
                if schedule.poll_attempt(Instant::now()) && attempts.len() < MAX_ATTEMPTS {
                    let links = Arc::clone(links);
                    attempts.spawn(async move { links.dial(addr).await });
                }
            }
            Some(done) = attempts.join_next() => match done {
                // The other attempts are dropped with the set.
                Ok(Ok(ch)) => return ch,
                Ok(Err(e)) => debug!(region = %addr, error = %e, "reconnect attempt failed"),
                Err(e) => debug!(region = %addr, error = %e, "reconnect attempt ended"),
            },
        }
    }
}
