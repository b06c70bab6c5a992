//! HTTP routes at the edge (DESIGN §4): the route table, its longest-prefix match, and the
//! fallback handler both node kinds install so that a plain device request whose host and
//! path match a route runs that route's function in CGI form, with no platform token.
//!
//! Owns matching and the request/response translation; where the table comes from is the
//! node's business (the region reads its registry, a POP syncs from its region), behind
//! [`RouteSource`]. Invocations go through the same [`Invoker`] as the invoke API.

use super::cgi;
use super::error::error_response;
use super::headers::set_strata_headers;
use super::invoke::{header_str, read_body, render_function_error};
use super::{EdgeConfig, Invoker};
use crate::model::{
    ApiError, InvocationType, InvokeRequest, RequestId, Route, RouteGrant, is_reserved_path,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// A snapshot of every route, indexed for matching. Immutable: a change builds a new table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    revision: u64,
    /// Exact hosts; each host's routes sorted by prefix length, longest first.
    exact: HashMap<String, Vec<Route>>,
    /// Wildcard suffixes with their routes (longest prefix first), longest suffix first.
    wildcard: Vec<(String, Vec<Route>)>,
    len: usize,
}

fn by_longest_prefix(routes: &mut [Route]) {
    routes.sort_by(|a, b| {
        b.path_prefix
            .as_str()
            .len()
            .cmp(&a.path_prefix.as_str().len())
            .then_with(|| a.path_prefix.cmp(&b.path_prefix))
    });
}

impl RouteTable {
    /// A table of `routes` as of `revision` (the source's change counter; 0 for none).
    pub fn new(revision: u64, routes: impl IntoIterator<Item = Route>) -> Self {
        let mut exact: HashMap<String, Vec<Route>> = HashMap::new();
        let mut wild: HashMap<String, Vec<Route>> = HashMap::new();
        let mut len = 0;
        for r in routes {
            len += 1;
            match r.host.wildcard_suffix() {
                Some(s) => wild.entry(s.to_owned()).or_default().push(r),
                None => exact.entry(r.host.as_str().to_owned()).or_default().push(r),
            }
        }
        exact.values_mut().for_each(|v| by_longest_prefix(v));
        let mut wildcard: Vec<(String, Vec<Route>)> = wild.into_iter().collect();
        wildcard.iter_mut().for_each(|(_, v)| by_longest_prefix(v));
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            revision,
            exact,
            wildcard,
            len,
        }
    }

    /// The source revision this table reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route, exact hosts first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.exact
            .values()
            .flatten()
            .chain(self.wildcard.iter().flat_map(|(_, v)| v))
    }

    /// The route for a request to `host` (lower-case, no port) at `path`: among routes for
    /// the exact host, the longest matching prefix; failing that, the same among the most
    /// specific matching wildcard. Paths under the reserved `/v1` never match.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Route> {
        if is_reserved_path(path) {
            return None;
        }
        let longest = |routes: &'_ [Route]| -> Option<usize> {
            routes.iter().position(|r| r.path_prefix.matches(path))
        };
        if let Some(routes) = self.exact.get(host)
            && let Some(i) = longest(routes)
        {
            return routes.get(i);
        }
        self.wildcard.iter().find_map(|(suffix, routes)| {
            let under = host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'));
            under
                .then(|| longest(routes).and_then(|i| routes.get(i)))
                .flatten()
        })
    }
}

/// Where a node's current route table comes from.
pub trait RouteSource: Send + Sync + 'static {
    /// The table in force now (cheap: a shared snapshot).
    fn table(&self) -> Arc<RouteTable>;
}

struct RouteState<I, R> {
    invoker: Arc<I>,
    routes: Arc<R>,
    config: EdgeConfig,
}

impl<I, R> Clone for RouteState<I, R> {
    fn clone(&self) -> Self {
        Self {
            invoker: Arc::clone(&self.invoker),
            routes: Arc::clone(&self.routes),
            config: self.config,
        }
    }
}

/// A router whose fallback serves route requests; merge it into a node's app (which has no
/// fallback of its own) so that everything the API does not claim is matched against routes.
pub fn route_fallback<I: Invoker, R: RouteSource>(
    invoker: Arc<I>,
    routes: Arc<R>,
    config: EdgeConfig,
) -> Router {
    Router::new()
        .fallback(serve_route::<I, R>)
        .with_state(RouteState {
            invoker,
            routes,
            config,
        })
}

/// The request's host, lower-case, without a port: the `Host` header, or the URI's
/// authority for absolute-form requests.
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.host())?;
    let host = match raw.rsplit_once(':') {
        // Strip a port, but not from a bracketed IPv6 literal without one.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

async fn serve_route<I: Invoker, R: RouteSource>(
    State(state): State<RouteState<I, R>>,
    req: Request,
) -> Response {
    let request_id = RequestId::random();
    let (parts, body) = req.into_parts();
    let host = request_host(&parts.headers, &parts.uri).unwrap_or_default();
    let table = state.routes.table();
    let Some(route) = table.lookup(&host, parts.uri.path()) else {
        let what = if is_reserved_path(parts.uri.path()) {
            format!("{} is not a Strata API endpoint", parts.uri.path())
        } else {
            format!("no route for host {host:?} and path {}", parts.uri.path())
        };
        return error_response(&ApiError::not_found(what), Some(request_id));
    };
    match invoke_route(&state, route, request_id, &host, parts, body).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e, Some(request_id)),
    }
}

