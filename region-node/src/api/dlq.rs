//! `/v1/dlq`: the caller's tenant's dead letters: list (paged), show, replay one or all,
//! purge. Handlers parse, call one [`crate::events::Events`] operation, and serialize.

use super::Caller;
use super::ControlState;
use crate::events::{DeadLetter, DlqPage};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::ApiError;
use serde::{Deserialize, Serialize};

/// Dead letters per page when `limit` is absent.
const DEFAULT_LIMIT: usize = 100;
/// Most dead letters per page.
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DlqQuery {
    /// Only dead letters with a higher id (default 0: from the oldest); pass `next`.
    after: Option<u64>,
    /// Most returned (default 100, at most 1000).
    limit: Option<usize>,
}

/// How many dead letters an operation replayed or purged.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Count {
    /// Replayed (re-enqueued with fresh attempts) or purged.
    count: u64,
}

fn id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("dead letter id must be a number, got {raw:?}")))
}

/// The caller's dead letters, oldest first.
#[utoipa::path(get, path = "/v1/dlq", tag = "dlq", params(DlqQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DlqPage),
        (status = 400, description = "Bad after or limit", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Json<DlqPage>, HttpError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")).into());
    }
    let page = s
        .region
        .events
        .dlq_list(tenant, q.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(page))
}

/// One dead letter.
#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "dlq",
    params(("id" = u64, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "The tenant has no such dead letter", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<Json<DeadLetter>, HttpError> {
    let id = id(&raw)?;
    Ok(Json(s.region.events.dlq_get(&tenant, id).await?))
}

/// Re-enqueues one dead letter with fresh attempts; it leaves the DLQ once queued.
#[utoipa::path(post, path = "/v1/dlq/{id}/replay", tag = "dlq",
    params(("id" = u64, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "Replayed", body = Count),
        (status = 404, description = "The tenant has no such dead letter", body = ErrorBody),
        (status = 429, description = "The queue is full; the dead letter is kept", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn replay(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<Json<Count>, HttpError> {
    let id = id(&raw)?;
    s.region.events.dlq_replay(&tenant, id).await?;
    Ok(Json(Count { count: 1 }))
}

/// Re-enqueues every dead letter of the tenant (stopping early if the queue fills).
#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dlq",
    responses(
        (status = 200, description = "How many were replayed", body = Count),
        (status = 429, description = "The queue is full", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn replay_all(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<Count>, HttpError> {
    let count = s.region.events.dlq_replay_all(&tenant).await?;
    Ok(Json(Count { count }))
}

/// Deletes every dead letter of the tenant.
#[utoipa::path(delete, path = "/v1/dlq", tag = "dlq",
    responses(
        (status = 200, description = "How many were purged", body = Count),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn purge(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<Count>, HttpError> {
    let count = s.region.events.dlq_purge(&tenant).await?;
    Ok(Json(Count { count }))
}
