//! Shared state of stateful functions, over the region's store: one key-value namespace
//! per (tenant, resource group), in [`Bucket::State`] under `tenant/group/key`.
//!
//! Owns the key layout and the mapping of compare-and-swap onto the store's conditional
//! writes (a CAS reads the key's value and revision, compares, and writes with
//! [`Expect::Revision`] or [`Expect::Absent`]; a write that lost a race is a CAS that did
//! not swap). Each key is linearizable because the store serialises writes; nothing spans
//! two keys. Every call blocks on the store: guests call it from their blocking thread.
//! Tenants and groups are labels without `/`, so two namespaces never share a key.

use crate::store::{Bucket, Expect, Store, StoreError};
use common::exec::StateProvider;
use common::model::TenantId;
use common::sandbox::{SharedState, StateError, StateHandle, check_key, check_value};
use std::sync::Arc;

/// Gives each (tenant, group) its namespace over one store.
#[derive(Debug, Clone)]
pub struct RegionState {
    store: Store,
}

impl RegionState {
    /// Shared state over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl StateProvider for RegionState {
    fn namespace(&self, tenant: &TenantId, group: &str) -> StateHandle {
        Arc::new(Namespace {
            store: self.store.clone(),
            prefix: format!("{tenant}/{group}/"),
        })
    }
}

/// One tenant's resource group.
#[derive(Debug)]
struct Namespace {
    store: Store,
    /// `tenant/group/`: every key of the namespace starts with it.
    prefix: String,
}

fn unavailable(e: StoreError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl Namespace {
    fn key(&self, key: &str) -> Result<String, StateError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
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
        let key = self.key(key)?;
        self.store
            .put(Bucket::State, &key, value, Expect::Any)
            .map(drop)
            .map_err(unavailable)
    }

    fn delete(&self, key: &str) -> Result<bool, StateError> {
        let key = self.key(key)?;
        self.store
            .delete(Bucket::State, &key, Expect::Any)
            .map_err(unavailable)
    }

    fn cas(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, StateError> {
        check_value(new)?;
        let key = self.key(key)?;
        let current = self.store.get(Bucket::State, &key).map_err(unavailable)?;
        let expect = match (expected, current) {
            (None, None) => Expect::Absent,
            (Some(want), Some(entry)) if entry.value == want => Expect::Revision(entry.revision),
            _ => return Ok(false),
        };
        match self.store.put(Bucket::State, &key, new, expect) {
            Ok(_) => Ok(true),
            // Another write got in between the read and this one: the value the caller
            // expected is gone, so this CAS did not swap.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError> {
        let full = format!("{}{prefix}", self.prefix);
        let entries = self.store.list(Bucket::State, &full).map_err(unavailable)?;
        Ok(entries
            .into_iter()
            .take(limit)
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