async fn invoke_route<I: Invoker, R>(
    state: &RouteState<I, R>,
    route: &Route,
    request_id: RequestId,
    host: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let explicit = header_str(&parts.headers, &super::invoke::H_AFFINITY)?;
    let affinity = route.affinity_key(&parts.headers, explicit);
    let payload = read_body(&parts.headers, body, state.config.max_payload_bytes).await?;
    let env = cgi::request_env(
        &parts.method,
        &parts.uri,
        host,
        &parts.headers,
        payload.len(),
    );
    let req = InvokeRequest {
        request_id,
        token: None,
        function: route.function.clone(),
        qualifier: route.qualifier(),
        payload,
        invocation_type: InvocationType::RequestResponse,
        affinity,
        memory_mb: None,
        env,
        route: Some(RouteGrant {
            route: route.id.clone(),
            tenant: route.tenant.clone(),
        }),
        http: Some(super::http_guest::request_head(
            &parts.method,
            &parts.uri,
            host,
            &parts.headers,
        )),
        http_source: None,
        authorized_tenant: None,
    };
    let resp = state.invoker.invoke(req).await?;
    let mut out = if resp.function_error.is_some() {
        render_function_error(&resp)
    } else if let Some(head) = &resp.http {
        super::http_guest::render(head, resp.body.clone())
    } else {
        match cgi::parse_output(resp.body.clone()) {
            Ok(c) => {
                let mut out = (c.status, c.body).into_response();
                out.headers_mut().extend(c.headers);
                out
            }
            Err(e) => invalid_cgi(&e),
        }
    };
    set_strata_headers(out.headers_mut(), &resp);
    Ok(out)
}

/// A guest that printed a malformed CGI header block: 502, as a web server answers for a
/// misbehaving CGI script, flagged as the function's error.
fn invalid_cgi(e: &cgi::CgiError) -> Response {
    let fault = crate::model::Fault::Guest;
    let body = serde_json::json!({
        "error": {"kind": "invalid_cgi_response", "message": e.to_string(), "fault": fault.as_str()}
    });
    let mut out = (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
    out.extensions_mut().insert(fault);
    out.headers_mut().insert(
        "x-strata-function-error",
        axum::http::HeaderValue::from_static("invalid-cgi-response"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TenantId;

    fn route(host: &str, prefix: &str, function: &str) -> Route {
        Route::new(
            TenantId::new("t").expect("valid"),
            host,
            prefix,
            function,
            None,
            0,
        )
        .expect("valid route")
    }

    fn matched<'t>(t: &'t RouteTable, host: &str, path: &str) -> Option<&'t str> {
        t.lookup(host, path).map(|r| r.function.as_str())
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t = RouteTable::new(
            1,
            [
                route("shop.example", "/", "root"),
                route("shop.example", "/api", "api"),
                route("shop.example", "/api/v2", "api2"),
            ],
        );
        assert_eq!(matched(&t, "shop.example", "/api/v2/x"), Some("api2"));
        assert_eq!(matched(&t, "shop.example", "/api/v20"), Some("api"));
        assert_eq!(matched(&t, "shop.example", "/api"), Some("api"));
        assert_eq!(matched(&t, "shop.example", "/other"), Some("root"));
        assert_eq!(matched(&t, "other.example", "/api"), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn exact_hosts_beat_wildcards_and_longer_suffixes_beat_shorter() {
        let t = RouteTable::new(
            1,
            [
                route("*.example", "/", "any"),
                route("*.eu.example", "/", "eu"),
                route("www.eu.example", "/x", "www"),
            ],
        );
        assert_eq!(matched(&t, "www.eu.example", "/x"), Some("www"));
        assert_eq!(matched(&t, "www.eu.example", "/y"), Some("eu"));
        assert_eq!(matched(&t, "a.b.eu.example", "/"), Some("eu"));
        assert_eq!(matched(&t, "a.example", "/"), Some("any"));
        assert_eq!(matched(&t, "example", "/"), None);
        assert_eq!(matched(&t, "badexample", "/"), None);
    }

    #[test]
    fn the_api_space_never_matches() {
        let t = RouteTable::new(1, [route("shop.example", "/", "root")]);
        assert_eq!(matched(&t, "shop.example", "/v1/functions"), None);
        assert_eq!(matched(&t, "shop.example", "/v1"), None);
        assert_eq!(matched(&t, "shop.example", "/v10"), Some("root"));
    }

    #[test]
    fn the_host_header_loses_its_port_and_case() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "Shop.Example:8080".parse().expect("value"));
        let uri: axum::http::Uri = "/x".parse().expect("uri");
        assert_eq!(request_host(&h, &uri).as_deref(), Some("shop.example"));
    }
}
