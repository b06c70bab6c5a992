//! Fetching and compiling artifacts in the background for functions that became popular,
//! so the request that made them popular is not delayed. Bounded in flight, deduplicated
//! by digest and release; the tasks live in a [`JoinSet`] owned here, aborted when the POP
//! stops. Also prepares modules for the next runtime release (functions the region promoted
//! there): fetched with the next engine's fingerprint, which no precompiled artifact has,
//! so the region answers with the wasm and it is compiled here, kept in the next release's
//! bounded module cache only (not on disk: after a restart the first request forwards again).

use crate::artifacts::ArtifactCache;
use crate::upstream::RegionLink;
use common::model::{ApiError, ArtifactDigest};
use common::sandbox::Release;
use common::wire::ArtifactKind;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Background artifact preparation.
#[derive(Debug)]
pub struct Prefetcher {
    link: Arc<RegionLink>,
    artifacts: Arc<ArtifactCache>,
    max_in_flight: usize,
    in_flight: Arc<Mutex<HashSet<(ArtifactDigest, Release)>>>,
    /// Modules the next release refused to compile or link (at most
    /// [`MAX_REFUSED`]): the runtime canary counts a sampled run of one as a failure of the
    /// next release and runs it on the current one.
    refused_next: Arc<Mutex<HashSet<ArtifactDigest>>>,
    tasks: Mutex<JoinSet<()>>,
}

/// Modules remembered as refused by the next release; beyond it, a refused module is
/// forwarded when sampled on the next release (the region then judges it).
const MAX_REFUSED: usize = 1024;

impl Prefetcher {
    /// A prefetcher with at most `max_in_flight` fetches at once.
    pub fn new(link: Arc<RegionLink>, artifacts: Arc<ArtifactCache>, max_in_flight: usize) -> Self {
        Self {
            link,
            artifacts,
            max_in_flight: max_in_flight.max(1),
            in_flight: Arc::default(),
            refused_next: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Starts preparing `digest` unless it is already in flight or the bound is reached
    /// (then a later request will ask again).
    pub fn request(&self, digest: ArtifactDigest) {
        self.request_on(Release::Current, digest);
    }

    /// Starts preparing `digest` for `release`, as [`Prefetcher::request`] does for the
    /// current one. A node that does not host `release` logs the failure and keeps
    /// forwarding.
    pub fn request_on(&self, release: Release, digest: ArtifactDigest) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.contains(&(digest, release)) || in_flight.len() >= self.max_in_flight {
                return;
            }
            in_flight.insert((digest, release));
        }
        let link = Arc::clone(&self.link);
        let artifacts = Arc::clone(&self.artifacts);
        let in_flight = Arc::clone(&self.in_flight);
        let refused = Arc::clone(&self.refused_next);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            // Disk first, then the region; precompiled code when the engines match.
            let ready = match release {
                Release::Current => artifacts.obtain(&link, digest).await.map(drop),
                Release::Next => obtain_next(&link, &artifacts, digest, &refused).await,
            };
            match ready {
                Ok(()) => debug!(%digest, %release, "artifact ready"),
                Err(e) => warn!(%digest, %release, error = %e, "artifact could not be prepared"),
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(digest, release));
        });
    }

    /// Whether the next release refused to compile or link `digest` here.
    pub fn next_refuses(&self, digest: &ArtifactDigest) -> bool {
        self.refused_next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }

    /// Stops every fetch in flight.
    pub fn abort_all(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// Compiles `digest` for the next runtime release from the wasm the region sends; a
/// module the release refuses is added to `refused`.
async fn obtain_next(
    link: &RegionLink,
    artifacts: &ArtifactCache,
    digest: ArtifactDigest,
    refused: &Mutex<HashSet<ArtifactDigest>>,
) -> Result<(), ApiError> {
    let executor = artifacts.executor();
    if executor.cached_on(Release::Next, &digest).is_some() {
        return Ok(());
    }
    let Some(sandbox) = executor.sandbox_on(Release::Next) else {
        return Err(ApiError::internal(
            "this POP does not host the next runtime release",
        ));
    };
    let crate::upstream::Fetched {
        kind, bytes: wasm, ..
    } = link.fetch(digest, sandbox.fingerprint()).await?;
    if kind != ArtifactKind::Wasm {
        // Precompiled code is only ever made for the current release's engine.
        return Err(ApiError::internal(format!(
            "artifact {digest}: expected wasm for the next release, got {kind:?}"
        )));
    }
    if let Err(e) = executor.prepare_on(Release::Next, wasm).await {
        let mut refused = refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() < MAX_REFUSED {
            refused.insert(digest);
        }
        return Err(e.into());
    }
    Ok(())
}
