//! Load reports: every interval the POP closes its stats window and sends the result to
//! its region over QUIC, for the region's capacity view. A report that cannot be sent is
//! dropped (the next one carries the cumulative totals); reporting never opens a
//! connection of its own beyond what forwarding would.

use crate::upstream::RegionLink;
use common::exec::Executor;
use common::metrics::{Levels, NodeStats};
use common::wire::Message;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::debug;

/// Largest reply to a report (an `Ack` or an error).
const REPLY_LIMIT: usize = 64 << 10;

/// What the reporter samples and where it sends.
#[derive(Debug)]
pub struct Reporter {
    /// The POP's stats.
    pub stats: Arc<NodeStats>,
    /// The link to the region.
    pub link: Arc<RegionLink>,
    /// For warm-instance and cache gauges.
    pub executor: Executor,
    /// The POP's local execution slots.
    pub slots: usize,
    /// Time between reports.
    pub every: Duration,
}

impl Reporter {
    /// Reports until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.stats.set_levels(Levels {
                concurrency_limit: self.slots as u64,
                ..self.executor.levels()
            });
            let load = self.stats.snapshot(Instant::now(), unix_ms());
            let channel = match self.link.channel().await {
                Ok(ch) => ch,
                Err(e) => {
                    debug!(error = %e, "no region for the load report; dropped");
                    continue;
                }
            };
            self.stats
                .quic_rtt(&channel.remote_address().to_string(), channel.rtt());
            match channel
                .request(&Message::LoadReport(load), REPLY_LIMIT)
                .await
            {
                Ok(Message::Ack) => {}
                Ok(other) => debug!(reply = ?other, "region refused the load report"),
                Err(e) => debug!(error = %e, "load report not delivered"),
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
