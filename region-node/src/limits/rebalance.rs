//! Rebalancing tenants' limits by demand among regions sharing one store (`[limits]
//! rebalance_ms`): every period each region records the peak concurrency each tenant
//! wanted here and moves its share towards its part of the demand, through one
//! compare-and-set record per tenant in [`Bucket::Shares`]
//! ([`common::policy::split::Allocation`] decides the numbers).
//!
//! Order keeps the invariant (the regions' limits in force add up to at most the
//! tenant's limit): a lower share applies here before it is written, a higher one only
//! after its write succeeded. A write that loses a race changes nothing and is retried
//! next period, from the record that won.
//!
//! Bounds: one record per tenant that had books here or has a record; each period reads
//! them all and writes only those whose record changes.

use super::{Limits, TenantLimits};
use crate::store::{Bucket, Entry, Expect, Store, StoreError};
use common::model::TenantId;
use common::policy::split::Allocation;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

fn decode(entry: &Entry) -> Option<Allocation> {
    serde_json::from_slice(&entry.value).ok()
}

impl Limits {
    /// Whether this region rebalances its split with the others.
    pub(super) fn rebalancing(&self) -> bool {
        self.config.rebalance_ms > 0 && self.split.regions() > 1
    }

    /// Applies the stored shares of every tenant. Blocking.
    pub(super) fn load_shares(&self, store: &Store) -> Result<(), StoreError> {
        for (key, entry) in store.list(Bucket::Shares, "")? {
            let (Ok(tenant), Some(record)) = (TenantId::new(key), decode(&entry)) else {
                continue;
            };
            if record.total == self.settings(&tenant).hard_max {
                self.set_share(&tenant, record.share(self.split.index()));
            }
        }
        Ok(())
    }

    /// This region's share of `tenant` now: the rebalanced one, or the static split.
    fn share_in_force(&self, tenant: &TenantId, settings: TenantLimits) -> u32 {
        self.lock()
            .shares
            .get(tenant)
            .copied()
            .unwrap_or_else(|| self.split.share(settings.hard_max))
    }

    fn set_share(&self, tenant: &TenantId, share: u32) {
        let settings = self.settings(tenant);
        let mut books = self.lock();
        books.shares.insert(tenant.clone(), share);
        if let Some(b) = books.budgets.get_mut(tenant) {
            b.limit()
                .reconfigure(settings.policy(&self.split, Some(share)));
        }
    }

    /// One period: records this region's demand and moves its share of every tenant
    /// towards its part of the regions' demand. Blocking.
    ///
    /// # Errors
    /// [`StoreError`] when the records cannot be listed; a tenant whose write fails is
    /// skipped (warned) and retried next period.
    pub fn rebalance_once(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut seen: BTreeMap<TenantId, (u32, u32)> = self
            .lock()
            .budgets
            .iter_mut()
            .map(|(t, b)| (t.clone(), (b.take_demand(), b.charged())))
            .collect();
        let mut records = BTreeMap::new();
        for (key, entry) in store.list(Bucket::Shares, "")? {
            if let Ok(tenant) = TenantId::new(key) {
                seen.entry(tenant.clone()).or_insert((0, 0));
                records.insert(tenant, entry);
            }
        }
        for (tenant, (demand, charged)) in seen {
            let entry = records.remove(&tenant);
            if let Err(e) = self.rebalance_tenant(store, &tenant, entry, demand, charged) {
                warn!(%tenant, error = %e, "rebalancing a tenant's limit failed; next period");
            }
        }
        Ok(())
    }

