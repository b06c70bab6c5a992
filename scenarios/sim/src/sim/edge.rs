//! One simulated POP's instances: execution slots, a memory budget and warm pools with
//! keep-alive, with the same semantics as the region's [`super::node::Node`] but laid out
//! for a node that holds few instances (a POP's memory fits tens, not thousands).
//!
//! A fleet-scale run has hundreds of POPs and thousands of functions each has seen, so
//! per-function tables at every POP are what made such runs slow (each lookup a cache
//! miss). Here a POP's idle instances are one short list in the order they went idle;
//! nothing is kept per function. The oldest idle instance is the first, expired ones are a
//! prefix, and a function's warmest idle instance is its last entry. Expired instances are
//! removed as soon as the node is touched (the region's node does it lazily per function);
//! the two are observably the same: removals carry the time the instance really expired,
//! and an expired instance is always the first one a cold start would evict.

use super::node::Removed;
use super::queue::Nanos;
use std::collections::VecDeque;

/// An idle instance: when it went idle, its function and its memory.
#[derive(Debug, Clone, Copy)]
struct Idle {
    since: Nanos,
    func: u32,
    memory_mb: u32,
}

/// Slots, memory and warm pools of one POP.
#[derive(Debug)]
pub struct EdgeNode {
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
    /// Idle instances, oldest first.
    idle: VecDeque<Idle>,
    /// The function of each busy instance (at most `slots`), in no order.
    busy_funcs: Vec<u32>,
    keep_alive: Nanos,
}

impl EdgeNode {
    /// An empty node.
    pub fn new(slots: u32, budget_mb: u64, keep_alive: Nanos) -> Self {
        Self {
            slots,
            busy: 0,
            budget_mb,
            used_mb: 0,
            instances: 0,
            idle: VecDeque::new(),
            busy_funcs: Vec::new(),
            keep_alive,
        }
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
        self.sweep(now, removed);
        if let Some(i) = self.idle.iter().rposition(|e| e.func == func) {
            self.idle.remove(i);
            self.busy += 1;
            self.busy_funcs.push(func);
            return Some(true);
        }
        while self.used_mb + memory_mb > self.budget_mb {
            if !self.evict_oldest(now, removed) {
                return None;
            }
        }
        self.used_mb += memory_mb;
        self.instances += 1;
        self.busy += 1;
        self.busy_funcs.push(func);
        Some(false)
    }

    /// Ends an execution: its instance (`memory_mb`) goes back to `func`'s idle pool.
    pub fn release(&mut self, now: Nanos, func: u32, memory_mb: u64) {
        self.busy = self.busy.saturating_sub(1);
        if let Some(i) = self.busy_funcs.iter().position(|&f| f == func) {
            self.busy_funcs.swap_remove(i);
        }
        self.push_idle(now, func, memory_mb);
    }

    /// Files an instance of `func` that went idle at `now`.
    fn push_idle(&mut self, now: Nanos, func: u32, memory_mb: u64) {
        let idle = Idle {
            since: now,
            func,
            memory_mb: u32::try_from(memory_mb).unwrap_or(u32::MAX),
        };
        // Events come in time order, so this is the end; stay sorted regardless.
        let at = self.idle.len() - self.idle.iter().rev().take_while(|e| e.since > now).count();
        self.idle.insert(at, idle);
    }

    /// Instances of `func`, busy or idle (what the sandbox's pre-warming counts).
    pub fn live(&self, func: u32) -> usize {
        self.idle_count(func) + self.busy_funcs.iter().filter(|&&f| f == func).count()
    }

    /// Pre-warms `func` (`memory_mb` each) until it has `target` instances, busy or idle,
    /// within free memory (pre-warming never evicts); returns how many were created. They
    /// are idle from `now` on (instantiating one takes well under a warm-pool tick). Call
    /// [`Self::sweep`] first: expired instances still count until swept.
    pub fn prewarm(&mut self, now: Nanos, func: u32, memory_mb: u64, target: usize) -> usize {
        let mut created = 0;
        let mut live = self.live(func);
        while live < target && self.used_mb + memory_mb <= self.budget_mb {
            self.push_idle(now, func, memory_mb);
            self.used_mb += memory_mb;
            self.instances += 1;
            live += 1;
            created += 1;
        }
        created
    }

