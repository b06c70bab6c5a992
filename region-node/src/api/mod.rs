//! The region's control API (DESIGN §5): tenants and tokens (operator), functions,
//! routes, hosts and their TLS certificates, logs, versions, aliases and the dead-letter queue (tenant), and the operators' capacity view and
//! dashboard. Handlers parse, call one registry or executor function, and serialize;
//! errors go through the one mapping in [`common::edge`].

mod aliases;
mod capacity;
mod certificates;
mod dlq;
mod functions;
mod hosts;
mod logs;
mod openapi;
mod routes;
mod runtime;
mod tenants;
mod versions;

pub use capacity::{CapacityState, router as capacity_router};

use crate::certs::Certificates;
use crate::region::Region;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{delete, get, post, put};
use common::edge::{HttpError, bearer};
use common::logs::LogBuffer;
use common::model::{ApiError, FunctionName, TenantId};
use std::sync::Arc;

/// Shared state of the control handlers.
#[derive(Debug, Clone)]
pub struct ControlState {
    /// The region's services (registry, executor, routes, queue, canary, ...).
    pub region: Arc<Region>,
    /// The operator token, if configured.
    pub admin_token: Option<Arc<str>>,
    /// Function logs collected here and shipped by POPs.
    pub logs: Arc<LogBuffer>,
    /// Tenant TLS certificates.
    pub certs: Arc<Certificates>,
}

/// The control routes. `max_module_bytes` bounds a deploy's body (plus multipart overhead).
pub fn router(state: ControlState, max_module_bytes: usize) -> Router {
    Router::new()
        .route("/v1/tenants", post(tenants::create))
        .route(
            "/v1/tenants/{tenant}/tokens",
            post(tenants::create_token).get(tenants::list_tokens),
        )
        .route(
            "/v1/tenants/{tenant}/tokens/{id}",
            axum::routing::delete(tenants::revoke_token),
        )
        .route(
            "/v1/tenants/{tenant}/tokens/{id}/rotate",
            post(tenants::rotate_token),
        )
        .route(
            "/v1/tenants/{tenant}/limits",
            get(tenants::get_limits)
                .put(tenants::put_limits)
                .delete(tenants::delete_limits),
        )
        .route("/v1/functions", get(functions::list))
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .put(functions::deploy)
                .delete(functions::delete),
        )
        .route("/v1/routes", get(routes::list).post(routes::create))
        .route("/v1/routes/{id}", delete(routes::delete))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/hosts/{host}", put(hosts::put).delete(hosts::delete))
        .route("/v1/certificates", get(certificates::list))
        .route(
            "/v1/certificates/{host}",
            put(certificates::put).delete(certificates::delete),
        )
        .route("/v1/functions/{name}/logs", get(logs::read))
        .route("/v1/dlq", get(dlq::list).delete(dlq::purge))
        .route("/v1/dlq/replay", post(dlq::replay_all))
        .route("/v1/dlq/{id}", get(dlq::get))
        .route("/v1/dlq/{id}/replay", post(dlq::replay))
        .route("/v1/runtime", get(runtime::view))
        .route("/v1/notifications", get(runtime::notifications))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route(
            "/v1/functions/{name}/versions",
            get(versions::list).post(versions::publish),
        )
        .route(
            "/v1/functions/{name}/versions/{version}",
            delete(versions::delete),
        )
        .route("/v1/functions/{name}/aliases", get(aliases::list))
        .route(
            "/v1/functions/{name}/aliases/{alias}",
            get(aliases::get).put(aliases::set).delete(aliases::delete),
        )
        // A deploy carries a whole module: allow it, and no more.
        .layer(DefaultBodyLimit::max(max_module_bytes + (64 << 10)))
        .with_state(state)
}

/// A function name from a path segment.
fn name(raw: String) -> Result<FunctionName, ApiError> {
    FunctionName::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs a registry call on the blocking pool (store writes wait for an fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
}

/// The caller's tenant, from the bearer token. An extractor so that handlers taking a
/// body list it before the body: a request without a valid token is refused from its
/// headers and its body is never read.
pub(super) struct Caller(pub TenantId);

impl axum::extract::FromRequestParts<ControlState> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &ControlState,
    ) -> Result<Self, HttpError> {
        Ok(s.tenant(&parts.headers).await.map(Caller)?)
    }
}

/// `None` for the operator token, else the caller's tenant: for endpoints where the
/// operator acts on every tenant's resources; listed before a body like [`Caller`].
pub(super) struct CallerOrOperator(pub Option<TenantId>);

impl axum::extract::FromRequestParts<ControlState> for CallerOrOperator {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &ControlState,
    ) -> Result<Self, HttpError> {
        Ok(s.tenant_or_operator(&parts.headers)
            .await
            .map(CallerOrOperator)?)
    }
}

/// Proof the request bears the operator token; listed before a body like [`Caller`].
pub(super) struct Operator;

impl<S> axum::extract::FromRequestParts<S> for Operator
where
    S: Send + Sync,
    ControlState: axum::extract::FromRef<S>,
{
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &S,
    ) -> Result<Self, HttpError> {
        let control = <ControlState as axum::extract::FromRef<S>>::from_ref(s);
        Ok(control.require_admin(&parts.headers).map(|()| Operator)?)
    }
}

impl ControlState {
    /// The tenant the request's token belongs to.
    async fn tenant(&self, headers: &HeaderMap) -> Result<TenantId, ApiError> {
        // The control API's edge: the one mapping of a refused token.
        Ok(self.region.authenticate(bearer(headers)).await?)
    }

    /// `None` for the operator token, else the tenant the token belongs to: for
    /// endpoints where the operator acts on every tenant's resources.
    async fn tenant_or_operator(&self, headers: &HeaderMap) -> Result<Option<TenantId>, ApiError> {
        if self.require_admin(headers).is_ok() {
            return Ok(None);
        }
        self.tenant(headers).await.map(Some)
    }

    /// Succeeds only for the operator token.
    fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        common::edge::require_operator(headers, self.admin_token.as_deref())
    }
}
