//! `/v1/hosts[/{host}]`: host ownership. A tenant lists, claims and releases its own
//! hosts; the operator token lists every claim, assigns a host to a tenant and releases
//! any host (deleting the owner's routes and certificates under it).

use super::CallerOrOperator;
use super::{ControlState, blocking};
use crate::hosts::HostClaim;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{ApiError, TenantId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `GET /v1/hosts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HostList {
    hosts: Vec<HostClaim>,
}

/// `PUT /v1/hosts/{host}`'s optional body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignHost {
    /// The tenant to assign the host to (operator token); a tenant's own claim omits it.
    #[schema(value_type = Option<String>)]
    tenant: Option<TenantId>,
}

/// Host claims: the caller's own, or every claim for the operator token.
#[utoipa::path(get, path = "/v1/hosts", tag = "routes",
    responses(
        (status = 200, description = "Claims, by host", body = HostList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    CallerOrOperator(caller): CallerOrOperator,
) -> Result<Json<HostList>, HttpError> {
    Ok(Json(HostList {
        hosts: s.region.routes.claims(caller.as_ref()),
    }))
}

/// Claims a host for the caller (tenant token, empty body) or assigns it to a tenant
/// (operator token, `{"tenant"}`; IP literals and `localhost` allowed).
#[utoipa::path(put, path = "/v1/hosts/{host}", tag = "routes",
    params(("host" = String, Path, description = "The host (no wildcard)")),
    request_body(content = Option<AssignHost>, description = "`{\"tenant\"}` with the operator token"),
    responses(
        (status = 200, description = "The claim", body = HostClaim),
        (status = 400, description = "Invalid host or body; `host_not_allowed` for an IP literal, localhost or public suffix", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "`host_owned`: another tenant's claim overlaps", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn put(
    State(s): State<ControlState>,
    CallerOrOperator(caller): CallerOrOperator,
    Path(host): Path<String>,
    body: Bytes,
) -> Result<Json<HostClaim>, HttpError> {
    let body: AssignHost = if body.iter().all(u8::is_ascii_whitespace) {
        AssignHost::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("host: {e}")))?
    };
    let routes = Arc::clone(&s.region.routes);
    let Some(tenant) = caller else {
        let tenant = body
            .tenant
            .ok_or_else(|| ApiError::bad_request("assigning a host needs {\"tenant\"}"))?;
        return Ok(blocking(move || routes.assign(&host, &tenant))
            .await
            .map(Json)?);
    };
    if body.tenant.is_some_and(|t| t != tenant) {
        return Err(ApiError::forbidden(
            "assigning a host to another tenant needs the operator token",
        )
        .into());
    }
    Ok(blocking(move || routes.claim(&tenant, &host))
        .await
        .map(Json)?)
}

/// Releases a claim: a tenant its own (kept, implicit, while its routes are under it);
/// the operator anyone's, deleting the owner's routes under it.
#[utoipa::path(delete, path = "/v1/hosts/{host}", tag = "routes",
    params(("host" = String, Path, description = "The claimed host")),
    responses(
        (status = 204, description = "Released"),
        (status = 400, description = "Invalid host", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such claim (of the caller's)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    CallerOrOperator(caller): CallerOrOperator,
    Path(host): Path<String>,
) -> Result<StatusCode, HttpError> {
    let routes = Arc::clone(&s.region.routes);
    blocking(move || routes.release(caller.as_ref(), &host)).await?;
    // Certificates are served only for hosts their tenant owns.
    let certs = Arc::clone(&s.certs);
    blocking(move || certs.prune()).await?;
    Ok(StatusCode::NO_CONTENT)
}
