//! Admission at the region: a fixed number of execution slots and a bounded wait for one.
//! Beyond the bound, requests are refused with 503 and `retry-after` (DESIGN §2: no
//! unbounded queue). Before waiting, each invocation takes one of its tenant's shares of
//! the pool ([`TenantShares`], the rule in [`common::policy::share`]): a tenant holding
//! its share is refused with 429 at once, so another tenant always finds a slot.
//!
//! Refusals are typed ([`Refusal`], also the on-demand fleet's): the invoke pipeline's
//! admit layer returns them, and they become an `ApiError` once, at the edge.

use common::model::{ApiError, Fault, LimitHit, LimitKind, LimitScope, TenantId};
use common::policy::share::{ShareExceeded, SlotShare};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Execution slots with a bounded queue of waiters.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    total: usize,
}

/// Why an invocation got no slot, share or worker turn: always the region's capacity
/// ([`Fault::Capacity`]); retrying later, or at another region, may work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every execution slot is busy and their queue is full (503).
    #[error("region is at capacity: every execution slot is busy and its queue is full")]
    Full,
    /// Every on-demand worker is busy and their queue is full (503).
    #[error("the region's on-demand fleet is full: every worker is busy and its queue is full")]
    FleetFull,
    /// The region is shutting down (503).
    #[error("region is shutting down")]
    ShuttingDown,
    /// `tenant` holds its share of `pool` (429 `throttled`, limit `slot_share`).
    #[error("tenant_slot_share: tenant {tenant} is at its share of the region's {pool}: {share}")]
    Share {
        /// The tenant refused.
        tenant: TenantId,
        /// The pool: execution slots or on-demand workers.
        pool: &'static str,
        /// The share and when one of the tenant's slots is likely to free.
        share: ShareExceeded,
    },
}

/// How long a refused caller should wait when the refusal knows no better.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Refusal {
    /// Whose fault it is: the region's capacity.
    pub fn fault(&self) -> Fault {
        Fault::Capacity
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let message = r.to_string();
        match r {
            Refusal::Full | Refusal::FleetFull | Refusal::ShuttingDown => {
                ApiError::unavailable(message, RETRY_AFTER)
            }
            Refusal::Share { share, .. } => ApiError::throttled(
                LimitHit::new(LimitScope::Tenant, LimitKind::SlotShare, share.cap as u64),
                message,
                share.retry_after,
            ),
        }
    }
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
            total: slots.max(1),
        }
    }

    /// The execution slots in all.
    pub fn slots(&self) -> usize {
        self.total
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

    /// Whether a new invocation would be refused now (every slot busy, the queue full):
    /// checked before the tenant's share, so a full region answers 503 whoever asks.
    pub fn is_full(&self) -> bool {
        self.spare() == 0 && self.waiting() >= self.max_waiting
    }

    /// A slot, waiting for one if the queue has room.
    ///
    /// # Errors
    /// [`Refusal::Full`] when every slot is taken and the queue is full.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        let _waiting = Waiting(&self.waiting);
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| Refusal::ShuttingDown)
    }
}

/// One pool's per-tenant shares (the region's slots, or the on-demand fleet's workers).
#[derive(Debug)]
pub struct TenantShares {
    pool: &'static str,
    shares: Mutex<SlotShare<TenantId>>,
}

/// A share held by one invocation; returned when dropped.
#[derive(Debug)]
pub struct ShareTicket {
    shares: Arc<TenantShares>,
    tenant: TenantId,
    /// When the share was taken (how long shares are held sets a refusal's wait).
    taken: std::time::Instant,
}

impl Drop for ShareTicket {
    fn drop(&mut self) {
        let held_for = self.taken.elapsed();
        self.shares.lock().release(&self.tenant, held_for);
    }
}

impl TenantShares {
    /// Shares of `pool` (named in refusals) with `slots`, each tenant holding at most
    /// `percent` of them.
    pub fn new(pool: &'static str, slots: usize, percent: u8) -> Self {
        Self {
            pool,
            shares: Mutex::new(SlotShare::new(slots, percent)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotShare<TenantId>> {
        // Poisoning only means a panic between two statements; the counts stay whole.
        self.shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Slots of this pool `tenant` holds or waits for now.
    pub fn held(&self, tenant: &TenantId) -> usize {
        self.lock().held(tenant)
    }

    /// Takes one of `tenant`'s shares, before the invocation waits for a slot.
    ///
    /// # Errors
    /// [`Refusal::Share`] when `tenant` holds its share.
    pub fn take(self: &Arc<Self>, tenant: &TenantId) -> Result<ShareTicket, Refusal> {
        self.lock().take(tenant).map_err(|share| Refusal::Share {
            tenant: tenant.clone(),
            pool: self.pool,
            share,
        })?;
        Ok(ShareTicket {
            shares: Arc::clone(self),
            tenant: tenant.clone(),
            taken: std::time::Instant::now(),
        })
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
        let refused = a.admit().await.map(drop).expect_err("the queue is full");
        assert_eq!(refused, Refusal::Full);
        assert_eq!(ApiError::from(refused).kind, ErrorKind::Unavailable);
        drop(held);
        assert!(waiter.await.expect("joins").is_ok());
    }

    #[test]
    fn a_tenant_at_its_share_is_throttled_and_another_is_not() {
        let shares = Arc::new(TenantShares::new("execution slots", 2, 50));
        let (a, b) = (
            TenantId::new("a").expect("id"),
            TenantId::new("b").expect("id"),
        );
        let held = shares.take(&a).expect("first share");
        let refused = shares.take(&a).map(drop).expect_err("second share refused");
        assert!(matches!(&refused, Refusal::Share { tenant, .. } if *tenant == a));
        assert_eq!(refused.fault(), Fault::Capacity);
        let refused = ApiError::from(refused);
        assert_eq!(refused.kind, ErrorKind::Throttled);
        assert_eq!(refused.limit.map(|l| l.kind), Some(LimitKind::SlotShare));
        assert!(
            refused.message.contains("tenant_slot_share"),
            "{}",
            refused.message
        );
        let other = shares.take(&b).expect("another tenant is served");
        drop((held, other));
        assert_eq!((shares.held(&a), shares.held(&b)), (0, 0));
    }
}
