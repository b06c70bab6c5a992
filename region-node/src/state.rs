//! Shared state of stateful functions, over the region's store: one key-value namespace
//! per (tenant, resource group), in [`Bucket::State`] under `tenant/group/key`.
//!
//! Owns the key layout and the mapping of compare-and-swap onto the store's conditional
//! writes (a CAS reads the key's value and revision, compares, and writes with
//! [`Expect::Revision`] or [`Expect::Absent`]; a write that lost a race is a CAS that did
//! not swap). Each key is linearizable because the store serialises writes; nothing spans
//! two keys. Every call blocks on the store: the sandbox makes it on the blocking pool.
//! Tenants and groups are labels without `/`, so two namespaces never share a key.
//!
//! Quotas: each namespace holds at most `[quotas] state_keys` keys and `state_bytes` bytes
//! (keys plus values). Its usage is counted once per process, in pages, the first time the
//! namespace is written, then kept as writes commit; writes to one namespace are
//! serialised in this process so the count stays exact (regions sharing a JetStream store
//! each keep their own count, so the bound there is per region). `list` reads one page.

use crate::quota::QuotaConfig;
use crate::store::{Bucket, Expect, Store, StoreError};
use common::exec::StateProvider;
use common::model::{Quota, QuotaBreach, TenantId};
use common::sandbox::{SharedState, StateError, StateHandle, check_key, check_value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Keys read per page when a namespace's usage is first counted.
const COUNT_PAGE: usize = 1024;

/// Keys and bytes a namespace holds; `None` until first counted.
type Usage = Arc<Mutex<Option<(u64, u64)>>>;

/// Gives each (tenant, group) its namespace over one store.
#[derive(Debug, Clone)]
pub struct RegionState {
    store: Store,
    quotas: QuotaConfig,
    /// Usage per namespace prefix; one entry per namespace used since start.
    usage: Arc<Mutex<HashMap<String, Usage>>>,
}

impl RegionState {
    /// Shared state over `store`, with the default quotas.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            quotas: QuotaConfig::default(),
            usage: Arc::default(),
        }
    }

    /// Enforces `quotas` instead of the defaults.
    #[must_use]
    pub fn with_quotas(mut self, quotas: QuotaConfig) -> Self {
        self.quotas = quotas;
        self
    }
}

impl StateProvider for RegionState {
    fn namespace(&self, tenant: &TenantId, group: &str) -> StateHandle {
        let prefix = format!("{tenant}/{group}/");
        let usage = Arc::clone(
            self.usage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(prefix.clone())
                .or_default(),
        );
        Arc::new(Namespace {
            store: self.store.clone(),
            prefix,
            quotas: self.quotas,
            usage,
        })
    }
}

/// One tenant's resource group.
#[derive(Debug)]
struct Namespace {
    store: Store,
    /// `tenant/group/`: every key of the namespace starts with it.
    prefix: String,
    quotas: QuotaConfig,
    /// Keys and bytes held, shared by every handle on this namespace.
    usage: Usage,
}

/// The bytes a stored key and value count for (the key without the namespace prefix).
fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

