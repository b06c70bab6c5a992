//! Admission at the region: a fixed number of execution slots and a bounded wait for one.
//! Beyond the bound, requests are refused with 503 and `retry-after` (DESIGN §2: no
//! unbounded queue).

use common::model::ApiError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Execution slots with a bounded queue of waiters.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// `slots` concurrent executions, at most `max_waiting` queued.
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Invocations waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Free execution slots now.
    pub fn spare(&self) -> usize {
        self.slots.available_permits()
    }

    /// Whether the queue of waiters is past half its bound: the region tells POPs it is
    /// under pressure from here on, before it has to refuse anything.
    pub fn under_pressure(&self) -> bool {
        self.waiting() * 2 > self.max_waiting
    }

    /// A slot, waiting for one if the queue has room.
    ///
    /// # Errors
    /// 503 with `retry-after` when every slot is taken and the queue is full.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(
                "region is at capacity: every execution slot is busy and its queue is full",
                Duration::from_secs(1),
            ));
        }
        let _waiting = Waiting(&self.waiting);
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("region is shutting down", Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::ErrorKind;

    #[tokio::test]
    async fn pressure_is_reported_once_the_queue_is_past_half() {
        let a = Arc::new(Admission::new(1, 2));
        assert_eq!((a.spare(), a.under_pressure()), (1, false));
        let held = a.admit().await.expect("slot");
        assert_eq!((a.spare(), a.under_pressure()), (0, false));
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move { a2.admit().await.map(drop) });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!a.under_pressure(), "one of two queued is not past half");
        let a3 = Arc::clone(&a);
        let second = tokio::spawn(async move { a3.admit().await.map(drop) });
        while a.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(a.under_pressure());
        drop(held);
        assert!(waiter.await.expect("joins").is_ok());
        assert!(second.await.expect("joins").is_ok());
        assert!(!a.under_pressure());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_with_unavailable() {
        let a = Arc::new(Admission::new(1, 1));
        let held = a.admit().await.expect("first slot");
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move { a2.admit().await.map(drop) });
        // Wait until the waiter is queued, then a third request must be refused.
        while a.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            a.admit().await.map(drop).map_err(|e| e.kind),
            Err(ErrorKind::Unavailable)
        );
        drop(held);
        assert!(waiter.await.expect("joins").is_ok());
    }
}
