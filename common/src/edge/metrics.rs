//! `GET /metrics`: the node's Prometheus text exposition, for the operator only.
//!
//! Metrics name tenants and functions (bounded label sets, see [`crate::metrics`]), so they
//! are operator data: the request must carry the node's operator token as a bearer token
//! (Prometheus: `authorization: { credentials_file: ... }` in the scrape config). A node
//! without an operator token configured refuses `/metrics` with 403.

use super::error_response;
use crate::metrics::NodeStats;
use crate::model::ApiError;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

#[derive(Clone)]
struct MetricsState {
    stats: Arc<NodeStats>,
    operator: Option<Arc<str>>,
}

/// The metrics route, reading `stats`, answering only requests bearing `operator`.
pub fn metrics_router(stats: Arc<NodeStats>, operator: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(MetricsState { stats, operator })
}

/// The request's bearer token, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Succeeds only when the request bears `operator` (the node's configured operator
/// token): 401 without a token, 403 with another one or when none is configured.
///
/// # Errors
/// The 401/403 [`ApiError`].
pub fn require_operator(headers: &HeaderMap, operator: Option<&str>) -> Result<(), ApiError> {
    let Some(operator) = operator else {
        return Err(ApiError::forbidden(
            "operator endpoints are disabled: set the operator token in the node's config",
        ));
    };
    match bearer(headers) {
        None => Err(ApiError::unauthenticated()),
        Some(t) if constant_time_eq(t.as_bytes(), operator.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::forbidden(
            "this operation needs the operator token",
        )),
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(s): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Err(e) = require_operator(&headers, s.operator.as_deref()) {
        return error_response(&e, None);
    }
    let mut resp = s.stats.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
