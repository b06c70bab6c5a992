//! `/v1/routes[/{id}]`: a tenant's HTTP routes (add, list, delete).

use super::{Caller, ControlState};
use crate::routes::NewRoute;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{ApiError, Route, RouteId};
use serde::Serialize;
use std::sync::Arc;

/// `GET /v1/routes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RouteList {
    routes: Vec<Route>,
}

/// Adds a route: plain requests for `host` under `path_prefix` run `function`.
#[utoipa::path(post, path = "/v1/routes", tag = "routes",
    request_body = NewRoute,
    responses(
        (status = 201, description = "Created", body = Route),
        (status = 400, description = "Invalid host, prefix, function or qualifier", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 409, description = "The (host, prefix) pair is taken", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn create(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Route>), HttpError> {
    // Parsed here rather than by the `Json` extractor so a bad body gets the platform's
    // 400 and error body, naming the offending field.
    let body: NewRoute =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("route: {e}")))?;
    let routes = Arc::clone(&s.region.routes);
    let route = tokio::task::spawn_blocking(move || routes.create(&tenant, body))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    Ok((StatusCode::CREATED, Json(route)))
}

/// The caller's routes.
#[utoipa::path(get, path = "/v1/routes", tag = "routes",
    responses(
        (status = 200, description = "The tenant's routes", body = RouteList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<RouteList>, HttpError> {
    Ok(Json(RouteList {
        routes: s.region.routes.list(&tenant),
    }))
}

/// Deletes one of the caller's routes.
#[utoipa::path(delete, path = "/v1/routes/{id}", tag = "routes",
    params(("id" = String, Path, description = "The route's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such route for this tenant", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, HttpError> {
    let id = RouteId::parse(&raw).map_err(ApiError::bad_request)?;
    let routes = Arc::clone(&s.region.routes);
    tokio::task::spawn_blocking(move || routes.delete(&tenant, &id))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}
