//! One invocation of a command module, and the classification of how it ended.
//!
//! Owns the per-invocation store (WASI context with in-memory stdio from [`super::stdio`],
//! memory limiter, epoch deadline), how a store spends its time on a worker (it yields at
//! every epoch tick and traps once its deadline has passed: [`prepare`], [`arm`]) and the
//! single place where wasmtime's outcomes become
//! [`FunctionError`]s: by type (exit status, trap code, limiter and pipe state), never by
//! matching error text. Never reuses a store or instance across invocations; on an idle
//! node, makes a module's next instance ahead of its invocation ([`super::prepared`]).

use super::limits::MemoryLimiter;
use super::{CompiledModule, Inner, SandboxError, StoreState, prepared};

use crate::model::{FunctionError, FunctionErrorKind, StartKind};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Extern, ModuleExport, Store, Trap, TypedFunc, UpdateDeadline};
use wasmtime_wasi::I32Exit;

/// What one invocation gets: its input and its limits.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The payload, given to the guest as stdin.
    pub stdin: Bytes,
    /// Environment variables, in order. Names should not contain `=` or NUL.
    pub env: Vec<(String, String)>,
    /// Most linear memory the guest may use, in bytes; more is `OutOfMemory`.
    pub memory_bytes: u64,
    /// Wall-clock limit for instantiation plus `_start`; longer is `Timeout`. Measured in
    /// epoch ticks, so it may be exceeded by up to about two ticks (the first check comes
    /// [`FIRST_CHECK_TICKS`] ticks after the start).
    pub timeout: Duration,
    /// Deterministic CPU bound in wasmtime fuel units (about one per instruction); running
    /// out is `Timeout`. `None` for no bound beyond `timeout`.
    pub fuel: Option<u64>,
    /// The shared-state namespace of the function's resource group; `None` for functions
    /// without one (their `strata` state imports answer `NO_STATE`).
    pub state: Option<super::StateHandle>,
}

/// How an invocation went: the guest's output and, if it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// What the guest wrote to stdout (at most `max_stdout_bytes`): the response body.
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr (at most `max_stderr_bytes`): its log.
    pub stderr: Vec<u8>,
    /// `None` on success (exit code 0); otherwise the guest's failure.
    pub failure: Option<FunctionError>,
    /// Always [`StartKind::Cold`] for command modules: every invocation instantiates.
    pub start: StartKind,
    /// Time to create the store and instantiate (including any start function).
    pub instantiate: Duration,
    /// Time `_start` ran; zero when instantiation failed.
    pub exec: Duration,
    /// Largest linear-memory size the guest reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Whether the failure is one a runtime release can be blamed for (a trap, running
    /// out of memory or time, a failed instantiation) rather than the guest choosing to
    /// fail (a non-zero exit or `strata_handle` status, output over its cap): what the
    /// runtime canary compares. `false` on success.
    pub platform_fault: bool,
}

/// What the host observed besides the guest's result; input to [`classify`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Observed {
    pub(super) stdout_over: bool,
    pub(super) stderr_over: bool,
    pub(super) memory_denied: bool,
}

/// What [`prepare`] needs of a store's data: its memory limiter and its deadline.
pub(super) trait Guarded: Send + 'static {
    /// The store's memory limiter.
    fn limiter(&mut self) -> &mut MemoryLimiter;
    /// When the invocation times out; `None` for never.
    fn deadline(&self) -> Option<Instant>;
}

