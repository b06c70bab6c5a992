//! The region's invoke pipeline: one invocation, from the region's own HTTP edge or
//! forwarded by a POP over QUIC, through explicit layers over the [`Region`]'s services:
//!
//! 1. [`auth`]: who it runs as (a tenant token, or an HTTP route's grant);
//! 2. [`resolve`]: the payload's size, then the function and version it names;
//! 3. [`release`]: the origin planner's plan (fleet, runtime release, whether the
//!    canary counts it; the rules live in `common::policy::origin`);
//! 4. [`admit`]: the plan's refusing steps in its order (limits, capacity, share, slot),
//!    all before the module is loaded or compiled;
//! 5. [`execute`]: load or compile, run, and what the planner says follows (the rerun
//!    on the current release; the canary's count).
//!
//! An event is queued after resolve instead ([`queue`]); its workers come back through
//! [`crate::events::Execute`] to admit and execute. Each layer returns an
//! [`InvokeError`] that records whose fault it is; it becomes an `ApiError` once, where
//! the invocation leaves the region (the HTTP edge, the QUIC service, the queue).
//!
//! When a canary verdict pins a function, its `on_runtime_incompatible` control function
//! is queued in the durable async queue with the owner's notification as its payload,
//! like `on_failure`: the invocation that decided the verdict waits for that append,
//! never for the control function's run.

pub mod admit;
pub mod auth;
mod error;
pub mod execute;
pub mod queue;
pub mod release;
pub mod resolve;

pub use error::{InvokeError, chain};

use crate::region::Region;
use common::edge::Invoker;
use common::model::{
    ApiError, InvocationType, InvokeRequest, InvokeResponse, ResolvedFunction, TenantId,
};
use std::sync::Arc;

/// The region's [`Invoker`]: the pipeline over the region's services.
#[derive(Debug)]
pub struct RegionInvoker {
    region: Arc<Region>,
    /// The origin planner's state (layer 3).
    planner: release::Planner,
}

impl RegionInvoker {
    /// The pipeline over `region`.
    pub fn new(region: Arc<Region>) -> Self {
        let planner = release::Planner::new(&region.fleets);
        Self { region, planner }
    }

    /// Runs `req` through the layers; also returns the function as resolved for it, when
    /// it was, so a POP can learn it.
    pub async fn execute(
        &self,
        req: InvokeRequest,
    ) -> (
        Result<InvokeResponse, InvokeError>,
        Option<ResolvedFunction>,
    ) {
        let r = &self.region;
        let credential = auth::Credential::of(&req);
        let tenant = match auth::caller(&r.registry, &r.routes, credential) {
            Ok(t) => t,
            Err(e) => return (Err(e), None),
        };
        let function = match resolve::function(&r.registry, r.max_payload_bytes, &tenant, &req) {
            Ok(f) => f,
            Err(e) => return (Err(e), None),
        };
        if req.invocation_type == InvocationType::Event {
            let accepted = queue::accept(&r.events, &r.node, tenant, &function, req).await;
            return (accepted, Some(function));
        }
        let response = self.run(&function, &req).await;
        queue::dead_letter_sync(&r.events, &tenant, &function, &req, &response).await;
        (response, Some(function))
    }

    /// Layers 3 to 5 for a resolved invocation, then the outcome's bookkeeping (the
    /// canary's count and what it decided, the alias rollouts' count).
    async fn run(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<InvokeResponse, InvokeError> {
        let r = &self.region;
        let canary = r.live_canary();
        let plan = self.planner.plan(
            r.clock.now(),
            &r.executor,
            canary.map(Arc::as_ref),
            function,
            req,
        );
        let gates = admit::Gates {
            limits: &r.limits,
            admission: &r.admission,
            shares: &r.shares,
            fleets: &r.fleets,
        };
        let _admitted = admit::admit(gates, function, &plan).await?;
        let runner = execute::Runner {
            node: &r.node,
            registry: &r.registry,
            executor: &r.executor,
            fleets: &r.fleets,
        };
        let executed = execute::run(runner, function, req, &plan).await;
        if let (Some((side, failed)), Some(canary)) = (executed.count, canary)
            && let Some(record) = canary.record(&function.key, side.into(), failed)
        {
            // Once per function.
            let control = function.config.on_runtime_incompatible.clone();
            crate::outcomes::canary_decided(r, &function.key, control, req.request_id, record)
                .await;
        }
        let ran = executed.response.as_ref().ok();
        crate::outcomes::own_run(r, function, req.request_id, ran).await;
        executed.response
    }

    /// The region's services.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }
}

impl Invoker for RegionInvoker {
    /// The HTTP edge's one mapping of the pipeline's error.
    async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        self.execute(req).await.0.map_err(ApiError::from)
    }

    /// The region holds every token: an unknown one is refused before the body.
    async fn authorize(
        &self,
        token: Option<&str>,
    ) -> Result<common::edge::Authorization, ApiError> {
        self.region
            .authenticate(token)
            .await
            .map_err(ApiError::from)?;
        Ok(common::edge::Authorization::Verified(None))
    }
}

/// Queued events come back through the pipeline (`crate::events` does not depend on it):
/// resolved as the tenant that queued them, then admitted and executed.
impl crate::events::Execute for RegionInvoker {
    fn resolve_as(
        &self,
        tenant: &TenantId,
        req: &InvokeRequest,
    ) -> Result<ResolvedFunction, ApiError> {
        let r = &self.region;
        resolve::function(&r.registry, r.max_payload_bytes, tenant, req).map_err(ApiError::from)
    }

    async fn run_resolved(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> Result<InvokeResponse, ApiError> {
        self.run(function, req).await.map_err(ApiError::from)
    }
}
