//! The bridge from the synchronous [`Backend`](crate::store::Backend) trait to the async
//! NATS client: a dedicated thread runs a current-thread tokio runtime that owns the NATS
//! connection; a call spawns its future there and waits for the answer on a std channel
//! with a deadline.
//!
//! Why not `Handle::block_on`: the region calls the store from its own runtime's workers,
//! where `block_on` panics. Spawning onto another runtime's handle and waiting on a std
//! channel works from any thread. The wait blocks the caller's thread for one loopback or
//! LAN round trip (docs/architecture.md has the measurement); the region already runs
//! writes on the blocking pool.
//!
//! Bounded: there is no request queue; every waiting caller holds its own thread, so the
//! callers in flight are bounded by the region's worker and blocking pools. A call that
//! misses its deadline gets [`StoreError::Backend`]; its future is cancelled at the same
//! deadline, though a write the server already received may still apply (as with any
//! networked store).

use crate::store::StoreError;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// See the module docs. Dropping it stops the runtime thread.
#[derive(Debug)]
pub(super) struct Bridge {
    handle: Handle,
    timeout: Duration,
    /// Dropped with the bridge, which ends the runtime thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl Bridge {
    /// Starts the runtime thread; calls wait at most `timeout`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the runtime or its thread cannot be created.
    pub(super) fn start(timeout: Duration) -> Result<Self, StoreError> {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the NATS runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("strata-jetstream".into())
            .spawn(move || {
                // Spawned tasks run while this thread is inside `block_on`; the runtime is
                // dropped here, outside any async context, when the bridge is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| StoreError::Backend(format!("starting the NATS thread: {e}")))?;
        Ok(Self {
            handle,
            timeout,
            _stop: stop,
        })
    }

    /// Spawns a long-lived task (the KV watcher) on the runtime.
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    /// Runs `op` on the runtime and waits for its result, at most the bridge's timeout.
    ///
    /// # Errors
    /// `op`'s error, or [`StoreError::Backend`] when it timed out or the runtime stopped.
    pub(super) fn call<T, F>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.handle.spawn(async move {
            let result = tokio::time::timeout(timeout, op)
                .await
                .unwrap_or_else(|_| Err(timed_out(what, timeout)));
            // The caller may have given up already; nobody to tell then.
            let _ = tx.send(result);
        });
        // A little slack over the task's own deadline, so its typed timeout usually wins.
        match rx.recv_timeout(timeout + Duration::from_millis(100)) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(timed_out(what, timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Backend(format!(
                "{what}: the NATS runtime stopped"
            ))),
        }
    }
}

fn timed_out(what: &str, timeout: Duration) -> StoreError {
    StoreError::Backend(format!(
        "{what}: no answer from NATS within {}ms",
        timeout.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_work_from_inside_a_runtime_and_time_out_with_a_typed_error() {
        let bridge = Bridge::start(Duration::from_millis(200)).expect("starts");
        assert_eq!(bridge.call("add", async { Ok(1 + 1) }).expect("answers"), 2);
        let err = bridge
            .call("hang", std::future::pending::<Result<(), StoreError>>())
            .expect_err("times out");
        assert!(err.to_string().contains("hang"), "{err}");
    }
}
