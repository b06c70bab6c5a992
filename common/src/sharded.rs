//! State split across a fixed number of independently locked shards, so the per-request
//! path never queues every worker behind one global mutex.
//!
//! Two ways to pick a shard, by what the state is:
//! - [`Sharded::by_key`]: state that belongs to one key (a tenant's in-flight count, a
//!   function's outcome tally): every update of that key meets in one shard, and two
//!   requests of different keys rarely share a lock;
//! - [`Sharded::local`]: counters that are only ever summed (a node's request window):
//!   each thread updates the shard it was given at its first use, so two workers never
//!   contend, and a reader merges the shards ([`Sharded::each`]).
//!
//! Read-mostly tables beside them (a node's token table, module cache, warm-pool table)
//! are an `RwLock` taken with [`read`] and [`write`].
//!
//! Shards are cache-line aligned, so two workers updating neighbouring shards do not
//! bounce one line between their cores. A reader locks one shard at a time, never two: no
//! lock order to get wrong, and a report never stalls every writer at once.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Shards per [`Sharded`]: a power of two, several per core of the machines Strata runs on,
/// so that workers rarely meet in one.
pub const SHARDS: usize = 16;

/// One shard, alone on its cache line(s).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T>(Mutex<T>);

/// `T` split into [`SHARDS`] independently locked parts. See the module docs.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Shard<T>]>,
    hasher: RandomState,
}

/// Hands each thread its shard for [`Sharded::local`], round robin in the order threads
/// first ask.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

fn thread_shard() -> usize {
    THREAD_SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(Some(i));
            i
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Callers' critical sections are counter and map updates that complete before the
    // guard drops; a panic elsewhere cannot leave a shard half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The read side of `l`. Like the shards, the tables behind these locks are updated
/// completely before a guard drops, so a panic elsewhere leaves them usable.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// The write side of `l` (see [`read`]).
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Sharded<T> {
    /// [`SHARDS`] shards, each made by `make` (given its index).
    pub fn new(mut make: impl FnMut(usize) -> T) -> Self {
        Self {
            shards: (0..SHARDS).map(|i| Shard(Mutex::new(make(i)))).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The index of the shard `key` lives in (stable for this value's lifetime).
    pub fn index_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        // The low bits of a SipHash are as good as any; SHARDS is a power of two.
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    /// The shard `key` lives in, locked.
    pub fn by_key<K: Hash + ?Sized>(&self, key: &K) -> MutexGuard<'_, T> {
        self.at(self.index_of(key))
    }

    /// The calling thread's shard, locked.
    pub fn local(&self) -> MutexGuard<'_, T> {
        self.at(thread_shard())
    }

    /// Shard `i` (modulo [`SHARDS`]), locked.
    pub fn at(&self, i: usize) -> MutexGuard<'_, T> {
        lock(&self.shards[i & (SHARDS - 1)].0)
    }

    /// Calls `f` with each shard in turn, each locked only for its own call.
    pub fn each(&self, mut f: impl FnMut(&mut T)) {
        for s in &self.shards {
            f(&mut lock(&s.0));
        }
    }
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self::new(|_| T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_key_always_meets_its_own_shard() {
        let s: Sharded<u64> = Sharded::default();
        for _ in 0..100 {
            *s.by_key("tenant-a") += 1;
        }
        assert_eq!(*s.by_key("tenant-a"), 100);
        let mut total = 0;
        s.each(|n| total += *n);
        assert_eq!(total, 100);
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let s: Sharded<()> = Sharded::default();
        let used: std::collections::HashSet<usize> =
            (0..1000).map(|i| s.index_of(&format!("f{i}"))).collect();
        assert_eq!(used.len(), SHARDS, "1000 keys leave a shard unused");
    }

    #[test]
    fn threads_count_in_their_own_shards_and_the_sum_is_exact() {
        let s: Arc<Sharded<u64>> = Arc::new(Sharded::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *s.local() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        let (mut total, mut nonzero) = (0, 0);
        s.each(|n| {
            total += *n;
            nonzero += usize::from(*n > 0);
        });
        assert_eq!(total, 80_000);
        assert!(nonzero > 1, "eight threads all counted in one shard");
    }
}
