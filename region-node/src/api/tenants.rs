//! `POST /v1/tenants`, `GET|POST /v1/tenants/{tenant}/tokens`,
//! `DELETE /v1/tenants/{tenant}/tokens/{id}`, `POST /v1/tenants/{tenant}/tokens/{id}/rotate`,
//! `GET|PUT|DELETE /v1/tenants/{tenant}/limits`: operator only.

use super::{ControlState, Operator};
use crate::limits::{Limits, TenantLimits};
use crate::registry::{DEFAULT_TENANT_MAX_MEMORY_MB, TenantRecord, TokenView};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{ApiError, TenantId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    id: TenantId,
    max_memory_mb: Option<u32>,
}

/// Creates a tenant (operator token).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body(content = Object, description = "`{\"id\", \"max_memory_mb\"?}`"),
    responses((status = 201, description = "The tenant", body = Object),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 409, description = "The tenant exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create(
    State(s): State<ControlState>,
    _operator: Operator,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, Json<TenantRecord>), HttpError> {
    let registry = Arc::clone(&s.region.registry);
    let max = body.max_memory_mb.unwrap_or(DEFAULT_TENANT_MAX_MEMORY_MB);
    let rec = tokio::task::spawn_blocking(move || registry.create_tenant(body.id, max))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((StatusCode::CREATED, Json(rec)))
}

#[derive(Debug, Serialize)]
pub(super) struct CreatedToken {
    tenant: TenantId,
    token: String,
}

/// Options of a new token: `{"ttl_s": N}` makes it expire N seconds after it is issued.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    ttl_s: Option<u64>,
}

/// Runs `f` on the registry on the blocking pool, after checking the operator token and
/// the tenant id.
async fn with_registry<T: Send + 'static>(
    s: &ControlState,
    headers: &HeaderMap,
    tenant: String,
    f: impl FnOnce(&crate::registry::Registry, &TenantId) -> Result<T, ApiError> + Send + 'static,
) -> Result<(TenantId, T), ApiError> {
    s.require_admin(headers)?;
    let tenant = TenantId::new(tenant).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let registry = Arc::clone(&s.region.registry);
    let t = tenant.clone();
    let out = tokio::task::spawn_blocking(move || f(&registry, &t))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((tenant, out))
}

/// Issues a token for a tenant (operator token); shown once. An optional body
/// `{"ttl_s": N}` makes it expire after N seconds.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id")),
    request_body(content = Object, description = "Optional `{\"ttl_s\"}`"),
    responses((status = 201, description = "`{\"tenant\", \"token\"}`", body = Object),
        (status = 400, description = "A bad `ttl_s`", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn create_token(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Option<Json<NewToken>>,
) -> Result<(StatusCode, Json<CreatedToken>), HttpError> {
    let ttl_s = body.unwrap_or_default().0.ttl_s;
    let (tenant, token) = with_registry(&s, &headers, tenant, move |r, t| {
        r.create_token_for(t, ttl_s)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { tenant, token })))
}

/// Lists a tenant's tokens (operator token): ids (hashes), dates, expiry; never the
/// tokens themselves.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The tenant's tokens", body = [TokenView]),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_tokens(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<TokenView>>, HttpError> {
    let (_, views) = with_registry(&s, &headers, tenant, |r, t| r.tokens(t)).await?;
    Ok(Json(views))
}

/// Revokes a tenant's token (operator token): refused at the region at once and at every
/// POP as soon as the push stream delivers the revocation.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{id}", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id"),
        ("id" = String, Path, description = "The token's id (its SHA-256, as listed)")),
    responses((status = 204, description = "Revoked"),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "The tenant has no such token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn revoke_token(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    with_registry(&s, &headers, tenant, move |r, t| r.revoke_token(t, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotates a tenant's token (operator token): issues a new one (optional
/// `{"ttl_s": N}`), then revokes the old one.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens/{id}/rotate", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id"),
        ("id" = String, Path, description = "The token's id (its SHA-256, as listed)")),
    request_body(content = Object, description = "Optional `{\"ttl_s\"}`"),
    responses((status = 201, description = "`{\"tenant\", \"token\"}`: the new token", body = Object),
        (status = 400, description = "A malformed id or `ttl_s`", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "The tenant has no such token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rotate_token(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
    body: Option<Json<NewToken>>,
) -> Result<(StatusCode, Json<CreatedToken>), HttpError> {
    let ttl_s = body.unwrap_or_default().0.ttl_s;
    let (tenant, token) = with_registry(&s, &headers, tenant, move |r, t| {
        r.rotate_token(t, &id, ttl_s)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { tenant, token })))
}

fn tenant_limits(
    s: &ControlState,
    headers: &HeaderMap,
    tenant: String,
) -> Result<(Arc<Limits>, TenantId), ApiError> {
    s.require_admin(headers)?;
    let tenant = TenantId::new(tenant).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limits = Arc::clone(&s.region.limits);
    Ok((limits, tenant))
}

/// A tenant's concurrency settings in force (operator token): its override, or the
/// region's defaults.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/limits", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "The settings in force", body = TenantLimits),
        (status = 403, description = "Not the operator token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_limits(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<TenantLimits>, HttpError> {
    let (limits, tenant) = tenant_limits(&s, &headers, tenant)?;
    Ok(Json(limits.settings(&tenant)))
}

/// Runs `limits.set_override` on the blocking pool: it waits for the store's write.
async fn set_override(
    limits: Arc<Limits>,
    tenant: TenantId,
    settings: Option<TenantLimits>,
) -> Result<TenantLimits, ApiError> {
    tokio::task::spawn_blocking(move || limits.set_override(&tenant, settings))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Overrides a tenant's concurrency settings (operator token). The override is stored
/// durably before the answer, so it survives a restart and reaches every region sharing
/// the store; it applies at once to this region.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/limits", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id")),
    request_body = TenantLimits,
    responses((status = 200, description = "The settings now in force", body = TenantLimits),
        (status = 400, description = "Invalid settings; nothing changed", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 409, description = "The region's bound of tenant overrides is reached", body = ErrorBody),
        (status = 503, description = "The store could not be written; nothing changed", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn put_limits(
    State(s): State<ControlState>,
    _operator: Operator,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    Json(body): Json<TenantLimits>,
) -> Result<Json<TenantLimits>, HttpError> {
    let (limits, tenant) = tenant_limits(&s, &headers, tenant)?;
    Ok(Json(set_override(limits, tenant, Some(body)).await?))
}

/// Drops a tenant's override (operator token): back to the region's defaults, durably.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/limits", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's id")),
    responses((status = 204, description = "Back to the defaults"),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 503, description = "The store could not be written; nothing changed", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete_limits(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, HttpError> {
    let (limits, tenant) = tenant_limits(&s, &headers, tenant)?;
    set_override(limits, tenant, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
