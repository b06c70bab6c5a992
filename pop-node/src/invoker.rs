//! The POP's [`Invoker`]: feed the placement policy, then run locally or forward.
//!
//! Runtime release: each function runs on the release the region named in its
//! [`ResolvedFunction`] (the canary's decision); a function promoted to the next release is
//! forwarded until its module for that release is compiled here. An undecided function
//! (no release named, no pin) is sampled here with the region canary's share and draw, and
//! every local run's outcome is tallied per version for the load report, so the region's
//! runtime canary and alias rollout judges see edge traffic too.

use crate::artifacts::ArtifactCache;
use crate::known::Known;
use crate::leases::Leases;
use crate::prefetch::Prefetcher;
use crate::upstream::RegionLink;
use crate::warm::WarmPlanner;
use common::edge::Invoker;
use common::exec::Executor;
use common::model::{
    ApiError, ErrorKind, ExecutedAt, FunctionKey, InvocationType, InvokeRequest, InvokeResponse,
    LimitHit, LimitKind, LimitScope, NodeId, Placement, ResolvedFunction,
};
use common::policy::rate::RateLimits;
use common::policy::{Decision, ForwardReason, LocalState, PlacementPolicy, alias, canary};
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
    placement: Mutex<PlacementPolicy>,
    prefetcher: Arc<Prefetcher>,
    warm: Arc<WarmPlanner>,
    local_slots: Arc<Semaphore>,
    forward_slots: Arc<Semaphore>,
    leases: Arc<Leases>,
    /// Per-function `rate_limit_rps` for requests this POP receives (per POP, not split).
    rates: Mutex<RateLimits>,
    /// Added to a function's timeout to bound its forward.
    forward_margin: Duration,
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
            placement: Mutex::new(parts.placement),
            prefetcher: parts.prefetcher,
            warm: parts.warm,
            local_slots: Arc::new(Semaphore::new(parts.local_concurrency.max(1))),
            forward_slots: Arc::new(Semaphore::new(parts.max_forwards.max(1))),
            leases: parts.leases,
            rates: Mutex::new(RateLimits::new(Instant::now(), parts.max_rate_keys)),
            forward_margin: parts.forward_margin,
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

    fn check_rate(&self, now: Instant, key: &FunctionKey, rps: u32) -> Result<(), ApiError> {
        let Some(rps) = std::num::NonZeroU32::new(rps) else {
            return Ok(());
        };
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        rates.check(now, &key.to_string(), rps).map_err(|r| {
            ApiError::throttled(
                LimitHit::new(LimitScope::Function, LimitKind::Rate, u64::from(rps.get())),
                format!("function {key} is over its rate limit of {rps}/s"),
                r.retry_after,
            )
        })
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
        req: InvokeRequest,
        key: Option<&FunctionKey>,
        timeout: Option<Duration>,
        reason: ForwardReason,
    ) -> Result<InvokeResponse, ApiError> {
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
                    self.known.learn(token, f, Instant::now());
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
        match self.known.token_standing(token, Instant::now()) {
            Some(true) => Ok(common::edge::Authorization::Verified),
            Some(false) => Err(ApiError::unauthenticated()),
            None => Ok(common::edge::Authorization::Unverified),
        }
    }

    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        // Events are queued durably at the region, never kept here: a POP that cannot
        // reach a region answers 503, never 202.
        if req.invocation_type == InvocationType::Event {
            return self.forward(req, None, None, ForwardReason::Pinned).await;
        }
        let now = Instant::now();
        // A request through an HTTP route runs as the route's owner (from the table the
        // region sent); anything else needs a token.
        let tenant = match (&req.route, req.token.as_deref()) {
            (Some(grant), _) => grant.tenant.clone(),
            (None, Some(token)) => match self.known.tenant(token, now) {
                Some(t) => t,
                None => return self.forward(req, None, None, ForwardReason::Unknown).await,
            },
            (None, None) => return Err(ApiError::unauthenticated()),
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
        let timeout = function.as_ref().map(|f| f.config.timeout());
        // A function that dead-letters its failed synchronous invocations runs at the
        // region, where the dead-letter queue is.
        if function.as_ref().is_some_and(|f| f.config.dead_letter_sync) {
            return self
                .forward(req, Some(&key), timeout, ForwardReason::Pinned)
                .await;
        }
        if let Some(rps) = function.as_ref().and_then(|f| f.config.rate_limit_rps) {
            self.check_rate(now, &key, rps)?;
        }
        // The release the region decided (its runtime canary): a function promoted to the
        // next release runs on it here once its module for that release is compiled;
        // until then it is forwarded (never run on a release the region did not pick).
        // An undecided function is sampled here as at the region (same share, same draw),
        // and its outcomes reported, so functions that only run at POPs are judged too.
        let (release, mut canary) = function
            .as_ref()
            .map_or((Release::Current, None), |f| self.release_here(f, &req));
        let mut module = function
            .as_ref()
            .and_then(|f| self.executor.cached_on(release, &f.digest));
        if release == Release::Next
            && module.is_none()
            && let Some(f) = &function
        {
            if canary.is_some() && self.prefetcher.next_refuses(&f.digest) {
                // The next release cannot link this module: a platform failure of that
                // release (as at the region), and this invocation runs on the current one,
                // uncounted (no guest code ran on next, so nothing is repeated).
                self.record_outcome(&key, f, Some(Release::Next), false, true, None);
                canary = None;
                module = self.executor.cached_on(Release::Current, &f.digest);
            } else {
                self.prefetcher.request_on(Release::Next, f.digest);
            }
        }
        // A local run needs a node slot and a slot of the tenant's lease; without either it
        // is forwarded, and the region charges it to its own count (or answers 429).
        let node_slot = Arc::clone(&self.local_slots)
            .try_acquire_owned()
            .ok()
            .filter(|_| module.is_some());
        let lease = node_slot
            .as_ref()
            .and_then(|_| self.leases.try_draw(&key.tenant));
        let lease_only = node_slot.is_some() && lease.is_none();
        let slot = node_slot.zip(lease);
        let local = LocalState {
            placement: function
                .as_ref()
                .map_or(Placement::Auto, |f| placement_of(f)),
            known: function.is_some(),
            artifact_ready: module.is_some(),
            slot_free: slot.is_some(),
            cost_bytes: function.as_ref().map_or(0, |f| {
                budget_cost(f, module.as_ref(), self.warm.planned(&key))
            }),
        };
        let (decision, wants_artifact) = {
            let mut policy = self.placement.lock().unwrap_or_else(|p| p.into_inner());
            policy.handle_request(now, &key);
            let d = policy.decide(now, &key, local);
            (d, policy.wants_artifact(&key, local))
        };
        if wants_artifact && let Some(f) = &function {
            self.prefetcher.request(f.digest);
        }
        match (decision, function, module) {
            (Decision::Local, Some(f), Some(m)) => {
                let _slot = slot;
                let resp = self.run_here(m, &key, &f, &req, canary).await;
                if let Ok(r) = &resp {
                    self.warm.record(&f, r.timing.exec);
                }
                resp
            }
            (Decision::Forward(ForwardReason::OverCapacity), Some(f), Some(m)) if lease_only => {
                let copy = req.clone();
                match self
                    .forward(req, Some(&key), timeout, ForwardReason::OverCapacity)
                    .await
                {
                    // No region is reachable, so no lease can be granted: serve what is
                    // cached here, uncounted (the global limit holds while a region is).
                    // A region that stops answering lease messages is caught earlier, in
                    // `Leases::try_draw` (stalled draws), without forwarding to it.
                    Err(e) if e.kind == ErrorKind::Unavailable && !self.link.connected() => {
                        let Ok(_slot) = Arc::clone(&self.local_slots).try_acquire_owned() else {
                            return Err(e);
                        };
                        self.run_here(m, &key, &f, &copy, canary).await
                    }
                    other => other,
                }
            }
            (Decision::Forward(reason), ..) => {
                drop(slot);
                self.forward(req, Some(&key), timeout, reason).await
            }
            // Local without a function or module cannot be decided (the state said both
            // exist); treat it as unknown rather than trusting the policy blindly.
            (Decision::Local, ..) => {
                drop(slot);
                self.forward(req, Some(&key), timeout, ForwardReason::Unknown)
                    .await
            }
        }
    }
}

