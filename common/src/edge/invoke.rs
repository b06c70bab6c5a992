//! `POST /v1/functions/{name}/invoke`: parse, call the node's [`Invoker`], render.

use super::error::{error_response, function_error_status};
use super::headers::set_strata_headers;
use crate::model::{
    ApiError, FunctionName, HeadSource, InvocationType, InvokeRequest, InvokeResponse, Qualifier,
    RequestId,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a node knows of a request's token before reading its body
/// ([`Invoker::authorize`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The token is valid here; of this tenant, when the node looked it up (passed on to
    /// [`Invoker::invoke`] as [`InvokeRequest::authorized_tenant`]).
    Verified(Option<crate::model::TenantId>),
    /// The node cannot tell yet (a POP that has not learned the token and cannot rule it
    /// out); the body is read within [`EdgeConfig::unverified_body_bytes`] and the
    /// invocation decides.
    Unverified,
}

/// Runs invocations; each node kind supplies its own (local-or-forward at a POP, execute
/// at a region).
pub trait Invoker: Send + Sync + 'static {
    /// Checks a request's bearer `token` from its headers, before any of its body is
    /// read: a refusal (401) means the body is never read.
    fn authorize(
        &self,
        token: Option<&str>,
    ) -> impl Future<Output = Result<Authorization, ApiError>> + Send {
        let present = token.is_some_and(|t| !t.is_empty());
        async move {
            if present {
                Ok(Authorization::Unverified)
            } else {
                Err(ApiError::unauthenticated())
            }
        }
    }

    /// Runs `req` and returns its response, or the platform error that prevented it.
    fn invoke(
        &self,
        req: InvokeRequest,
    ) -> impl Future<Output = Result<InvokeResponse, ApiError>> + Send;
}

/// Limits of the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Largest request body in bytes; larger is refused with 413 while streaming.
    /// Default 6 MiB.
    pub max_payload_bytes: usize,
    /// Bytes of invoke bodies read at once for tokens the node cannot verify before the
    /// body (a POP that has not learned the token yet while its region's push stream is
    /// not live); a request that does not fit waits for nothing and gets 503 with
    /// `retry-after`. Default 16 MiB.
    pub unverified_body_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 6 << 20,
            unverified_body_bytes: 16 << 20,
        }
    }
}

struct EdgeState<I> {
    invoker: Arc<I>,
    config: EdgeConfig,
    /// Bytes left for bodies of unverified tokens (one permit per byte, capped at u32).
    unverified: Arc<tokio::sync::Semaphore>,
}

impl<I> Clone for EdgeState<I> {
    fn clone(&self) -> Self {
        Self {
            invoker: Arc::clone(&self.invoker),
            config: self.config,
            unverified: Arc::clone(&self.unverified),
        }
    }
}

/// The invoke route, served by `invoker`.
pub fn invoke_router<I: Invoker>(invoker: Arc<I>, config: EdgeConfig) -> Router {
    let budget = config.unverified_body_bytes.min(u32::MAX as usize);
    Router::new()
        .route("/v1/functions/{name}/invoke", post(invoke::<I>))
        .with_state(EdgeState {
            invoker,
            config,
            unverified: Arc::new(tokio::sync::Semaphore::new(budget)),
        })
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    qualifier: Option<String>,
}

/// Invokes a function (DESIGN §4). Served by POPs and regions alike.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invoke",
    tag = "invoke",
    params(
        ("name" = String, Path, description = "The function's name"),
        ("qualifier" = Option<String>, Query,
            description = "`$LATEST` (default), a version number or an alias"),
        ("x-strata-invocation-type" = Option<String>, Header,
            description = "`request-response` (default) or `event`"),
        ("x-strata-affinity" = Option<String>, Header,
            description = "Requests with the same key reach the same instance"),
        ("x-strata-memory-mb" = Option<u32>, Header,
            description = "Memory for this invocation, up to the function's maximum"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The payload: the function's stdin"),
    responses(
        (status = 200, description = "The function's stdout", content_type = "application/octet-stream", body = Vec<u8>,
            headers(
                ("x-strata-request-id" = String, description = "The invocation's id"),
                ("x-strata-executed-at" = String, description = "`pop/<id>` or `region/<id>`"),
                ("x-strata-start" = String, description = "`cold` or `warm`"),
                ("x-strata-version" = String, description = "The version that ran"),
                ("x-strata-runtime" = String, description = "The runtime release that ran it (`2026.10` or `2026.11`)"),
            )),
        (status = 202, description = "Event accepted (durably queued)"),
        (status = 400, description = "Malformed request", body = crate::edge::doc::ErrorBody),
        (status = 401, description = "Missing or unknown token", body = crate::edge::doc::ErrorBody),
        (status = 403, description = "Not this tenant's function", body = crate::edge::doc::ErrorBody),
        (status = 404, description = "Unknown function or qualifier", body = crate::edge::doc::ErrorBody),
        (status = 413, description = "Payload over the limit", body = crate::edge::doc::ErrorBody),
        (status = 429, description = "Throttled; see retry-after", body = crate::edge::doc::ErrorBody),
        (status = 500, description = "The function failed (x-strata-function-error)", body = crate::edge::doc::ErrorBody),
        (status = 503, description = "No capacity; see retry-after", body = crate::edge::doc::ErrorBody),
        (status = 504, description = "The function timed out", body = crate::edge::doc::ErrorBody),
    ),
    security(("bearer" = []))
)]
fn invoke<I: Invoker>(
    State(state): State<EdgeState<I>>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    request: axum::extract::Request,
) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    // Boxed at once: axum moves a handler's future into its own future and that into a
    // box before it first runs, and each move copied all of this one (the parse, the
    // body's read, the call); a box moves as a pointer.
    Box::pin(answer(state, name, query, request))
}

