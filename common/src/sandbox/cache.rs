//! A bounded, thread-safe LRU of compiled modules keyed by digest.
//!
//! Owns only the bookkeeping of which modules stay compiled; never compiles, never
//! performs I/O. The bound is the total size of the original wasm bytes
//! ([`CompiledModule::size_bytes`]), a stable proxy for the compiled code's footprint.

use super::CompiledModule;
use crate::model::ArtifactDigest;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Compiled modules by digest, at most `max_bytes` of wasm in total.
///
/// When an insert takes the total over the bound, the least recently used modules (by
/// [`ModuleCache::get`] or [`ModuleCache::insert`]) are evicted until it fits again; a
/// module bigger than the whole bound is therefore not kept at all.
#[derive(Debug)]
pub struct ModuleCache {
    max_bytes: usize,
    inner: Mutex<Lru>,
    /// Counts insertions, for whoever waits for a module to be prepared.
    inserted: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Lru {
    /// Each module with the stamp of its last use.
    entries: HashMap<ArtifactDigest, (CompiledModule, u64)>,
    /// Last-use stamp to digest; the first entry is the least recently used.
    order: BTreeMap<u64, ArtifactDigest>,
    /// The next stamp to hand out; strictly increasing.
    clock: u64,
    /// Sum of `size_bytes` over `entries`.
    bytes: usize,
}

impl Lru {
    fn stamp(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, d: &ArtifactDigest) -> Option<CompiledModule> {
        let (module, stamp) = self.entries.remove(d)?;
        self.order.remove(&stamp);
        self.bytes -= module.size_bytes();
        Some(module)
    }
}

impl ModuleCache {
    /// An empty cache holding at most `max_bytes` of wasm.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Lru::default()),
            inserted: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time a module is inserted: wait on it (and then look the module up)
    /// instead of polling for one to be prepared.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inserted.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Every update below is completed before the guard drops, so a panic elsewhere
        // while holding the lock cannot leave the maps inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bound given to [`ModuleCache::new`], in bytes of wasm.
    pub fn capacity_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The module with digest `d`, marking it most recently used.
    pub fn get(&self, d: &ArtifactDigest) -> Option<CompiledModule> {
        let mut lru = self.lock();
        let stamp = lru.stamp();
        let (module, old) = lru.entries.get_mut(d)?;
        let old = std::mem::replace(old, stamp);
        let module = module.clone();
        lru.order.remove(&old);
        lru.order.insert(stamp, *d);
        Some(module)
    }

    /// Adds `m` (replacing a module with the same digest) as most recently used, then
    /// evicts least recently used modules until the total fits the bound.
    pub fn insert(&self, m: CompiledModule) {
        let mut lru = self.lock();
        let digest = m.digest();
        lru.remove(&digest);
        let stamp = lru.stamp();
        lru.bytes += m.size_bytes();
        lru.entries.insert(digest, (m, stamp));
        lru.order.insert(stamp, digest);
        while lru.bytes > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some((module, _)) = lru.entries.remove(&oldest) {
                lru.bytes -= module.size_bytes();
            }
        }
        drop(lru);
        self.inserted.send_modify(|n| *n += 1);
    }

    /// Drops the module with digest `d`, if cached.
    pub fn remove(&self, d: &ArtifactDigest) {
        self.lock().remove(d);
    }

    /// How many modules are cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no module is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total wasm bytes of the cached modules; never more than the bound after an insert.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{Sandbox, SandboxConfig};

    /// A valid module of a distinct size for each `n`, via a data segment of `n` bytes.
    fn module(sandbox: &Sandbox, n: usize) -> CompiledModule {
        let wat = format!(
            r#"(module (memory 1) (data (i32.const 0) "{}"))"#,
            "x".repeat(n)
        );
        let wasm = wat::parse_str(&wat).expect("test module is valid WAT");
        sandbox.compile(&wasm).expect("test module compiles")
    }

    #[test]
    fn module_cache_evicts_least_recently_used_by_bytes() {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let a = module(&sandbox, 100);
        let b = module(&sandbox, 200);
        let c = module(&sandbox, 300);
        let bound = a.size_bytes() + b.size_bytes() + c.size_bytes() - 1;
        let cache = ModuleCache::new(bound);
        cache.insert(a.clone());
        cache.insert(b.clone());
        // Touch `a` so that `b` is now the least recently used.
        assert!(cache.get(&a.digest()).is_some());
        cache.insert(c.clone());
        assert!(
            cache.get(&b.digest()).is_none(),
            "b was least recently used"
        );
        assert!(cache.get(&a.digest()).is_some());
        assert!(cache.get(&c.digest()).is_some());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), a.size_bytes() + c.size_bytes());
        assert!(cache.bytes() <= bound);
    }

    #[test]
    fn module_cache_reinsert_and_remove_keep_byte_count() {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let a = module(&sandbox, 10);
        let cache = ModuleCache::new(1 << 20);
        cache.insert(a.clone());
        cache.insert(a.clone());
        assert_eq!((cache.len(), cache.bytes()), (1, a.size_bytes()));
        cache.remove(&a.digest());
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn module_cache_does_not_keep_a_module_bigger_than_its_bound() {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
        let a = module(&sandbox, 10);
        let cache = ModuleCache::new(a.size_bytes() - 1);
        cache.insert(a.clone());
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
}
