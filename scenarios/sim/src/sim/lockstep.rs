//! Running shards on their own threads in lock-step windows.
//!
//! Every message between shards arrives at least `lookahead` (half the smallest RTT)
//! after it is sent. So when the earliest pending event anywhere is at `t`, every shard
//! can handle all its events before `t + lookahead` without waiting for the others:
//! nothing they send in that window can land inside it. A round is: handle the window,
//! post the messages for other shards, meet; take the messages addressed here, publish
//! the earliest pending time, meet; the next window starts at the smallest of those. The
//! run ends when no shard has anything pending.
//!
//! Each shard takes its messages in shard order and the windows depend only on the
//! shards' queues, so a run is as deterministic as one thread.

use super::Event;
use super::Progress;
use super::queue::Nanos;
use super::shard::Shard;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A barrier for a few threads that meet every ~100 µs of work. A waiter spins for a
/// while (a futex wake-up costs a good share of a window), then sleeps, so an
/// oversubscribed machine (more shards than cores, or tests running in parallel) still
/// makes progress instead of burning the cores the others need.
#[derive(Debug)]
struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// Waiters asleep on `wake` (or about to be).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// A party panicked: nobody will come.
    broken: AtomicBool,
}

/// How long a waiter spins before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            broken: AtomicBool::new(false),
        }
    }

    /// Waits for every party; `false` when one of them panicked instead.
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.parties {
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _held = lock(&self.lock);
                self.wake.notify_all();
            }
            return true;
        }
        let passed = || self.generation.load(Ordering::SeqCst) != generation;
        let started = Instant::now();
        let mut spins = 0u32;
        while !passed() {
            if self.broken.load(Ordering::SeqCst) {
                return false;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && started.elapsed() > SPIN {
                return self.sleep(passed);
            }
        }
        true
    }

    fn sleep(&self, passed: impl Fn() -> bool) -> bool {
        let mut held = lock(&self.lock);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Registered as a sleeper before looking again: the last party either sees us
        // (and notifies under the lock) or moved the generation before we look.
        while !passed() && !self.broken.load(Ordering::SeqCst) {
            held = self
                .wake
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        !self.broken.load(Ordering::SeqCst) || passed()
    }

    /// Marks the barrier broken and wakes every waiter.
    fn break_it(&self) {
        self.broken.store(true, Ordering::SeqCst);
        let _held = lock(&self.lock);
        self.wake.notify_all();
    }
}

/// Breaks the barrier when its thread unwinds, so the others stop instead of waiting for
/// it forever (and the scope then passes the panic on).
struct BreakOnPanic<'a>(&'a SpinBarrier);

impl Drop for BreakOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.break_it();
        }
    }
}

/// What the shards share while they run.
#[derive(Debug)]
struct Exchange {
    shards: usize,
    lookahead: Nanos,
    barrier: SpinBarrier,
    /// Messages from shard `from` to shard `to` at `from * shards + to`.
    mail: Vec<Mutex<Vec<(Nanos, Event)>>>,
    /// The earliest pending time over all shards, per round parity.
    earliest: [AtomicU64; 2],
}

/// Runs `shards` to the end, shard 0 on this thread (reporting `progress`) and each other
/// on its own.
pub(super) fn run(shards: &mut [Shard<'_>], lookahead: Nanos, progress: Progress<'_>) {
    let n = shards.len();
    let x = Exchange {
        shards: n,
        lookahead,
        barrier: SpinBarrier::new(n),
        mail: (0..n * n).map(|_| Mutex::new(Vec::new())).collect(),
        earliest: [AtomicU64::new(Nanos::MAX), AtomicU64::new(Nanos::MAX)],
    };
    let Some((first, rest)) = shards.split_first_mut() else {
        return;
    };
    std::thread::scope(|scope| {
        for shard in rest {
            let x = &x;
            scope.spawn(move || x.drive(shard, &mut |_| {}));
        }
        x.drive(first, progress);
    });
}

impl Exchange {
    fn drive(&self, shard: &mut Shard<'_>, progress: Progress<'_>) {
        let _guard = BreakOnPanic(&self.barrier);
        let me = shard.id as usize;
        let mut limit = 0;
        for round in 0usize.. {
            shard.run_until(limit, progress);
            for (to, out) in shard.outbox.iter_mut().enumerate() {
                if !out.is_empty() {
                    lock(&self.mail[me * self.shards + to]).append(out);
                }
            }
            if !self.barrier.wait() {
                return;
            }
            for from in (0..self.shards).filter(|&f| f != me) {
                let mut inbox = lock(&self.mail[from * self.shards + me]);
                for (at, event) in inbox.drain(..) {
                    shard.queue.push(at, event);
                }
            }
            let next = shard.queue.peek_time().unwrap_or(Nanos::MAX);
            let slot = &self.earliest[round % 2];
            slot.fetch_min(next, Ordering::AcqRel);
            if !self.barrier.wait() {
                return;
            }
            let earliest = slot.load(Ordering::Acquire);
            if me == 0 {
                // Nobody reads the other slot again before everyone has passed the
                // next round's first barrier, and nobody writes it before then.
                self.earliest[(round + 1) % 2].store(Nanos::MAX, Ordering::Release);
            }
            if earliest == Nanos::MAX {
                return;
            }
            limit = earliest.saturating_add(self.lookahead);
        }
    }
}

/// The mailbox's vector; a shard that panicked while holding it left nothing half-done
/// (it only appends or drains), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_holds_everyone_until_the_last_arrives() {
        let parties = 4;
        let barrier = SpinBarrier::new(parties);
        let rounds = 200;
        let arrived = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..parties {
                scope.spawn(|| {
                    for round in 0..rounds {
                        arrived.fetch_add(1, Ordering::SeqCst);
                        assert!(barrier.wait());
                        // Nobody has started the next round's arrival yet.
                        assert!(arrived.load(Ordering::SeqCst) >= (round + 1) * parties);
                        assert!(barrier.wait());
                    }
                });
            }
        });
        assert_eq!(arrived.load(Ordering::SeqCst), rounds * parties);
    }

    #[test]
    fn a_party_that_panics_releases_the_others() {
        let barrier = SpinBarrier::new(2);
        let outcome = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| barrier.wait());
            let failing = scope.spawn(|| {
                let _guard = BreakOnPanic(&barrier);
                // Long enough for the waiter to be asleep.
                std::thread::sleep(Duration::from_millis(20));
                panic!("a shard fails");
            });
            assert!(failing.join().is_err());
            waiter.join()
        });
        assert_eq!(outcome.ok(), Some(false), "the waiter gives up");
    }
}
