//! Durable right-size statistics: the executor's peak samples, out-of-memory retries and
//! learned sizes per function (`common::policy::resize`), stored in [`Bucket::Sizes`]
//! under `tenant/name` so `GET /v1/functions/{name}`'s percentiles, recommendation and
//! the learned size survive a restart.
//!
//! Written in batches, never on the invoke path: [`Sizes::run`] stores the functions that
//! changed every [`FLUSH_EVERY`] (and [`Sizes::flush`] once more at shutdown); read back
//! once at start-up ([`Sizes::restore`]). What changed after the last flush before a crash
//! is lost: samples, not accounts. Each write takes a store revision like any other; at
//! most one per changed function per flush.

use crate::store::{Bucket, Expect, Store, StoreError};
use common::exec::Executor;
use common::model::{FunctionKey, FunctionName, TenantId};
use common::policy::resize::SizeRecord;
use std::time::Duration;
use tracing::warn;

/// How often changed records are stored.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The store side of the executor's right-size statistics.
#[derive(Debug, Clone)]
pub struct Sizes {
    store: Store,
    executor: Executor,
}

impl Sizes {
    /// Statistics of `executor` kept in `store`.
    pub fn new(store: Store, executor: Executor) -> Self {
        Self { store, executor }
    }

    /// Reads every stored record into the executor (blocking). Unreadable records are
    /// skipped with a warning.
    ///
    /// # Errors
    /// [`StoreError`] when the bucket cannot be listed.
    pub fn restore(&self) -> Result<usize, StoreError> {
        let mut restored = 0;
        for (key, entry) in self.store.list(Bucket::Sizes, "")? {
            let parsed = key.split_once('/').and_then(|(t, n)| {
                let fkey = FunctionKey {
                    tenant: TenantId::new(t).ok()?,
                    name: FunctionName::new(n).ok()?,
                };
                let record: SizeRecord = serde_json::from_slice(&entry.value).ok()?;
                Some((fkey, record))
            });
            match parsed {
                Some((fkey, record)) => {
                    self.executor.restore_size_record(&fkey, record);
                    restored += 1;
                }
                None => warn!(%key, "unreadable size record skipped"),
            }
        }
        Ok(restored)
    }

    /// Stores the records changed since the last flush (blocking). A record that cannot
    /// be stored is logged and dropped (the next change of its function writes it again).
    pub fn flush(&self) {
        for (key, record) in self.executor.take_size_records() {
            let stored = serde_json::to_vec(&record)
                .map_err(|e| StoreError::Backend(e.to_string()))
                .and_then(|bytes| {
                    self.store.put(
                        Bucket::Sizes,
                        &format!("{}/{}", key.tenant, key.name),
                        &bytes,
                        Expect::Any,
                    )
                });
            if let Err(e) = stored {
                warn!(function = %key, error = %e, "size record not stored");
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || this.flush()).await {
                warn!(error = %e, "size flush task failed");
            }
        }
    }
}
