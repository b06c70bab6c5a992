//! Warm instances: one bounded pool per function version, and the bounded set of pools.
//! A pool holds reactor instances or, for an `http`-ABI function that opted in to reuse,
//! component instances ([`WarmInstance`]); both kinds share the bounds, the lanes and the
//! eviction order below.
//!
//! Owns which warm instance serves an invocation: an affinity key maps to one slot of its
//! pool by rendezvous hashing ([`crate::policy::affinity`]); a request without a key takes
//! the most recently used idle instance. Never runs guest code and never creates
//! instances (that is `reactor`'s and `serve`'s job); only hands them out and takes them
//! back.
//!
//! Bounds: a pool has [`SandboxConfig::warm_pool_size`] slots; when the slot a request
//! needs is busy (or every slot is, for a request without a key) the request gets no slot
//! and runs in a one-off instance that is dropped afterwards. At most
//! [`SandboxConfig::max_warm_pools`] pools exist; making one more drops the least recently
//! used pool with its idle instances. Idle instances older than
//! [`SandboxConfig::warm_idle_ms`] are dropped when seen (at checkout or by `reap`).
//! Each checkout names its pool's [`WarmLane`]: pools of the on-demand lane live within
//! that lane's own smaller budget and keep-alive and evict only each other
//! ([`super::lane`] chooses).
//!
//! Pre-warming (a warm-pool plan, [`crate::policy::warm`]) reserves one empty slot at a
//! time with [`WarmPools::reserve`], has `reactor` create an instance into it outside the
//! lock and gives it back idle; [`WarmPools::retire`] drops idle instances beyond a target, least
//! recently used first. Neither ever touches a busy slot.

use super::SandboxConfig;
use super::component::ComponentInstance;
use super::lane::{self, Resident, WarmLane};
use super::reactor::ReactorInstance;
use crate::model::{ArtifactDigest, FunctionKey};
use crate::policy::affinity;
use crate::sharded::{read, write};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Identifies one warm pool: instances are only ever shared by invocations of the same
/// function version with the same code and memory limit (never across tenants or
/// functions, even when their code is identical).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmKey {
    /// The function (its tenant included).
    pub function: FunctionKey,
    /// The version (`$LATEST` or a number).
    pub version: String,
    /// The code.
    pub digest: ArtifactDigest,
    /// The memory limit the instances were created with, in bytes.
    pub memory_bytes: u64,
}

/// A warm instance of either kind. A pool only ever holds one kind (its key names the
/// code, which is a core module or a component); a checkout of the other kind finds none.
pub(super) enum WarmInstance {
    /// A reactor module's instance.
    Reactor(Box<ReactorInstance>),
    /// An `http`-ABI component's instance.
    Component(Box<ComponentInstance>),
}

impl WarmInstance {
    /// The reactor instance, if this is one.
    pub(super) fn reactor(self) -> Option<Box<ReactorInstance>> {
        match self {
            Self::Reactor(r) => Some(r),
            Self::Component(_) => None,
        }
    }

    /// The component instance, if this is one.
    pub(super) fn component(self) -> Option<Box<ComponentInstance>> {
        match self {
            Self::Component(c) => Some(c),
            Self::Reactor(_) => None,
        }
    }
}

enum Slot {
    Empty,
    /// Checked out to a running invocation.
    Busy,
    /// Warm and waiting, with the instant it was last used.
    Idle(WarmInstance, Instant),
}

/// One function version's slots.
pub(super) struct WarmPool {
    slots: Mutex<Vec<Slot>>,
    /// How long an idle instance is kept, in nanoseconds: its lane's, which changes when
    /// the pool changes lane.
    keep_alive_nanos: AtomicU64,
}

/// What [`WarmPools::checkout`] handed out.
pub(super) struct Checkout {
    /// The pool, to give the instance back to.
    pool: Arc<WarmPool>,
    /// The slot reserved for this invocation; `None` means run one-off and drop.
    slot: Option<usize>,
    /// The warm instance in that slot, or `None` when one must be created.
    instance: Option<WarmInstance>,
}

