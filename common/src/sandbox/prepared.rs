//! Command instances made ahead of their request: the warm pool of a command module.
//!
//! A command module runs in a fresh instance per invocation (DESIGN §3). On an idle node
//! (no command run started for `make_ahead_after_idle_us` before this one, none other in
//! flight when it ends) the instance for a module's next invocation is made right after
//! its last one ended, off any request's path (`run::run_command`): its store, WASI
//! context and instance, not yet started. A busy node makes none: there it would cost the
//! same CPU per request, plus a hand-over between workers, and hide nothing. The next invocation of the same module with the same memory limit takes
//! it, swaps in its stdin, environment, clocks, deadline, fuel and shared state, and calls
//! `_start`: the same state a fresh instance would have, without the instantiation on the
//! request's path. An instance is taken at most once; nothing of an invocation is ever
//! seen by another.
//!
//! Exactness: instantiation runs guest code only in a module's `start` function. A
//! prepared instance whose instantiation consumed any fuel (every instruction with an
//! effect costs fuel) is discarded and its module never prepared again, so a module whose
//! `start` function does anything keeps running it inside its request.
//!
//! Bounds: at most [`MAX_PREPARED`] instances (a quarter of the sandbox's instance slots
//! when that is fewer), sharded by module (a shard holds its share, rounded up; the total
//! is exact), none older than the warm-idle time; a run, a
//! warm instance or a component that finds no free slot evicts them all first
//! ([`Prepared::clear`]), so a prepared instance never turns into a refusal.

use super::StoreState;
use super::compiled::CompiledModule;
use crate::sharded::{SHARDS, Sharded};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Store, TypedFunc};

/// The most prepared instances a sandbox keeps.
pub(super) const MAX_PREPARED: usize = 64;

/// A command instance made ahead of its invocation.
pub(super) struct Ready {
    /// Holds the module (and so its identity) while the instance waits.
    module: CompiledModule,
    memory_bytes: u64,
    made: Instant,
    store: Store<StoreState>,
    /// The instance's `_start`.
    start: TypedFunc<(), ()>,
}

impl Ready {
    pub(super) fn new(
        module: CompiledModule,
        memory_bytes: u64,
        made: Instant,
        store: Store<StoreState>,
        start: TypedFunc<(), ()>,
    ) -> Self {
        Self {
            module,
            memory_bytes,
            made,
            store,
            start,
        }
    }

    /// The instance's store and its `_start`.
    pub(super) fn into_parts(self) -> (Store<StoreState>, TypedFunc<(), ()>) {
        (self.store, self.start)
    }
}

/// The prepared instances of one sandbox.
pub(super) struct Prepared {
    shards: Sharded<Vec<Ready>>,
    /// Most held in all, and in one shard (its share, rounded up).
    total: usize,
    per_shard: usize,
    /// How many are held, across shards: lets a run skip the shard's lock when none is.
    held: AtomicUsize,
    /// Dropped unused after this long.
    idle: Duration,
}

impl Prepared {
    /// Room for `min(MAX_PREPARED, max_instances / 4)` instances (none when that is 0).
    pub(super) fn new(max_instances: u32, idle: Duration) -> Self {
        let total = MAX_PREPARED.min(usize::try_from(max_instances / 4).unwrap_or(0));
        let shards = Sharded::<Vec<Ready>>::default();
        let per_shard = total.div_ceil(SHARDS);
        Self {
            shards,
            total,
            per_shard,
            held: AtomicUsize::new(0),
            idle,
        }
    }

    /// Whether this sandbox keeps prepared instances at all.
    pub(super) fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    /// How many are held.
    pub(super) fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes the instance prepared for `module` with `memory_bytes` of memory, if any.
    pub(super) fn take(&self, module: &CompiledModule, memory_bytes: u64) -> Option<Ready> {
        if self.len() == 0 {
            return None;
        }
        let key = module.identity();
        let taken = {
            let mut shard = self.shards.by_key(&key);
            let at = shard
                .iter()
                .position(|r| r.module.identity() == key && r.memory_bytes == memory_bytes)?;
            shard.swap_remove(at)
        };
        self.held.fetch_sub(1, Ordering::Relaxed);
        Some(taken)
    }

