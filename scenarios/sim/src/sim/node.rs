//! One simulated region: execution slots, a memory budget and per-function warm pools with
//! keep-alive. POPs use [`super::edge::EdgeNode`], which has the same semantics (the tests
//! drive both with the same random operations and compare) with a layout for few instances.
//!
//! Idle instances of a function form a stack: the most recently used is reused first (it
//! is the warmest), the oldest expires first, so expired instances are always at the
//! bottom. Expiry is applied lazily (when the function is touched, when memory is needed,
//! and at every time-series sample), and each removal reports when the instance really
//! expired so memory-seconds stay exact. Memory never exceeds the budget: a cold start that
//! does not fit evicts the node's oldest idle instance, and fails when none is left.

use super::queue::Nanos;
use std::collections::VecDeque;
use std::hash::Hasher;

/// A fast, deterministic hasher for the simulator's dense integer keys.
///
/// A `u32` id hashes to itself in the low bits (where a hash table takes the position
/// from) and to a mixed tag in the top seven bits (where hashbrown takes its control byte
/// from): ids are popularity ranks, so the popular functions' entries sit next to each
/// other and share cache lines, which is most of a fleet-scale run's memory traffic.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        let mixed = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = u64::from(n) | (mixed & (0x7F << 57));
    }
}

/// What a POP knows about one function's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Artifact {
    /// Not prepared here.
    #[default]
    Absent,
    /// Being fetched and deserialized.
    Preparing,
    /// Compiled and ready to instantiate.
    Ready,
}

/// One function's warm pool at a region.
#[derive(Debug, Default)]
pub struct FnState {
    /// Memory of one instance, MB.
    pub memory_mb: u64,
    /// Idle warm instances by the time they went idle, oldest first.
    idle: VecDeque<Nanos>,
}

/// An instance removed from a pool: how much memory it held and since when it was gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Its memory, MB.
    pub memory_mb: u64,
    /// When it stopped existing (its expiry, or now for an eviction).
    pub at: Nanos,
}

/// Slots, memory and warm pools of one node.
#[derive(Debug)]
pub struct Node {
    /// Concurrent executions allowed.
    pub slots: u32,
    /// Executions running.
    pub busy: u32,
    /// Memory budget for instances, MB.
    pub budget_mb: u64,
    /// Memory held by instances (busy and idle), MB.
    pub used_mb: u64,
    /// Instances alive (busy and idle).
    pub instances: u64,
    /// Per-function pools, indexed by function (grown on first use).
    functions: Vec<FnState>,
    /// (idle since, function) for every release, oldest first: the node's oldest idle
    /// instance and every expired one are found from its front without visiting every
    /// function. Entries go stale when their instance is reused or dropped; a record is
    /// live when it names its function's oldest idle instance, and stale ones are skipped
    /// when they reach the front. Rebuilt from the pools when stale ones pile up.
    log: VecDeque<(Nanos, u32)>,
    keep_alive: Nanos,
    /// Times the log was rebuilt, for tests.
    #[cfg(test)]
    pub(crate) log_rebuilds: u32,
}

impl Node {
    /// An empty node.
    pub fn new(slots: u32, budget_mb: u64, keep_alive: Nanos) -> Self {
        Self {
            slots,
            busy: 0,
            budget_mb,
            used_mb: 0,
            instances: 0,
            functions: Vec::new(),
            log: VecDeque::new(),
            keep_alive,
            #[cfg(test)]
            log_rebuilds: 0,
        }
    }

    /// The pool of `func` (instances of `memory_mb`), created on first use.
    fn function(&mut self, func: u32, memory_mb: u64) -> &mut FnState {
        let i = func as usize;
        if self.functions.len() <= i {
            self.functions.resize_with(i + 1, FnState::default);
        }
        let state = &mut self.functions[i];
        state.memory_mb = memory_mb;
        state
    }

    /// Whether a slot is free.
    pub fn slot_free(&self) -> bool {
        self.busy < self.slots
    }