impl Checkout {
    /// Splits the checkout into its slot reservation (`None`: run one-off and drop) and
    /// its warm instance.
    pub(super) fn reserve(self) -> (Option<Reserved>, Option<WarmInstance>) {
        let Self {
            pool,
            slot,
            instance,
        } = self;
        (slot.map(|slot| Reserved::new(pool, slot)), instance)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field moves that cannot panic half-way.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WarmPool {
    fn new(size: usize, keep_alive: Duration) -> Self {
        let pool = Self {
            slots: Mutex::new((0..size).map(|_| Slot::Empty).collect()),
            keep_alive_nanos: AtomicU64::new(0),
        };
        pool.set_keep_alive(keep_alive);
        pool
    }

    fn set_keep_alive(&self, keep_alive: Duration) {
        let nanos = u64::try_from(keep_alive.as_nanos()).unwrap_or(u64::MAX);
        self.keep_alive_nanos.store(nanos, Ordering::Relaxed);
    }

    fn expired(&self, last: Instant, now: Instant) -> bool {
        let keep_alive = Duration::from_nanos(self.keep_alive_nanos.load(Ordering::Relaxed));
        now.saturating_duration_since(last) >= keep_alive
    }

    /// Reserves a slot for one invocation; see the module docs for the choice.
    fn take(
        &self,
        affinity: Option<&str>,
        now: Instant,
    ) -> (Option<usize>, Option<WarmInstance>, Vec<Slot>) {
        let mut slots = lock(&self.slots);
        let mut dropped = Vec::new();
        let chosen = match affinity {
            Some(k) => affinity::choose_slot(k.as_bytes(), slots.len())
                .filter(|&i| !matches!(slots[i], Slot::Busy)),
            None => {
                let warm = slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| match s {
                        Slot::Idle(_, at) if !self.expired(*at, now) => Some((i, *at)),
                        _ => None,
                    })
                    .max_by_key(|(_, at)| *at)
                    .map(|(i, _)| i);
                warm.or_else(|| slots.iter().position(|s| !matches!(s, Slot::Busy)))
            }
        };
        let Some(i) = chosen else {
            return (None, None, dropped);
        };
        let instance = match std::mem::replace(&mut slots[i], Slot::Busy) {
            Slot::Idle(inst, at) if !self.expired(at, now) => Some(inst),
            expired @ Slot::Idle(..) => {
                dropped.push(expired);
                None
            }
            _ => None,
        };
        (Some(i), instance, dropped)
    }

    /// Gives `slot` back: warm with `instance`, or empty when the instance was discarded.
    fn give_back(&self, slot: usize, instance: Option<WarmInstance>, now: Instant) {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get_mut(slot) {
            *s = match instance {
                Some(inst) => Slot::Idle(inst, now),
                None => Slot::Empty,
            };
        }
    }

    /// Drops expired idle instances; returns (idle, busy) counts after.
    fn reap(&self, now: Instant) -> (usize, usize, Vec<Slot>) {
        let mut slots = lock(&self.slots);
        let mut dropped = Vec::new();
        let (mut idle, mut busy) = (0, 0);
        for s in slots.iter_mut() {
            match s {
                Slot::Idle(_, at) if self.expired(*at, now) => {
                    dropped.push(std::mem::replace(s, Slot::Empty));
                }
                Slot::Idle(..) => idle += 1,
                Slot::Busy => busy += 1,
                Slot::Empty => {}
            }
        }
        (idle, busy, dropped)
    }

    /// Marks one empty slot busy when fewer than `target` slots are live; returns it.
    fn reserve_empty(&self, target: usize) -> Option<usize> {
        let mut slots = lock(&self.slots);
        let live = slots.iter().filter(|s| !matches!(s, Slot::Empty)).count();
        if live >= target {
            return None;
        }
        let i = slots.iter().position(|s| matches!(s, Slot::Empty))?;
        slots[i] = Slot::Busy;
        Some(i)
    }

    /// Empties idle slots unused since `before`, least recently used first, until at most
    /// `keep` instances are idle or busy; returns what was taken out (to drop outside the
    /// lock).
    fn retire(&self, keep: usize, before: Instant) -> Vec<Slot> {
        let mut slots = lock(&self.slots);
        let live = slots.iter().filter(|s| !matches!(s, Slot::Empty)).count();
        let mut surplus = live.saturating_sub(keep);
        let mut idle: Vec<(Instant, usize)> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Idle(_, at) if *at <= before => Some((*at, i)),
                _ => None,
            })
            .collect();
        idle.sort();
        let mut dropped = Vec::new();
        for (_, i) in idle {
            if surplus == 0 {
                break;
            }
            dropped.push(std::mem::replace(&mut slots[i], Slot::Empty));
            surplus -= 1;
        }
        dropped
    }

    fn idle(&self) -> usize {
        lock(&self.slots)
            .iter()
            .filter(|s| matches!(s, Slot::Idle(..)))
            .count()
    }
}

