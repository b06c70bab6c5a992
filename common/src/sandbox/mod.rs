//! The sandbox: the wasmtime engine, module validation, the guest ABI and its limits.
//!
//! Owns everything wasmtime: the only module in Strata that imports `wasmtime` or
//! `wasmtime-wasi`. The rest of the code sees [`Sandbox`], [`CompiledModule`],
//! [`Invocation`], [`Execution`] and our error types.
//!
//! - [`Sandbox::compile`] validates an upload (size, binary magic, wasmtime validation,
//!   imports limited to WASI preview 1) and pre-links it. Refusals are [`ModuleError`]s,
//!   the uploader's fault.
//! - [`Sandbox::run`] runs one invocation of a command module (DESIGN §3): a fresh store
//!   and instance, stdin from the payload, `_start`, stdout and stderr captured up to their
//!   caps. Every way a guest can fail (exit code, trap, timeout, out of memory, output over
//!   its cap) is classified here, once, into a
//!   [`FunctionError`](crate::model::FunctionError) inside an [`Execution`]; only failures
//!   of the sandbox itself are [`SandboxError`]s.
//! - Guests run on the caller's async task, as `wasmtime serve` runs them: each execution
//!   on a fiber stack from the pooling allocator, so the tokio worker that polls it is
//!   never handed off to another thread. A guest cannot hold a worker: the process's one
//!   epoch ticker thread advances each sandbox's engine epoch every
//!   [`SandboxConfig::epoch_tick_ms`] (the engine is unregistered when the last clone of
//!   the sandbox is dropped), and at every tick a running guest yields its worker to the other tasks, or
//!   traps with [`wasmtime::Trap::Interrupt`] once its invocation's deadline has passed
//!   (see `run::arm`). Host calls never block a worker: a sleep in `poll_oneoff` is a
//!   timer, and shared-state calls (which may do disk or network I/O) run on the blocking
//!   pool. Memory is bounded per store by a [`wasmtime::ResourceLimiter`].
//! - [`ModuleCache`] keeps compiled modules, bounded by total wasm bytes.
//! - [`Sandbox::run_reactor`] runs the reactor ABI (DESIGN §3) in warm instances kept in
//!   bounded per-function-version pools ([`WarmKey`]), with affinity keys mapped to pool
//!   slots by rendezvous hashing; an instance that failed is discarded, never reused.
//!   [`Sandbox::run_reactor_in`] names the pool's [`WarmLane`]: the region's on-demand
//!   fleet keeps its pools in a lane of their own within the same bound.
//! - [`Sandbox::run_http`] runs an `http`-ABI component in a fresh instance per request;
//!   [`Sandbox::run_http_reusing`] (a function that opted in to reuse) in warm instances
//!   kept in the same pools as reactors'.
//! - [`Sandbox::precompile`] and [`Sandbox::load_precompiled`] exchange compiled code as
//!   bytes between engines with equal [`Sandbox::fingerprint`]s.
//!
//! The engine is tuned for many small tenants: the pooling instance allocator (instance
//! slots reserved once, [`SandboxConfig::max_instances`]), copy-on-write memory images,
//! `InstancePre` (imports resolved once per module), Cranelift optimising for speed, one
//! epoch ticker thread per process, and fuel metering for functions that ask for a
//! deterministic CPU bound.
//!
//! Never performs network or file I/O and never gives guests a filesystem, sockets or
//! arguments beyond the program name.

mod artifact;
mod cache;
mod compiled;
mod component;
mod config;
mod engine;
mod environ;
mod error;
mod fdio;
mod host;
mod lane;
mod limits;
mod outbound;
mod poll;
mod pool;
mod prepared;
mod reactor;
mod run;
mod runtime;
mod serve;
mod state;
mod stdio;
mod ticker;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_component;
#[cfg(test)]
mod tests_host;
#[cfg(test)]
mod tests_prepared;
#[cfg(test)]
mod tests_reactor;
#[cfg(test)]
mod tests_reuse;
#[cfg(test)]
mod tests_warm;

