//! The layer that feeds a node's [`NodeStats`] from its invoke route: end-to-end latency
//! split by where the request ran (read from `x-strata-executed-at`), and responses by
//! status code and, for errors, whose fault they were. Executions and forwards are recorded where they happen (the executor and
//! the POP's invoker); this layer only sees the HTTP exchange.

use crate::metrics::NodeStats;
use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// `router` with every request's latency and status recorded in `stats`.
pub fn observed(router: Router, stats: Arc<NodeStats>) -> Router {
    router.layer(ObserveLayer { stats })
}

/// A plain tower layer rather than `axum::middleware::from_fn`, which clones the inner
/// service and boxes a future for every request.
#[derive(Clone)]
struct ObserveLayer {
    stats: Arc<NodeStats>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            stats: Arc::clone(&self.stats),
        }
    }
}

#[derive(Clone)]
struct Observe<S> {
    inner: S,
    stats: Arc<NodeStats>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Observed {
            inner: self.inner.call(req),
            stats: Arc::clone(&self.stats),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, recorded when it completes.
    struct Observed<F> {
        #[pin]
        inner: F,
        stats: Arc<NodeStats>,
        started: Instant,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            record(this.stats, *this.started, resp);
        }
        Poll::Ready(out)
    }
}

fn record(stats: &NodeStats, started: Instant, resp: &Response) {
    stats.response(resp.status().as_u16(), super::error::fault_of(resp));
    if let Some(at) = resp
        .headers()
        .get("x-strata-executed-at")
        .and_then(|v| v.to_str().ok())
    {
        let local = at.starts_with(stats.tier().as_str())
            && at[stats.tier().as_str().len()..].starts_with('/');
        stats.request(local, started.elapsed());
    }
}