/// Every warm pool of one sandbox, at most `max_pools`, least recently used dropped first.
///
/// A checkout of a dedicated pool that exists (every warm call) takes only the read side
/// of the table's lock and stamps the pool used atomically; creating, moving and dropping
/// pools take the write side.
pub(super) struct WarmPools {
    pools: RwLock<Pools>,
    /// The next last-use stamp; strictly increasing.
    clock: AtomicU64,
    max_pools: usize,
    pool_size: usize,
    keep_alive: Duration,
}

#[derive(Default)]
struct Pools {
    by_key: HashMap<WarmKey, Entry>,
}

/// One pool in the table.
struct Entry {
    pool: Arc<WarmPool>,
    /// The table's `clock` at its last checkout.
    used: AtomicU64,
    /// In the on-demand lane.
    on_demand: bool,
}

impl Pools {
    fn residents(&self) -> impl Iterator<Item = (&WarmKey, Resident)> {
        self.by_key.iter().map(|(k, e)| {
            let r = Resident {
                on_demand: e.on_demand,
                used: e.used.load(Ordering::Relaxed),
            };
            (k, r)
        })
    }
}

impl WarmPools {
    pub(super) fn new(cfg: &SandboxConfig) -> Self {
        Self {
            pools: RwLock::new(Pools::default()),
            clock: AtomicU64::new(0),
            max_pools: cfg.max_warm_pools,
            pool_size: cfg.warm_pool_size,
            keep_alive: cfg.warm_idle(),
        }
    }

    /// Reserves an instance slot of `key`'s pool in `lane` (creating the pool if needed).
    pub(super) fn checkout(
        &self,
        key: &WarmKey,
        affinity: Option<&str>,
        lane: WarmLane,
        now: Instant,
    ) -> Checkout {
        let pool = self.pool(key, lane);
        let (slot, instance, expired) = pool.take(affinity, now);
        drop(expired);
        Checkout {
            pool,
            slot,
            instance,
        }
    }