pub use cache::ModuleCache;
pub use compiled::CompiledModule;
use compiled::{Code, CoreExports, ModuleInner};
pub use component::is_component;
pub use config::SandboxConfig;
pub use error::{ModuleError, SandboxError};
pub use host::{
    BAD_KEY, BAD_POINTER, BUFFER_TOO_SMALL, NO_STATE, NOT_FOUND, QUOTA_EXCEEDED, UNAVAILABLE,
    VALUE_TOO_LARGE,
};
pub use lane::{OnDemandBudget, WarmLane};
pub use pool::WarmKey;
pub use run::{Execution, Invocation};
pub use runtime::Release;
pub use serve::{HttpExecution, Reuse};
pub use state::{
    MAX_KEY_BYTES, MAX_LIST_KEYS, MAX_VALUE_BYTES, SharedState, StateError, StateHandle, check_key,
    check_value,
};

use crate::model::ArtifactDigest;
use crate::wire::EngineFingerprint;
use limits::MemoryLimiter;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker::EpochTicker;
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};

/// The first four bytes of every WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";
/// What a store carries: the guest's WASI context, its resource limiter and its clocks.
struct StoreState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    /// When the invocation times out; host calls never block past it. `None` for a
    /// timeout too long to represent, which never arrives.
    deadline: Option<Instant>,
    /// The instant the guest's monotonic clock reads zero.
    clock_origin: Instant,
    /// The namespace the `strata` state imports use; `None` answers them `NO_STATE`.
    shared: Option<StateHandle>,
    /// The host's side of the WASI context's stdio (the deprecated `strata.log_v0` writes
    /// to its stderr), re-armed for every invocation.
    stdio: stdio::Stdio,
    /// The invocation's environment variables, which `environ_get` serves; emptied after
    /// every invocation.
    env: Vec<(String, String)>,
    /// The instance's exported `memory`, once instantiated (a store holds one instance),
    /// so the stdio imports need not look it up by name on every call.
    memory: Option<wasmtime::Memory>,
}

impl StoreState {
    /// The state of a new store for an invocation starting at `started`: a WASI context on
    /// new pipes armed with `stdin`, `env` and `shared` as the invocation's, memory limited
    /// to `memory_bytes` and the deadline `timeout` after `started`.
    fn begin(
        cfg: &SandboxConfig,
        started: Instant,
        stdin: bytes::Bytes,
        env: Vec<(String, String)>,
        shared: Option<StateHandle>,
        memory_bytes: u64,
        timeout: Duration,
    ) -> Self {
        let (stdio, wasi) = stdio::Stdio::build(cfg, started);
        stdio.begin(stdin, started);
        Self {
            wasi,
            limiter: MemoryLimiter::new(memory_bytes),
            deadline: started.checked_add(timeout),
            clock_origin: started,
            shared,
            stdio,
            env,
            memory: None,
        }
    }
}

