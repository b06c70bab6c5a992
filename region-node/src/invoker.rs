//! Executing an invocation at the region: authenticate, resolve, then gather the facts,
//! ask the origin planner (`common::policy::origin`) and do what it says: its fleet and
//! runtime release, its admission steps in their order (every refusal before the module is
//! loaded or compiled), the run, and what follows it. The same path serves the region's
//! own HTTP edge and invocations forwarded by POPs over QUIC.
//!
//! Runtime choice: with a [`RuntimeCanary`] and a next runtime in the executor, the
//! planner picks each invocation's release from the canary's state and says whether its
//! outcome is counted. A module the next release refuses to link (it dropped an import the
//! guest uses) is a platform failure of the next release, and the invocation then runs on
//! the current one: no guest code ran, so running it again cannot repeat a side effect. When a verdict pins a function,
//! its `on_runtime_incompatible` control function is queued in the durable async queue
//! with the owner's notification as its payload, like `on_failure`: the invocation that
//! decided the verdict waits for that append, never for the control function's run.

use crate::admission::{Admission, TenantShares};
use crate::artifacts::Artifacts;
use crate::canary::RuntimeCanary;
use crate::events::{Events, FailureCause};
use crate::fleet::{Fleet, Fleets};
use crate::limits::Limits;
use crate::registry::Registry;
use crate::rollout::Rollouts;
use crate::routes::Routes;
use common::clock::{Clock, SystemClock};
use common::edge::Invoker;
use common::exec::Executor;
use common::model::{
    ApiError, ErrorKind, ExecutedAt, FunctionKey, InvocationType, InvokeRequest, InvokeResponse,
    NodeId, ResolvedFunction, StartKind, TenantId, Timing,
};
use common::policy::canary::Side;
use common::policy::origin::{self, Facts, OriginPlanner, Plan, Ran, Step};
use common::policy::resize::MemoryReport;
use common::sandbox::Release;
use common::wire::Pressure;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::warn;

/// The region's [`Invoker`].
#[derive(Debug)]
pub struct RegionInvoker {
    node: NodeId,
    registry: Arc<Registry>,
    executor: Executor,
    artifacts: Arc<Artifacts>,
    admission: Admission,
    max_payload_bytes: usize,
    /// Checks invocations that came in through an HTTP route (no token).
    routes: Option<Arc<Routes>>,
    /// The durable async queue (without one, events get 503).
    events: Option<Arc<Events>>,
    /// Picks each invocation's runtime release and judges the next one.
    canary: Option<Arc<RuntimeCanary>>,
    /// Judges alias rollouts with `auto_rollback` (see [`crate::rollout`]).
    rollouts: Option<Arc<Rollouts>>,
    /// Per-tenant concurrency: every execution here, forwarded ones included, is charged
    /// to the region's own in-flight (never to a POP's lease).
    limits: Option<Arc<Limits>>,
    /// The dedicated and on-demand fleets (DESIGN §6).
    fleets: Arc<Fleets>,
    /// The origin planner: fleet, release, the order of admission (`policy::origin`).
    planner: Mutex<OriginPlanner<FunctionKey>>,
    /// Each tenant's share of the execution slots (dedicated fleet).
    slot_shares: Arc<TenantShares>,
    /// Each tenant's share of the on-demand fleet's workers.
    worker_shares: Arc<TenantShares>,
    /// Where the planner reads the time (functions' popularity for the fleet choice).
    clock: Arc<dyn Clock>,
}

