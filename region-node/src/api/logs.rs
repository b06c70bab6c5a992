//! `GET /v1/functions/{name}/logs?since=SEQ&limit=N`: a function's log lines (guest
//! stderr) collected at this region and shipped here by POPs, scoped to the caller's
//! tenant.

use super::Caller;
use super::ControlState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::logs::LogPage;
use common::model::{ApiError, FunctionKey, FunctionName};
use serde::Deserialize;
use std::sync::Arc;

/// Lines per page when `limit` is absent.
const DEFAULT_LIMIT: usize = 100;
/// Most lines per page.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// First sequence number wanted (default 0: the oldest kept).
    since: Option<u64>,
    /// Most lines returned (default 100, at most 1000).
    limit: Option<usize>,
}

/// A page of the function's log, oldest first; poll with `since=next` to follow.
#[utoipa::path(get, path = "/v1/functions/{name}/logs", tag = "logs",
    params(("name" = String, Path, description = "The function's name"), LogQuery),
    responses(
        (status = 200, description = "Log lines", body = LogPage),
        (status = 400, description = "Bad since or limit", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "The tenant has no such function", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn read(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Json<LogPage>, HttpError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = FunctionName::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")).into());
    }
    // Only a function of the caller's tenant has logs to show; any other name is 404,
    // whoever else may own it.
    let registry = Arc::clone(&s.region.registry);
    let (t, n) = (tenant.clone(), name.clone());
    super::blocking(move || Ok(registry.function(&t, &n)?)).await?;
    let key = FunctionKey { tenant, name };
    Ok(Json(s.logs.read(&key, q.since.unwrap_or(0), limit)))
}