    fn rebalance_tenant(
        &self,
        store: &Store,
        tenant: &TenantId,
        entry: Option<Entry>,
        demand: u32,
        charged: u32,
    ) -> Result<(), StoreError> {
        // One step with override changes: the total read here is the one applied.
        let _writing = self.writing();
        let settings = self.settings(tenant);
        let stored = entry.as_ref().and_then(decode);
        let next = Allocation::rebalanced(
            stored.as_ref(),
            self.split,
            settings.hard_max,
            demand,
            charged,
        );
        let share = next.share(self.split.index());
        if stored.as_ref() == Some(&next) {
            // Nothing new to say; follow the record (another region's write, a restart).
            self.set_share(tenant, share);
            return Ok(());
        }
        let lower = share < self.share_in_force(tenant, settings);
        if lower {
            self.set_share(tenant, share);
        }
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| StoreError::Backend(format!("encoding shares: {e}")))?;
        let expect = entry.map_or(Expect::Absent, |e| Expect::Revision(e.revision));
        match store.put(Bucket::Shares, tenant.as_str(), &bytes, expect) {
            Ok(_) => {
                if !lower {
                    self.set_share(tenant, share);
                }
                Ok(())
            }
            // Another region wrote first: its record is read next period.
            Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Rebalances every `rebalance_ms` until the task is aborted; returns at once when
    /// rebalancing is off (the static split).
    pub async fn rebalance(self: Arc<Self>) {
        if !self.rebalancing() || self.store.is_none() {
            return;
        }
        let mut period = tokio::time::interval(Duration::from_millis(self.config.rebalance_ms));
        period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            period.tick().await;
            let limits = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || limits.rebalance_once()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "rebalancing tenant limits failed"),
                Err(e) => warn!(error = %e, "rebalancing tenant limits stopped"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::LimitsConfig;
    use super::*;

    fn region(store: &Store, index: u32) -> Arc<Limits> {
        let config = LimitsConfig {
            tenant: TenantLimits {
                hard_max: 4,
                burst: 4,
                step: 1,
                ..TenantLimits::default()
            },
            regions: 2,
            region_index: index,
            rebalance_ms: 100,
            ..LimitsConfig::default()
        };
        Arc::new(Limits::open(config, store.clone()).expect("opens"))
    }

    fn admitted(l: &Arc<Limits>, tenant: &TenantId, n: usize) -> Vec<super::super::Permit> {
        (0..n)
            .map_while(|_| l.admit(tenant, "f", None).ok())
            .collect()
    }

    #[test]
    fn the_busy_region_grows_only_into_what_the_quiet_one_gave_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("opens");
        let (a, b) = (region(&store, 0), region(&store, 1));
        let t = TenantId::new("acme").expect("tenant");
        let at_a = admitted(&a, &t, 3);
        assert_eq!(at_a.len(), 2, "the static half");
        a.rebalance_once().expect("a");
        assert_eq!(admitted(&a, &t, 1).len(), 0, "B still holds its half");
        b.rebalance_once().expect("b gives up one slot");
        a.rebalance_once().expect("a takes it");
        let more = admitted(&a, &t, 2);
        assert_eq!(more.len(), 1, "A's share is 3 of 4");
        let at_b = admitted(&b, &t, 2);
        assert_eq!(at_b.len(), 1, "B keeps one slot: 4 across both");
        // The demand moves to B; A gives back only what it stops running.
        drop(more);
        drop(at_a);
        let wants = admitted(&b, &t, 1);
        assert!(wants.is_empty());
        for _ in 0..3 {
            b.rebalance_once().expect("b");
            a.rebalance_once().expect("a");
        }
        b.rebalance_once().expect("b");
        assert_eq!(
            admitted(&b, &t, 4).len(),
            2,
            "B grew to 3 of 4 (one running)"
        );
        assert_eq!(admitted(&a, &t, 2).len(), 1, "A keeps its one slot");
    }

    #[test]
    fn a_restarted_region_starts_from_the_stored_shares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("opens");
        let (a, b) = (region(&store, 0), region(&store, 1));
        let t = TenantId::new("acme").expect("tenant");
        let _busy = admitted(&a, &t, 3);
        for l in [&a, &b, &a] {
            l.rebalance_once().expect("rebalances");
        }
        drop(b);
        let b = region(&store, 1);
        assert_eq!(
            admitted(&b, &t, 2).len(),
            1,
            "not its static half: A holds 3"
        );
    }
}
