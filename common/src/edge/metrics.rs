//! `GET /metrics`: the node's Prometheus text exposition.

use crate::metrics::NodeStats;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// The metrics route, reading `stats`.
pub fn metrics_router(stats: Arc<NodeStats>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(stats)
}

async fn metrics(State(stats): State<Arc<NodeStats>>) -> Response {
    let mut resp = stats.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