    /// Keeps `ready` for its module's next invocation; drops (outside the lock) what it
    /// displaces: the shard's expired instances, then its oldest when the shard holds its
    /// share or the sandbox its total (`ready` itself when the total is reached and its
    /// shard holds none to displace).
    pub(super) fn put(&self, ready: Ready, now: Instant) {
        if !self.enabled() {
            return;
        }
        let key = ready.module.identity();
        let mut dropped = Vec::new();
        {
            let mut shard = self.shards.by_key(&key);
            self.expire(&mut shard, now, &mut dropped);
            let below_total = shard.len() < self.per_shard
                && self
                    .held
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                        (h < self.total).then_some(h + 1)
                    })
                    .is_ok();
            if below_total {
                shard.push(ready);
            } else if let Some(oldest) = (0..shard.len()).min_by_key(|&i| shard[i].made) {
                dropped.push(std::mem::replace(&mut shard[oldest], ready));
            } else {
                dropped.push(ready);
            }
        }
        drop(dropped);
    }

    /// Whether `module` already has an instance waiting with `memory_bytes`.
    pub(super) fn has(&self, module: &CompiledModule, memory_bytes: u64) -> bool {
        if self.len() == 0 {
            return false;
        }
        let key = module.identity();
        self.shards
            .by_key(&key)
            .iter()
            .any(|r| r.module.identity() == key && r.memory_bytes == memory_bytes)
    }

    /// How many are held, and the memory they may use (each its invocation's limit).
    pub(super) fn totals(&self) -> (usize, u64) {
        let (mut n, mut bytes) = (0, 0u64);
        self.shards.each(|shard| {
            n += shard.len();
            bytes = shard
                .iter()
                .fold(bytes, |b, r| b.saturating_add(r.memory_bytes));
        });
        (n, bytes)
    }

    /// Drops the instances unused for longer than the idle time; returns how many remain.
    pub(super) fn reap(&self, now: Instant) -> usize {
        let mut dropped = Vec::new();
        self.shards
            .each(|shard| self.expire(shard, now, &mut dropped));
        drop(dropped);
        self.len()
    }

    /// Drops every instance whose module's code is `digest`.
    pub(super) fn remove_digest(&self, digest: &crate::model::ArtifactDigest) {
        self.remove_where(|r| r.module.digest() == *digest);
    }

    /// Drops every instance (to free their slots); returns how many there were.
    pub(super) fn clear(&self) -> usize {
        if self.len() == 0 {
            return 0;
        }
        self.remove_where(|_| true)
    }

    fn remove_where(&self, mut doomed: impl FnMut(&Ready) -> bool) -> usize {
        let mut dropped = Vec::new();
        self.shards.each(|shard| {
            let mut i = 0;
            while i < shard.len() {
                if doomed(&shard[i]) {
                    dropped.push(shard.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        });
        self.held.fetch_sub(dropped.len(), Ordering::Relaxed);
        let n = dropped.len();
        drop(dropped);
        n
    }

    fn expire(&self, shard: &mut Vec<Ready>, now: Instant, dropped: &mut Vec<Ready>) {
        let mut i = 0;
        while i < shard.len() {
            if now.saturating_duration_since(shard[i].made) > self.idle {
                dropped.push(shard.swap_remove(i));
                self.held.fetch_sub(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
    }
}

/// Whether `module` may be prepared ahead: false once an instantiation of it ran guest
/// code (see the module's docs).
pub(super) fn preparable(module: &CompiledModule) -> bool {
    !module.inner.runs_at_instantiation.load(Ordering::Relaxed)
}

/// Marks `module` as running guest code when instantiated: never prepared again.
pub(super) fn mark_runs_at_instantiation(module: &CompiledModule) {
    module
        .inner
        .runs_at_instantiation
        .store(true, Ordering::Relaxed);
}

/// Whether the node was idle before a command run: no command run started in the
/// `gap` before it. Kept next to the sandbox's count of runs in flight, and like it one
/// atomic per run.
pub(super) struct Idle {
    born: Instant,
    /// When the last run started, in nanoseconds after `born`.
    last_start: AtomicU64,
    gap: u64,
}

impl Idle {
    pub(super) fn new(gap: Duration) -> Self {
        Self {
            born: Instant::now(),
            last_start: AtomicU64::new(0),
            gap: nanos(gap),
        }
    }

    /// Records a run starting at `now`; whether no other started in the gap before it.
    pub(super) fn starting(&self, now: Instant) -> bool {
        let at = nanos(now.saturating_duration_since(self.born));
        let before = self.last_start.swap(at, Ordering::Relaxed);
        at.saturating_sub(before) >= self.gap
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A module's identity while a [`CompiledModule`] of it is held.
pub(super) type Identity = usize;

impl CompiledModule {
    pub(super) fn identity(&self) -> Identity {
        Arc::as_ptr(&self.inner) as usize
    }
}
