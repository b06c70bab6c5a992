//! The reactor ABI (DESIGN §3): an instance created once (`_initialize`), then
//! `strata_handle` per invocation with that invocation's stdin, stdout and stderr, the
//! instance and its linear memory kept warm in a [`super::pool`] slot between calls.
//!
//! Owns creating reactor instances (each with one WASI context for life), arming them for
//! each call (the invocation's stdio, environment and clock origin swapped into that
//! context, epoch deadline, fuel, a per-invocation memory peak) and deciding whether
//! an instance may be reused: one whose call trapped, timed out, ran out of fuel, exited,
//! was denied memory or closed a stdio descriptor is dropped, never handed to another
//! invocation. Classification of
//! failures is shared with commands (`run::classify`).

use super::pool::{WarmInstance, WarmKey};
use super::run::{Observed, arm, classify, is_capacity, prepare};
use super::stdio::Stdio;
use super::{CompiledModule, Inner, SandboxError, StoreState};
use crate::model::{FunctionError, FunctionErrorKind, StartKind};
use crate::sandbox::{Execution, Invocation};
use bytes::Bytes;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, TypedFunc};

/// A warm reactor instance: its store (which owns the instance and its memory) and its
/// `strata_handle`.
pub(super) struct ReactorInstance {
    store: Store<StoreState>,
    handle: TypedFunc<(), i32>,
}

/// How creating an instance went when it did not: the guest's failure (a trap in
/// `_initialize`, memory denied, a timeout) with what the host observed.
struct CreateFailure {
    error: wasmtime::Error,
    memory_denied: bool,
    peak: u64,
}

/// A new instance and what its `_initialize` wrote to stderr.
type Created = (Box<ReactorInstance>, Vec<u8>);

/// Instantiates `module` and runs its `_initialize`, within `timeout` and `fuel`. The
/// store gets the one WASI context the instance keeps for life; `_initialize`'s stdout is
/// discarded and its stderr returned, to be logged with the first invocation's.
async fn create(
    inner: &Inner,
    module: &CompiledModule,
    memory_bytes: u64,
    timeout: Duration,
    fuel: Option<u64>,
    shared: Option<super::StateHandle>,
    started: Instant,
) -> Result<Result<Created, CreateFailure>, SandboxError> {
    let cfg = &inner.cfg;
    let pre = module.core()?;
    // `_initialize` may read shared state too.
    let state = StoreState::begin(
        cfg,
        started,
        Bytes::new(),
        Vec::new(),
        shared,
        memory_bytes,
        timeout,
    );
    let mut store = Store::try_new(&inner.engine, state)
        .map_err(|e| SandboxError::Engine(format!("creating a store: {e:#}")))?;
    prepare(&mut store);
    arm(&mut store, fuel)?;
    let created = async {
        let instance = pre.instantiate_async(&mut store).await?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)?
                .call_async(&mut store, ())
                .await?;
        }
        instance.get_typed_func::<(), i32>(&mut store, "strata_handle")
    }
    .await;
    match created {
        Ok(handle) => {
            let state = store.data_mut();
            let init_log = state.stdio.finish(cfg).stderr;
            state.shared = None;
            if !state.stdio.intact() {
                // `_initialize` closed or renumbered a stdio descriptor: the calls get a
                // context of their own instead of inheriting that.
                let (stdio, wasi) = Stdio::build(cfg, started);
                state.stdio = stdio;
                state.wasi = wasi;
            }
            Ok(Ok((Box::new(ReactorInstance { store, handle }), init_log)))
        }
        Err(e) if is_capacity(&e) => Err(SandboxError::Capacity(format!("{e:#}"))),
        Err(error) => {
            let limiter = &store.data().limiter;
            Ok(Err(CreateFailure {
                error,
                memory_denied: limiter.denied(),
                peak: limiter.peak(),
            }))
        }
    }
}

