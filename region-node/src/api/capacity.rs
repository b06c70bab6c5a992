//! Operators' capacity view: `GET /v1/capacity` (JSON), `GET /v1/capacity/stream` (SSE),
//! and the `/dashboard` page that renders them. The page's assets are compiled into the
//! binary; the data endpoints need the operator token.

use super::ControlState;
use super::Operator;
use crate::capacity::Capacity;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use futures::Stream;
use std::sync::Arc;
use std::time::Duration;

/// At most one SSE event per this interval and client, however many POPs report: the
/// view is whole, so coalescing loses nothing.
const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// State of the capacity routes.
#[derive(Debug, Clone)]
pub struct CapacityState {
    /// For the operator check.
    pub control: ControlState,
    /// The aggregated view.
    pub capacity: Arc<Capacity>,
}

impl axum::extract::FromRef<CapacityState> for ControlState {
    fn from_ref(s: &CapacityState) -> Self {
        s.control.clone()
    }
}

/// The capacity API and the dashboard.
pub fn router(state: CapacityState) -> Router {
    Router::new()
        .route("/v1/capacity", get(view))
        .route("/v1/capacity/stream", get(stream))
        .route(
            "/dashboard",
            get(|| asset(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/",
            get(|| asset(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// This region's and its POPs' load (operator token).
#[utoipa::path(get, path = "/v1/capacity", tag = "capacity",
    responses((status = 200, description = "`{region, pops: [{load, now, age_ms, stale, history}], revision, budgets: [{tenant, charged, leased, limit, hard_max}]}`", body = Object),
        (status = 401, description = "Missing token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn view(
    State(s): State<CapacityState>,
    _: Operator,
) -> Result<Json<crate::capacity::CapacityView>, HttpError> {
    Ok(Json(s.capacity.view(s.capacity.now())))
}

/// The same view as a server-sent event stream (event `capacity`, at most two a second).
#[utoipa::path(get, path = "/v1/capacity/stream", tag = "capacity",
    responses((status = 200, description = "`text/event-stream` of capacity views", content_type = "text/event-stream", body = String),
        (status = 403, description = "Not the operator token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn stream(
    State(s): State<CapacityState>,
    _: Operator,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, HttpError> {
    let changes = s.capacity.subscribe();
    let capacity = s.capacity;
    // The first event is the current view; then one per change, coalesced.
    let events = futures::stream::unfold(
        (changes, capacity, true),
        |(mut changes, capacity, first)| async move {
            if !first {
                tokio::time::sleep(MIN_EVENT_INTERVAL).await;
                changes.changed().await.ok()?;
            }
            changes.mark_unchanged();
            let v = capacity.view(capacity.now());
            let event = Event::default()
                .event("capacity")
                .id(v.revision.to_string())
                .json_data(&v);
            Some((event, (changes, capacity, false)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
