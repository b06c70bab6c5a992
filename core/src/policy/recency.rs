//! A table bounded by its number of entries that, when full and a new key arrives, drops
//! the entry least recently seen (ties by key, so the choice is deterministic): the bound
//! of the per-function tables in [`super::trending`], [`super::warm`] and
//! [`super::keepalive`].
//!
//! The table owns each entry's `seen` instant; callers change it only through
//! [`RecencyTable::touch`], so the eviction index cannot drift from it. The index is lazy:
//! a min-heap of `(seen then, key)` candidates holding, for every present key, at least
//! one candidate no later than its `seen`. A touch only updates the entry (O(1), the hot
//! path: one per invocation in the warm pools); eviction pops candidates until one is
//! current, pushing a stale one back at its key's present `seen`. The first current
//! candidate popped is the least recent entry: every other key has a candidate at or
//! after it in `(instant, key)` order, and its `seen` is no earlier than that candidate.
//! Each touch makes at most one candidate stale and the heap is rebuilt when it holds
//! more than about twice the entries, so eviction costs amortised O(log n) instead of the
//! O(n) scan it replaces (measured in docs/performance.md, "Simulated vs live agreement").
//!
//! Never reads a clock: every touch carries `now`. A `now` earlier than an entry's `seen`
//! keeps the later instant.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::time::Instant;

/// Candidates beyond twice the entries tolerated before the heap is rebuilt.
const SLACK: usize = 32;

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    seen: Instant,
}

/// A map from `K` to `V` of at most `max` entries that evicts the least recently seen.
/// See the module docs.
#[derive(Debug, Clone)]
pub struct RecencyTable<K, V, S = RandomState> {
    entries: HashMap<K, Entry<V>, S>,
    /// Eviction candidates, least first. Invariant: every key in `entries` has one here at
    /// or before its `seen`; others (removed keys, superseded instants) are stale.
    order: BinaryHeap<Reverse<(Instant, K)>>,
    max: usize,
}

impl<K: Eq + Hash + Ord + Clone, V> RecencyTable<K, V> {
    /// An empty table of at most `max` entries (at least one).
    pub fn new(max: usize) -> Self {
        Self::with_hasher(max, RandomState::new())
    }
}

impl<K: Eq + Hash + Ord + Clone, V, S: BuildHasher> RecencyTable<K, V, S> {
    /// An empty table of at most `max` entries (at least one), hashing keys with `hasher`.
    pub fn with_hasher(max: usize, hasher: S) -> Self {
        Self {
            entries: HashMap::with_hasher(hasher),
            order: BinaryHeap::new(),
            max: max.max(1),
        }
    }

    /// `key` was seen at `now`: its entry, created with `new` if absent (first dropping the
    /// least recently seen entry when the table is full). Its `seen` becomes the later of
    /// `now` and its previous one.
    pub fn touch(&mut self, now: Instant, key: &K, new: impl FnOnce() -> V) -> &mut V {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.max {
                self.evict_least_recent();
            }
            if self.order.len() >= 2 * self.entries.len() + SLACK {
                self.rebuild();
            }
            self.order.push(Reverse((now, key.clone())));
        }
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            value: new(),
            seen: now,
        });
        entry.seen = entry.seen.max(now);
        &mut entry.value
    }

    /// `key`'s value, if tracked.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|e| &e.value)
    }

    /// `key`'s value to change, if tracked (its `seen` stays as it is).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|e| &mut e.value)
    }

    /// When `key` was last seen, if tracked.
    pub fn seen(&self, key: &K) -> Option<Instant> {
        self.entries.get(key).map(|e| e.seen)
    }

    /// Forgets `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        // Its candidates go stale and are dropped when popped or at the next rebuild.
        self.entries.remove(key).map(|e| e.value)
    }

    /// Entries tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry with when it was last seen, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V, Instant)> {
        self.entries.iter().map(|(k, e)| (k, &e.value, e.seen))
    }

    /// Every entry's value to change, in no particular order (the `seen`s stay).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, e)| (k, &mut e.value))
    }

    /// Drops the entry least recently seen (ties by key), if any.
    fn evict_least_recent(&mut self) {
        while let Some(Reverse((at, key))) = self.order.pop() {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.seen == at {
                self.entries.remove(&key);
                return;
            }
            // Seen since (or re-added after a removal): a candidate at its present `seen`.
            self.order.push(Reverse((entry.seen, key)));
        }
    }

    /// One current candidate per entry.
    fn rebuild(&mut self) {
        self.order = self
            .entries
            .iter()
            .map(|(k, e)| Reverse((e.seen, k.clone())))
            .collect();
    }
}

#[cfg(test)]
#[path = "recency_tests.rs"]
mod tests;
