//! A bounded, thread-safe LRU of compiled modules keyed by digest.
//!
//! Owns only the bookkeeping of which modules stay compiled; never compiles, never
//! performs I/O. The bound is the total size of the original wasm bytes
//! ([`CompiledModule::size_bytes`]), a stable proxy for the compiled code's footprint.

use super::CompiledModule;
use crate::model::ArtifactDigest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Compiled modules by digest, at most `max_bytes` of wasm in total.
///
/// When an insert takes the total over the bound, the least recently used modules (by
/// [`ModuleCache::get`] or [`ModuleCache::insert`]) are evicted until it fits again; a
/// module bigger than the whole bound is therefore not kept at all.
///
/// A lookup, on every invocation, takes only the read side of the lock and marks the
/// module used with an atomic stamp, so concurrent requests never wait for each other
/// here; the recency order is only worked out when an insert has to evict.
#[derive(Debug)]
pub struct ModuleCache {
    max_bytes: usize,
    inner: RwLock<Lru>,
    /// The next last-use stamp; strictly increasing.
    clock: AtomicU64,
    /// Counts insertions, for whoever waits for a module to be prepared.
    inserted: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct Cached {
    module: CompiledModule,
    /// The stamp of its last use.
    used: AtomicU64,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<ArtifactDigest, Cached>,
    /// Sum of `size_bytes` over `entries`.
    bytes: usize,
}

impl Lru {
    fn remove(&mut self, d: &ArtifactDigest) -> Option<CompiledModule> {
        let cached = self.entries.remove(d)?;
        self.bytes -= cached.module.size_bytes();
        Some(cached.module)
    }
}

impl ModuleCache {
    /// An empty cache holding at most `max_bytes` of wasm.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: RwLock::new(Lru::default()),
            clock: AtomicU64::new(0),
            inserted: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time a module is inserted: wait on it (and then look the module up)
    /// instead of polling for one to be prepared.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inserted.subscribe()
    }

    // Every update below is completed before the guard drops, so a panic elsewhere while
    // holding the lock cannot leave the map and the byte count inconsistent.
    fn read(&self) -> RwLockReadGuard<'_, Lru> {
        crate::sharded::read(&self.inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Lru> {
        crate::sharded::write(&self.inner)
    }

    fn stamp(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The bound given to [`ModuleCache::new`], in bytes of wasm.
    pub fn capacity_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The module with digest `d`, marking it most recently used.
    pub fn get(&self, d: &ArtifactDigest) -> Option<CompiledModule> {
        let lru = self.read();
        let cached = lru.entries.get(d)?;
        cached.used.store(self.stamp(), Ordering::Relaxed);
        Some(cached.module.clone())
    }

    /// Adds `m` (replacing a module with the same digest) as most recently used, then
    /// evicts least recently used modules until the total fits the bound.
    pub fn insert(&self, m: CompiledModule) {
        let mut lru = self.write();
        let digest = m.digest();
        lru.remove(&digest);
        lru.bytes += m.size_bytes();
        let used = AtomicU64::new(self.stamp());
        lru.entries.insert(digest, Cached { module: m, used });
        if lru.bytes > self.max_bytes {
            // Oldest first; the stamps cannot move while the write lock is held.
            let mut by_age: Vec<(u64, ArtifactDigest)> = lru
                .entries
                .iter()
                .map(|(d, c)| (c.used.load(Ordering::Relaxed), *d))
                .collect();
            by_age.sort_unstable();
            for (_, oldest) in by_age {
                if lru.bytes <= self.max_bytes {
                    break;
                }
                lru.remove(&oldest);
            }
        }
        drop(lru);
        self.inserted.send_modify(|n| *n += 1);
    }

    /// Drops the module with digest `d`, if cached.
    pub fn remove(&self, d: &ArtifactDigest) {
        self.write().remove(d);
    }

    /// How many modules are cached.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no module is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total wasm bytes of the cached modules; never more than the bound after an insert.
    pub fn bytes(&self) -> usize {
        self.read().bytes
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
