//! A tenant's share of a pool of execution slots: the rule that keeps one tenant from
//! holding every slot of a region (or of its on-demand fleet), so another tenant is always
//! served.
//!
//! Sans-IO: counts only. The node takes a share before it waits for a slot and returns it
//! when the invocation ends; a tenant at its share is refused at once (it never queues
//! behind its own work). Never allocates beyond one entry per tenant holding a share.

use super::hold::HoldTime;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// The default share of a pool one tenant may hold, in percent.
pub const DEFAULT_TENANT_SHARE_PERCENT: u8 = 50;

/// Why [`SlotShare::take`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the tenant already holds {cap} of the pool's {slots} execution slots (its share)")]
pub struct ShareExceeded {
    /// Most slots one tenant may hold.
    pub cap: usize,
    /// The pool's slots.
    pub slots: usize,
    /// When one of the tenant's slots is likely to free (from how long slots are held).
    pub retry_after: std::time::Duration,
}

/// Why a share setting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant_slot_share_percent must be 1..=99 (got {0}): 100 would let one tenant hold every slot"
)]
pub struct ShareConfigError(pub u8);

/// Checks a share in percent.
///
/// # Errors
/// [`ShareConfigError`] outside 1..=99.
pub fn validate_percent(percent: u8) -> Result<(), ShareConfigError> {
    if (1..=99).contains(&percent) {
        Ok(())
    } else {
        Err(ShareConfigError(percent))
    }
}

/// The most slots of a pool of `slots` one tenant may hold with `percent`: at least one,
/// and, when the pool has more than one slot, always at least one fewer than the pool.
pub fn tenant_cap(slots: usize, percent: u8) -> usize {
    let slots = slots.max(1);
    let share = slots.saturating_mul(usize::from(percent.min(100))) / 100;
    share.clamp(1, slots.saturating_sub(1).max(1))
}

/// Shares held per tenant in one pool.
#[derive(Debug, Clone)]
pub struct SlotShare<K> {
    slots: usize,
    cap: usize,
    held: HashMap<K, usize>,
    /// How long shares are held, for the refusal's `retry_after`.
    hold: HoldTime,
}

impl<K: Eq + Hash + Clone> SlotShare<K> {
    /// Shares of a pool of `slots`, each tenant holding at most `percent` of it (see
    /// [`tenant_cap`]).
    pub fn new(slots: usize, percent: u8) -> Self {
        Self {
            slots: slots.max(1),
            cap: tenant_cap(slots, percent),
            held: HashMap::new(),
            hold: HoldTime::default(),
        }
    }

    /// Most slots one tenant may hold.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Shares `tenant` holds now.
    pub fn held(&self, tenant: &K) -> usize {
        self.held.get(tenant).copied().unwrap_or(0)
    }

    /// Takes one share for `tenant`.
    ///
    /// # Errors
    /// [`ShareExceeded`] when `tenant` already holds its cap; nothing changes.
    pub fn take(&mut self, tenant: &K) -> Result<(), ShareExceeded> {
        let held = self.held.entry(tenant.clone()).or_insert(0);
        if *held >= self.cap {
            return Err(ShareExceeded {
                cap: self.cap,
                slots: self.slots,
                retry_after: self
                    .hold
                    .next_free(u32::try_from(self.cap).unwrap_or(u32::MAX)),
            });
        }
        *held += 1;
        Ok(())
    }

    /// Returns one share of `tenant`, held for `held_for` (nothing happens if it holds
    /// none).
    pub fn release(&mut self, tenant: &K, held_for: Duration) {
        if let Some(held) = self.held.get_mut(tenant) {
            self.hold.record(held_for);
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.held.remove(tenant);
            }
        }
    }

    /// Tenants holding at least one share.
    pub fn tenants(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_another_tenant_a_slot() {
        assert_eq!(tenant_cap(64, 50), 32);
        assert_eq!(tenant_cap(8, 50), 4);
        assert_eq!(tenant_cap(2, 99), 1);
        assert_eq!(tenant_cap(1, 50), 1, "a one-slot pool still serves someone");
        assert_eq!(tenant_cap(3, 10), 1, "never zero");
        assert_eq!(tenant_cap(10, 100), 9, "never the whole pool");
    }

    #[test]
    fn a_tenant_at_its_share_is_refused_and_another_is_served() {
        let mut s = SlotShare::new(4, 50);
        assert_eq!(s.take(&"a"), Ok(()));
        assert_eq!(s.take(&"a"), Ok(()));
        assert_eq!(
            s.take(&"a").map_err(|e| (e.cap, e.slots)),
            Err((2, 4)),
            "refused at the cap"
        );
        assert_eq!(s.held(&"a"), 2, "a refusal changes nothing");
        assert_eq!(s.take(&"b"), Ok(()));
        s.release(&"a", Duration::from_millis(400));
        assert_eq!(s.take(&"a"), Ok(()));
    }

    #[test]
    fn a_refusal_says_when_one_of_the_tenants_slots_frees() {
        let mut s = SlotShare::new(4, 50);
        s.take(&"a").expect("share");
        s.take(&"a").expect("share");
        assert_eq!(
            s.take(&"a").map_err(|e| e.retry_after),
            Err(super::super::hold::UNOBSERVED_WAIT),
            "no hold seen yet"
        );
        s.release(&"a", Duration::from_millis(600));
        s.take(&"a").expect("share");
        // Two slots held, each for about 600 ms: the first frees in about 300 ms.
        assert_eq!(
            s.take(&"a").map_err(|e| e.retry_after),
            Err(Duration::from_millis(300))
        );
    }

    #[test]
    fn released_tenants_are_forgotten() {
        let mut s = SlotShare::new(4, 50);
        s.take(&"a").expect("share");
        s.release(&"a", Duration::from_millis(400));
        s.release(&"a", Duration::from_millis(400));
        s.release(&"never", Duration::ZERO);
        assert_eq!((s.tenants(), s.held(&"a")), (0, 0));
    }

    #[test]
    fn only_1_to_99_percent_is_accepted() {
        assert!(validate_percent(0).is_err());
        assert!(validate_percent(100).is_err());
        assert!(validate_percent(1).is_ok() && validate_percent(99).is_ok());
    }
}