/// Creates instances into `key`'s pool until it holds `target` live ones: see
/// [`super::Sandbox::prewarm`].
pub(super) async fn prewarm(
    inner: &Inner,
    key: &WarmKey,
    module: &CompiledModule,
    target: usize,
    timeout: Duration,
    fuel: Option<u64>,
) -> Result<usize, SandboxError> {
    if !Engine::same(module.engine(), &inner.engine) {
        return Err(SandboxError::ForeignModule);
    }
    let mut created = 0;
    // One slot at a time: a slot reserved here is busy to requests, so holding several
    // while creating would push concurrent requests into one-off instances.
    while let Some(slot) = inner.pools.reserve(key, target, Instant::now()) {
        let now = Instant::now();
        // No shared state while pre-warming: each invocation installs its own handle
        // before it runs (see `run_reactor`).
        match create(inner, module, key.memory_bytes, timeout, fuel, None, now).await {
            Ok(Ok((instance, _init_log))) => {
                slot.give_back(Some(WarmInstance::Reactor(instance)), Instant::now());
                created += 1;
            }
            // A guest whose `_initialize` fails is not pre-warmed; its requests will
            // report the failure themselves. (Dropping the reservation empties the slot.)
            Ok(Err(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Runs one reactor invocation: see [`super::Sandbox::run_reactor`].
pub(super) async fn run_reactor(
    inner: &Inner,
    key: &WarmKey,
    module: &CompiledModule,
    inv: Invocation,
    affinity: Option<&str>,
    lane: super::WarmLane,
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
    // The slot is held until the instance goes back: if this future is dropped half-way
    // (the caller went away), the slot is emptied rather than left busy for good.
    let (slot, warm) = inner.pools.checkout(key, affinity, lane, started).reserve();
    let (mut instance, start, init_log) = match warm.and_then(WarmInstance::reactor) {
        Some(instance) => (instance, StartKind::Warm, Vec::new()),
        None => match create(
            inner,
            module,
            memory_bytes,
            timeout,
            fuel,
            shared.clone(),
            started,
        )
        .await
        {
            Ok(Ok((instance, log))) => (instance, StartKind::Cold, log),
            Ok(Err(failure)) => {
                drop(slot);
                let observed = Observed {
                    stdout_over: false,
                    stderr_over: false,
                    memory_denied: failure.memory_denied,
                };
                return Ok(Execution {
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    failure: classify(
                        Err(failure.error),
                        observed,
                        cfg,
                        timeout,
                        memory_bytes,
                        fuel,
                    ),
                    start: StartKind::Cold,
                    instantiate: started.elapsed(),
                    exec: Duration::ZERO,
                    peak_memory_bytes: failure.peak,
                    platform_fault: true,
                });
            }
            Err(e) => return Err(e),
        },
    };
    // A warm call starts where the checkout did: one clock read fewer on the hot path.
    let (call_start, instantiate) = match start {
        StartKind::Cold => {
            let now = Instant::now();
            (now, now - started)
        }
        StartKind::Warm => (started, Duration::ZERO),
    };
    let remaining = timeout.saturating_sub(call_start - started);
    {
        // The instance keeps its WASI context; only this invocation's stdio, environment,
        // clock origin, deadline and shared state are swapped in.
        let state = instance.store.data_mut();
        state.stdio.begin(stdin, call_start);
        state.env = env;
        state.deadline = call_start.checked_add(remaining);
        state.clock_origin = call_start;
        state.shared = shared;
        state.limiter.start_invocation();
    }
    arm(&mut instance.store, fuel)?;
    let result = instance.handle.call_async(&mut instance.store, ()).await;
    if let Err(e) = &result
        && is_capacity(e)
    {
        // No fiber stack was free: the call never started, and the instance is as it was.
        if let Some(slot) = slot {
            slot.give_back(Some(WarmInstance::Reactor(instance)), Instant::now());
        }
        return Err(SandboxError::Capacity(format!("{e:#}")));
    }
    let ended = Instant::now();
    let exec = ended - call_start;
    let state = instance.store.data_mut();
    let (memory_denied, peak_memory_bytes) = (state.limiter.denied(), state.limiter.peak());
    // Take the output and drop the payload, variables and state handle now, so that an
    // idle instance holds nothing of this invocation but its linear memory.
    let out = state.stdio.finish(cfg);
    state.env = Vec::new();
    state.shared = None;
    // Reused only after a clean return with its stdio descriptors as they were: a trap,
    // timeout, exit or denied growth may have left the guest's memory in a state no later
    // invocation should see, and a closed or renumbered stdio descriptor would stay so.
    let reusable = result.is_ok() && !memory_denied && state.stdio.intact();
    let status = result.as_ref().ok().copied();
    match slot {
        Some(slot) if reusable => slot.give_back(Some(WarmInstance::Reactor(instance)), ended),
        Some(slot) => {
            drop(instance);
            slot.give_back(None, ended);
        }
        None => drop(instance),
    }

    let (stdout, mut stderr) = (out.stdout, out.stderr);
    if !init_log.is_empty() {
        let mut log = init_log;
        log.extend_from_slice(&stderr);
        log.truncate(cfg.max_stderr_bytes);
        stderr = log;
    }
    let observed = Observed {
        stdout_over: out.stdout_over,
        stderr_over: out.stderr_over,
        memory_denied,
    };
    let guest_chose = match (status, &result) {
        (Some(code), _) => code != 0 && !memory_denied,
        (None, result) => super::run::chose_to_fail(result, observed),
    };
    let failure = match (status, result) {
        (Some(0), _) => classify(Ok(()), observed, cfg, timeout, memory_bytes, fuel),
        (Some(code), _) => {
            classify(Ok(()), observed, cfg, timeout, memory_bytes, fuel).or_else(|| {
                Some(if memory_denied {
                    FunctionError {
                        kind: FunctionErrorKind::OutOfMemory,
                        message: format!("out of memory: the limit is {memory_bytes} bytes"),
                    }
                } else {
                    FunctionError {
                        kind: FunctionErrorKind::Unhandled,
                        message: format!("strata_handle returned {code}"),
                    }
                })
            })
        }
        (None, result) => classify(result.map(drop), observed, cfg, timeout, memory_bytes, fuel),
    };
    Ok(Execution {
        stdout,
        stderr,
        platform_fault: failure.is_some() && !guest_chose,
        failure,
        start,
        instantiate,
        exec,
        peak_memory_bytes,
    })
}
