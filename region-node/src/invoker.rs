//! Executing an invocation at the region: authenticate, resolve, admit, run. The same path
//! serves the region's own HTTP edge and invocations forwarded by POPs over QUIC.

use crate::admission::Admission;
use crate::artifacts::Artifacts;
use crate::limits::Limits;
use crate::registry::Registry;
use crate::routes::Routes;
use common::edge::Invoker;
use common::exec::Executor;
use common::model::{
    ApiError, ExecutedAt, InvocationType, InvokeRequest, InvokeResponse, NodeId, ResolvedFunction,
};
use std::sync::Arc;

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
    /// Per-tenant concurrency: every execution here, forwarded ones included, is charged
    /// to the region's own in-flight (never to a POP's lease).
    limits: Option<Arc<Limits>>,
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
        Self {
            node,
            registry,
            executor,
            artifacts,
            admission,
            max_payload_bytes,
            routes: None,
            limits: None,
        }
    }

    /// Charges every execution to `limits` (without, tenants are unlimited).
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The executor's and admission's gauges.
    pub fn levels(&self) -> common::metrics::Levels {
        common::metrics::Levels {
            queue_depth: self.admission.waiting() as u64,
            ..self.executor.levels()
        }
    }

    /// Accepts invocations through `routes` (without one, route invocations get 401).
    #[must_use]
    pub fn with_routes(mut self, routes: Arc<Routes>) -> Self {
        self.routes = Some(routes);
        self
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
        let resolved = match self.resolve(&req) {
            Ok(r) => r,
            Err(e) => return (Err(e), None),
        };
        let result = self.run(&resolved, &req).await;
        (result, Some(resolved))
    }

    fn resolve(&self, req: &InvokeRequest) -> Result<ResolvedFunction, ApiError> {
        let tenant = match (&req.route, &self.routes) {
            (Some(grant), Some(routes)) => routes.tenant_for(grant, &req.function)?,
            (Some(_), None) => return Err(ApiError::unauthenticated()),
            (None, _) => self.registry.authenticate(req.token.as_deref())?,
        };
        if req.payload.len() > self.max_payload_bytes {
            return Err(ApiError::payload_too_large(self.max_payload_bytes as u64));
        }
        // The request id is random and kept when a POP forwards: it is the draw between an
        // alias's versions, so both tiers pick the same version for one request.
        let draw = req.request_id.0 as u64;
        let resolved = self
            .registry
            .resolve(&tenant, &req.function, &req.qualifier, draw)?;
        if req.invocation_type == InvocationType::Event {
            return Err(ApiError::bad_request(
                "event invocations need the durable async queue, which this region does not \
                 have yet; invoke with x-strata-invocation-type: request-response",
            ));
        }
        Ok(resolved)
    }

    async fn run(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<InvokeResponse, ApiError> {
        let (module, cold) = match self.executor.cached(&function.digest) {
            Some(m) => (m, false),
            None => {
                let registry = Arc::clone(&self.registry);
                let digest = function.digest;
                let wasm = tokio::task::spawn_blocking(move || registry.module(&digest))
                    .await
                    .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
                (self.executor.prepare(wasm.into()).await?, true)
            }
        };
        // Over the tenant's limit is 429 at once, before waiting for a node slot.
        let _permit = match &self.limits {
            Some(l) => Some({
                l.check_rate(&function.key, function.config.rate_limit_rps)?;
                l.admit(
                    &function.key.tenant,
                    function.key.name.as_str(),
                    function.config.max_concurrency,
                )?
            }),
            None => None,
        };
        let _slot = self.admission.admit().await?;
        self.executor
            .run(
                module,
                function,
                req,
                cold,
                ExecutedAt::Region(self.node.clone()),
            )
            .await
    }
}

impl Invoker for RegionInvoker {
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        self.execute(req).await.0
    }
}
