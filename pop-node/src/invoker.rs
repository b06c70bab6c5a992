//! The POP's [`Invoker`]: gather the facts, ask the edge planner
//! ([`common::policy::edge`]), do what it says: run locally, forward, or refuse. Every
//! rule (events and pinned functions forward, rate limits, the release, the budget, the
//! uncounted fallback) is the planner's; this module only looks things up, holds the
//! slots and does the I/O.
//!
//! The planner also picks the runtime release (an undecided function is sampled with the
//! region canary's share and draw); every local run's outcome is tallied per version for
//! the load report, so the region's runtime canary and alias rollout judges see edge
//! traffic.

use crate::artifacts::ArtifactCache;
use crate::known::{Known, Standing};
use crate::leases::Leases;
use crate::prefetch::Prefetcher;
use crate::upstream::RegionLink;
use crate::warm::WarmPlanner;
use common::clock::Clock;
use common::edge::Invoker;
use common::exec::Executor;
use common::model::{
    ApiError, ErrorKind, ExecutedAt, FunctionKey, InvocationType, InvokeRequest, InvokeResponse,
    LimitHit, LimitKind, LimitScope, NodeId, ResolvedFunction,
};
use common::policy::edge::{
    self, Caller, EdgePlanner, Facts, Plan, Refusal, ReleaseChoice, ReleaseFacts, Slots,
};
use common::policy::{ForwardReason, PlacementPolicy, alias};
use common::sandbox::{CompiledModule, Release, WarmLane};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::debug;

/// The POP's invoker.
#[derive(Debug)]
pub struct PopInvoker {
    node: NodeId,
    executor: Executor,
    link: Arc<RegionLink>,
    known: Arc<Known>,
    artifacts: Arc<ArtifactCache>,
    /// The placement policy and per-function `rate_limit_rps` (per POP, not split).
    planner: Mutex<EdgePlanner>,
    prefetcher: Arc<Prefetcher>,
    warm: Arc<WarmPlanner>,
    local_slots: Arc<Semaphore>,
    forward_slots: Arc<Semaphore>,
    leases: Arc<Leases>,
    /// Added to a function's timeout to bound its forward.
    forward_margin: Duration,
    /// Where placement, rates and the known tables read the time.
    clock: Arc<dyn Clock>,
}

/// The parts a [`PopInvoker`] is built from.
#[derive(Debug)]
pub struct PopParts {
    /// This node's id.
    pub node: NodeId,
    /// Local execution.
    pub executor: Executor,
    /// The link to regions.
    pub link: Arc<RegionLink>,
    /// Pushed and learned tokens and functions.
    pub known: Arc<Known>,
    /// Artifacts in memory and on disk, and the known-functions file.
    pub artifacts: Arc<ArtifactCache>,
    /// The placement policy.
    pub placement: PlacementPolicy,
    /// Background artifact preparation.
    pub prefetcher: Arc<Prefetcher>,
    /// Warm-pool planning for the reactors run here.
    pub warm: Arc<WarmPlanner>,
    /// Local execution slots.
    pub local_concurrency: usize,
    /// Forwarded invocations in flight.
    pub max_forwards: usize,
    /// The tenants' concurrency leases a local run draws from.
    pub leases: Arc<Leases>,
    /// Functions whose request rate is tracked at once.
    pub max_rate_keys: usize,
    /// What a forward may take beyond the function's timeout (the region's queue, the
    /// trip) before it ends with 503 and its stream is reset.
    pub forward_margin: Duration,
    /// Where placement, rates and the known tables read the time.
    pub clock: Arc<dyn Clock>,
}

impl PopInvoker {
    /// An invoker from its parts.
    pub fn new(parts: PopParts) -> Self {
        Self {
            node: parts.node,
            executor: parts.executor,
            link: parts.link,
            known: parts.known,
            artifacts: parts.artifacts,
            planner: Mutex::new(EdgePlanner::new(
                parts.placement,
                parts.clock.now(),
                parts.max_rate_keys,
            )),
            prefetcher: parts.prefetcher,
            warm: parts.warm,
            local_slots: Arc::new(Semaphore::new(parts.local_concurrency.max(1))),
            forward_slots: Arc::new(Semaphore::new(parts.max_forwards.max(1))),
            leases: parts.leases,
            forward_margin: parts.forward_margin,
            clock: parts.clock,
        }
    }

