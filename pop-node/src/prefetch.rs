//! Fetching and compiling artifacts in the background for functions that became popular,
//! so the request that made them popular is not delayed. Bounded in flight, deduplicated
//! by digest; the tasks live in a [`JoinSet`] owned here, aborted when the POP stops.

use crate::artifacts::ArtifactCache;
use crate::upstream::RegionLink;
use common::model::ArtifactDigest;
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
    in_flight: Arc<Mutex<HashSet<ArtifactDigest>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Prefetcher {
    /// A prefetcher with at most `max_in_flight` fetches at once.
    pub fn new(link: Arc<RegionLink>, artifacts: Arc<ArtifactCache>, max_in_flight: usize) -> Self {
        Self {
            link,
            artifacts,
            max_in_flight: max_in_flight.max(1),
            in_flight: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Starts preparing `digest` unless it is already in flight or the bound is reached
    /// (then a later request will ask again).
    pub fn request(&self, digest: ArtifactDigest) {
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.contains(&digest) || in_flight.len() >= self.max_in_flight {
                return;
            }
            in_flight.insert(digest);
        }
        let link = Arc::clone(&self.link);
        let artifacts = Arc::clone(&self.artifacts);
        let in_flight = Arc::clone(&self.in_flight);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            // Disk first, then the region; precompiled code when the engines match.
            match artifacts.obtain(&link, digest).await {
                Ok(_) => debug!(%digest, "artifact ready"),
                Err(e) => warn!(%digest, error = %e, "artifact could not be prepared"),
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&digest);
        });
    }

    /// Stops every fetch in flight.
    pub fn abort_all(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}
