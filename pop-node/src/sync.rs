//! The POP's end of the push stream: subscribe to the region's registry changes from the
//! last applied revision, apply them to [`Known`], and start preparing new artifacts in
//! the background when a function or alias the POP serves moves (the old artifact keeps
//! serving until the new one is ready; see [`Known::resolve`]).
//!
//! The region's runtime canary verdicts arrive on the same stream ([`Message::Releases`]):
//! applied to [`Known`] so the next local invocation of a pinned or promoted function runs
//! on the release the region decided, without forwarding it first. A function that runs
//! here and moved to the next release has its module compiled for that release at once
//! (bounded by the prefetcher; until it is ready the invoker forwards, as for any
//! next-release function whose module is not compiled yet).
//!
//! Tenant TLS certificates arrive as registry updates too and go to the HTTPS listener's
//! table ([`TenantCerts`]): the next handshake for that host gets the new certificate, with
//! no restart.
//!
//! One task per POP. After the stream breaks (region restart, connection loss) it
//! resubscribes from the last applied revision with a bounded backoff, so the region sends
//! only what was missed. The revision is kept in memory only: the pushed state it
//! describes is in memory too, so a restarted POP must start from 0 (it gets the history
//! or a snapshot), never from a revision whose state it no longer has.

use crate::https::TenantCerts;
use crate::known::Known;
use crate::prefetch::Prefetcher;
use crate::upstream::RegionLink;
use common::clock::Clock;
use common::exec::Executor;
use common::sandbox::Release;
use common::wire::{MAX_FRAME_LEN, Message, ReleaseHint, Update};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// First wait before resubscribing after a failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between subscription attempts. Short: while the region is down an attempt
/// fails at once (the link never handshakes on this path; its supervisor reconnects), and
/// the stream should be back within this of the region returning.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Counters describing the push stream, shared with the node handle, and a watch of
/// them for whoever waits on a change (tests, operators' tooling).
#[derive(Debug)]
pub struct SyncState {
    revision: AtomicU64,
    live: AtomicBool,
    subscriptions: AtomicU64,
    snapshots: AtomicU64,
    releases: AtomicU64,
    changes: watch::Sender<SyncStatus>,
}

impl Default for SyncState {
    fn default() -> Self {
        Self {
            revision: AtomicU64::new(0),
            live: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            changes: watch::Sender::new(SyncStatus::default()),
        }
    }
}

/// A point-in-time copy of [`SyncState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStatus {
    /// The last registry revision applied.
    pub revision: u64,
    /// Whether the push stream is up.
    pub live: bool,
    /// How many times the POP has subscribed (1 + reconnects).
    pub subscriptions: u64,
    /// How many full snapshots it has applied (0 when every catch-up came from history).
    pub snapshots: u64,
    /// How many runtime release hints (one per function listed) it has applied.
    pub releases: u64,
}

impl SyncState {
    /// The current status.
    pub fn status(&self) -> SyncStatus {
        SyncStatus {
            revision: self.revision.load(Ordering::Acquire),
            live: self.live.load(Ordering::Acquire),
            subscriptions: self.subscriptions.load(Ordering::Acquire),
            snapshots: self.snapshots.load(Ordering::Acquire),
            releases: self.releases.load(Ordering::Acquire),
        }
    }

    /// The status from now on: the receiver sees every change (coalesced).
    pub fn watch(&self) -> watch::Receiver<SyncStatus> {
        self.changes.subscribe()
    }

    /// Tells watchers the status changed.
    fn publish(&self) {
        self.changes.send_replace(self.status());
    }
}

/// What the sync task works with.
#[derive(Debug)]
pub struct SyncParts {
    /// The link to regions.
    pub link: Arc<RegionLink>,
    /// Where pushed state goes.
    pub known: Arc<Known>,
    /// To tell which artifacts are prepared.
    pub executor: Executor,
    /// To prepare new artifacts.
    pub prefetcher: Arc<Prefetcher>,
    /// Shared counters.
    pub state: Arc<SyncState>,
    /// Where pushed tenant certificates go.
    pub certs: Arc<TenantCerts>,
    /// Where the push stream's trust window reads the time.
    pub clock: Arc<dyn Clock>,
}

