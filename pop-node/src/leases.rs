//! The POP's concurrency leases: slots of each tenant's budget that the region granted
//! this POP. A local run draws one slot for its duration; when a tenant's free slots run
//! low the POP asks for another batch in the background, renews what it holds every
//! third of the lease's TTL, and gives back surplus (free slots beyond its use, at least a
//! batch, of a busy tenant; all free slots of a tenant that drew nothing since the last
//! renewal). Without a free slot the invocation is not run here:
//! the invoker forwards it, and the region charges it to its own in-flight count (never to
//! this POP's lease), answering 429 when the tenant is at its limit.
//!
//! Safety: the POP stops drawing `ttl` after it sent the request that granted or renewed a
//! lease; the region reclaims a lease only after `ttl` plus a grace longer than any
//! invocation, so nothing drawn here runs uncounted. Slots are removed locally before a
//! return is sent, so the region's count is never below what this POP uses.
//!
//! Lease messages are sent one at a time (behind one lock); a reply's `held` only ever
//! shrinks the local count (when the region reclaimed an expired lease).
//!
//! Bounds: at most `max_tenants` tenants hold leases (others are forwarded); at most one
//! acquire per tenant is in flight; background requests live in a [`JoinSet`] that
//! [`Leases::stop`] aborts.

use crate::upstream::RegionLink;
use common::model::{NodeId, TenantId};
use common::wire::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tracing::debug;

/// How the POP asks for leases.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// Slots asked for at a time; also how many free slots a busy tenant keeps.
    pub batch: u32,
    /// Tenants holding leases at once.
    pub max_tenants: usize,
}

#[derive(Debug, Default)]
struct Held {
    /// Slots the region counts as leased to this POP.
    granted: u32,
    /// Of those, drawn by running invocations.
    in_use: u32,
    /// Draws stop at this instant unless a renewal moves it.
    valid_until: Option<Instant>,
    /// An acquire is in flight.
    asking: bool,
    /// Something was drawn since the last renewal.
    drew: bool,
}

impl Held {
    fn free(&self) -> u32 {
        self.granted.saturating_sub(self.in_use)
    }
}

/// The POP's lease holder.
#[derive(Debug)]
pub struct Leases {
    holder: NodeId,
    link: Arc<RegionLink>,
    config: LeaseConfig,
    held: Mutex<HashMap<TenantId, Held>>,
    requests: Mutex<JoinSet<()>>,
    /// Lease messages go one at a time, so replies are applied in the order the region
    /// processed them and a reply's `held` is never older than a grant already applied.
    io: tokio::sync::Mutex<()>,
}

/// One drawn slot; returned to the lease when dropped.
#[derive(Debug)]
pub struct Slot {
    leases: Arc<Leases>,
    tenant: TenantId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.leases.lock();
        if let Some(h) = held.get_mut(&self.tenant) {
            h.in_use = h.in_use.saturating_sub(1);
        }
    }
}