    /// Takes a slot and an instance of `func` (`memory_mb` each): a warm one when idle,
    /// otherwise a new one, evicting other functions' idle instances to fit. Returns
    /// `Some(warm)`, or `None` when no slot is free or the instance cannot fit; expired and
    /// evicted instances are appended to `removed`.
    pub fn acquire(
        &mut self,
        now: Nanos,
        func: u32,
        memory_mb: u64,
        removed: &mut Vec<Removed>,
    ) -> Option<bool> {
        if !self.slot_free() {
            return None;
        }
        let keep_alive = self.keep_alive;
        let state = self.function(func, memory_mb);
        let expired = expire_front(&mut state.idle, now, keep_alive, memory_mb, removed);
        let warm = state.idle.pop_back().is_some();
        self.drop_instances(expired, memory_mb);
        if !warm {
            while self.used_mb + memory_mb > self.budget_mb {
                if !self.evict_oldest(now, removed) {
                    return None;
                }
            }
            self.used_mb += memory_mb;
            self.instances += 1;
        }
        self.busy += 1;
        Some(warm)
    }

    /// Ends an execution: its instance goes back to `func`'s idle pool.
    pub fn release(&mut self, now: Nanos, func: u32) {
        self.busy = self.busy.saturating_sub(1);
        if let Some(s) = self.functions.get_mut(func as usize) {
            s.idle.push_back(now);
            self.log.push_back((now, func));
            let idle = self.instances.saturating_sub(u64::from(self.busy)) as usize;
            if self.log.len() > 2 * idle + 4096 {
                self.rebuild_log();
            }
        }
    }

    /// Retires every idle instance whose keep-alive ran out by `now`.
    pub fn sweep(&mut self, now: Nanos, removed: &mut Vec<Removed>) {
        let keep_alive = self.keep_alive;
        while let Some(&(since, func)) = self.log.front() {
            if since + keep_alive > now {
                break;
            }
            self.log.pop_front();
            let Some(state) = self.functions.get_mut(func as usize) else {
                continue;
            };
            if state.idle.front() != Some(&since) {
                continue;
            }
            let mb = state.memory_mb;
            let n = expire_front(&mut state.idle, now, keep_alive, mb, removed);
            self.drop_instances(n, mb);
        }
    }

    /// Drops every instance and all busy slots (the node failed); returns the memory freed.
    pub fn wipe(&mut self) -> u64 {
        let freed = self.used_mb;
        self.functions.iter_mut().for_each(|s| s.idle.clear());
        self.log.clear();
        self.busy = 0;
        self.used_mb = 0;
        self.instances = 0;
        freed
    }

    /// Drops the idle instances of `func` (its artifact was evicted).
    pub fn drop_idle(&mut self, now: Nanos, func: u32, removed: &mut Vec<Removed>) {
        let keep_alive = self.keep_alive;
        let Some(state) = self.functions.get_mut(func as usize) else {
            return;
        };
        let memory_mb = state.memory_mb;
        let n = state.idle.len() as u64;
        for &since in &state.idle {
            removed.push(Removed {
                memory_mb,
                at: (since + keep_alive).min(now),
            });
        }
        state.idle.clear();
        self.drop_instances(n, memory_mb);
    }

    /// Idle instances of `func` (expired ones included until the next sweep).
    pub fn idle_count(&self, func: u32) -> usize {
        self.functions
            .get(func as usize)
            .map_or(0, |s| s.idle.len())
    }

    fn drop_instances(&mut self, n: u64, memory_mb: u64) {
        self.instances -= n;
        self.used_mb -= n * memory_mb;
    }

    /// Evicts the oldest idle instance of any function; `false` when none is idle. Ties
    /// in time go to the lowest function index, so runs stay deterministic.
    fn evict_oldest(&mut self, now: Nanos, removed: &mut Vec<Removed>) -> bool {
        // Stale records at the front go; the first live one has the oldest time.
        while let Some(&(since, func)) = self.log.front() {
            if self.is_live(since, func) {
                break;
            }
            self.log.pop_front();
        }
        let Some(&(since, _)) = self.log.front() else {
            return false;
        };
        let Some((i, func)) = self
            .log
            .iter()
            .take_while(|(t, _)| *t == since)
            .enumerate()
            .filter(|(_, (t, f))| self.is_live(*t, *f))
            .map(|(i, (_, f))| (i, *f))
            .min_by_key(|(_, f)| *f)
        else {
            return false;
        };
        self.log.remove(i);
        let state = &mut self.functions[func as usize];
        state.idle.pop_front();
        let mb = state.memory_mb;
        removed.push(Removed {
            memory_mb: mb,
            at: (since + self.keep_alive).min(now),
        });
        self.drop_instances(1, mb);
        true
    }

