//! The epoch ticker: one thread per sandbox advancing the engine's epoch on a wall-clock
//! schedule, which is what turns epoch deadlines into timeouts.
//!
//! Owns the thread's lifetime: it is joined when the ticker is dropped, so a sandbox never
//! leaks a thread. Never touches a store or runs guest code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// A running epoch ticker; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts a thread calling `engine.increment_epoch()` once per `tick` of wall-clock
    /// time. Ticks missed while the thread was not scheduled are caught up, so `n` ticks
    /// always mean at least `n * tick` elapsed.
    ///
    /// # Errors
    /// The OS refused to start the thread.
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("strata-epoch".into())
            .spawn(move || run(&engine, tick, &flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(engine: &Engine, tick: Duration, stop: &AtomicBool) {
    let mut next = Instant::now() + tick;
    loop {
        let now = Instant::now();
        if now < next {
            // Parked rather than slept so that dropping the ticker wakes it at once.
            thread::park_timeout(next - now);
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        while next <= now {
            engine.increment_epoch();
            next += tick;
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only loops and increments an atomic; it cannot panic, and if it
            // somehow did there is nothing left to clean up.
            let _ = thread.join();
        }
    }
}
