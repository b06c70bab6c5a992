//! Function logs at the POP: every invocation's stderr goes into the POP's own ring buffer
//! and into a bounded queue that [`LogShipper::run`] sends to the region in batches
//! (`Logs` over QUIC), where `GET /v1/functions/{name}/logs` reads it.
//!
//! Bounds: the queue holds at most `max_entries` invocations' output and `max_bytes` of
//! text; when full, the oldest entries are dropped and counted, and the count travels with
//! the next batch. A batch that cannot be sent goes back to the front of the queue (within
//! the same bounds), so a region outage loses only what the queue cannot hold.

use crate::upstream::RegionLink;
use common::logs::{LogBuffer, LogSink};
use common::model::{ApiError, FunctionKey, RequestId};
use common::wire::ShippedLog;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::debug;

/// Largest batch sent at once, in bytes of text (well below the wire's frame limit).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Longest text kept from one invocation's stderr.
const MAX_ENTRY_BYTES: usize = 64 << 10;

#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<ShippedLog>,
    bytes: usize,
    dropped: u64,
}

impl Queue {
    /// Adds `entry` at the back (or front, for a batch put back), dropping the oldest
    /// entries while over `limits`.
    fn push(&mut self, entry: ShippedLog, front: bool, limits: ShipLimits) {
        self.bytes += entry.text.len();
        if front {
            self.entries.push_front(entry);
        } else {
            self.entries.push_back(entry);
        }
        while self.entries.len() > limits.max_entries.max(1)
            || (self.bytes > limits.max_bytes && self.entries.len() > 1)
        {
            // The oldest entry is at the front, whichever end we just added to.
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.text.len();
                self.dropped += 1;
            }
        }
    }

    /// Takes the oldest entries up to [`MAX_BATCH_BYTES`] (at least one), and the drop
    /// count to report with them.
    fn take_batch(&mut self) -> (Vec<ShippedLog>, u64) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(e) = self.entries.front() {
            if !batch.is_empty() && bytes + e.text.len() > MAX_BATCH_BYTES {
                break;
            }
            bytes += e.text.len();
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.text.len();
                batch.push(e);
            }
        }
        (batch, std::mem::take(&mut self.dropped))
    }

    /// Puts an unsent batch back in front, in order, within `limits`.
    fn put_back(&mut self, batch: Vec<ShippedLog>, dropped: u64, limits: ShipLimits) {
        self.dropped += dropped;
        for entry in batch.into_iter().rev() {
            self.push(entry, true, limits);
        }
    }
}

/// Bounds of the shipping queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipLimits {
    /// Invocations' output queued at most.
    pub max_entries: usize,
    /// Bytes of text queued at most.
    pub max_bytes: usize,
}

/// The POP's [`LogSink`]: local ring buffer plus the queue to the region.
#[derive(Debug)]
pub struct LogShipper {
    node: String,
    local: LogBuffer,
    link: Arc<RegionLink>,
    limits: ShipLimits,
    queue: Mutex<Queue>,
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl LogShipper {
    /// A shipper for node `node` (`pop/<id>`) keeping `local` and sending over `link`.
    pub fn new(node: String, local: LogBuffer, link: Arc<RegionLink>, limits: ShipLimits) -> Self {
        Self {
            node,
            local,
            link,
            limits,
            queue: Mutex::new(Queue::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Each operation keeps `bytes` in step with `entries` before anything can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The POP's own copy of its function logs.
    pub fn local(&self) -> &LogBuffer {
        &self.local
    }

    /// Sends what is queued (up to one batch); returns how many entries went.
    ///
    /// # Errors
    /// 503 when no region is reachable; the batch is queued again.
    pub async fn ship_once(&self) -> Result<usize, ApiError> {
        let (batch, dropped) = self.lock().take_batch();
        if batch.is_empty() && dropped == 0 {
            return Ok(0);
        }
        let n = batch.len();
        match self.link.ship_logs(batch.clone(), dropped).await {
            Ok(()) => Ok(n),
            Err(e) => {
                self.lock().put_back(batch, dropped, self.limits);
                Err(e)
            }
        }
    }

    /// Ships every `every` until the task is aborted.
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.ship_once().await {
                debug!(error = %e, "shipping function logs failed; will retry");
            }
        }
    }

    /// Entries waiting to be shipped, and entries dropped since the last batch.
    pub fn pending(&self) -> (usize, u64) {
        let q = self.lock();
        (q.entries.len(), q.dropped)
    }
}

impl LogSink for LogShipper {
    fn function_log(&self, function: &FunctionKey, request_id: RequestId, ts: u64, stderr: &[u8]) {
        self.local.function_log(function, request_id, ts, stderr);
        let entry = ShippedLog {
            function: function.clone(),
            request_id: request_id.to_string(),
            ts,
            node: self.node.clone(),
            text: cut(&String::from_utf8_lossy(stderr), MAX_ENTRY_BYTES),
        };
        self.lock().push(entry, false, self.limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::{FunctionName, TenantId};

    fn entry(text: &str) -> ShippedLog {
        ShippedLog {
            function: FunctionKey {
                tenant: TenantId::new("t").expect("valid"),
                name: FunctionName::new("f").expect("valid"),
            },
            request_id: "r".into(),
            ts: 0,
            node: "pop/p".into(),
            text: text.into(),
        }
    }

    fn texts(q: &Queue) -> Vec<&str> {
        q.entries.iter().map(|e| e.text.as_str()).collect()
    }

    const LIMITS: ShipLimits = ShipLimits {
        max_entries: 3,
        max_bytes: 1 << 20,
    };

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let mut q = Queue::default();
        for t in ["a", "b", "c", "d", "e"] {
            q.push(entry(t), false, LIMITS);
        }
        assert_eq!(texts(&q), ["c", "d", "e"]);
        let (batch, dropped) = q.take_batch();
        assert_eq!((batch.len(), dropped), (3, 2));
        assert_eq!(q.take_batch().1, 0, "the drop count is reported once");
    }

    #[test]
    fn an_unsent_batch_goes_back_in_order_and_keeps_its_drop_count() {
        let mut q = Queue::default();
        for t in ["a", "b", "c", "d"] {
            q.push(entry(t), false, LIMITS);
        }
        let (batch, dropped) = q.take_batch();
        q.push(entry("new"), false, LIMITS);
        q.put_back(batch, dropped, LIMITS);
        // Only three fit: the oldest of the put-back batch is dropped.
        assert_eq!(texts(&q), ["c", "d", "new"]);
        assert_eq!(q.dropped, 2);
    }

    #[test]
    fn the_byte_bound_holds() {
        let limits = ShipLimits {
            max_entries: 100,
            max_bytes: 4,
        };
        let mut q = Queue::default();
        for t in ["ab", "cd", "ef"] {
            q.push(entry(t), false, limits);
        }
        assert_eq!(texts(&q), ["cd", "ef"]);
        assert_eq!(q.bytes, 4);
    }
}