    /// `key`'s pool in `lane`, created when missing (dropping what [`lane::make_room`]
    /// says; not kept when its lane has no room), moved to `lane` when it was in the other
    /// one, and marked used.
    fn pool(&self, key: &WarmKey, lane: WarmLane) -> Arc<WarmPool> {
        let on_demand = lane.is_on_demand();
        if !on_demand
            && let Some(entry) = read(&self.pools).by_key.get(key)
            && !entry.on_demand
        {
            // The dedicated warm path: nothing changes but the stamp.
            entry.used.store(self.stamp(), Ordering::Relaxed);
            return Arc::clone(&entry.pool);
        }
        let mut evicted = Vec::new();
        let pool = {
            let mut pools = write(&self.pools);
            let used = self.stamp();
            let keep_alive = lane.keep_alive(self.keep_alive);
            let (pool, incoming) = match pools.by_key.get_mut(key) {
                Some(entry) => {
                    *entry.used.get_mut() = used;
                    let moved = entry.on_demand != on_demand;
                    entry.on_demand = on_demand;
                    if moved || on_demand {
                        entry.pool.set_keep_alive(keep_alive);
                    }
                    let pool = Arc::clone(&entry.pool);
                    // The dedicated warm path stops here: nothing else changes size.
                    if !on_demand {
                        return pool;
                    }
                    (pool, false)
                }
                None => (Arc::new(WarmPool::new(self.pool_size, keep_alive)), true),
            };
            let (victims, fits) =
                lane::make_room(pools.residents(), lane, self.max_pools, incoming);
            for victim in victims {
                evicted.extend(pools.by_key.remove(&victim));
            }
            if incoming && fits {
                let entry = Entry {
                    pool: Arc::clone(&pool),
                    used: AtomicU64::new(used),
                    on_demand,
                };
                pools.by_key.insert(key.clone(), entry);
            }
            pool
        };
        // Dropping a pool drops its idle instances: outside the lock.
        drop(evicted);
        pool
    }

    fn stamp(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Reserves one empty slot of `key`'s pool (creating the pool if needed) when its
    /// live instances are fewer than `target`, for an instance to be created outside any
    /// lock and given back through the [`Reserved`] slot. `None` when nothing is missing
    /// or the pool has no empty slot.
    pub(super) fn reserve(&self, key: &WarmKey, target: usize, now: Instant) -> Option<Reserved> {
        let pool = self.pool(key, WarmLane::Dedicated);
        // Expired instances do not count as live.
        drop(pool.reap(now).2);
        let slot = pool.reserve_empty(target)?;
        Some(Reserved::new(pool, slot))
    }

    /// Drops idle instances of `key`'s pool unused since `before` beyond `keep`; returns
    /// how many were dropped.
    pub(super) fn retire(&self, key: &WarmKey, keep: usize, before: Instant) -> usize {
        let pool = read(&self.pools)
            .by_key
            .get(key)
            .map(|e| Arc::clone(&e.pool));
        pool.map_or(0, |p| p.retire(keep, before).len())
    }

    /// Drops expired idle instances and pools with nothing in them; returns how many
    /// instances remain idle.
    pub(super) fn reap(&self, now: Instant) -> usize {
        let pools: Vec<(WarmKey, Arc<WarmPool>)> = read(&self.pools)
            .by_key
            .iter()
            .map(|(k, e)| (k.clone(), Arc::clone(&e.pool)))
            .collect();
        let mut idle_total = 0;
        let mut unused = Vec::new();
        for (key, pool) in pools {
            let (idle, busy, dropped) = pool.reap(now);
            drop(dropped);
            idle_total += idle;
            if idle == 0 && busy == 0 {
                unused.push(key);
            }
        }
        let mut removed = Vec::new();
        {
            let mut pools = write(&self.pools);
            for key in unused {
                removed.extend(pools.by_key.remove(&key));
            }
        }
        drop(removed);
        idle_total
    }

    /// Drops every pool for code `digest`.
    pub(super) fn remove_digest(&self, digest: &ArtifactDigest) {
        let mut removed = Vec::new();
        {
            let mut pools = write(&self.pools);
            let keys: Vec<WarmKey> = pools
                .by_key
                .keys()
                .filter(|k| k.digest == *digest)
                .cloned()
                .collect();
            for k in keys {
                removed.extend(pools.by_key.remove(&k));
            }
        }
        drop(removed);
    }

    /// Idle warm instances across every pool, and the memory they may use (each
    /// instance's limit), for metrics.
    pub(super) fn totals(&self) -> (usize, u64) {
        let pools: Vec<(Arc<WarmPool>, u64)> = read(&self.pools)
            .by_key
            .iter()
            .map(|(k, e)| (Arc::clone(&e.pool), k.memory_bytes))
            .collect();
        pools.iter().fold((0, 0), |(n, bytes), (p, mem)| {
            let idle = p.idle();
            (n + idle, bytes + idle as u64 * mem)
        })
    }

    /// Idle instances in `key`'s pool.
    pub(super) fn idle(&self, key: &WarmKey) -> usize {
        let pool = read(&self.pools)
            .by_key
            .get(key)
            .map(|e| Arc::clone(&e.pool));
        pool.map_or(0, |p| p.idle())
    }
}

/// A pool slot reserved for one execution. Given back explicitly when the execution ends;
/// dropped unreturned (the execution's future was dropped, or it failed before an instance
/// existed) it empties the slot, so a slot is never left busy for good.
pub(super) struct Reserved {
    pool: Arc<WarmPool>,
    slot: Option<usize>,
}

impl Reserved {
    pub(super) fn new(pool: Arc<WarmPool>, slot: usize) -> Self {
        Self {
            pool,
            slot: Some(slot),
        }
    }