    /// Whether the code `digest` is compiled and ready here.
    pub fn has_module(&self, digest: &common::model::ArtifactDigest) -> bool {
        self.executor.cached(digest).is_some()
    }

    /// Whether the code `digest` is compiled for `release` and ready here.
    pub fn has_module_on(&self, release: Release, digest: &common::model::ArtifactDigest) -> bool {
        self.executor.cached_on(release, digest).is_some()
    }

    /// Waits, at most `within`, until the code `digest` is compiled for `release` here
    /// (woken by each module prepared, never polling); returns whether it is.
    pub async fn module_ready_on(
        &self,
        release: Release,
        digest: &common::model::ArtifactDigest,
        within: Duration,
    ) -> bool {
        let Some(mut changes) = self.executor.watch_modules(release) else {
            return false;
        };
        let ready = changes.wait_for(|_| self.has_module_on(release, digest));
        matches!(tokio::time::timeout(within, ready).await, Ok(Ok(_)))
    }

    /// Whether a connection to any region is up now.
    pub fn region_connected(&self) -> bool {
        self.link.connected()
    }

    /// Fetches the code `digest` from a region and prepares it here now, as the
    /// prefetcher would (deserialized when precompiled for this engine, else compiled);
    /// at once when it is already here.
    ///
    /// # Errors
    /// As [`ArtifactCache::obtain`].
    pub async fn prepare(&self, digest: common::model::ArtifactDigest) -> Result<(), ApiError> {
        self.artifacts.obtain(&self.link, digest).await.map(drop)
    }

    /// Idle warm reactor instances across every pool here.
    pub fn warm_instances(&self) -> usize {
        self.executor.sandbox().warm_totals().0
    }

    /// Stops background work.
    pub fn stop(&self) {
        self.prefetcher.abort_all();
        self.leases.stop();
    }

    /// Writes what the POP learned of functions to disk now (at shutdown).
    pub async fn flush_known(&self) {
        self.artifacts.flush().await;
    }

    /// Forwards `req` to a region, bounded by `timeout` (the function's, when known here;
    /// the longest a function may have otherwise) plus the forward margin.
    async fn forward(
        &self,
        mut req: InvokeRequest,
        key: Option<&FunctionKey>,
        timeout: Option<Duration>,
        reason: ForwardReason,
    ) -> Result<InvokeResponse, ApiError> {
        // The region runs `http`-ABI functions with the device's head: it goes on the wire.
        req.settle_http_head();
        let _slot = Arc::clone(&self.forward_slots)
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::unavailable(
                    "POP is at its limit of forwarded invocations in flight",
                    Duration::from_secs(1),
                )
            })?;
        debug!(function = %req.function, reason = reason.as_str(), "forwarding");
        if let Some(stats) = self.executor.stats() {
            match key {
                Some(k) => stats.forwarded(&k.to_string(), reason.as_str()),
                // The tenant is not known here yet: count it under the bare name.
                None => stats.forwarded(&format!("?/{}", req.function), reason.as_str()),
            }
        }
        let token = req.token.clone();
        let started = Instant::now();
        let timeout = timeout.unwrap_or(Duration::from_millis(u64::from(
            common::model::MAX_TIMEOUT_MS,
        )));
        let (result, function) = self
            .link
            .forward(req, timeout.saturating_add(self.forward_margin))
            .await?;
        let elapsed = started.elapsed();
        if let Some(token) = token.as_deref() {
            match (&result, function) {
                (Err(e), _) if e.kind == ErrorKind::Unauthenticated => {
                    self.known.forget_token(token);
                }
                (_, Some(f)) => {
                    // Also on disk (written in the background, never waited on here), so
                    // a restarted POP can run what it has cached.
                    self.artifacts.remember(token, &f);
                    self.known.learn(token, f, self.clock.now());
                }
                _ => {}
            }
        }
        result.map(|mut resp| {
            resp.timing.forward = Some(elapsed);
            resp
        })
    }
}

