//! The payload bytes the async queue and the dead-letter queue hold, per tenant and in
//! total, so a tenant's queued and dead-lettered bytes are bounded by `[quotas]`. Owns the
//! accounting only; never performs I/O. Rebuilt from the streams when the queue opens and
//! kept as messages are appended and acked: a check reserves the bytes before the append
//! (so two racing appends cannot both take the last room) and the reservation is either
//! recorded under the message's sequence or released.

use crate::quota::{self, QuotaConfig};
use common::model::{ApiError, Quota, TenantId};
use std::collections::HashMap;

/// Which stream a message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Held {
    /// A queued (or running) event.
    Queued,
    /// A dead letter.
    Dead,
}

impl Held {
    fn index(self) -> usize {
        match self {
            Self::Queued => 0,
            Self::Dead => 1,
        }
    }

    /// The tenant's and the region's quota on this stream, with their limits.
    fn quotas(self, q: &QuotaConfig) -> [(Quota, u64); 2] {
        match self {
            Self::Queued => [
                (Quota::QueuedEventBytes, q.queued_event_bytes),
                (Quota::RegionQueuedEventBytes, q.region_queued_event_bytes),
            ],
            Self::Dead => [
                (Quota::DeadLetterBytes, q.dead_letter_bytes),
                (Quota::RegionDeadLetterBytes, q.region_dead_letter_bytes),
            ],
        }
    }
}

/// Payload bytes held, per message, per tenant and in total.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Each message's payload bytes, by stream, owner and sequence (dead letters are in
    /// one stream per tenant, so a sequence alone is not unique).
    messages: HashMap<(Held, TenantId, u64), u64>,
    /// Bytes per tenant, `[queued, dead]`, including reservations.
    tenants: HashMap<TenantId, [u64; 2]>,
    /// Bytes of every tenant, `[queued, dead]`, including reservations.
    totals: [u64; 2],
}

impl Ledger {
    /// Bytes `tenant` holds in `held`.
    pub(super) fn used(&self, held: Held, tenant: &TenantId) -> u64 {
        self.tenants.get(tenant).map_or(0, |t| t[held.index()])
    }

    /// Reserves `bytes` for `tenant` in `held` if both the tenant's and the region's
    /// quota allow them (`quotas: None` reserves without a check: the queue's own copies
    /// and control events, which must never be refused).
    ///
    /// # Errors
    /// `quota_exceeded` naming the tenant's or the region's quota; nothing is reserved.
    pub(super) fn reserve(
        &mut self,
        held: Held,
        tenant: &TenantId,
        bytes: u64,
        quotas: Option<&QuotaConfig>,
    ) -> Result<(), ApiError> {
        if let Some(q) = quotas {
            let [(mine, my_limit), (region, region_limit)] = held.quotas(q);
            let used = self.used(held, tenant);
            quota::check(mine, my_limit, used, bytes, "payload bytes of this tenant")?;
            let total = self.totals[held.index()];
            quota::check(
                region,
                region_limit,
                total,
                bytes,
                "payload bytes of the region",
            )?;
        }
        self.tenants.entry(tenant.clone()).or_default()[held.index()] += bytes;
        self.totals[held.index()] += bytes;
        Ok(())
    }

    /// Counts stored message `seq` without a check (rebuilding the ledger on open: what
    /// is stored is counted, even past a lowered quota).
    pub(super) fn add(&mut self, held: Held, seq: u64, tenant: &TenantId, bytes: u64) {
        self.tenants.entry(tenant.clone()).or_default()[held.index()] += bytes;
        self.totals[held.index()] += bytes;
        self.record(held, seq, tenant, bytes);
    }

    /// Records a reservation as message `seq` (its append succeeded).
    pub(super) fn record(&mut self, held: Held, seq: u64, tenant: &TenantId, bytes: u64) {
        self.messages.insert((held, tenant.clone(), seq), bytes);
    }

    /// Moves message `from`'s bytes to `to`, a new copy of the same event: the bytes are
    /// held once throughout, never twice while both copies exist.
    pub(super) fn transfer(&mut self, held: Held, tenant: &TenantId, from: u64, to: u64) {
        if let Some(bytes) = self.messages.remove(&(held, tenant.clone(), from)) {
            self.messages.insert((held, tenant.clone(), to), bytes);
        }
    }

    /// Gives back a reservation whose append failed.
    pub(super) fn release(&mut self, held: Held, tenant: &TenantId, bytes: u64) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t[held.index()] = t[held.index()].saturating_sub(bytes);
            if *t == [0, 0] {
                self.tenants.remove(tenant);
            }
        }
        self.totals[held.index()] = self.totals[held.index()].saturating_sub(bytes);
    }

    /// Forgets message `seq` of `tenant` (acked); unknown sequences are ignored.
    pub(super) fn remove(&mut self, held: Held, tenant: &TenantId, seq: u64) {
        if let Some(bytes) = self.messages.remove(&(held, tenant.clone(), seq)) {
            self.release(held, tenant, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("tenant")
    }

    fn quotas() -> QuotaConfig {
        QuotaConfig {
            queued_event_bytes: 10,
            region_queued_event_bytes: 15,
            ..QuotaConfig::default()
        }
    }

    fn refused(r: Result<(), ApiError>) -> Option<Quota> {
        r.err().and_then(|e| e.quota()).map(|b| b.quota)
    }

    #[test]
    fn a_tenant_and_the_region_are_bounded_and_acks_free_room() {
        let (mut l, q) = (Ledger::default(), quotas());
        l.reserve(Held::Queued, &t("a"), 10, Some(&q))
            .expect("fits");
        l.record(Held::Queued, 1, &t("a"), 10);
        let r = l.reserve(Held::Queued, &t("a"), 1, Some(&q));
        assert_eq!(refused(r), Some(Quota::QueuedEventBytes));
        l.reserve(Held::Queued, &t("b"), 5, Some(&q))
            .expect("b fits");
        l.record(Held::Queued, 2, &t("b"), 5);
        let r = l.reserve(Held::Queued, &t("c"), 1, Some(&q));
        assert_eq!(refused(r), Some(Quota::RegionQueuedEventBytes));
        // The queue's own copies are never refused, and dead letters count apart.
        l.reserve(Held::Queued, &t("a"), 10, None)
            .expect("unchecked");
        l.release(Held::Queued, &t("a"), 10);
        l.reserve(Held::Dead, &t("a"), 10, Some(&q))
            .expect("dead letters apart");
        l.reserve(Held::Queued, &t("a"), 0, None)
            .expect("a copy adds nothing");
        l.record(Held::Queued, 3, &t("a"), 0);
        l.transfer(Held::Queued, &t("a"), 1, 3);
        l.remove(Held::Queued, &t("a"), 1);
        assert_eq!(
            l.used(Held::Queued, &t("a")),
            10,
            "the copy holds the bytes now"
        );
        l.transfer(Held::Queued, &t("a"), 3, 1);
        l.remove(Held::Queued, &t("b"), 1);
        assert_eq!(
            l.used(Held::Queued, &t("a")),
            10,
            "another tenant's sequence"
        );
        l.remove(Held::Queued, &t("a"), 1);
        assert_eq!(l.used(Held::Queued, &t("a")), 0);
        l.reserve(Held::Queued, &t("a"), 10, Some(&q))
            .expect("room again");
    }
}
