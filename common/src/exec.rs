//! Running a resolved function: the part of an invocation both tiers do the same way.
//!
//! Owns the compiled-module cache (compilation runs on the blocking pool, never on a
//! worker); runs guests on the calling task (the sandbox yields the worker at every epoch
//! tick, so a guest never holds it); picks the guest ABI (a fresh command instance, a
//! warm reactor instance of the function version's pool by affinity key, or a component
//! instance: fresh, or warm from the same pools when the function set
//! `reuse_instances`); turns a
//! [`crate::sandbox::Execution`] into the [`InvokeResponse`] the edge renders. Also owns
//! each invocation's memory size: `x-strata-memory-mb` up to the function's
//! `max_memory_mb` (400 above), else the size [`ResizePolicy`] learned, and with
//! `auto_resize` one retry of an out-of-memory failure at double the memory (the rule is
//! [`memory_retry`]'s). Admission
//! (how many run at once, what happens when full) stays with each node, because a POP
//! spills while a region queues.
//!
//! Runtime choice: an executor hosts the current runtime release and, optionally, the
//! next one (a second [`Sandbox`] with its own module cache). The caller picks the release
//! by which one's module it passes ([`Executor::prepare_on`]); [`Executor::run_outcome`]
//! reports whether a failure is the platform's, which the runtime canary counts. Shared
//! state: a node with a [`StateProvider`] hands functions with a `resource_group` their
//! group's namespace.

use crate::metrics::{NodeStats, Outcome};
use crate::model::{
    Abi, ApiError, ArtifactDigest, ExecutedAt, FunctionErrorKind, FunctionKey, InvokeRequest,
    InvokeResponse, ResolvedFunction, StartKind, Timing,
};
use crate::policy::origin::memory_retry;
use crate::policy::resize::{MemoryReport, ResizeConfig, ResizePolicy, SizeRecord};
use crate::sandbox::{
    CompiledModule, Execution, HttpExecution, Invocation, ModuleCache, ModuleError, Release, Reuse,
    Sandbox, SandboxError, StateHandle, WarmKey, WarmLane,
};
use crate::sharded::{SHARDS, Sharded};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::info;

/// How often idle warm instances are looked for (at most), piggybacking on invocations.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// `retry-after` when every instance slot is busy.
const CAPACITY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Gives functions with a `resource_group` their group's shared-state namespace.
pub trait StateProvider: Send + Sync + std::fmt::Debug {
    /// The namespace of `tenant`'s resource group `group`.
    fn namespace(&self, tenant: &crate::model::TenantId, group: &str) -> StateHandle;
}

/// The next runtime release: its sandbox and its own compiled modules.
#[derive(Clone)]
struct NextRuntime {
    sandbox: Sandbox,
    cache: std::sync::Arc<ModuleCache>,
}

