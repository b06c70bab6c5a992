//! Fetching and compiling artifacts in the background for functions that became popular,
//! so the request that made them popular is not delayed. Bounded in flight, deduplicated
//! by digest; the tasks live in a [`JoinSet`] owned here, aborted when the POP stops.

use crate::upstream::RegionLink;
use common::exec::Executor;
use common::model::ArtifactDigest;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Background artifact preparation.
#[derive(Debug)]
pub struct Prefetcher {
    link: Arc<RegionLink>,
    executor: Executor,
    max_in_flight: usize,
    in_flight: Arc<Mutex<HashSet<ArtifactDigest>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl Prefetcher {
    /// A prefetcher with at most `max_in_flight` fetches at once.
    pub fn new(link: Arc<RegionLink>, executor: Executor, max_in_flight: usize) -> Self {
        Self {
            link,
            executor,
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
        let executor = self.executor.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let engine = executor.sandbox().fingerprint();
            match link.fetch(digest, engine).await {
                Ok(bytes) => match executor.prepare(bytes).await {
                    Ok(_) => debug!(%digest, "artifact ready"),
                    Err(e) => warn!(%digest, error = %e, "artifact from region does not compile"),
                },
                Err(e) => warn!(%digest, error = %e, "artifact fetch failed"),
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