    /// Retires idle instances of `func` that went idle at or before `idle_since`, oldest
    /// first, until at most `keep` instances (busy or idle) are left; returns how many.
    pub fn retire(
        &mut self,
        now: Nanos,
        func: u32,
        keep: usize,
        idle_since: Nanos,
        removed: &mut Vec<Removed>,
    ) -> usize {
        let mut surplus = self.live(func).saturating_sub(keep);
        let mut retired = 0;
        let mut i = 0;
        while surplus > 0 && i < self.idle.len() && self.idle[i].since <= idle_since {
            if self.idle[i].func == func {
                let memory_mb = u64::from(self.idle[i].memory_mb);
                self.idle.remove(i);
                removed.push(Removed { memory_mb, at: now });
                self.drop_instance(memory_mb);
                surplus -= 1;
                retired += 1;
            } else {
                i += 1;
            }
        }
        retired
    }

    /// Retires every idle instance whose keep-alive ran out by `now`.
    pub fn sweep(&mut self, now: Nanos, removed: &mut Vec<Removed>) {
        while let Some(e) = self.idle.front() {
            let end = e.since + self.keep_alive;
            if end > now {
                break;
            }
            let memory_mb = u64::from(e.memory_mb);
            self.idle.pop_front();
            removed.push(Removed { memory_mb, at: end });
            self.drop_instance(memory_mb);
        }
    }

    /// Drops every instance and all busy slots (the node failed); returns the memory freed.
    pub fn wipe(&mut self) -> u64 {
        let freed = self.used_mb;
        self.idle.clear();
        self.busy_funcs.clear();
        self.busy = 0;
        self.used_mb = 0;
        self.instances = 0;
        freed
    }

    /// Drops the idle instances of `func` (its artifact was evicted).
    pub fn drop_idle(&mut self, now: Nanos, func: u32, removed: &mut Vec<Removed>) {
        let keep_alive = self.keep_alive;
        let mut dropped = Vec::new();
        self.idle.retain(|e| {
            let keep = e.func != func;
            if !keep {
                dropped.push(*e);
            }
            keep
        });
        for e in dropped {
            let memory_mb = u64::from(e.memory_mb);
            removed.push(Removed {
                memory_mb,
                at: (e.since + keep_alive).min(now),
            });
            self.drop_instance(memory_mb);
        }
    }

    /// Idle instances of `func`.
    pub fn idle_count(&self, func: u32) -> usize {
        self.idle.iter().filter(|e| e.func == func).count()
    }

    fn drop_instance(&mut self, memory_mb: u64) {
        self.instances -= 1;
        self.used_mb -= memory_mb;
    }