/// Runs WebAssembly guests under limits. Cheap to clone: clones share one engine, one
/// linker and one registration with the process's epoch ticker, dropped with the last
/// clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    /// Import names the linker provides, by module: what `compile` accepts.
    provided: HashMap<String, HashSet<String>>,
    cfg: SandboxConfig,
    fingerprint: EngineFingerprint,
    /// WASI preview 2 and `wasi:http` for components (the `http` ABI).
    components: wasmtime::component::Linker<component::HttpState>,
    /// Warm instances (reactors, and components that opted in to reuse) by function
    /// version.
    pools: pool::WarmPools,
    /// Command instances made ahead of their module's next invocation, on an idle node.
    prepared: prepared::Prepared,
    /// When the last command run started ([`prepared::Idle`]).
    idle: prepared::Idle,
    /// Finished command instances whose slots are being freed after their response
    /// ([`run::run_command`]); a run that finds no free slot waits for these first.
    releasing: Arc<std::sync::atomic::AtomicUsize>,
    /// Command runs in flight ([`run::run_command`]): one running alone frees its
    /// instance after its response, others free theirs at once.
    running: std::sync::atomic::AtomicUsize,
    /// Dropped last, after everything else here; unregisters the engine from the ticker.
    _ticker: EpochTicker,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("fingerprint", &self.inner.fingerprint)
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine (epoch interruption on, Cranelift optimising for speed), links
    /// WASI preview 1 and starts the epoch ticker thread.
    ///
    /// # Errors
    /// [`SandboxError::Config`] for an out-of-range config; [`SandboxError::Engine`] when
    /// wasmtime refuses the configuration or the ticker thread cannot start.
    pub fn new(cfg: SandboxConfig) -> Result<Self, SandboxError> {
        cfg.validate()?;
        let engine_err =
            |what: &str, e: wasmtime::Error| SandboxError::Engine(format!("{what}: {e:#}"));
        let engine = engine::build(&cfg)?;

        let mut linker = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |s: &mut StoreState| &mut s.wasi)
            .map_err(|e| engine_err("linking WASI", e))?;
        poll::bound_poll_oneoff(&mut linker).map_err(|e| engine_err("linking poll_oneoff", e))?;
        environ::link(&mut linker).map_err(|e| engine_err("linking environ_get", e))?;
        fdio::link(&mut linker).map_err(|e| engine_err("linking fd_read and fd_write", e))?;
        host::link(&mut linker, cfg.release).map_err(|e| engine_err("linking `strata`", e))?;
        let now = Instant::now();
        let (stdio, wasi) = stdio::Stdio::build(&cfg, now);
        let probe = StoreState {
            wasi,
            limiter: MemoryLimiter::new(0),
            deadline: None,
            clock_origin: now,
            shared: None,
            stdio,
            env: Vec::new(),
            memory: None,
        };
        let mut store =
            Store::try_new(&engine, probe).map_err(|e| engine_err("creating a store", e))?;
        let mut provided: HashMap<String, HashSet<String>> = HashMap::new();
        for (module, name, _) in linker.iter(&mut store) {
            provided
                .entry(module.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
        drop(store);

        let components =
            component::linker(&engine).map_err(|e| engine_err("linking wasi:http", e))?;
        let fingerprint = engine::fingerprint(&engine);
        let ticker = EpochTicker::start(engine.clone(), cfg.epoch_tick()).map_err(|e| {
            SandboxError::Engine(format!("cannot start the epoch ticker thread: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                provided,
                components,
                pools: pool::WarmPools::new(&cfg),
                prepared: prepared::Prepared::new(cfg.max_instances, cfg.warm_idle()),
                idle: prepared::Idle::new(Duration::from_micros(cfg.make_ahead_after_idle_us)),
                releasing: Arc::default(),
                running: std::sync::atomic::AtomicUsize::new(0),
                cfg,
                fingerprint,
                _ticker: ticker,
            }),
        })
    }

    /// Identifies this engine's compiled-code format: the wasmtime version and a hash of
    /// every setting that affects compiled code. Precompiled artifacts are only exchanged
    /// between engines with equal fingerprints.
    pub fn fingerprint(&self) -> EngineFingerprint {
        self.inner.fingerprint.clone()
    }

    /// The runtime release this sandbox is.
    pub fn release(&self) -> Release {
        self.inner.cfg.release
    }

    /// Whether `module` was compiled by this sandbox's engine (and so can run here).
    pub fn owns(&self, module: &CompiledModule) -> bool {
        wasmtime::Engine::same(module.engine(), &self.inner.engine)
    }

    /// The limits this sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.cfg
    }

    /// Validates, compiles and pre-links `wasm`. CPU-heavy and synchronous: async callers
    /// run it on the blocking pool, never on a worker.
    ///
    /// # Errors
    /// [`ModuleError::TooLarge`] over [`SandboxConfig::max_module_bytes`];
    /// [`ModuleError::NotWasm`] without the binary magic (text WAT included);
    /// [`ModuleError::Invalid`] when wasmtime's validation or compilation fails;
    /// [`ModuleError::UnknownImport`] naming the first import the host does not provide;
    /// [`ModuleError::Link`] when an import has the wrong type.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledModule, ModuleError> {
        let limit = self.inner.cfg.max_module_bytes;
        if wasm.len() > limit {
            return Err(ModuleError::TooLarge {
                size: wasm.len(),
                limit,
            });
        }
        if !wasm.starts_with(WASM_MAGIC) {
            return Err(ModuleError::NotWasm);
        }
        if is_component(wasm) {
            return component::compile(self, wasm);
        }
        let module = Module::from_binary(&self.inner.engine, wasm)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        self.prelink(module, ArtifactDigest::of(wasm), wasm.len())
    }

    /// Checks `module`'s imports against what the host provides and pre-links it.
    fn prelink(
        &self,
        module: Module,
        digest: ArtifactDigest,
        size_bytes: usize,
    ) -> Result<CompiledModule, ModuleError> {
        let count = module.imports().len();
        if count > self.inner.cfg.max_imports {
            return Err(ModuleError::TooManyImports {
                count,
                limit: self.inner.cfg.max_imports,
            });
        }
        for import in module.imports() {
            let known = self
                .inner
                .provided
                .get(import.module())
                .is_some_and(|names| names.contains(import.name()));
            if !known {
                return Err(ModuleError::UnknownImport {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Link(format!("{e:#}")))?;
        let reads_env = module.imports().any(|i| {
            i.module() == "wasi_snapshot_preview1"
                && matches!(i.name(), "environ_get" | "environ_sizes_get")
        });
        let exports = CoreExports::of(&module);
        Ok(CompiledModule {
            inner: Arc::new(ModuleInner {
                digest,
                code: Code::Core(pre),
                size_bytes,
                reads_env,
                exports,
                runs_at_instantiation: Default::default(),
            }),
        })
    }

    /// Runs one invocation of a command module: a fresh store and instance, then `_start`.
    /// Takes up to about `inv.timeout`, yielding to the executor at every epoch tick; needs
    /// a tokio runtime with timers (a guest's sleep is a tokio timer). Dropping the future
    /// ends the guest. The guest's own failures are in [`Execution::failure`].
    ///
    /// # Errors
    /// [`SandboxError::ForeignModule`] when `module` was compiled by another sandbox;
    /// [`SandboxError::Engine`] when a store cannot be created.
    pub async fn run(
        &self,
        module: &CompiledModule,
        inv: Invocation,
    ) -> Result<Execution, SandboxError> {
        run::run_command(&self.inner, module, inv).await
    }

    /// Runs one request through an `http`-ABI component (DESIGN §3): a fresh store and
    /// instance, `head` (with `inv.stdin` as the body) handed to its
    /// `wasi:http/incoming-handler`, and its response collected. Runs like
    /// [`Sandbox::run`]; outbound requests are refused unless `outbound` allows them.
    ///
    /// # Errors
    /// As [`Sandbox::run`], plus [`SandboxError::WrongKind`] for a core module.
    pub async fn run_http(
        &self,
        module: &CompiledModule,
        inv: Invocation,
        head: Option<crate::model::HttpRequestHead>,
        outbound: Option<Arc<crate::policy::outbound::OutboundRules>>,
    ) -> Result<HttpExecution, SandboxError> {
        self.serve(module, inv, head, outbound, None).await
    }

    /// As [`Sandbox::run_http`], for a function that opted in to instance reuse: the
    /// request runs in a warm instance of `reuse.key`'s pool (chosen by its affinity key
    /// like a reactor's, in its lane), created when none is idle, and the instance goes
    /// back to the pool after a request that succeeded and kept no resource; any other
    /// is dropped. Its globals and linear memory are all that persists between requests
    /// (docs/guest-abi.md).
    ///
    /// # Errors
    /// As [`Sandbox::run_http`], plus [`SandboxError::Capacity`] when no instance slot is
    /// free.
    pub async fn run_http_reusing(
        &self,
        reuse: Reuse<'_>,
        module: &CompiledModule,
        inv: Invocation,
        head: Option<crate::model::HttpRequestHead>,
        outbound: Option<Arc<crate::policy::outbound::OutboundRules>>,
    ) -> Result<HttpExecution, SandboxError> {
        self.serve(module, inv, head, outbound, Some(reuse)).await
    }

    async fn serve(
        &self,
        module: &CompiledModule,
        inv: Invocation,
        head: Option<crate::model::HttpRequestHead>,
        outbound: Option<Arc<crate::policy::outbound::OutboundRules>>,
        reuse: Option<Reuse<'_>>,
    ) -> Result<HttpExecution, SandboxError> {
        self.freeing_prepared(inv, |inv| {
            serve::run_http(
                &self.inner,
                module,
                inv,
                head.clone(),
                outbound.clone(),
                reuse,
            )
        })
        .await
    }

    /// Runs one invocation of a reactor module (DESIGN §3): `strata_handle` in a warm
    /// instance of `key`'s pool, created (with `_initialize`) when none is idle. With an
    /// `affinity` key the invocation goes to the pool slot that key hashes to, so it sees
    /// the linear memory earlier invocations with that key left behind, while that
    /// instance lives. Runs like [`Sandbox::run`]; dropping the future drops the instance
    /// and frees its pool slot.
    ///
    /// # Errors
    /// As [`Sandbox::run`], plus [`SandboxError::Capacity`] when no instance slot is free.
    pub async fn run_reactor(
        &self,
        key: &WarmKey,
        module: &CompiledModule,
        inv: Invocation,
        affinity: Option<&str>,
    ) -> Result<Execution, SandboxError> {
        self.run_reactor_in(key, module, inv, affinity, WarmLane::Dedicated)
            .await
    }

    /// As [`Sandbox::run_reactor`], with `key`'s pool in `lane`: an on-demand pool counts
    /// against that lane's budget and keep-alive and, to make room, evicts only other
    /// on-demand pools (see [`WarmLane`]). A pool checked out in the other lane than before
    /// moves, keeping its instances.
    ///
    /// # Errors
    /// As [`Sandbox::run_reactor`].
    pub async fn run_reactor_in(
        &self,
        key: &WarmKey,
        module: &CompiledModule,
        inv: Invocation,
        affinity: Option<&str>,
        lane: WarmLane,
    ) -> Result<Execution, SandboxError> {
        self.freeing_prepared(inv, |inv| {
            reactor::run_reactor(&self.inner, key, module, inv, affinity, lane)
        })
        .await
    }

    /// Runs `run` with `inv`; when it finds no free instance slot while command instances
    /// made ahead hold some, drops those and runs it again (a refusal for capacity comes
    /// before any guest code runs). The invocation is copied only when there are any.
    async fn freeing_prepared<R, F, Fut>(&self, inv: Invocation, run: F) -> Result<R, SandboxError>
    where
        F: Fn(Invocation) -> Fut,
        Fut: std::future::Future<Output = Result<R, SandboxError>>,
    {
        if self.inner.prepared.len() == 0 {
            return run(inv).await;
        }
        let again = inv.clone();
        match run(inv).await {
            Err(SandboxError::Capacity(_)) if self.inner.prepared.clear() > 0 => run(again).await,
            result => result,
        }
    }

    /// Creates reactor instances (running `_initialize`) into `key`'s pool until it holds
    /// `target` live ones, bounded by the pool size; returns how many were created. Used to
    /// pre-warm ahead of forecast traffic. Runs like [`Sandbox::run`].
    ///
    /// # Errors
    /// [`SandboxError::ForeignModule`] or [`SandboxError::Capacity`]/[`SandboxError::Engine`]
    /// when an instance cannot be created for host reasons.
    pub async fn prewarm(
        &self,
        key: &WarmKey,
        module: &CompiledModule,
        target: usize,
        timeout: Duration,
        fuel: Option<u64>,
    ) -> Result<usize, SandboxError> {
        if self.inner.cfg.max_warm_pools == 0 {
            return Ok(0);
        }
        match reactor::prewarm(&self.inner, key, module, target, timeout, fuel).await {
            Err(SandboxError::Capacity(_)) if self.inner.prepared.clear() > 0 => {
                reactor::prewarm(&self.inner, key, module, target, timeout, fuel).await
            }
            result => result,
        }
    }

    /// Drops idle instances of `key`'s pool that have been idle for at least `idle_for`,
    /// least recently used first, until at most `keep` remain; returns how many were
    /// dropped. Busy instances are never touched.
    pub fn retire_warm(&self, key: &WarmKey, keep: usize, idle_for: Duration) -> usize {
        let before = Instant::now().checked_sub(idle_for);
        before.map_or(0, |b| self.inner.pools.retire(key, keep, b))
    }

    /// Drops warm instances (and command instances made ahead) idle for longer than
    /// [`SandboxConfig::warm_idle_ms`] and pools left empty; returns how many warm
    /// instances remain.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        self.inner.prepared.reap(now);
        self.inner.pools.reap(now)
    }

    /// Drops every warm instance (and command instance made ahead) of functions whose
    /// code is `digest` (it was replaced or deleted).
    pub fn drop_warm(&self, digest: &ArtifactDigest) {
        self.inner.pools.remove_digest(digest);
        self.inner.prepared.remove_digest(digest);
    }

    /// Idle warm instances across every pool, and the memory they may use.
    pub fn warm_totals(&self) -> (usize, u64) {
        self.inner.pools.totals()
    }

    /// Command instances made ahead of their invocation, and the memory they may use.
    pub fn made_ahead_totals(&self) -> (usize, u64) {
        self.inner.prepared.totals()
    }

    /// How many warm instances are idle in `key`'s pool.
    pub fn warm_instances(&self, key: &WarmKey) -> usize {
        self.inner.pools.idle(key)
    }
}