impl Invoker for PopInvoker {
    /// Known tokens pass; a token the live push stream does not hold is refused; one this
    /// POP cannot rule out (not pushed yet, stream down) is left to the region, its body
    /// read within the edge's unverified-body budget.
    async fn authorize(
        &self,
        token: Option<&str>,
    ) -> Result<common::edge::Authorization, ApiError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthenticated)?;
        match self.known.token_standing(token, self.clock.now()) {
            Ok(tenant) => Ok(common::edge::Authorization::Verified(Some(tenant))),
            Err(Standing::Refused) => Err(ApiError::unauthenticated()),
            Err(Standing::Unknown) => Ok(common::edge::Authorization::Unverified),
        }
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        let now = self.clock.now();
        // A request through an HTTP route runs as the route's owner (from the table the
        // region sent); anything else needs a token.
        let tenant = match (&req.route, req.token.as_deref()) {
            (Some(grant), _) => Some(grant.tenant.clone()),
            // Looked up once, by the edge's authorization, when it came that way.
            (None, Some(token)) => req
                .authorized_tenant
                .clone()
                .or_else(|| self.known.tenant(token, now)),
            (None, None) => None,
        };
        let caller = match (&tenant, &req.route, &req.token) {
            (Some(_), ..) => Caller::Known,
            (None, None, Some(_)) => Caller::UnknownToken,
            _ => Caller::Anonymous,
        };
        let event = req.invocation_type == InvocationType::Event;
        if let Some(plan) = EdgePlanner::<FunctionKey>::screen(event, caller) {
            return self.act(plan, req, None, None).await;
        }
        let Some(tenant) = tenant else {
            return Err(ApiError::unauthenticated());
        };
        let key = FunctionKey {
            tenant,
            name: req.function.clone(),
        };
        // The draw between an alias's versions: the affinity key's (one client, one
        // version) or the random request id, which a forwarded request keeps, so the
        // region picks the same version.
        let draw = alias::draw(req.request_id.0, req.affinity.as_deref());
        let resolution = self.known.resolve(&key, &req.qualifier, draw, now, |d| {
            self.executor.cached(d).is_some()
        });
        // A moved `$LATEST` or alias resolves to the prepared previous version until the
        // new artifact is ready; start preparing it.
        if let Some(digest) = resolution.as_ref().and_then(|r| r.prepare) {
            self.prefetcher.request(digest);
        }
        let function = resolution.map(|r| r.function);
        let choice = function.as_ref().map(|f| self.release_here(f, &req));
        if let (Some(f), Some(c)) = (&function, &choice)
            && c.refused_by_next
        {
            // The planner's rule: the next release's refusal is its platform failure.
            self.record_outcome(&key, f, Some(Release::Next), false, true, None);
        }
        let (release, canary) = choice.map_or((Release::Current, None), |c| (c.release, c.sampled));
        let module = function
            .as_ref()
            .and_then(|f| self.executor.cached_on(release, &f.digest));
        let facts = Facts {
            function: function.as_ref().map(|f| &f.config),
            release,
            module_bytes: module.as_ref().map(|m| m.size_bytes() as u64),
            planned_instances: self.warm.planned(&key),
        };
        // The slots a local run holds: one of the node's and one of the tenant's lease,
        // drawn only if the planner gets that far; before its lock is taken when it will
        // get that far whatever it has seen, so that lock covers the planner's work only.
        let mut held = None;
        let mut draw = || {
            let node = Arc::clone(&self.local_slots).try_acquire_owned().ok();
            let lease = node
                .as_ref()
                .and_then(|_| self.leases.try_draw(&key.tenant));
            let slots = Slots {
                node: node.is_some(),
                lease: lease.is_some(),
            };
            held = node.zip(lease);
            slots
        };
        let drawn = EdgePlanner::<FunctionKey>::draws_regardless(&facts).then(&mut draw);
        let planned = {
            let mut planner = self.planner.lock().unwrap_or_else(|p| p.into_inner());
            planner.plan(now, &key, &facts, || drawn.unwrap_or_else(&mut draw))
        };
        if let Some(f) = &function {
            if planned.fetch_artifact {
                self.prefetcher.request(f.digest);
            }
            if let Some(r) = planned.prepare_release {
                self.prefetcher.request_on(r, f.digest);
            }
        }
        let timeout = function.as_ref().map(|f| f.config.timeout());
        match (planned.plan, function, module) {
            (Plan::RunLocal { .. }, Some(f), Some(m)) => {
                let _slots = held;
                let resp = self.run_here(m, &key, &f, &req, canary).await;
                if let Ok(r) = &resp {
                    self.warm.record(&f, r.timing.exec);
                }
                resp
            }
            (
                Plan::Forward {
                    reason,
                    uncounted_fallback: true,
                },
                Some(f),
                Some(m),
            ) => {
                drop(held);
                let copy = req.clone();
                match self.forward(req, Some(&key), timeout, reason).await {
                    Err(e)
                        if edge::run_uncounted(
                            e.kind == ErrorKind::Unavailable,
                            self.link.connected(),
                        ) =>
                    {
                        let Ok(_slot) = Arc::clone(&self.local_slots).try_acquire_owned() else {
                            return Err(e);
                        };
                        self.run_here(m, &key, &f, &copy, canary).await
                    }
                    other => other,
                }
            }
            (plan, ..) => {
                drop(held);
                self.act(plan, req, Some(&key), timeout).await
            }
        }
    }
}