fn unavailable(e: StoreError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl Namespace {
    fn key(&self, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Locks the namespace's usage, counting it first if this process has not yet.
    fn usage(&self) -> Result<MutexGuard<'_, Option<(u64, u64)>>, StateError> {
        let mut guard = self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            let (mut keys, mut bytes, mut after) = (0u64, 0u64, String::new());
            loop {
                let page = self
                    .store
                    .list_page(Bucket::State, &self.prefix, &after, COUNT_PAGE)
                    .map_err(unavailable)?;
                for (k, e) in &page {
                    keys += 1;
                    bytes += size(&k[self.prefix.len()..], &e.value);
                }
                match page.last() {
                    Some((k, _)) if page.len() == COUNT_PAGE => after = k.clone(),
                    _ => break,
                }
            }
            *guard = Some((keys, bytes));
        }
        Ok(guard)
    }

    /// Writes `key` (the user's key) to `value` under `expect` if the namespace stays
    /// within its quotas; `old` is the value it replaces. Call with the usage locked.
    fn write(
        &self,
        usage: &mut Option<(u64, u64)>,
        key: &str,
        old: Option<&[u8]>,
        value: &[u8],
        expect: Expect,
    ) -> Result<(), StoreError> {
        let (keys, bytes) = usage.unwrap_or_default();
        let keys_after = keys + u64::from(old.is_none());
        let bytes_after =
            (bytes + size(key, value)).saturating_sub(old.map_or(0, |o| size(key, o)));
        let full = format!("{}{key}", self.prefix);
        self.store.put(Bucket::State, &full, value, expect)?;
        *usage = Some((keys_after, bytes_after));
        Ok(())
    }

    /// Refuses a write of `value` over `old` at `key` past the quotas.
    fn check_quota(
        &self,
        usage: Option<(u64, u64)>,
        key: &str,
        old: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), StateError> {
        let (keys, bytes) = usage.unwrap_or_default();
        let breach = |quota, limit| StateError::QuotaExceeded(QuotaBreach { quota, limit });
        if old.is_none() && keys >= self.quotas.state_keys {
            return Err(breach(Quota::StateKeys, self.quotas.state_keys));
        }
        let after = (bytes + size(key, value)).saturating_sub(old.map_or(0, |o| size(key, o)));
        if after > self.quotas.state_bytes && after > bytes {
            return Err(breach(Quota::StateBytes, self.quotas.state_bytes));
        }
        Ok(())
    }
}