impl Leases {
    /// A holder named `holder` asking regions through `link`.
    pub fn new(holder: NodeId, link: Arc<RegionLink>, config: LeaseConfig) -> Self {
        Self {
            holder,
            link,
            config: LeaseConfig {
                batch: config.batch.max(1),
                ..config
            },
            held: Mutex::new(HashMap::new()),
            requests: Mutex::new(JoinSet::new()),
            io: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws a slot of `tenant`'s lease, or `None` when it has none free (the caller
    /// forwards). Asks for more in the background when free slots run low.
    pub fn try_draw(self: &Arc<Self>, tenant: &TenantId) -> Option<Slot> {
        let now = Instant::now();
        let mut held = self.lock();
        if !held.contains_key(tenant) {
            if held.len() >= self.config.max_tenants {
                // Room only comes from tenants holding nothing.
                held.retain(|_, h| h.granted > 0 || h.in_use > 0 || h.asking);
                if held.len() >= self.config.max_tenants {
                    return None;
                }
            }
            held.insert(tenant.clone(), Held::default());
        }
        let h = held.get_mut(tenant)?;
        let valid = h.valid_until.is_some_and(|v| now < v);
        let slot = if valid && h.free() > 0 {
            h.in_use += 1;
            h.drew = true;
            Some(Slot {
                leases: Arc::clone(self),
                tenant: tenant.clone(),
            })
        } else {
            None
        };
        let low = !valid || h.free() < self.config.batch;
        if low && !h.asking {
            h.asking = true;
            // A busy tenant's lease grows geometrically: ask for as many as are in use.
            let want = self.config.batch.max(h.in_use);
            drop(held);
            self.spawn(Arc::clone(self).acquire(tenant.clone(), want));
        }
        slot
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        while requests.try_join_next().is_some() {}
        requests.spawn(task);
    }

    /// Asks for `slots` more of `tenant` (0: renew) and applies the answer.
    async fn acquire(self: Arc<Self>, tenant: TenantId, slots: u32) {
        let _io = self.io.lock().await;
        let sent = Instant::now();
        let msg = Message::LeaseAcquire {
            holder: self.holder.clone(),
            tenant: tenant.clone(),
            slots,
        };
        let reply = self.link.lease(&msg).await;
        let mut held = self.lock();
        let Some(h) = held.get_mut(&tenant) else {
            return;
        };
        if slots > 0 {
            h.asking = false;
        }
        match reply {
            Ok(Message::LeaseGranted {
                slots: granted,
                ttl_ms,
                held: region_holds,
                ..
            }) => {
                // The region's count is the truth: it may have reclaimed an expired lease.
                h.granted = (h.granted + granted).min(region_holds);
                h.valid_until = Some(sent + Duration::from_millis(ttl_ms));
            }
            Ok(other) => debug!(?other, "unexpected answer to a lease request"),
            Err(e) => debug!(error = %e, "lease request failed"),
        }
    }

    /// Gives back `slots` of `tenant`, already removed from the local count.
    async fn give_back(self: Arc<Self>, tenant: TenantId, slots: u32) {
        let msg = Message::LeaseReturn {
            holder: self.holder.clone(),
            tenant,
            slots,
        };
        let _io = self.io.lock().await;
        if let Err(e) = self.link.lease(&msg).await {
            // The region reclaims the slots when the lease expires instead.
            debug!(error = %e, "lease return failed");
        }
    }

    /// One renewal round: tenants that drew nothing since the last round give back their
    /// free slots; everyone still holding slots renews.
    pub fn renew(self: &Arc<Self>) {
        let mut returns = vec![];
        let mut renewals = vec![];
        {
            let mut held = self.lock();
            for (tenant, h) in held.iter_mut() {
                // A busy tenant keeps headroom as large as its use (at least a batch), so a
                // steady load is not forwarded while the lease regrows after each round.
                let surplus = if h.drew {
                    h.free().saturating_sub(self.config.batch.max(h.in_use))
                } else {
                    h.free()
                };
                if surplus > 0 {
                    h.granted -= surplus;
                    returns.push((tenant.clone(), surplus));
                }
                if h.granted > 0 {
                    renewals.push(tenant.clone());
                }
                h.drew = false;
            }
            held.retain(|_, h| h.granted > 0 || h.in_use > 0 || h.asking);
        }
        for (tenant, slots) in returns {
            self.spawn(Arc::clone(self).give_back(tenant, slots));
        }
        for tenant in renewals {
            self.spawn(Arc::clone(self).acquire(tenant, 0));
        }
    }

    /// Renews every `ttl / 3` until the node stops (the region's TTL is learned from its
    /// grants; `ttl` is the POP's expectation of it).
    pub async fn run(self: Arc<Self>, ttl: Duration) {
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.renew();
        }
    }

    /// Slots of `tenant` held and in use now, for gauges and tests.
    pub fn holding(&self, tenant: &TenantId) -> (u32, u32) {
        self.lock()
            .get(tenant)
            .map_or((0, 0), |h| (h.granted, h.in_use))
    }

    /// Aborts background requests.
    pub fn stop(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}
