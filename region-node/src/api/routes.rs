//! `/v1/routes[/{id}]`: a tenant's HTTP routes (add, list, delete).

use super::ControlState;
use crate::routes::NewRoute;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use common::model::{ApiError, Route, RouteId};
use serde::Serialize;
use std::sync::Arc;

/// `GET /v1/routes`.
#[derive(Debug, Serialize)]
pub(super) struct RouteList {
    routes: Vec<Route>,
}

pub(super) async fn create(
    State(s): State<ControlState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Route>), ApiError> {
    let tenant = s.tenant(&headers).await?;
    // Parsed here rather than by the `Json` extractor so a bad body gets the platform's
    // 400 and error body, naming the offending field.
    let body: NewRoute =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("route: {e}")))?;
    let routes = Arc::clone(&s.routes);
    let route = tokio::task::spawn_blocking(move || routes.create(&tenant, body))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    Ok((StatusCode::CREATED, Json(route)))
}

pub(super) async fn list(
    State(s): State<ControlState>,
    headers: HeaderMap,
) -> Result<Json<RouteList>, ApiError> {
    let tenant = s.tenant(&headers).await?;
    Ok(Json(RouteList {
        routes: s.routes.list(&tenant),
    }))
}

pub(super) async fn delete(
    State(s): State<ControlState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = s.tenant(&headers).await?;
    let id = RouteId::parse(&raw).map_err(ApiError::bad_request)?;
    let routes = Arc::clone(&s.routes);
    tokio::task::spawn_blocking(move || routes.delete(&tenant, &id))
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}