impl RegionInvoker {
    /// An invoker for node `node`, refusing payloads over `max_payload_bytes` (the HTTP
    /// edge enforces the same limit while streaming; this also covers what POPs forward).
    pub fn new(
        node: NodeId,
        registry: Arc<Registry>,
        executor: Executor,
        admission: Admission,
        max_payload_bytes: usize,
        artifact_cache_bytes: usize,
    ) -> Self {
        let artifacts = Arc::new(Artifacts::new(
            executor.clone(),
            Arc::clone(&registry),
            artifact_cache_bytes,
        ));
        // One fleet until `with_fleets`: the on-demand one needs workers the node spawns.
        let one_fleet = crate::fleet::FleetsConfig {
            enabled: false,
            ..crate::fleet::FleetsConfig::default()
        };
        let fleets = Arc::new(Fleets::new(one_fleet, &executor));
        let percent = common::policy::share::DEFAULT_TENANT_SHARE_PERCENT;
        let slot_shares = Arc::new(TenantShares::new(
            "execution slots",
            admission.slots(),
            percent,
        ));
        let worker_shares = Arc::clone(&slot_shares);
        Self {
            node,
            registry,
            executor,
            artifacts,
            admission,
            max_payload_bytes,
            routes: None,
            events: None,
            canary: None,
            rollouts: None,
            limits: None,
            planner: Mutex::new(OriginPlanner::new(fleets.placement())),
            fleets,
            slot_shares,
            worker_shares,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same invoker planning with the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Lets one tenant hold at most `percent` of the execution slots and of the on-demand
    /// fleet's `workers` (default [`common::policy::share::DEFAULT_TENANT_SHARE_PERCENT`]).
    #[must_use]
    pub fn with_tenant_share(mut self, percent: u8, workers: usize) -> Self {
        self.slot_shares = Arc::new(TenantShares::new(
            "execution slots",
            self.admission.slots(),
            percent,
        ));
        self.worker_shares = Arc::new(TenantShares::new("on-demand workers", workers, percent));
        self
    }

    /// Charges every execution to `limits` (without, tenants are unlimited).
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Runs rare functions in `fleets`' on-demand fleet (its workers are spawned by the
    /// node).
    #[must_use]
    pub fn with_fleets(mut self, fleets: Arc<Fleets>) -> Self {
        self.planner = Mutex::new(OriginPlanner::new(fleets.placement()));
        self.fleets = fleets;
        self
    }

    /// The fleets.
    pub fn fleets(&self) -> &Arc<Fleets> {
        &self.fleets
    }

    /// Canaries the executor's next runtime release with `canary`.
    #[must_use]
    pub fn with_canary(mut self, canary: Arc<RuntimeCanary>) -> Self {
        self.canary = Some(canary);
        self
    }

    /// The release POPs should run `function` on (set in the [`ResolvedFunction`] a POP
    /// learns with each forwarded result): the canary's decision, or `None` while it is
    /// undecided (the POP samples it with the canary's share) or when this region runs no
    /// canary.
    pub fn release_for_pops(&self, function: &ResolvedFunction) -> Option<String> {
        let release = self
            .live_canary()?
            .decided(&function.key, function.config.runtime.as_deref())?;
        Some(release.name().to_owned())
    }

    /// Judges alias rollouts with `rollouts`.
    #[must_use]
    pub fn with_rollouts(mut self, rollouts: Arc<Rollouts>) -> Self {
        self.rollouts = Some(rollouts);
        self
    }

    /// The alias rollout judges, if this region runs them.
    pub fn rollouts(&self) -> Option<&Arc<Rollouts>> {
        self.rollouts.as_ref()
    }

    /// The runtime canary, if this region runs one.
    pub fn canary(&self) -> Option<&Arc<RuntimeCanary>> {
        self.canary.as_ref()
    }

    /// The runtime canary while it is live: this region runs one and hosts the next
    /// release.
    fn live_canary(&self) -> Option<&Arc<RuntimeCanary>> {
        self.canary
            .as_ref()
            .filter(|_| self.executor.sandbox_on(Release::Next).is_some())
    }

    /// The executor's and admission's gauges.
    pub fn levels(&self) -> common::metrics::Levels {
        let (queued, dead) = self
            .events
            .as_ref()
            .map_or((0, 0), |e| (e.queue_depth(), e.dlq_depth()));
        common::metrics::Levels {
            queue_depth: (self.admission.waiting() + self.fleets.queued()) as u64 + queued,
            dlq_depth: dead,
            ..self.executor.levels()
        }
    }

    /// The region's load as reported to POPs with a result: busy when the admission queue
    /// is past its threshold or `result` was refused for capacity.
    pub fn pressure(&self, result: &Result<InvokeResponse, ApiError>) -> Pressure {
        let refused = matches!(result, Err(e) if e.kind == ErrorKind::Unavailable);
        Pressure {
            busy: refused || self.admission.under_pressure(),
            spare_slots: u32::try_from(self.admission.spare()).unwrap_or(u32::MAX),
        }
    }

    /// The executor's memory observations for `version` of `key` (percentiles, learned
    /// size), for the control API.
    pub fn memory_report(&self, key: &FunctionKey, version: &str) -> MemoryReport {
        self.executor.memory_report(key, version)
    }

    /// Accepts invocations through `routes` (without one, route invocations get 401).
    #[must_use]
    pub fn with_routes(mut self, routes: Arc<Routes>) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Queues event invocations in `events`.
    #[must_use]
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = Some(events);
        self
    }

    /// The async queue, when this region has one.
    pub fn events(&self) -> Option<&Arc<Events>> {
        self.events.as_ref()
    }

    /// The tenant concurrency budgets, when enforced.
    pub fn limits(&self) -> Option<&Arc<Limits>> {
        self.limits.as_ref()
    }

    /// The registry this invoker resolves against.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Precompiled artifacts (prepared on deploy, served to POPs).
    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.artifacts
    }