/// Runs functions in a [`Sandbox`] with a bounded cache of compiled modules.
#[derive(Clone)]
pub struct Executor {
    sandbox: Sandbox,
    cache: std::sync::Arc<ModuleCache>,
    next: Option<NextRuntime>,
    state: Option<std::sync::Arc<dyn StateProvider>>,
    stats: Option<std::sync::Arc<NodeStats>>,
    log_sink: Option<std::sync::Arc<dyn crate::logs::LogSink>>,
    /// When idle warm instances were last reaped: milliseconds after `born`, claimed by
    /// one invocation at a time without a lock.
    reaped: std::sync::Arc<(Instant, AtomicU64)>,
    /// Observed peak memory and learned sizes (bounded, see [`ResizePolicy`]), sharded by
    /// function: every invocation reads and updates its function's shard only.
    resize: std::sync::Arc<Sharded<ResizePolicy>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("cached_modules", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor over `sandbox` caching at most `cache_bytes` of modules (by wasm size).
    pub fn new(sandbox: Sandbox, cache_bytes: usize) -> Self {
        Self {
            sandbox,
            cache: std::sync::Arc::new(ModuleCache::new(cache_bytes)),
            next: None,
            state: None,
            stats: None,
            log_sink: None,
            reaped: std::sync::Arc::new((Instant::now(), AtomicU64::new(0))),
            resize: std::sync::Arc::new(Sharded::new(|_| {
                let config = ResizeConfig::default();
                ResizePolicy::new(ResizeConfig {
                    max_functions: config.max_functions.div_ceil(SHARDS),
                    ..config
                })
            })),
        }
    }

    /// This executor, also hosting `sandbox` as the next runtime release, with its own
    /// module cache of the same bound as the current one's.
    #[must_use]
    pub fn with_next_runtime(mut self, sandbox: Sandbox) -> Self {
        let bytes = self.cache.capacity_bytes();
        self.next = Some(NextRuntime {
            sandbox,
            cache: std::sync::Arc::new(ModuleCache::new(bytes)),
        });
        self
    }

    /// This executor, giving functions with a resource group their namespace from
    /// `provider`.
    #[must_use]
    pub fn with_shared_state(mut self, provider: std::sync::Arc<dyn StateProvider>) -> Self {
        self.state = Some(provider);
        self
    }

    /// The sandbox of `release`, if this executor hosts it.
    pub fn sandbox_on(&self, release: Release) -> Option<&Sandbox> {
        match release {
            Release::Current => Some(&self.sandbox),
            Release::Next => self.next.as_ref().map(|n| &n.sandbox),
        }
    }

    /// The release whose sandbox compiled `module` (and so runs it).
    pub fn release_of(&self, module: &CompiledModule) -> Release {
        match &self.next {
            Some(next) if next.sandbox.owns(module) => Release::Next,
            _ => Release::Current,
        }
    }

    /// Changes each time a module is compiled or loaded for `release` (`None`: this
    /// executor has no such release): what waiting for a module to be prepared wakes on.
    pub fn watch_modules(&self, release: Release) -> Option<tokio::sync::watch::Receiver<u64>> {
        match release {
            Release::Current => Some(self.cache.watch()),
            Release::Next => self.next.as_ref().map(|n| n.cache.watch()),
        }
    }

    /// The compiled module with `digest` for `release`, if cached.
    pub fn cached_on(&self, release: Release, digest: &ArtifactDigest) -> Option<CompiledModule> {
        match release {
            Release::Current => self.cached(digest),
            Release::Next => self.next.as_ref().and_then(|n| n.cache.get(digest)),
        }
    }

    /// Compiles `wasm` for `release` on the blocking pool and caches it there. Modules for
    /// the next release are always compiled locally: precompiled artifacts carry the
    /// current release's fingerprint.
    ///
    /// # Errors
    /// [`ModuleError`] when the module is invalid for that release (for the next one, an
    /// import it dropped is [`ModuleError::UnknownImport`]); [`ModuleError::Invalid`] when
    /// this executor does not host the release.
    pub async fn prepare_on(
        &self,
        release: Release,
        wasm: Bytes,
    ) -> Result<CompiledModule, ModuleError> {
        let Some(next) = (release == Release::Next)
            .then_some(())
            .and(self.next.as_ref())
        else {
            return match release {
                Release::Current => self.prepare(wasm).await,
                Release::Next => Err(ModuleError::Invalid(
                    "this node does not host the next runtime release".into(),
                )),
            };
        };
        let sandbox = next.sandbox.clone();
        let module = tokio::task::spawn_blocking(move || sandbox.compile(&wasm))
            .await
            .map_err(|e| ModuleError::Invalid(format!("compile task failed: {e}")))??;
        next.cache.insert(module.clone());
        Ok(module)
    }

    /// This executor, recording every execution (and each tenant's executions in flight)
    /// in `stats`.
    #[must_use]
    pub fn with_stats(mut self, stats: std::sync::Arc<NodeStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The stats executions are recorded in, if any.
    pub fn stats(&self) -> Option<&std::sync::Arc<NodeStats>> {
        self.stats.as_ref()
    }

    /// Hands every invocation's stderr to `sink` (the node's function log).
    #[must_use]
    pub fn with_log_sink(mut self, sink: std::sync::Arc<dyn crate::logs::LogSink>) -> Self {
        self.log_sink = Some(sink);
        self
    }

    /// Keeps `module` (compiled or loaded from a precompiled artifact elsewhere) in the
    /// cache.
    pub fn insert(&self, module: CompiledModule) {
        self.cache.insert(module);
    }

    /// Drops idle warm instances past their keep-alive, at most once per [`REAP_EVERY`].
    fn maybe_reap(&self) {
        let (born, last) = &*self.reaped;
        let now = u64::try_from(born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let then = last.load(Ordering::Relaxed);
        let due = now.saturating_sub(then) >= REAP_EVERY.as_millis() as u64;
        // Of the invocations that find it due, the one that moves the mark reaps.
        if !due
            || last
                .compare_exchange(then, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.sandbox.reap_idle();
        if let Some(next) = &self.next {
            next.sandbox.reap_idle();
        }
    }

    /// The sandbox, for validation and fingerprints.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Warm instances, prepared modules and artifact cache size, for metrics and load reports.
    pub fn levels(&self) -> crate::metrics::Levels {
        let (reactors, reactor_bytes) = self.sandbox.warm_totals();
        crate::metrics::Levels {
            // Prepared command modules start warm (their instances made ahead count with
            // them, their memory here); reactors are warm instances proper.
            warm_instances: (self.cache.len() + reactors) as u64,
            warm_memory_bytes: reactor_bytes.saturating_add(self.sandbox.made_ahead_totals().1),
            artifact_cache_bytes: self.cache.bytes() as u64,
            ..crate::metrics::Levels::default()
        }
    }

    /// The compiled module with `digest`, if cached.
    pub fn cached(&self, digest: &ArtifactDigest) -> Option<CompiledModule> {
        let found = self.cache.get(digest);
        if let Some(stats) = &self.stats {
            stats.artifact_lookup(found.is_some());
        }
        found
    }

    /// Compiles `wasm` on the blocking pool and caches it.
    ///
    /// # Errors
    /// [`ModuleError`] when the module is invalid; nothing is cached then.
    pub async fn prepare(&self, wasm: Bytes) -> Result<CompiledModule, ModuleError> {
        let sandbox = self.sandbox.clone();
        let module = tokio::task::spawn_blocking(move || sandbox.compile(&wasm))
            .await
            .map_err(|e| ModuleError::Invalid(format!("compile task failed: {e}")))??;
        self.cache.insert(module.clone());
        Ok(module)
    }

    /// The right-size policy's shard of `key`.
    fn resize_policy(&self, key: &FunctionKey) -> std::sync::MutexGuard<'_, ResizePolicy> {
        self.resize.by_key(key)
    }

    /// Adds peak memory samples of `key` observed elsewhere (a POP's load report) to the
    /// right-size statistics.
    pub fn observe_peaks(&self, key: &FunctionKey, peaks: &[u64]) {
        let mut policy = self.resize_policy(key);
        for &peak in peaks {
            policy.observe(key, peak);
        }
    }

    /// The right-size records changed since the last call, for the node to store.
    pub fn take_size_records(&self) -> Vec<(FunctionKey, SizeRecord)> {
        let mut dirty = Vec::new();
        self.resize.each(|shard| dirty.extend(shard.take_dirty()));
        dirty
    }

    /// Restores a stored right-size record of `key` (at start-up).
    pub fn restore_size_record(&self, key: &FunctionKey, record: SizeRecord) {
        self.resize_policy(key).restore(key, record);
    }

    /// What this node observed of `version` of `key`'s memory use, for the control API.
    pub fn memory_report(&self, key: &FunctionKey, version: &str) -> MemoryReport {
        self.resize_policy(key).report(key, version)
    }

    /// The memory to run `req` with, in MiB, and what the request asked for: the
    /// `x-strata-memory-mb` value (at least the configured size), else the learned size,
    /// else the configured one.
    ///
    /// # Errors
    /// 400 when the request asks for 0 MiB or more than the function's `max_memory_mb`.
    fn memory_limit(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<(u32, Option<u32>), ApiError> {
        let configured = function.config.memory_mb;
        let ceiling = function.config.memory_ceiling_mb();
        match req.memory_mb {
            Some(0) => Err(ApiError::bad_request(
                "x-strata-memory-mb must be at least 1",
            )),
            Some(n) if n > ceiling => Err(ApiError::bad_request(format!(
                "x-strata-memory-mb {n} is over this function's max_memory_mb of {ceiling}; \
                 raise max_memory_mb in its config to allow more"
            ))),
            Some(n) => Ok((n.max(configured), Some(n))),
            None => {
                let learned = self.resize_policy(&function.key).memory_for(
                    &function.key,
                    &function.version,
                    configured,
                );
                Ok((learned.min(ceiling), None))
            }
        }
    }

    /// Runs one attempt of `req` with `memory_mb` on this task.
    async fn execute(
        &self,
        module: CompiledModule,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        env: Vec<(String, String)>,
        memory_mb: u32,
        lane: WarmLane,
    ) -> Result<HttpExecution, ApiError> {
        let invocation = Invocation {
            stdin: req.payload.clone(),
            env,
            memory_bytes: u64::from(memory_mb) << 20,
            timeout: function.config.timeout(),
            fuel: function.config.fuel,
            state: match (&self.state, &function.config.resource_group) {
                (Some(provider), Some(group)) => {
                    Some(provider.namespace(&function.key.tenant, group))
                }
                _ => None,
            },
        };
        // The release whose sandbox compiled `module` runs it.
        let sandbox = match self.release_of(&module) {
            Release::Next => self.next.as_ref().map_or(&self.sandbox, |n| &n.sandbox),
            Release::Current => &self.sandbox,
        };
        let plain = |execution| HttpExecution {
            execution,
            response: None,
            outbound: None,
        };
        let key = WarmKey {
            function: function.key.clone(),
            version: function.version.clone(),
            digest: module.digest(),
            memory_bytes: invocation.memory_bytes,
        };
        match function.config.abi {
            Abi::Command => sandbox.run(&module, invocation).await.map(plain),
            Abi::Reactor => sandbox
                .run_reactor_in(&key, &module, invocation, req.affinity.as_deref(), lane)
                .await
                .map(plain),
            Abi::Http => {
                // Validated when the config was written; a config that no longer parses
                // (rules tightened since) sends nothing.
                let rules = function
                    .config
                    .outbound
                    .rules()
                    .ok()
                    .flatten()
                    .map(Arc::new);
                let head = req.http_head();
                if function.config.reuse_instances {
                    let reuse = Reuse {
                        key: &key,
                        affinity: req.affinity.as_deref(),
                        lane,
                    };
                    sandbox
                        .run_http_reusing(reuse, &module, invocation, head, rules)
                        .await
                } else {
                    sandbox.run_http(&module, invocation, head, rules).await
                }
            }
        }
        .map_err(|e| match e {
            SandboxError::Capacity(m) => ApiError::unavailable(m, CAPACITY_RETRY_AFTER),
            other => ApiError::internal(other.to_string()),
        })
    }

    /// Runs `req` with `module`, the code of `function`, on this task, in the runtime
    /// release whose sandbox compiled `module`. `cold` says whether preparing the
    /// code was part of this invocation; it is the start kind of a command module, whose
    /// per-invocation instance costs microseconds.
    ///
    /// # Errors
    /// 500 [`ApiError`] when the sandbox itself fails; guest failures are a response with
    /// `function_error` set.
    pub async fn run(
        &self,
        module: CompiledModule,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        cold: bool,
        executed_at: ExecutedAt,
    ) -> Result<InvokeResponse, ApiError> {
        self.run_outcome(
            module,
            function,
            req,
            cold,
            executed_at,
            WarmLane::Dedicated,
        )
        .await
        .map(|(response, _)| response)
    }

    /// As [`Executor::run`], also saying whether a failure is the platform's (a trap,
    /// running out of memory or time; not the guest's own non-zero exit): what the
    /// runtime canary counts. A warm pool (a reactor's, or a component's that reuses
    /// instances) is kept in `lane` (the region's on-demand fleet has a lane of its own).
    ///
    /// # Errors
    /// As [`Executor::run`].
    pub async fn run_outcome(
        &self,
        module: CompiledModule,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        cold: bool,
        executed_at: ExecutedAt,
        lane: WarmLane,
    ) -> Result<(InvokeResponse, bool), ApiError> {
        let (mut limit_mb, asked) = self.memory_limit(function, req)?;
        let _in_flight = self
            .stats
            .as_ref()
            .map(|s| s.in_flight(&function.key.tenant, None));
        self.maybe_reap();
        let runtime = Some(self.release_of(&module).name().to_owned());
        let mut ran = self
            .execute(
                module.clone(),
                function,
                req,
                guest_env(&module, function, req),
                limit_mb,
                lane,
            )
            .await?;
        let out_of_memory = |e: &Execution| {
            e.failure
                .as_ref()
                .is_some_and(|f| f.kind == FunctionErrorKind::OutOfMemory)
        };
        // The planner's rule: one retry with more memory (`auto_resize`).
        let retry = memory_retry(&function.config, out_of_memory(&ran.execution), limit_mb);
        if let Some(retry_mb) = retry {
            self.resize_policy(&function.key).retried(&function.key);
            info!(function = %function.key, from_mb = limit_mb, to_mb = retry_mb,
                "out of memory: retrying with more");
            let env = guest_env(&module, function, req);
            ran = self
                .execute(module, function, req, env, retry_mb, lane)
                .await?;
            limit_mb = retry_mb;
            if !out_of_memory(&ran.execution) && asked.is_none() {
                self.resize_policy(&function.key)
                    .learn(&function.key, &function.version, retry_mb);
            }
        }
        let HttpExecution {
            execution,
            response: http,
            outbound,
        } = ran;
        self.resize_policy(&function.key).record(
            &function.key,
            &function.version,
            limit_mb,
            function.config.memory_mb,
            execution.peak_memory_bytes,
        );
        if !execution.stderr.is_empty()
            && let Some(sink) = &self.log_sink
        {
            sink.function_log(
                &function.key,
                req.request_id,
                crate::logs::now_ms(),
                &execution.stderr,
            );
        }
        if !execution.stderr.is_empty() {
            crate::logs::trace_guest_stderr(&function.key, req.request_id, &execution.stderr);
        }
        // A command module gets a fresh instance every time by design (microseconds, from
        // a pooled slot and a copy-on-write memory image); what makes it cold is having to
        // prepare its code. Reactors, and components that reuse instances, report their
        // instance's own start.
        let start = match (cold, function.config.abi) {
            (true, _) => StartKind::Cold,
            (false, Abi::Http) if function.config.reuse_instances => execution.start,
            // A component, like a command, gets a fresh instance per request.
            (false, Abi::Command | Abi::Http) => StartKind::Warm,
            (false, Abi::Reactor) => execution.start,
        };
        if let Some(stats) = &self.stats {
            let outcome = match execution.failure.as_ref().map(|f| f.kind) {
                None => Outcome::Ok,
                Some(FunctionErrorKind::Unhandled) => Outcome::Unhandled,
                Some(FunctionErrorKind::OutOfMemory) => Outcome::OutOfMemory,
                Some(FunctionErrorKind::Timeout) => Outcome::Timeout,
            };
            stats.executed(&function.key, start, outcome, execution.exec);
        }
        let platform_fault = execution.platform_fault;
        let response = InvokeResponse {
            request_id: req.request_id,
            executed_at,
            start,
            version: function.version.clone(),
            body: execution.stdout.into(),
            function_error: execution.failure,
            timing: Timing {
                instantiate: execution.instantiate,
                exec: execution.exec,
                forward: None,
                outbound,
                compile: None,
            },
            peak_memory_bytes: execution.peak_memory_bytes,
            queued: false,
            runtime,
            http,
        };
        Ok((response, platform_fault))
    }
}

impl From<ModuleError> for ApiError {
    fn from(e: ModuleError) -> Self {
        ApiError::new(crate::model::ErrorKind::InvalidModule, e.to_string())
    }
}

/// The environment a guest of `function` sees for `req`: the function's configured
/// variables, the request's, then `STRATA_FUNCTION`, `STRATA_VERSION` and
/// `STRATA_REQUEST_ID`. Built per execution (a retry builds it again rather than every
/// run keeping a copy).
/// The variables the guest sees (none built for a guest that cannot read them).
fn guest_env(
    module: &CompiledModule,
    function: &ResolvedFunction,
    req: &InvokeRequest,
) -> Vec<(String, String)> {
    if !module.reads_environment() {
        return Vec::new();
    }
    let mut env = Vec::with_capacity(function.config.env.len() + req.env.len() + 3);
    env.extend(
        function
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.extend(req.env.iter().cloned());
    env.push(("STRATA_FUNCTION".into(), function.key.name.to_string()));
    env.push(("STRATA_VERSION".into(), function.version.clone()));
    env.push(("STRATA_REQUEST_ID".into(), req.request_id.to_string()));
    env
}