    /// Evicts the oldest idle instance of any function; `false` when none is idle. Ties
    /// in time go to the lowest function index, so runs stay deterministic.
    fn evict_oldest(&mut self, now: Nanos, removed: &mut Vec<Removed>) -> bool {
        let Some(first) = self.idle.front().copied() else {
            return false;
        };
        let (i, victim) = self
            .idle
            .iter()
            .copied()
            .enumerate()
            .take_while(|(_, e)| e.since == first.since)
            .min_by_key(|(_, e)| e.func)
            .unwrap_or((0, first));
        self.idle.remove(i);
        let memory_mb = u64::from(victim.memory_mb);
        removed.push(Removed {
            memory_mb,
            at: (victim.since + self.keep_alive).min(now),
        });
        self.drop_instance(memory_mb);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::node::Node;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn a_released_instance_is_reused_warm_within_keep_alive_and_expires_after() {
        let mut n = EdgeNode::new(4, 1024, 10 * S);
        let mut removed = Vec::new();
        assert_eq!(n.acquire(0, 1, 128, &mut removed), Some(false));
        n.release(S, 1, 128);
        assert_eq!(n.acquire(5 * S, 1, 128, &mut removed), Some(true));
        n.release(6 * S, 1, 128);
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
    fn a_cold_start_that_does_not_fit_evicts_the_oldest_idle_instance() {
        let mut n = EdgeNode::new(8, 256, 100 * S);
        let mut removed = Vec::new();
        n.acquire(0, 1, 128, &mut removed);
        n.acquire(0, 2, 128, &mut removed);
        n.release(S, 1, 128);
        n.release(2 * S, 2, 128);
        assert_eq!(n.acquire(3 * S, 3, 128, &mut removed), Some(false));
        assert_eq!(n.used_mb, 256, "memory never exceeds the budget");
        assert_eq!((n.idle_count(1), n.idle_count(2)), (0, 1));
        assert_eq!(
            removed,
            [Removed {
                memory_mb: 128,
                at: 3 * S
            }]
        );
    }

    #[test]
    fn slots_and_busy_memory_bound_what_starts() {
        let mut n = EdgeNode::new(2, 256, S);
        let mut removed = Vec::new();
        assert_eq!(n.acquire(0, 1, 256, &mut removed), Some(false));
        assert_eq!(
            n.acquire(0, 2, 128, &mut removed),
            None,
            "busy memory is full"
        );
        assert!(n.acquire(0, 3, 0, &mut removed).is_some());
        assert_eq!(n.acquire(0, 4, 0, &mut removed), None, "no slot");
        assert_eq!(n.busy, 2);
    }

    #[test]
    fn prewarming_fills_free_memory_up_to_the_target_and_retiring_keeps_busy_ones() {
        let mut n = EdgeNode::new(8, 512, 100 * S);
        let mut removed = Vec::new();
        assert_eq!(n.acquire(0, 1, 128, &mut removed), Some(false));
        assert_eq!(n.prewarm(S, 1, 128, 3), 2, "the busy one counts");
        assert_eq!((n.live(1), n.idle_count(1), n.used_mb), (3, 2, 384));
        assert_eq!(
            n.prewarm(S, 2, 128, 4),
            1,
            "memory bounds it, nothing is evicted"
        );
        assert_eq!(n.used_mb, 512);
        assert_eq!(n.acquire(2 * S, 1, 128, &mut removed), Some(true));
        n.release(3 * S, 1, 128);
        // Instances idle since 1 s qualify; the one idle since 3 s does not.
        assert_eq!(n.retire(4 * S, 1, 0, 2 * S, &mut removed), 1);
        assert_eq!((n.live(1), n.busy), (2, 1));
        assert_eq!(
            removed,
            [Removed {
                memory_mb: 128,
                at: 4 * S
            }]
        );
        assert_eq!(n.retire(4 * S, 1, 0, 4 * S, &mut removed), 1);
        assert_eq!(n.live(1), 1, "the busy instance is never retired");
    }

    /// Drives the region's node and the POP's node with the same random operations and
    /// checks they agree on every answer, and on memory, instances and removals whenever
    /// both have swept.
    #[test]
    fn the_edge_node_behaves_like_the_region_node() {
        for seed in 0..40 {
            compare(seed, 2_000);
        }
        // Long enough for the region's release log to be rebuilt several times.
        assert!(compare(99, 60_000) >= 2);
    }

    /// Returns how many times the region's node rebuilt its release log.
    fn compare(seed: u64, steps: usize) -> u32 {
        {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // A long run keeps instances for ages, so stale release records pile up.
            let keep = rng.random_range(1..20) * S * if steps > 10_000 { 100_000 } else { 1 };
            let slots = rng.random_range(1..12);
            let budget = rng.random_range(1..16) * 64 * if steps > 10_000 { 1 << 20 } else { 1 };
            let mut edge = EdgeNode::new(slots, budget, keep);
            let mut region = Node::new(slots, budget, keep);
            let memory = |f: u32| 64 * (1 + u64::from(f % 3));
            let (mut re, mut rr) = (Vec::new(), Vec::new());
            let mut busy: Vec<u32> = Vec::new();
            let mut now = 0;
            for step in 0..steps {
                // Ties in time are common on purpose.
                now += rng.random_range(0..3) * S / 2;
                match rng.random_range(0..10) {
                    0..5 => {
                        let f = rng.random_range(0..8);
                        let a = edge.acquire(now, f, memory(f), &mut re);
                        let b = region.acquire(now, f, memory(f), &mut rr);
                        assert_eq!(a, b, "seed {seed} step {step}: acquire {f}");
                        if a.is_some() {
                            busy.push(f);
                        }
                    }
                    5..8 if !busy.is_empty() => {
                        let f = busy.swap_remove(rng.random_range(0..busy.len()));
                        edge.release(now, f, memory(f));
                        region.release(now, f);
                    }
                    8 => {
                        let f = rng.random_range(0..8);
                        edge.drop_idle(now, f, &mut re);
                        region.drop_idle(now, f, &mut rr);
                    }
                    _ => {
                        edge.sweep(now, &mut re);
                        region.sweep(now, &mut rr);
                        let key = |r: &Removed| (r.at, r.memory_mb);
                        re.sort_by_key(key);
                        rr.sort_by_key(key);
                        assert_eq!(re, rr, "seed {seed} step {step}: removals");
                        assert_eq!(
                            (edge.used_mb, edge.instances, edge.busy),
                            (region.used_mb, region.instances, region.busy),
                            "seed {seed} step {step}"
                        );
                        for f in 0..8 {
                            assert_eq!(edge.idle_count(f), region.idle_count(f));
                        }
                    }
                }
            }
            region.log_rebuilds
        }
    }
}