impl PopInvoker {
    /// The release `f` runs on at this POP for `req`, as the planner chooses it
    /// ([`edge::release`]) from the region's decision, the owner's pin, the canary's share
    /// and which releases this POP hosts.
    fn release_here(&self, f: &ResolvedFunction, req: &InvokeRequest) -> ReleaseChoice<Release> {
        let hosted = |r: Release| self.executor.sandbox_on(r).is_some();
        let facts = ReleaseFacts {
            named: f.release.as_deref(),
            pinned: f.config.runtime.as_deref(),
            canary_percent: self.known.canary_percent(),
            next: Some(Release::Next).filter(|r| hosted(*r)),
            request_id: req.request_id.0,
            affinity: req.affinity.as_deref(),
        };
        edge::release(
            &facts,
            |n| Release::from_name(n).filter(|r| hosted(*r)),
            || {
                self.executor.cached_on(Release::Next, &f.digest).is_none()
                    && self.prefetcher.next_refuses(&f.digest)
            },
        )
    }

    /// Runs `req` here with `m`, the code of `f`, and tallies its outcome for the next
    /// load report (`canary`: the release the canary sampled, if it did).
    async fn run_here(
        &self,
        m: CompiledModule,
        key: &FunctionKey,
        f: &ResolvedFunction,
        req: &InvokeRequest,
        canary: Option<Release>,
    ) -> Result<InvokeResponse, ApiError> {
        let (resp, platform) = self
            .executor
            .run_outcome(
                m,
                f,
                req,
                false,
                ExecutedAt::Pop(self.node.clone()),
                WarmLane::Dedicated,
            )
            .await?;
        let failed = resp.function_error.is_some();
        let peak = Some(resp.peak_memory_bytes);
        self.record_outcome(key, f, canary, failed, platform, peak);
        Ok(resp)
    }

    fn record_outcome(
        &self,
        key: &FunctionKey,
        f: &ResolvedFunction,
        canary: Option<Release>,
        error: bool,
        platform: bool,
        peak_bytes: Option<u64>,
    ) {
        if let Some(stats) = self.executor.stats() {
            let release = canary.map(Release::name);
            stats.outcome(key, &f.version, release, error, platform, peak_bytes);
        }
    }

    /// Does what a plan without a local run says: forward (for the plan's reason) or
    /// refuse. A local run that lost its function or module on the way is forwarded as
    /// unknown rather than trusted blindly.
    async fn act(
        &self,
        plan: Plan<Release>,
        req: InvokeRequest,
        key: Option<&FunctionKey>,
        timeout: Option<Duration>,
    ) -> Result<InvokeResponse, ApiError> {
        match plan {
            Plan::Forward { reason, .. } => self.forward(req, key, timeout, reason).await,
            Plan::RunLocal { .. } => {
                self.forward(req, key, timeout, ForwardReason::Unknown)
                    .await
            }
            Plan::Reject(Refusal::Unauthenticated) => Err(ApiError::unauthenticated()),
            Plan::Reject(Refusal::RateLimited { rps, retry_after }) => {
                let function = key.map_or_else(|| req.function.to_string(), |k| k.to_string());
                Err(ApiError::throttled(
                    LimitHit::new(LimitScope::Function, LimitKind::Rate, u64::from(rps.get())),
                    format!("function {function} is over its rate limit of {rps}/s"),
                    retry_after,
                ))
            }
        }
    }
}
