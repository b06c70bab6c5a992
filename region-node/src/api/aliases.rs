//! `/v1/functions/{name}/aliases[/{alias}]`: set (create or move), read, list, delete.

use super::{Caller, ControlState, blocking, name};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{Alias, AliasName, AliasRouting, ApiError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

fn alias(raw: String) -> Result<AliasName, ApiError> {
    AliasName::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetAlias {
    routing: AliasRouting,
    /// Roll a two-version routing back to its older version when the newer one fails
    /// more often (default false).
    #[serde(default)]
    auto_rollback: bool,
}

/// Creates or moves an alias: one version, or two with weights summing to 100.
#[utoipa::path(put, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = "The function's name"), ("alias" = String, Path, description = "The alias (`[a-z][a-z0-9-]{0,63}`, not numeric)")),
    request_body(content = Object, description = "`{\"routing\": [{\"version\": 3, \"weight\": 90}, {\"version\": 4, \"weight\": 10}], \"auto_rollback\": true}` (`auto_rollback` optional, default false)"),
    responses((status = 200, description = "The alias `{name, function, routing, revision}`", body = Object),
        (status = 400, description = "Bad routing or a missing version", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn set(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path((raw, raw_alias)): Path<(String, String)>,
    body: Result<Json<SetAlias>, JsonRejection>,
) -> Result<Json<Alias>, HttpError> {
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    // Weights and version counts are validated while parsing (AliasRouting); say so in
    // the error body rather than axum's plain-text rejection.
    let Json(SetAlias {
        routing,
        auto_rollback,
    }) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; expected {{\"routing\": [{{\"version\": N, \"weight\": W}}, ...]}}",
            e.body_text()
        ))
    })?;
    let registry = Arc::clone(&s.region.registry);
    let set = blocking(move || {
        let set = registry.set_alias(&tenant, &name, alias, routing, auto_rollback)?;
        Ok((tenant, set))
    })
    .await?;
    // The judge starts afresh with every move (or stops: one version, no auto_rollback).
    s.region.rollouts.watch(&set.0, &set.1);
    Ok(Json(set.1))
}

/// One alias.
#[utoipa::path(get, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = "The function's name"), ("alias" = String, Path, description = "The alias (`[a-z][a-z0-9-]{0,63}`, not numeric)")),
    responses((status = 200, description = "The alias", body = Object),
        (status = 404, description = "No such alias for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path((raw, raw_alias)): Path<(String, String)>,
) -> Result<Json<Alias>, HttpError> {
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    let registry = Arc::clone(&s.region.registry);
    Ok(Json(
        blocking(move || registry.alias(&tenant, &name, &alias)).await?,
    ))
}

#[derive(Debug, Serialize)]
pub(super) struct AliasList {
    aliases: Vec<Alias>,
}

/// The function's aliases.
#[utoipa::path(get, path = "/v1/functions/{name}/aliases", tag = "versions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, description = "`{\"aliases\": [...]}`", body = Object),
        (status = 404, description = "No such function for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<Json<AliasList>, HttpError> {
    let name = name(raw)?;
    let registry = Arc::clone(&s.region.registry);
    let aliases = blocking(move || registry.aliases(&tenant, &name)).await?;
    Ok(Json(AliasList { aliases }))
}

/// Deletes an alias.
#[utoipa::path(delete, path = "/v1/functions/{name}/aliases/{alias}", tag = "versions",
    params(("name" = String, Path, description = "The function's name"), ("alias" = String, Path, description = "The alias (`[a-z][a-z0-9-]{0,63}`, not numeric)")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such alias for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path((raw, raw_alias)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    let registry = Arc::clone(&s.region.registry);
    let (t, n, a) = (tenant.clone(), name.clone(), alias.clone());
    blocking(move || registry.delete_alias(&tenant, &name, &alias)).await?;
    s.region.rollouts.forget(&t, &n, &a);
    Ok(StatusCode::NO_CONTENT)
}
