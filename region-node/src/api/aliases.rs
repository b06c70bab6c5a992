//! `/v1/functions/{name}/aliases[/{alias}]`: set (create or move), read, list, delete.

use super::{ControlState, blocking, name};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
}

pub(super) async fn set(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path((raw, raw_alias)): Path<(String, String)>,
    body: Result<Json<SetAlias>, JsonRejection>,
) -> Result<Json<Alias>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    // Weights and version counts are validated while parsing (AliasRouting); say so in
    // the error body rather than axum's plain-text rejection.
    let Json(SetAlias { routing }) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; expected {{\"routing\": [{{\"version\": N, \"weight\": W}}, ...]}}",
            e.body_text()
        ))
    })?;
    let registry = Arc::clone(s.invoker.registry());
    Ok(Json(
        blocking(move || registry.set_alias(&tenant, &name, alias, routing)).await?,
    ))
}

pub(super) async fn get(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path((raw, raw_alias)): Path<(String, String)>,
) -> Result<Json<Alias>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    let registry = Arc::clone(s.invoker.registry());
    Ok(Json(
        blocking(move || registry.alias(&tenant, &name, &alias)).await?,
    ))
}

#[derive(Debug, Serialize)]
pub(super) struct AliasList {
    aliases: Vec<Alias>,
}

pub(super) async fn list(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<AliasList>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let name = name(raw)?;
    let registry = Arc::clone(s.invoker.registry());
    let aliases = blocking(move || registry.aliases(&tenant, &name)).await?;
    Ok(Json(AliasList { aliases }))
}

pub(super) async fn delete(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path((raw, raw_alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let name = name(raw)?;
    let alias = alias(raw_alias)?;
    let registry = Arc::clone(s.invoker.registry());
    blocking(move || registry.delete_alias(&tenant, &name, &alias)).await?;
    Ok(StatusCode::NO_CONTENT)
}