async fn answer<I: Invoker>(
    state: EdgeState<I>,
    name: String,
    query: InvokeQuery,
    request: axum::extract::Request,
) -> Response {
    // The request itself rather than its method, URI and headers as extractors, which
    // would each be a copy.
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let request_id = RequestId::random();
    let mut req = match parse(request_id, name, query, &headers, body, &state).await {
        Ok(req) => req,
        Err(e) => return error_response(&e, Some(request_id)),
    };
    // An `http`-ABI function sees the device's request; the others ignore it, so it is
    // built only if read (the parts move into the source, nothing is copied now).
    req.http_source = Some(HeadSource::new(move || {
        super::http_guest::request_head(&method, &uri, "", &headers)
    }));
    // Boxed too: the invocation's future is large (planning, the guest call, a forward),
    // and held inline it would make this one as large from its start.
    match Box::pin(state.invoker.invoke(req)).await {
        Ok(resp) => render(resp),
        Err(e) => error_response(&e, Some(request_id)),
    }
}

async fn parse<I: Invoker>(
    request_id: RequestId,
    name: String,
    query: InvokeQuery,
    headers: &HeaderMap,
    body: Body,
    state: &EdgeState<I>,
) -> Result<InvokeRequest, ApiError> {
    let mut req = parse_head(request_id, name, query.qualifier.as_deref(), headers)?;
    // Everything so far came from the headers; nothing of the body is read before the
    // token is accepted.
    let _budget = match state.invoker.authorize(req.token.as_deref()).await? {
        Authorization::Verified(tenant) => {
            req.authorized_tenant = tenant;
            None
        }
        Authorization::Unverified => Some(unverified_budget(state, headers)?),
    };
    req.payload = read_body(headers, body, state.config.max_payload_bytes).await?;
    Ok(req)
}

// The request headers the invoke API reads, parsed once rather than on every request.
static H_INVOCATION_TYPE: HeaderName = HeaderName::from_static("x-strata-invocation-type");
static H_MEMORY_MB: HeaderName = HeaderName::from_static("x-strata-memory-mb");
pub(super) static H_AFFINITY: HeaderName = HeaderName::from_static("x-strata-affinity");

/// The invocation a request's path, `qualifier` query parameter and headers describe, with
/// an empty payload: pure, so the fuzz smoke run (`fuzz/`) can feed it device bytes.
///
/// # Errors
/// 400 for a bad function name, qualifier or `x-strata-*` header.
pub fn parse_head(
    request_id: RequestId,
    name: String,
    qualifier: Option<&str>,
    headers: &HeaderMap,
) -> Result<InvokeRequest, ApiError> {
    let function = FunctionName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let qualifier = match qualifier {
        None | Some("") => Qualifier::Latest,
        Some(q) => q.parse().map_err(|e: crate::model::NameError| {
            ApiError::bad_request(format!("qualifier: {e}"))
        })?,
    };
    let invocation_type = match header_str(headers, &H_INVOCATION_TYPE)? {
        None | Some("request-response") => InvocationType::RequestResponse,
        Some("event") => InvocationType::Event,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "x-strata-invocation-type must be request-response or event, got {other:?}"
            )));
        }
    };
    let memory_mb = header_str(headers, &H_MEMORY_MB)?
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| ApiError::bad_request("x-strata-memory-mb must be a whole number"))
        })
        .transpose()?;
    let affinity = header_str(headers, &H_AFFINITY)?.map(str::to_owned);
    let token = header_str(headers, &header::AUTHORIZATION)?
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    Ok(InvokeRequest {
        request_id,
        token,
        function,
        qualifier,
        payload: Bytes::new(),
        invocation_type,
        affinity,
        memory_mb,
        env: Vec::new(),
        route: None,
        http: None,
        http_source: None,
        authorized_tenant: None,
    })
}