    /// Whether the record (`since`, `func`) names `func`'s oldest idle instance.
    fn is_live(&self, since: Nanos, func: u32) -> bool {
        self.functions
            .get(func as usize)
            .is_some_and(|s| s.idle.front() == Some(&since))
    }

    /// Rebuilds the release log from the pools: one record per idle instance.
    fn rebuild_log(&mut self) {
        #[cfg(test)]
        {
            self.log_rebuilds += 1;
        }
        self.log.clear();
        for (f, s) in self.functions.iter().enumerate() {
            self.log.extend(s.idle.iter().map(|&t| (t, f as u32)));
        }
        self.log.make_contiguous().sort_unstable();
    }
}

fn expire_front(
    idle: &mut VecDeque<Nanos>,
    now: Nanos,
    keep_alive: Nanos,
    memory_mb: u64,
    removed: &mut Vec<Removed>,
) -> u64 {
    let mut n = 0;
    while let Some(&since) = idle.front() {
        if since + keep_alive > now {
            break;
        }
        idle.pop_front();
        removed.push(Removed {
            memory_mb,
            at: since + keep_alive,
        });
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn a_released_instance_is_reused_warm_within_keep_alive_and_expires_after() {
        let mut n = Node::new(4, 1024, 10 * S);
        let mut removed = Vec::new();
        assert_eq!(n.acquire(0, 1, 128, &mut removed), Some(false));
        n.release(S, 1);
        assert_eq!(n.acquire(5 * S, 1, 128, &mut removed), Some(true));
        n.release(6 * S, 1);
        assert_eq!(n.instances, 1);
        n.sweep(20 * S, &mut removed);
        assert_eq!((n.instances, n.used_mb), (0, 0));
        assert_eq!(
            removed,
            [Removed {
                memory_mb: 128,
                at: 16 * S
            }]
        );
        assert_eq!(n.acquire(21 * S, 1, 128, &mut removed), Some(false));
    }

    #[test]
    fn slots_bound_concurrent_executions() {
        let mut n = Node::new(2, 1024, S);
        let mut removed = Vec::new();
        assert!(n.acquire(0, 1, 10, &mut removed).is_some());
        assert!(n.acquire(0, 2, 10, &mut removed).is_some());
        assert_eq!(n.acquire(0, 3, 10, &mut removed), None);
        n.release(1, 1);
        assert!(n.acquire(2, 3, 10, &mut removed).is_some());
    }

    #[test]
    fn a_cold_start_that_does_not_fit_evicts_the_oldest_idle_instance() {
        let mut n = Node::new(8, 256, 100 * S);
        let mut removed = Vec::new();
        n.acquire(0, 1, 128, &mut removed);
        n.acquire(0, 2, 128, &mut removed);
        n.release(S, 1);
        n.release(2 * S, 2);
        assert_eq!(n.acquire(3 * S, 3, 128, &mut removed), Some(false));
        assert_eq!(n.used_mb, 256, "memory never exceeds the budget");
        assert_eq!(n.idle_count(1), 0, "the oldest idle instance went");
        assert_eq!(n.idle_count(2), 1);
        assert_eq!(
            removed,
            [Removed {
                memory_mb: 128,
                at: 3 * S
            }]
        );
    }

    #[test]
    fn a_cold_start_fails_when_busy_instances_fill_the_memory() {
        let mut n = Node::new(8, 256, S);
        let mut removed = Vec::new();
        n.acquire(0, 1, 256, &mut removed);
        assert_eq!(n.acquire(0, 2, 128, &mut removed), None);
        assert_eq!(n.busy, 1);
    }
}