    /// The executor (shared with the control API, which compiles on deploy).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Runs `req`; also returns the function as resolved for it, when it was, so a POP can
    /// learn it.
    pub async fn execute(
        &self,
        req: InvokeRequest,
    ) -> (Result<InvokeResponse, ApiError>, Option<ResolvedFunction>) {
        let (tenant, resolved) = match self.resolve(&req) {
            Ok(r) => r,
            Err(e) => return (Err(e), None),
        };
        if req.invocation_type == InvocationType::Event {
            let accepted = self.enqueue(tenant, &resolved, req).await;
            return (accepted, Some(resolved));
        }
        let result = self.run(&resolved, &req).await;
        if resolved.config.dead_letter_sync
            && let Some(events) = &self.events
        {
            let cause = match &result {
                Ok(resp) => resp.function_error.as_ref().map(|fe| FailureCause {
                    kind: fe.kind.as_str().to_owned(),
                    message: fe.message.clone(),
                }),
                Err(_) => None,
            };
            if let Some(cause) = cause
                && let Err(e) = events
                    .dead_letter_sync(&tenant, &resolved, &req, cause)
                    .await
            {
                tracing::warn!(request_id = %req.request_id, error = %e.message,
                    "failed synchronous invocation could not be dead-lettered");
            }
        }
        (result, Some(resolved))
    }

    /// Durably queues an event invocation and returns its acceptance (202).
    async fn enqueue(
        &self,
        tenant: TenantId,
        resolved: &ResolvedFunction,
        req: InvokeRequest,
    ) -> Result<InvokeResponse, ApiError> {
        let Some(events) = &self.events else {
            return Err(ApiError::unavailable(
                "this region has no async queue",
                std::time::Duration::from_secs(1),
            ));
        };
        events.accept(tenant, &req).await?;
        Ok(InvokeResponse {
            request_id: req.request_id,
            executed_at: ExecutedAt::Region(self.node.clone()),
            start: StartKind::Warm,
            version: resolved.version.clone(),
            body: bytes::Bytes::new(),
            function_error: None,
            timing: Timing::default(),
            peak_memory_bytes: 0,
            queued: true,
            runtime: None,
            http: None,
        })
    }

    fn resolve(&self, req: &InvokeRequest) -> Result<(TenantId, ResolvedFunction), ApiError> {
        let tenant = match (&req.route, &self.routes) {
            (Some(grant), Some(routes)) => routes.tenant_for(grant, &req.function)?,
            (Some(_), None) => return Err(ApiError::unauthenticated()),
            (None, _) => self.registry.authenticate(req.token.as_deref())?,
        };
        let resolved = self.resolve_as(&tenant, req)?;
        Ok((tenant, resolved))
    }

