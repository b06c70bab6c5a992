//! The epoch ticker: advances each sandbox engine's epoch on a wall-clock schedule, which
//! is what turns epoch deadlines into timeouts and makes a running guest yield its worker.
//!
//! One thread per process serves every engine registered with it (each at its own tick),
//! instead of one thread per sandbox: a node hosts a sandbox per runtime release, and
//! `strata dev` runs a region and a POP in one process, so per-sandbox threads woke the
//! process four times per millisecond; each wake-up on a busy machine preempts a worker
//! that was serving requests. Ticks fall on one grid from the process's first registration,
//! so engines with the same tick (every sandbox of a node has the same) share each
//! wake-up instead of each waking the thread at its own phase. The thread starts with the
//! first registration and ends when the last one is dropped. It never touches a store or
//! runs guest code.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// One engine's place in the process-wide ticker; dropping it unregisters the engine
/// (the ticker holds no reference to it afterwards).
#[derive(Debug)]
pub(crate) struct EpochTicker {
    id: u64,
}

struct Entry {
    id: u64,
    engine: Engine,
    tick: Duration,
    next: Instant,
}

#[derive(Default)]
struct Registry {
    entries: Vec<Entry>,
    next_id: u64,
    /// Whether the thread is running (it clears this, under the lock, when it ends).
    running: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    next_id: 0,
    running: false,
});
/// Signalled when the registry changes, so the thread re-plans (or ends) at once.
static CHANGED: Condvar = Condvar::new();
/// Where the tick grid starts: the process's first registration.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The first tick after `now` on the grid of `tick`s from `origin`. Two engines with the
/// same tick get the same ticks whenever each registered, so one wake-up serves both.
fn first_tick(origin: Instant, now: Instant, tick: Duration) -> Instant {
    let since = now.saturating_duration_since(origin).as_nanos();
    let step = tick.as_nanos().max(1);
    let ticks = u32::try_from(since / step + 1).unwrap_or(u32::MAX);
    origin + tick * ticks
}

fn registry() -> MutexGuard<'static, Registry> {
    // The critical sections only push, remove and increment atomics; a panic cannot
    // leave the registry half-updated.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EpochTicker {
    /// Registers `engine` to have `increment_epoch()` called once per `tick` of wall-clock
    /// time, starting the ticker thread if none runs. The first tick comes within one
    /// `tick` (on the process's grid), and ticks missed while the thread was not scheduled
    /// are caught up, so `n` ticks always mean at least `(n - 1) * tick` elapsed.
    ///
    /// # Errors
    /// The OS refused to start the thread.
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let mut r = registry();
        if !r.running {
            thread::Builder::new()
                .name("strata-epoch".into())
                .spawn(run)?;
            r.running = true;
        }
        let id = r.next_id;
        r.next_id += 1;
        let now = Instant::now();
        r.entries.push(Entry {
            id,
            engine,
            tick,
            next: first_tick(*ORIGIN.get_or_init(|| now), now, tick),
        });
        drop(r);
        CHANGED.notify_all();
        Ok(Self { id })
    }
}

fn run() {
    let mut r = registry();
    loop {
        let now = Instant::now();
        for e in &mut r.entries {
            while e.next <= now {
                e.engine.increment_epoch();
                e.next += e.tick;
            }
        }
        let Some(next) = r.entries.iter().map(|e| e.next).min() else {
            r.running = false;
            return;
        };
        let wait = next.saturating_duration_since(Instant::now());
        r = CHANGED
            .wait_timeout(r, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        let mut r = registry();
        r.entries.retain(|e| e.id != self.id);
        drop(r);
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Module, Store, UpdateDeadline};

    /// Spins a guest on `engine` until the ticker has advanced its epoch `ticks` times
    /// (counted by the store's epoch callback); returns how long that took.
    fn spin_for_ticks(engine: &Engine, ticks: u32) -> Duration {
        let module =
            Module::new(engine, r#"(module (func (export "spin") (loop br 0)))"#).expect("module");
        let mut store = Store::new(engine, 0u32);
        store.epoch_deadline_callback(move |mut cx| {
            *cx.data_mut() += 1;
            Ok(if *cx.data() >= ticks {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .expect("export");
        // The clock starts before the deadline is armed: a tick that came while the
        // module compiled would otherwise count from before `started`.
        let started = Instant::now();
        store.set_epoch_deadline(1);
        let trapped = spin.call(&mut store, ());
        assert!(trapped.is_err(), "the spin ends only by interruption");
        started.elapsed()
    }

    fn epoch_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "strata-epoch")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn engines_registered_apart_share_their_ticks() {
        let origin = Instant::now();
        let ms = Duration::from_millis(1);
        let a = first_tick(origin, origin + Duration::from_micros(100), ms);
        let b = first_tick(origin, origin + Duration::from_micros(900), ms);
        assert_eq!(a, b, "one wake-up serves both");
        assert_eq!(a, origin + ms);
        // A tick due exactly now is not the next one; a slower tick lands on the grid too.
        assert_eq!(first_tick(origin, origin + ms, ms), origin + 2 * ms);
        let twenty = Duration::from_millis(20);
        assert_eq!(first_tick(origin, origin + 3 * ms, twenty), origin + twenty);
        // A clock read before the origin (another thread set it) counts from the origin.
        assert_eq!(first_tick(origin + ms, origin, ms), origin + 2 * ms);
    }

    #[test]
    fn one_thread_ticks_every_registered_engine_at_its_own_rate() {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let fast = Engine::new(&cfg).expect("engine");
        let slow = Engine::new(&cfg).expect("engine");
        let _a = EpochTicker::start(fast.clone(), Duration::from_millis(1)).expect("ticker");
        let _b = EpochTicker::start(slow.clone(), Duration::from_millis(20)).expect("ticker");
        // Both engines tick at once, each at its rate, never early.
        let slow_run = thread::spawn(move || spin_for_ticks(&slow, 3));
        let fast_took = spin_for_ticks(&fast, 30);
        let slow_took = slow_run.join().expect("slow spinner");
        assert!(fast_took >= Duration::from_millis(29), "{fast_took:?}");
        assert!(slow_took >= Duration::from_millis(40), "{slow_took:?}");
        // One thread for the whole process (other tests' sandboxes included); a thread
        // that has just seen its last engine go may take a moment to end.
        let started = Instant::now();
        while epoch_threads() != 1 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} epoch threads",
                epoch_threads()
            );
            thread::yield_now();
        }
    }
}