/// Runs the subscription until the task is aborted. While `paused` holds `true` the POP
/// holds no subscription (maintenance, and tests of catching up).
pub async fn run(parts: SyncParts, mut paused: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let since = parts.state.revision.load(Ordering::Acquire);
        let subscribed = async {
            let ch = parts.link.channel().await.map_err(|e| e.to_string())?;
            ch.subscribe(&Message::Subscribe {
                since_revision: since,
            })
            .await
            .map_err(|e| e.to_string())
        };
        match subscribed.await {
            Ok(mut sub) => {
                parts.state.subscriptions.fetch_add(1, Ordering::AcqRel);
                parts.state.publish();
                debug!(since, "subscribed to registry changes");
                loop {
                    let msg = tokio::select! {
                        msg = sub.next(MAX_FRAME_LEN) => msg,
                        changed = paused.changed() => {
                            if changed.is_err() || *paused.borrow() {
                                break;
                            }
                            continue;
                        }
                    };
                    match msg {
                        Ok(msg @ Message::Updates { .. }) => {
                            apply(&parts, msg);
                            backoff = MIN_BACKOFF;
                        }
                        Ok(Message::CaughtUp { revision }) => caught_up(&parts, revision),
                        // Advisory: prepare code that is trending up elsewhere before local
                        // traffic makes it popular here (bounded by the prefetcher).
                        Ok(Message::Trending { digest, .. }) => {
                            if parts.executor.cached(&digest).is_none() {
                                parts.prefetcher.request(digest);
                            }
                        }
                        Ok(Message::Releases {
                            full,
                            releases,
                            canary_percent,
                        }) => {
                            parts.known.set_canary_percent(canary_percent);
                            apply_releases(&parts, full, releases);
                        }
                        Ok(_) => {
                            warn!("region sent something else than updates on the push stream");
                            break;
                        }
                        Err(e) => {
                            info!(error = %e, "push stream ended; resubscribing");
                            break;
                        }
                    }
                }
                parts.state.live.store(false, Ordering::Release);
                parts.known.set_push_live(false, parts.clock.now());
                parts.state.publish();
            }
            Err(e) => debug!(error = %e, "cannot subscribe to registry changes yet"),
        }
        if !*paused.borrow() {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The region sent everything up to `revision`, at least its revision when this POP
/// subscribed: the POP goes live (trusts its pushed registry, e.g. to refuse unknown tokens
/// without asking the region). Never earlier: a fresh POP's registry fills change by
/// change, and refusing a token that is only further down the history is a wrong 401.
fn caught_up(parts: &SyncParts, revision: u64) {
    parts.state.revision.store(revision, Ordering::Release);
    if !parts.state.live.swap(true, Ordering::AcqRel) {
        parts.known.set_push_live(true, parts.clock.now());
    }
    parts.state.publish();
}

/// Applies one [`Message::Updates`].
fn apply(parts: &SyncParts, msg: Message) {
    let Message::Updates {
        revision,
        snapshot,
        updates,
    } = msg
    else {
        return;
    };
    if snapshot {
        parts.known.clear_pushed();
        parts.certs.clear();
        parts.state.snapshots.fetch_add(1, Ordering::AcqRel);
    }
    let ready = |d: &common::model::ArtifactDigest| parts.executor.cached(d).is_some();
    for update in updates {
        let update = match update {
            Update::Certificate { host, certificate } => {
                parts.certs.apply(&host, certificate);
                continue;
            }
            other => other,
        };
        for digest in parts.known.apply(update, ready) {
            parts.prefetcher.request(digest);
        }
    }
    parts.state.revision.store(revision, Ordering::Release);
    parts.state.publish();
}

/// Applies the region's release hints and starts compiling, for the next release, the code
/// of functions that run here and were moved onto it (a POP that does not host it keeps
/// them on its current release: see the invoker).
fn apply_releases(parts: &SyncParts, full: bool, releases: Vec<ReleaseHint>) {
    let count = u64::try_from(releases.len()).unwrap_or(u64::MAX);
    let ready = |d: &common::model::ArtifactDigest| parts.executor.cached(d).is_some();
    for (digest, release) in parts.known.apply_releases(full, releases, ready) {
        let hosted = Release::from_name(&release)
            .filter(|r| *r != Release::Current && parts.executor.sandbox_on(*r).is_some());
        if let Some(r) = hosted
            && parts.executor.cached_on(r, &digest).is_none()
        {
            parts.prefetcher.request_on(r, digest);
        }
    }
    parts.state.releases.fetch_add(count, Ordering::AcqRel);
    parts.state.publish();
}