impl SharedState for Namespace {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.key(key)?;
        Ok(self
            .store
            .get(Bucket::State, &key)
            .map_err(unavailable)?
            .map(|e| e.value))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        check_value(value)?;
        let full = self.key(key)?;
        let mut usage = self.usage()?;
        let current = self.store.get(Bucket::State, &full).map_err(unavailable)?;
        let old = current.as_ref().map(|e| e.value.as_slice());
        self.check_quota(*usage, key, old, value)?;
        // Conditional on what was read, so the usage delta is exact even against another
        // region writing the same key (a lost race is this write not happening: retry).
        let expect = current
            .as_ref()
            .map_or(Expect::Absent, |e| Expect::Revision(e.revision));
        self.write(&mut usage, key, old, value, expect)
            .map_err(unavailable)
    }

    fn delete(&self, key: &str) -> Result<bool, StateError> {
        let full = self.key(key)?;
        let mut usage = self.usage()?;
        let Some(current) = self.store.get(Bucket::State, &full).map_err(unavailable)? else {
            return Ok(false);
        };
        let existed = self
            .store
            .delete(Bucket::State, &full, Expect::Revision(current.revision))
            .map_err(unavailable)?;
        if existed && let Some((keys, bytes)) = usage.as_mut() {
            *keys = keys.saturating_sub(1);
            *bytes = bytes.saturating_sub(size(key, &current.value));
        }
        Ok(existed)
    }

    fn cas(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, StateError> {
        check_value(new)?;
        let full = self.key(key)?;
        let mut usage = self.usage()?;
        let current = self.store.get(Bucket::State, &full).map_err(unavailable)?;
        let expect = match (expected, &current) {
            (None, None) => Expect::Absent,
            (Some(want), Some(entry)) if entry.value == want => Expect::Revision(entry.revision),
            _ => return Ok(false),
        };
        let old = current.as_ref().map(|e| e.value.as_slice());
        self.check_quota(*usage, key, old, new)?;
        match self.write(&mut usage, key, old, new, expect) {
            Ok(()) => Ok(true),
            // Another write got in between the read and this one: the value the caller
            // expected is gone, so this CAS did not swap.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        let full = format!("{}{prefix}", self.prefix);
        let entries = self
            .store
            .list_page(Bucket::State, &full, "", limit)
            .map_err(unavailable)?;
        Ok(entries
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, RegionState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("store");
        (dir, RegionState::new(store))
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value_or_absence() {
        let (_d, s) = state();
        let ns = s.namespace(&TenantId::new("acme").expect("tenant"), "carts");
        assert!(ns.cas("n", None, b"1").expect("cas"));
        assert!(
            !ns.cas("n", None, b"2").expect("cas"),
            "present: not absent"
        );
        assert!(!ns.cas("n", Some(b"0"), b"2").expect("cas"));
        assert!(ns.cas("n", Some(b"1"), b"2").expect("cas"));
        assert_eq!(ns.get("n").expect("get"), Some(b"2".to_vec()));
        assert!(ns.delete("n").expect("delete"));
        assert!(!ns.delete("n").expect("delete"));
        assert_eq!(ns.get("n").expect("get"), None);
    }

    #[test]
    fn namespaces_of_tenants_and_groups_are_disjoint() {
        let (_d, s) = state();
        let a = s.namespace(&TenantId::new("acme").expect("tenant"), "g");
        let b = s.namespace(&TenantId::new("other").expect("tenant"), "g");
        let c = s.namespace(&TenantId::new("acme").expect("tenant"), "h");
        a.put("k", b"a").expect("put");
        assert_eq!(b.get("k").expect("get"), None);
        assert_eq!(c.get("k").expect("get"), None);
        b.put("k2", b"b").expect("put");
        assert_eq!(a.list("", 10).expect("list"), vec!["k".to_owned()]);
    }

    #[test]
    fn key_and_byte_quotas_refuse_writes_and_deletes_free_room() {
        let (_d, s) = state();
        let s = s.with_quotas(QuotaConfig {
            state_keys: 2,
            state_bytes: 10,
            ..QuotaConfig::default()
        });
        let t = TenantId::new("acme").expect("tenant");
        let ns = s.namespace(&t, "g");
        ns.put("a", b"1").expect("put");
        ns.put("b", b"1").expect("put");
        let keys = |e| matches!(e, Err(StateError::QuotaExceeded(b)) if b.quota == Quota::StateKeys && b.limit == 2);
        assert!(keys(ns.put("c", b"1")), "a third key is refused");
        assert!(keys(ns.cas("c", None, b"1").map(drop)));
        assert_eq!(ns.get("c").expect("get"), None, "nothing written");
        ns.put("a", b"12345")
            .expect("overwriting a key adds no key");
        let bytes =
            |e| matches!(e, Err(StateError::QuotaExceeded(b)) if b.quota == Quota::StateBytes);
        assert!(bytes(ns.put("b", b"1234567")), "8 + 2 + 6 bytes is over 10");
        assert!(ns.delete("a").expect("delete"));
        ns.put("c", b"1").expect("room again");
        // Another tenant's group is counted apart.
        let other = s.namespace(&TenantId::new("other").expect("tenant"), "g");
        other.put("a", b"1").expect("put");
        other.put("b", b"1").expect("put");
        // A new handle on the same namespace shares the count.
        assert!(keys(s.namespace(&t, "g").put("d", b"1")));
    }

    #[test]
    fn list_reads_one_page() {
        let (_d, s) = state();
        let ns = s.namespace(&TenantId::new("acme").expect("tenant"), "g");
        for k in ["a1", "a2", "a3", "b"] {
            ns.put(k, b"v").expect("put");
        }
        assert_eq!(ns.list("a", 2).expect("list"), ["a1", "a2"]);
        assert_eq!(ns.list("", 10).expect("list").len(), 4);
    }

    #[test]
    fn bad_keys_and_values_change_nothing() {
        let (_d, s) = state();
        let ns = s.namespace(&TenantId::new("acme").expect("tenant"), "g");
        assert!(matches!(ns.put("", b"v"), Err(StateError::BadKey(_))));
        let big = vec![0u8; common::sandbox::MAX_VALUE_BYTES + 1];
        assert!(matches!(
            ns.put("k", &big),
            Err(StateError::ValueTooLarge(_))
        ));
        assert!(ns.list("", 10).expect("list").is_empty());
    }
}