/// Reserves the body's share of the unverified-token byte budget: its announced length, or
/// the payload limit for a body of unknown length.
fn unverified_budget<I>(
    state: &EdgeState<I>,
    headers: &HeaderMap,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let limit = state.config.max_payload_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(limit, |n| n.min(limit.saturating_add(1)));
    let want = u32::try_from(announced.max(1)).unwrap_or(u32::MAX);
    Arc::clone(&state.unverified)
        .try_acquire_many_owned(want)
        .map_err(|_| {
            ApiError::unavailable(
                "too many request bodies for tokens not yet verified here; retry",
                std::time::Duration::from_secs(1),
            )
        })
}

pub(super) fn header_str<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

/// After refusing a body, read and discard at most this much more of it (and for at most
/// [`DRAIN_TIME`]), so the client has finished sending when the 413 arrives. Closing a
/// connection with unread bytes makes the kernel reset it, and the client then loses the
/// response; draining a little is the lingering close HTTP servers do.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the body, refusing it as soon as it is known to exceed `limit`: from
/// `content-length` before reading, or while streaming a chunked body.
pub(super) async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::payload_too_large(limit as u64);
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if let Some(n) = announced
        && n > limit as u64
    {
        if n <= (limit + DRAIN_BYTES) as u64 {
            drain(&mut body).await;
        }
        return Err(too_large());
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            drain(&mut body).await;
            return Err(too_large());
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

async fn drain(body: &mut Body) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _bounded = tokio::time::timeout(DRAIN_TIME, discard).await;
}

fn render(resp: InvokeResponse) -> Response {
    let mut out = match &resp.function_error {
        None if resp.queued => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"request_id": resp.request_id.to_string()})),
        )
            .into_response(),
        None => match &resp.http {
            Some(head) => super::http_guest::render(head, resp.body.clone()),
            None => plain_output(resp.body.clone()),
        },
        Some(_) => render_function_error(&resp),
    };
    set_strata_headers(out.headers_mut(), &resp);
    out
}

/// A 200 with a guest's output, as `(StatusCode::OK, body).into_response()` writes it,
/// with room for the `x-strata-*` headers made at once (growing the map rehashes it).
fn plain_output(body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    let h = out.headers_mut();
    h.reserve(super::headers::COUNT + 1);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out
}

/// The response for an invocation whose guest failed: the DESIGN §4 status and error body.
pub(super) fn render_function_error(resp: &InvokeResponse) -> Response {
    match &resp.function_error {
        None => StatusCode::OK.into_response(),
        Some(fe) => {
            let fault = fe.kind.fault();
            let body = json!({"error": {
                "kind": fe.kind.as_str(),
                "message": fe.message,
                "fault": fault.as_str(),
            }});
            let mut resp = (function_error_status(fe.kind), axum::Json(body)).into_response();
            resp.extensions_mut().insert(fault);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render_function_error;
    use crate::model::{
        ExecutedAt, Fault, FunctionError, FunctionErrorKind, InvokeResponse, NodeId, RequestId,
        StartKind, Timing,
    };

    #[test]
    fn a_guest_failure_is_the_guests_fault_whatever_its_kind() {
        for (kind, status) in [
            (FunctionErrorKind::Unhandled, 500),
            (FunctionErrorKind::OutOfMemory, 500),
            (FunctionErrorKind::Timeout, 504),
        ] {
            let resp = InvokeResponse {
                request_id: RequestId(1),
                executed_at: ExecutedAt::Region(NodeId("r".into())),
                start: StartKind::Warm,
                version: "1".into(),
                body: Default::default(),
                function_error: Some(FunctionError {
                    kind,
                    message: "trap".into(),
                }),
                timing: Timing::default(),
                peak_memory_bytes: 0,
                queued: false,
                runtime: None,
                http: None,
            };
            let r = render_function_error(&resp);
            assert_eq!(r.status().as_u16(), status, "{kind:?}");
            assert_eq!(super::super::error::fault_of(&r), Some(Fault::Guest));
            let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 16))
                .expect("body");
            let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(v["error"]["fault"], "guest", "{kind:?}");
            assert_eq!(v["error"]["kind"], kind.as_str());
        }
    }
}
