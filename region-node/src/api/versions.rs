//! `/v1/functions/{name}/versions[/{n}]`: publish `$LATEST` as a numbered version, list
//! versions, delete one (refused while an alias points at it).

use super::{Caller, ControlState, blocking, name};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{ApiError, Version};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Publish {
    description: Option<String>,
}

/// Publishes `$LATEST` as a new immutable version (200 with the newest version when the
/// code and config are unchanged).
#[utoipa::path(post, path = "/v1/functions/{name}/versions", tag = "versions",
    params(("name" = String, Path, description = "The function's name")),
    request_body(content = Object, description = "Optional `{\"description\"}`"),
    responses((status = 201, description = "The new version `{function, version, digest, config, created_at}`", body = Object),
        (status = 200, description = "`$LATEST` is already the newest version", body = Object),
        (status = 404, description = "No such function for this tenant", body = ErrorBody),
        (status = 409, description = "`quota_exceeded` (`versions_per_function`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn publish(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Version>), HttpError> {
    let name = name(raw)?;
    // The body is optional: an empty one publishes without a description.
    let Publish { description } = if body.iter().all(u8::is_ascii_whitespace) {
        Publish::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?
    };
    let registry = Arc::clone(&s.region.registry);
    let (version, created) =
        blocking(move || registry.publish(&tenant, &name, description)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(version)))
}

#[derive(Debug, Serialize)]
pub(super) struct VersionList {
    versions: Vec<Version>,
}

/// The function's versions, oldest first.
#[utoipa::path(get, path = "/v1/functions/{name}/versions", tag = "versions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, description = "`{\"versions\": [...]}`", body = Object),
        (status = 404, description = "No such function for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<Json<VersionList>, HttpError> {
    let name = name(raw)?;
    let registry = Arc::clone(&s.region.registry);
    let versions = blocking(move || registry.versions(&tenant, &name)).await?;
    Ok(Json(VersionList { versions }))
}

/// Deletes a version; refused while an alias points at it.
#[utoipa::path(delete, path = "/v1/functions/{name}/versions/{version}", tag = "versions",
    params(("name" = String, Path, description = "The function's name"), ("version" = u32, Path, description = "The version number")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such version for this tenant", body = ErrorBody),
        (status = 409, description = "An alias points at it", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path((raw, version)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    let name = name(raw)?;
    let n: NonZeroU32 = version.parse().map_err(|_| {
        ApiError::bad_request(format!("version must be a number from 1, got {version:?}"))
    })?;
    let registry = Arc::clone(&s.region.registry);
    blocking(move || registry.delete_version(&tenant, &name, n)).await?;
    Ok(StatusCode::NO_CONTENT)
}
