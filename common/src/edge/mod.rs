//! The device-facing HTTP edge shared by POP and region (DESIGN §4).
//!
//! Owns request parsing (path, qualifier, `x-strata-*` headers, bearer token, a body
//! limit enforced while streaming), the response headers, and the one mapping from
//! [`ApiError`] kinds and guest failures to status codes and JSON error bodies. It never
//! decides where or how an invocation runs: that is the [`Invoker`] a node plugs in.
//! HTTP routes ([`route_fallback`]) run functions for plain device requests in CGI form
//! ([`cgi`]) through the same [`Invoker`]; functions of the `http` ABI get the request
//! and answer with their own status and fields ([`http_guest`]), on both paths. [`server`] serves HTTP/1.1 and HTTP/2 over TCP,
//! [`http3`] HTTP/3 over QUIC, both the same router.

pub mod cert;
pub mod cgi;
pub mod doc;
mod error;
mod headers;
pub mod http3;
pub mod http_guest;
mod invoke;
pub mod listener;
mod metrics;
mod observe;
mod route;
pub mod server;
pub mod tls;

pub use error::{error_response, function_error_status};
pub use invoke::{__path_invoke, Authorization, EdgeConfig, Invoker, invoke_router, parse_head};
pub use metrics::{bearer, metrics_router, require_operator};
pub use observe::observed;
pub use route::{RouteSource, RouteTable, route_fallback};
pub use server::{HttpLimits, serve, serve_tls};

use crate::model::ApiError;
use axum::response::{IntoResponse, Response};

/// An [`ApiError`] on its way out of an HTTP handler: the one place it becomes a status
/// code and a JSON body ([`error_response`]). A handler returns `Result<T, HttpError>` and
/// uses `?` on anything returning [`ApiError`]. (`ApiError` is the sans-IO core's type,
/// which knows nothing of axum, so the conversion lives here.)
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        error_response(&self.0, None)
    }
}