impl PopInvoker {
    /// The release `f` runs on at this POP for `req`, and the release the runtime canary
    /// sampled when it did: the release the region named, else the owner's `runtime` pin,
    /// if hosted here; a function with neither is undecided, and while the region canaries
    /// (its hints carry a share) and this POP hosts the next release, the request's draw
    /// picks the side ([`canary::sample`]) exactly as the region would pick it.
    fn release_here(
        &self,
        f: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> (Release, Option<Release>) {
        let hosted = |r: Release| self.executor.sandbox_on(r).is_some();
        if let Some(named) = f.release.as_deref().or(f.config.runtime.as_deref()) {
            let release = Release::from_name(named)
                .filter(|r| hosted(*r))
                .unwrap_or(Release::Current);
            return (release, None);
        }
        let percent = self.known.canary_percent();
        if percent == 0 || !hosted(Release::Next) {
            return (Release::Current, None);
        }
        let draw = canary::draw(req.request_id.0, req.affinity.as_deref());
        let release = match canary::sample(percent, draw) {
            canary::Side::Next => Release::Next,
            canary::Side::Current => Release::Current,
        };
        (release, Some(release))
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
}

/// Where a function may run as far as its config says: shared state (a resource group)
/// lives at the region, so such functions are pinned there.
fn placement_of(f: &ResolvedFunction) -> Placement {
    if f.config.resource_group.is_some() {
        Placement::Region
    } else {
        f.config.placement
    }
}

/// What running `f` here costs against the POP's memory budget: its artifact's bytes once
/// it is compiled here, plus the memory limits of its instances: the warm instances the
/// warm-pool plan wants, at least one (a command module's instance per run).
fn budget_cost(f: &ResolvedFunction, module: Option<&CompiledModule>, planned: u32) -> u64 {
    let artifact = module.map_or(0, |m| m.size_bytes() as u64);
    let instances = u64::from(planned.max(1));
    artifact.saturating_add(instances.saturating_mul(f.config.memory_bytes()))
}