    /// Gives the slot back: warm with `instance`, or empty.
    pub(super) fn give_back(mut self, instance: Option<WarmInstance>, now: Instant) {
        if let Some(slot) = self.slot.take() {
            self.pool.give_back(slot, instance, now);
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.give_back(slot, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{block_on, invocation, sandbox, wasm};
    use super::*;
    use crate::model::{FunctionName, StartKind, TenantId};

    const COUNTER: &str = include_str!("../../../examples/counter.wat");

    fn counter(s: &super::super::Sandbox) -> (super::super::CompiledModule, WarmKey) {
        let m = s.compile(&wasm(COUNTER)).expect("counter compiles");
        let k = WarmKey {
            function: FunctionKey {
                tenant: TenantId::new("t").expect("valid tenant"),
                name: FunctionName::new("counter").expect("valid name"),
            },
            version: "$LATEST".into(),
            digest: m.digest(),
            memory_bytes: 16 << 20,
        };
        (m, k)
    }

    #[test]
    fn prewarmed_instances_serve_the_first_requests_warm() {
        let s = sandbox();
        let (m, k) = counter(&s);
        let created =
            block_on(s.prewarm(&k, &m, 2, Duration::from_secs(1), None)).expect("prewarms");
        assert_eq!((created, s.warm_instances(&k)), (2, 2));
        // Asking again for the same target creates nothing.
        let again = block_on(s.prewarm(&k, &m, 2, Duration::from_secs(1), None)).expect("prewarms");
        assert_eq!(again, 0);
        let first = block_on(s.run_reactor(&k, &m, invocation(b""), None)).expect("runs");
        assert_eq!((first.start, first.failure), (StartKind::Warm, None));
    }

    #[test]
    fn prewarming_is_bounded_by_the_pool_size() {
        let s = sandbox();
        let (m, k) = counter(&s);
        let size = s.config().warm_pool_size;
        let created =
            block_on(s.prewarm(&k, &m, size + 10, Duration::from_secs(1), None)).expect("prewarms");
        assert_eq!(created, size);
    }

    #[test]
    fn retiring_keeps_the_target_and_never_touches_busy_instances() {
        let s = sandbox();
        let (m, k) = counter(&s);
        block_on(s.prewarm(&k, &m, 3, Duration::from_secs(1), None)).expect("prewarms");
        // Nothing has been idle for an hour: nothing goes.
        assert_eq!(s.retire_warm(&k, 0, Duration::from_secs(3600)), 0);
        assert_eq!(s.retire_warm(&k, 1, Duration::ZERO), 2);
        assert_eq!(s.warm_instances(&k), 1);
        assert_eq!(s.retire_warm(&k, 1, Duration::ZERO), 0);
        assert_eq!(s.retire_warm(&k, 0, Duration::ZERO), 1);
        assert_eq!(s.warm_instances(&k), 0);
    }
}
