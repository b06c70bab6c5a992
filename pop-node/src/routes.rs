//! The POP's copy of the route table. [`RouteSync`] is the one place that knows how the
//! table arrives: today by polling the region (`FetchRoutes{since_revision}` over QUIC) at
//! start and every `route_refresh_ms`; the region's push stream can replace [`RouteSync::run`]
//! without touching the edge, which only sees [`RouteSource`].
//!
//! While no region is reachable the POP keeps serving the last table it had (an empty one
//! before the first fetch), so routes keep working through a region outage for functions
//! the POP runs itself.

use crate::upstream::RegionLink;
use common::edge::{RouteSource, RouteTable};
use common::model::ApiError;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::debug;

/// The route table as last fetched from the region.
#[derive(Debug)]
pub struct RouteSync {
    link: Arc<RegionLink>,
    table: RwLock<Arc<RouteTable>>,
}

impl RouteSync {
    /// An empty table, to be filled from the region over `link`.
    pub fn new(link: Arc<RegionLink>) -> Self {
        Self {
            link,
            table: RwLock::new(Arc::new(RouteTable::default())),
        }
    }

    /// Fetches the table if the region's revision differs from ours; returns whether the
    /// table changed.
    ///
    /// # Errors
    /// 503 when no region is reachable; the current table stays in force.
    pub async fn refresh(&self) -> Result<bool, ApiError> {
        let since = self.table().revision();
        let (revision, routes) = self.link.fetch_routes(since).await?;
        let Some(routes) = routes else {
            return Ok(false);
        };
        self.install(revision, routes);
        Ok(true)
    }

    /// Replaces the table with `routes` at `revision` (what a pushed update calls too).
    /// Any revision different from ours is taken, not only a higher one: after a switch
    /// to another region, that region's revisions are its own.
    pub fn install(&self, revision: u64, routes: Vec<common::model::Route>) {
        let table = Arc::new(RouteTable::new(revision, routes));
        debug!(revision, routes = table.len(), "route table updated");
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// Refreshes now and then every `every`, until the task is aborted.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh().await {
                debug!(error = %e, "route table refresh failed; keeping the current table");
            }
        }
    }
}

impl RouteSource for RouteSync {
    fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }
}