    /// Resolves `req` for `tenant`, whose identity was already established (a queued
    /// event's token was checked when it was accepted).
    ///
    /// # Errors
    /// 413 for a payload over the limit; 404 for an unknown function or qualifier.
    pub fn resolve_as(
        &self,
        tenant: &TenantId,
        req: &InvokeRequest,
    ) -> Result<ResolvedFunction, ApiError> {
        if req.payload.len() > self.max_payload_bytes {
            return Err(ApiError::payload_too_large(self.max_payload_bytes as u64));
        }
        // The draw between an alias's versions: the affinity key's (one client, one
        // version), else the random request id, which a POP keeps when it forwards, so
        // both tiers pick the same version for one request.
        let draw = common::policy::alias::draw(req.request_id.0, req.affinity.as_deref());
        self.registry
            .resolve(tenant, &req.function, &req.qualifier, draw)
    }

    /// Asks the origin planner how to run `req` as `function`: its fleet, its release
    /// (from the runtime canary's state while this region hosts the next release) and
    /// whether the canary counts it.
    fn plan(&self, function: &ResolvedFunction, req: &InvokeRequest) -> Plan {
        let facts = Facts {
            config: &function.config,
            request_id: req.request_id.0,
            affinity: req.affinity.as_deref(),
            canary: None,
        };
        // A pin names a release only if this region hosts it.
        let side_of = |name: &str| {
            Release::from_name(name)
                .filter(|r| self.executor.sandbox_on(*r).is_some())
                .map(Side::from)
        };
        let now = self.clock.now();
        let mut planner = self.planner.lock().unwrap_or_else(PoisonError::into_inner);
        match self.live_canary() {
            Some(canary) => canary.with_policy(|policy| {
                let facts = Facts {
                    canary: Some(policy),
                    ..facts
                };
                planner.plan(now, &function.key, &facts, side_of)
            }),
            None => planner.plan(now, &function.key, &facts, side_of),
        }
    }