impl Guarded for StoreState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// Sets up a new store's limits and time-keeping: the memory limiter, and at every epoch
/// tick (from the second after [`arm`]) either a yield to the executor (the guest gives
/// its worker to the other tasks, then goes on) or, once the invocation's deadline ([`Guarded::deadline`]) has passed,
/// a [`Trap::Interrupt`]. The deadline is wall-clock, so time spent waiting for a worker
/// after a yield counts against the guest like time spent running.
pub(super) fn prepare<T: Guarded>(store: &mut Store<T>) {
    store.limiter(|s| s.limiter());
    store.epoch_deadline_callback(|cx| {
        let due = cx
            .data()
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline);
        Ok(if due {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
}

/// Epoch ticks from arming a store to its first yield or deadline check. Two, not one:
/// a tick lands at a random moment of a call, so with one a call of a few microseconds
/// that happened to straddle a tick gave its worker back and waited behind every other
/// ready request (milliseconds under load, holding its instance and its concurrency
/// slot: the benchmark's command path saw forwards refused with 429 from it). With two,
/// only a call that has run for at least a whole tick yields, then at every tick.
pub(super) const FIRST_CHECK_TICKS: u64 = 2;

/// Arms `store` for one call: the first deadline check after [`FIRST_CHECK_TICKS`] epoch
/// ticks, and `fuel` (unbounded when `None`). The deadline itself is
/// [`Guarded::deadline`].
pub(super) fn arm<T>(store: &mut Store<T>, fuel: Option<u64>) -> Result<(), SandboxError> {
    store.set_epoch_deadline(FIRST_CHECK_TICKS);
    store
        .set_fuel(fuel.unwrap_or(u64::MAX))
        .map_err(|e| SandboxError::Engine(format!("setting fuel: {e:#}")))
}

/// Whether `e` says the pooling allocator has no free slot.
pub(super) fn is_capacity(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>())
}

/// Runs `module` once with `inv`: see [`super::Sandbox::run`].
pub(super) async fn run_command(
    inner: &Arc<Inner>,
    module: &CompiledModule,
    inv: Invocation,
) -> Result<Execution, SandboxError> {
    if !Engine::same(module.engine(), &inner.engine) {
        return Err(SandboxError::ForeignModule);
    }
    let cfg = &inner.cfg;
    let Invocation {
        stdin,
        env,
        memory_bytes,
        timeout,
        fuel,
        state: shared,
    } = inv;
    let started = Instant::now();
    let running = Running::new(&inner.running);
    let after_idle = inner.prepared.enabled() && inner.idle.starting(started);
    let (mut store, start, stdio) = match inner.prepared.take(module, memory_bytes) {
        // Made ahead, never started: only this invocation's inputs are swapped in.
        Some(ready) => {
            let (mut store, start) = ready.into_parts();
            let state = store.data_mut();
            state.stdio.begin(stdin, started);
            state.env = env;
            state.deadline = started.checked_add(timeout);
            state.clock_origin = started;
            state.shared = shared;
            let stdio = state.stdio.clone();
            arm(&mut store, fuel)?;
            (store, Ok(start), stdio)
        }
        None => {
            let state = StoreState::begin(cfg, started, stdin, env, shared, memory_bytes, timeout);
            let stdio = state.stdio.clone();
            let (store, start) = instantiate(inner, module, state, fuel).await?;
            (store, start, stdio)
        }
    };
    let instantiate = started.elapsed();
    let (result, exec) = match start {
        Ok(start) => {
            let t = Instant::now();
            (start.call_async(&mut store, ()).await, t.elapsed())
        }
        Err(e) => (Err(e), Duration::ZERO),
    };

    let limiter = &store.data().limiter;
    let (memory_denied, peak_memory_bytes) = (limiter.denied(), limiter.peak());
    // Alone, the node has idle time to free the instance in after the response (and, when
    // it was idle before this run too, to make the module's next instance ahead); under
    // load it has none, and a task per free costs more than it hides (measured:
    // docs/performance.md, "Freeing a command's instance", "Command instances made
    // ahead").
    match running.alone() {
        true => {
            let next = (after_idle
                && prepared::preparable(module)
                && !inner.prepared.has(module, memory_bytes))
            .then(|| Next {
                inner: Arc::clone(inner),
                module: module.clone(),
                memory_bytes,
                timeout,
                fuel,
            });
            release_after_response(store, &inner.releasing, next);
        }
        false => drop(store),
    }
    drop(running);
    let out = stdio.finish(cfg);
    let observed = Observed {
        stdout_over: out.stdout_over,
        stderr_over: out.stderr_over,
        memory_denied,
    };
    let guest_chose = chose_to_fail(&result, observed);
    let failure = classify(result, observed, cfg, timeout, memory_bytes, fuel);
    Ok(Execution {
        stdout: out.stdout,
        stderr: out.stderr,
        platform_fault: failure.is_some() && !guest_chose,
        failure,
        start: StartKind::Cold,
        instantiate,
        exec,
        peak_memory_bytes,
    })
}

/// A fresh store holding `state`, with `module` instantiated in it, and the instance's
/// `_start` (or why there is none to call: the instantiation's failure included). When
/// no instance slot is free, waits for the instances being released and drops the
/// instances made ahead, then tries again; [`SandboxError::Capacity`] when still none is.
async fn instantiate(
    inner: &Inner,
    module: &CompiledModule,
    state: StoreState,
    fuel: Option<u64>,
) -> Result<(Store<StoreState>, wasmtime::Result<TypedFunc<(), ()>>), SandboxError> {
    let pre = module.core()?;
    let mut store = new_store(inner, state, fuel)?;
    let mut instantiated = pre.instantiate_async(&mut store).await;
    // No free slot while finished instances are still being released (or are held made
    // ahead): let the releases run, then try again in a new store (the failed attempt
    // counts against this one's instance limit), so neither freeing after the response
    // nor making ahead ever turns into a refusal.
    while let Err(e) = &instantiated
        && is_capacity(e)
        && (inner.releasing.load(Ordering::Acquire) > 0 || inner.prepared.clear() > 0)
    {
        tokio::task::yield_now().await;
        store = new_store(inner, store.into_data(), fuel)?;
        instantiated = pre.instantiate_async(&mut store).await;
    }
    let instance = match instantiated {
        Err(e) if is_capacity(&e) => return Err(SandboxError::Capacity(format!("{e:#}"))),
        Err(e) => return Ok((store, Err(e))),
        Ok(instance) => instance,
    };
    // By the indexes resolved at compile time: no lookup by name per run.
    let exports = module.inner.exports;
    let export = |store: &mut Store<StoreState>, e: Option<ModuleExport>| {
        e.and_then(|e| instance.get_module_export(&mut *store, &e))
    };
    store.data_mut().memory = export(&mut store, exports.memory).and_then(Extern::into_memory);
    let start = export(&mut store, exports.start)
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("no `_start` function export"))
        .and_then(|f| f.typed::<(), ()>(&store));
    Ok((store, start))
}

/// A store for one command run, limited and armed.
fn new_store(
    inner: &Inner,
    state: StoreState,
    fuel: Option<u64>,
) -> Result<Store<StoreState>, SandboxError> {
    let mut store = Store::try_new(&inner.engine, state)
        .map_err(|e| SandboxError::Engine(format!("creating a store: {e:#}")))?;
    prepare(&mut store);
    arm(&mut store, fuel)?;
    Ok(store)
}

/// What making a module's next instance ahead needs.
struct Next {
    inner: Arc<Inner>,
    module: CompiledModule,
    memory_bytes: u64,
    timeout: Duration,
    fuel: Option<u64>,
}

impl Next {
    /// Makes the instance and keeps it for the module's next invocation; a module whose
    /// instantiation ran guest code (its fuel moved) or failed is marked never to be made
    /// ahead again, and one that finds no free slot is simply not made.
    async fn make(self) {
        let Self {
            inner,
            module,
            memory_bytes,
            timeout,
            fuel,
        } = self;
        let now = Instant::now();
        let state = StoreState::begin(
            &inner.cfg,
            now,
            Bytes::new(),
            Vec::new(),
            None,
            memory_bytes,
            timeout,
        );
        let Ok(pre) = module.core() else { return };
        let Ok(mut store) = new_store(&inner, state, fuel) else {
            return;
        };
        let fuel_before = store.get_fuel().ok();
        let instantiated = pre.instantiate_async(&mut store).await;
        let ran_guest_code = store.get_fuel().ok() != fuel_before;
        let start = match instantiated {
            Err(e) if is_capacity(&e) => return,
            Ok(instance) if !ran_guest_code => {
                let exports = module.inner.exports;
                let memory = exports
                    .memory
                    .and_then(|e| instance.get_module_export(&mut store, &e))
                    .and_then(Extern::into_memory);
                store.data_mut().memory = memory;
                exports
                    .start
                    .and_then(|e| instance.get_module_export(&mut store, &e))
                    .and_then(Extern::into_func)
                    .and_then(|f| f.typed::<(), ()>(&store).ok())
            }
            Ok(_) | Err(_) => None,
        };
        match start {
            Some(start) => {
                let ready =
                    prepared::Ready::new(module, memory_bytes, Instant::now(), store, start);
                inner.prepared.put(ready, Instant::now());
            }
            None => prepared::mark_runs_at_instantiation(&module),
        }
    }
}

/// Frees a finished command instance (its pooling slot, and the reset of its linear
/// memory, microseconds of kernel work) off the request's path (when it ran alone): on a
/// task of its own, which the worker runs once the request's task next waits (after the
/// response has been written), when there is a runtime; at once otherwise. Its output has
/// already been captured host-side, so nothing the response needs is freed late.
/// `releasing` counts the instances not yet freed. The same task then makes `next`, the
/// module's next instance, ahead of its invocation.
fn release_after_response(
    store: Store<StoreState>,
    releasing: &Arc<AtomicUsize>,
    next: Option<Next>,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        drop(store);
        return;
    };
    releasing.fetch_add(1, Ordering::AcqRel);
    let release = Release {
        store: Some(store),
        releasing: Arc::clone(releasing),
    };
    // Dropped when the task runs, or with the task if the runtime shuts down first.
    drop(rt.spawn(async move {
        drop(release);
        if let Some(next) = next {
            next.make().await;
        }
    }));
}

