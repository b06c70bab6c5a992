//! The layer that feeds a node's [`NodeStats`] from its invoke route: end-to-end latency
//! split by where the request ran (read from `x-strata-executed-at`), and responses by
//! status code and, for errors, whose fault they were. Executions and forwards are recorded where they happen (the executor and
//! the POP's invoker); this layer only sees the HTTP exchange.

use crate::metrics::NodeStats;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// `router` with every request's latency and status recorded in `stats`.
pub fn observed(router: Router, stats: Arc<NodeStats>) -> Router {
    router.layer(middleware::from_fn_with_state(stats, observe))
}

async fn observe(State(stats): State<Arc<NodeStats>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    stats.response(resp.status().as_u16(), super::error::fault_of(&resp));
    if let Some(at) = resp
        .headers()
        .get("x-strata-executed-at")
        .and_then(|v| v.to_str().ok())
    {
        let local = at.starts_with(stats.tier().as_str())
            && at[stats.tier().as_str().len()..].starts_with('/');
        stats.request(local, started.elapsed());
    }
    resp
}