    /// Gathers the facts, asks the planner, and takes the plan's steps in its order: every
    /// step that can refuse (the tenant's limits, the region's capacity, the tenant's share,
    /// a slot or a worker's turn) before the run, the only step that loads or compiles the
    /// module, so a refused invocation costs no compile.
    async fn run(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<InvokeResponse, ApiError> {
        let plan = self.plan(function, req);
        let key = &function.key;
        // What the run holds until it ends.
        let (mut _permit, mut _share, mut _slot, mut _turn) = (None, None, None, None);
        for step in plan.steps() {
            match step {
                Step::Tenant => {
                    if let Some(l) = &self.limits {
                        l.check_rate(key, function.config.rate_limit_rps)?;
                        let name = key.name.as_str();
                        _permit =
                            Some(l.admit(&key.tenant, name, function.config.max_concurrency)?);
                    }
                }
                Step::Capacity if self.admission.is_full() => {
                    return Err(ApiError::unavailable(
                        "region is at capacity: every execution slot is busy and its queue is full",
                        std::time::Duration::from_secs(1),
                    ));
                }
                Step::Capacity => {}
                Step::Share => {
                    let shares = match plan.fleet {
                        Fleet::Dedicated => &self.slot_shares,
                        Fleet::OnDemand => &self.worker_shares,
                    };
                    _share = Some(shares.take(&key.tenant)?);
                }
                Step::Slot => match plan.fleet {
                    Fleet::Dedicated => _slot = Some(self.admission.admit().await?),
                    // The on-demand fleet's worker turn is its slot.
                    Fleet::OnDemand => _turn = Some(self.fleets.turn().await?),
                },
                Step::Run => {
                    let result = self.run_planned(function, req, &plan).await;
                    if plan.fleet == Fleet::Dedicated
                        && let Ok(r) = &result
                    {
                        self.fleets.record(function, r.timing.exec);
                    }
                    return result;
                }
            }
        }
        Err(ApiError::internal("the origin plan has no run step"))
    }

    /// Runs `req` as the plan says (already admitted), then does what the planner says
    /// follows ([`origin::after_run`]): a rerun on the current release, the canary's count.
    async fn run_planned(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        plan: &Plan,
    ) -> Result<InvokeResponse, ApiError> {
        let release = Release::from(plan.release);
        let (response, ran) = match self.run_on(function, req, release, plan.fleet).await {
            Ok((response, platform_fault)) => (Ok(response), Ran::Done { platform_fault }),
            Err(RunError::Link(e)) => {
                warn!(function = %function.key, %release, error = %e, "the release refused the module");
                (Err(ApiError::from(e)), Ran::LinkRefused)
            }
            Err(RunError::Api(e)) => (Err(e), Ran::Failed),
        };
        let after = origin::after_run(plan.release, plan.counted, ran);
        let response = if after.rerun_on_current {
            self.run_on(function, req, Release::Current, plan.fleet)
                .await
                .map(|r| r.0)
                .map_err(ApiError::from)
        } else {
            response
        };
        if let (Some((side, failed)), Some(canary)) = (after.count, self.live_canary())
            && let Some(record) = canary.record(&function.key, side.into(), failed)
        {
            // Once per function.
            let control = function.config.on_runtime_incompatible.clone();
            crate::outcomes::canary_decided(self, &function.key, control, req.request_id, record)
                .await;
        }
        crate::outcomes::own_run(self, function, req.request_id, &response).await;
        response
    }

    /// Runs `req` on `release` (already admitted by [`Self::run`]); also says whether a
    /// failure was the platform's.
    async fn run_on(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        release: Release,
        fleet: Fleet,
    ) -> Result<(InvokeResponse, bool), RunError> {
        let (module, cold) = match self.executor.cached_on(release, &function.digest) {
            Some(m) => (m, false),
            None => {
                let registry = Arc::clone(&self.registry);
                let digest = function.digest;
                let wasm = tokio::task::spawn_blocking(move || registry.module(&digest))
                    .await
                    .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
                let module = match release {
                    Release::Current => self
                        .executor
                        .prepare(wasm.into())
                        .await
                        .map_err(ApiError::from)?,
                    Release::Next => self
                        .executor
                        .prepare_on(release, wasm.into())
                        .await
                        .map_err(RunError::Link)?,
                };
                (module, true)
            }
        };
        Ok(self
            .executor
            .run_outcome(
                module,
                function,
                req,
                cold,
                ExecutedAt::Region(self.node.clone()),
                self.fleets.lane(fleet),
            )
            .await?)
    }
}

/// Why [`RegionInvoker::run_on`] did not run the function.
#[derive(Debug)]
enum RunError {
    /// The next runtime release refused the module (a dropped import, say).
    Link(common::sandbox::ModuleError),
    /// Anything else, as the edge reports it.
    Api(ApiError),
}

impl From<ApiError> for RunError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Link(e) => e.into(),
            RunError::Api(e) => e,
        }
    }
}

impl Invoker for RegionInvoker {
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        self.execute(req).await.0
    }

    /// The region holds every token: an unknown one is refused before the body.
    async fn authorize(
        &self,
        token: Option<&str>,
    ) -> Result<common::edge::Authorization, ApiError> {
        let token = token.map(str::to_owned);
        let registry = Arc::clone(self.registry());
        tokio::task::spawn_blocking(move || registry.authenticate(token.as_deref()))
            .await
            .map_err(|e| ApiError::internal(format!("auth task failed: {e}")))??;
        Ok(common::edge::Authorization::Verified)
    }
}

/// Queued events run through the invoker (`crate::events` does not depend on it).
impl crate::events::Execute for RegionInvoker {
    fn resolve_as(
        &self,
        tenant: &TenantId,
        req: &InvokeRequest,
    ) -> Result<ResolvedFunction, ApiError> {
        RegionInvoker::resolve_as(self, tenant, req)
    }

    async fn run_resolved(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<InvokeResponse, ApiError> {
        self.run(function, req).await
    }
}