/// Counts a command run in `running` until dropped.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn new(running: &'a AtomicUsize) -> Self {
        running.fetch_add(1, Ordering::AcqRel);
        Self(running)
    }

    /// Whether no other command run is in flight in this sandbox.
    fn alone(&self) -> bool {
        self.0.load(Ordering::Acquire) <= 1
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A finished store on its way out; counted in `releasing` until it is freed.
struct Release<T: 'static> {
    store: Option<Store<T>>,
    releasing: Arc<AtomicUsize>,
}

impl<T> Drop for Release<T> {
    fn drop(&mut self) {
        drop(self.store.take());
        self.releasing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a guest's failure was its own choice: a non-zero exit (not after denied
/// memory) or output over its cap.
pub(super) fn chose_to_fail<T>(result: &wasmtime::Result<T>, observed: Observed) -> bool {
    if observed.stdout_over || observed.stderr_over {
        return true;
    }
    let exited = result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<I32Exit>())
        .is_some();
    exited && !observed.memory_denied
}

/// The one place where how a guest ended becomes success or a [`FunctionError`].
///
/// Precedence: output over its cap (whatever the exit status, since the guest's later
/// behaviour is a consequence of the refused write), clean exit, timeout, memory denied
/// while failing, non-zero exit, trap, anything else.
pub(super) fn classify(
    result: wasmtime::Result<()>,
    observed: Observed,
    cfg: &super::SandboxConfig,
    timeout: Duration,
    memory_bytes: u64,
    fuel: Option<u64>,
) -> Option<FunctionError> {
    let unhandled = |message: String| FunctionError {
        kind: FunctionErrorKind::Unhandled,
        message,
    };
    if observed.stdout_over {
        return Some(unhandled(format!(
            "stdout over {} bytes",
            cfg.max_stdout_bytes
        )));
    }
    if observed.stderr_over {
        return Some(unhandled(format!(
            "stderr over {} bytes",
            cfg.max_stderr_bytes
        )));
    }
    let error = result.err()?;
    let exit = error.downcast_ref::<I32Exit>().map(|e| e.0);
    if exit == Some(0) {
        return None;
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return Some(FunctionError {
            kind: FunctionErrorKind::Timeout,
            message: format!("timed out after {} ms", timeout.as_millis()),
        });
    }
    if trap == Some(Trap::OutOfFuel) {
        // Fuel is the deterministic form of the CPU bound, so it reads as a timeout.
        return Some(FunctionError {
            kind: FunctionErrorKind::Timeout,
            message: format!(
                "ran out of fuel: the limit is {} units",
                fuel.unwrap_or(u64::MAX)
            ),
        });
    }
    if observed.memory_denied {
        return Some(FunctionError {
            kind: FunctionErrorKind::OutOfMemory,
            message: format!("out of memory: the limit is {memory_bytes} bytes"),
        });
    }
    if let Some(code) = exit {
        return Some(unhandled(format!("exited with code {code}")));
    }
    if let Some(trap) = trap {
        return Some(unhandled(trap.to_string()));
    }
    // The root cause is the specific message; the layers above it are wasmtime's
    // backtrace and call-site context.
    Some(unhandled(error.root_cause().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;
    use wasmtime::{Config, Module};

    /// A store's data with no deadline: only yields, never interrupts.
    struct Unbounded(MemoryLimiter);

    impl Guarded for Unbounded {
        fn limiter(&mut self) -> &mut MemoryLimiter {
            &mut self.0
        }

        fn deadline(&self) -> Option<Instant> {
            None
        }
    }

    /// Whether a short guest's call, armed as every run arms it and then `ticks` epoch
    /// ticks old, gives its thread back on its first poll. The engine has no ticker: the
    /// test moves the epoch itself, so nothing else can.
    fn yields_after(ticks: u64) -> bool {
        let mut config = Config::new();
        config.epoch_interruption(true).consume_fuel(true);
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(
            &engine,
            r#"(module (func (export "run") (local i32)
                 (loop (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                       (br_if 0 (i32.lt_u (local.get 0) (i32.const 100))))))"#,
        )
        .expect("module");
        let mut store = Store::new(&engine, Unbounded(MemoryLimiter::new(1 << 20)));
        prepare(&mut store);
        arm(&mut store, None).expect("arms");
        for _ in 0..ticks {
            engine.increment_epoch();
        }
        let run = futures::executor::block_on(async {
            let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
                .await
                .expect("instance");
            instance
                .get_typed_func::<(), ()>(&mut store, "run")
                .expect("export")
        });
        let mut call = std::pin::pin!(run.call_async(&mut store, ()));
        let first = futures::executor::block_on(futures::future::poll_fn(|cx| {
            Poll::Ready(call.as_mut().poll(cx))
        }));
        match first {
            Poll::Ready(result) => {
                result.expect("runs");
                false
            }
            Poll::Pending => true,
        }
    }

    #[test]
    fn a_short_call_that_straddles_one_tick_keeps_its_thread() {
        assert!(!yields_after(0));
        assert!(
            !yields_after(1),
            "one tick since arming is no reason to yield"
        );
    }

    #[test]
    fn a_call_older_than_a_whole_tick_yields() {
        assert!(yields_after(FIRST_CHECK_TICKS));
    }
}
