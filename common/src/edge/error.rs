//! The single mapping from error kinds to HTTP status codes and bodies.

use crate::model::{ApiError, ErrorKind, Fault, FunctionErrorKind, QuotaClass, RequestId};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

/// Header carrying the request id on every invoke response.
pub(crate) const REQUEST_ID: &str = "x-strata-request-id";

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest
        | ErrorKind::InvalidModule
        | ErrorKind::HostNotAllowed
        | ErrorKind::InvalidCertificate => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::HostOwned => StatusCode::CONFLICT,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Throttled => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::QuotaExceeded(b) => match b.quota.class() {
            QuotaClass::Size => StatusCode::PAYLOAD_TOO_LARGE,
            QuotaClass::Count => StatusCode::CONFLICT,
            QuotaClass::Drains => StatusCode::TOO_MANY_REQUESTS,
        },
    }
}

/// The status for a guest failure: 504 for a timeout, 500 otherwise.
pub fn function_error_status(kind: FunctionErrorKind) -> StatusCode {
    match kind {
        FunctionErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FunctionErrorKind::Unhandled | FunctionErrorKind::OutOfMemory => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

/// Renders `err` as its status, `retry-after` when it has one, and the JSON body
/// `{"error": {"kind": ..., "message": ..., "fault": ...}}` (`fault`: whose fault it is,
/// [`Fault::as_str`]; also put in the response's extensions, where the metrics layer
/// reads it). A refusal with a wait adds
/// `retry_after_ms` (exact; the header rounds up to whole seconds); a throttled one adds
/// `limit: {scope, kind, value}`; a quota refusal adds `quota` and `limit` (its value).
pub fn error_response(err: &ApiError, request_id: Option<RequestId>) -> Response {
    let mut detail = json!({
        "kind": err.kind.as_str(),
        "message": err.message,
        "fault": err.fault.as_str(),
    });
    if let Some(b) = err.quota() {
        detail["quota"] = json!(b.quota.as_str());
        detail["limit"] = json!(b.limit);
    }
    if let Some(hit) = err.limit {
        detail["limit"] = json!(hit);
    }
    if let Some(d) = err.retry_after {
        detail["retry_after_ms"] = json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }
    let body = json!({ "error": detail });
    let mut resp = (status_of(err.kind), Json(body)).into_response();
    resp.extensions_mut().insert(err.fault);
    let headers = resp.headers_mut();
    if let Some(d) = err.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
    }
    if let Some(id) = request_id
        && let Ok(v) = HeaderValue::from_str(&id.to_string())
    {
        headers.insert(REQUEST_ID, v);
    }
    resp
}

/// The fault a response was rendered for, if it was an error ([`error_response`], or a
/// guest's failure): what the metrics layer labels it with.
pub fn fault_of(resp: &Response) -> Option<Fault> {
    resp.extensions().get::<Fault>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `error` object of a rendered response.
    fn body_of(r: Response) -> serde_json::Value {
        let bytes = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 16))
            .expect("body");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON")["error"].clone()
    }

    #[test]
    fn every_fault_is_rendered_in_the_body_and_the_extensions_and_leaves_the_status_to_the_kind() {
        for fault in Fault::ALL {
            let err = ApiError::unavailable("x", Duration::from_secs(1)).with_fault(fault);
            let r = error_response(&err, None);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{fault}");
            assert_eq!(fault_of(&r), Some(fault));
            assert_eq!(body_of(r)["fault"], fault.as_str());
        }
    }

    #[test]
    fn a_kind_names_its_fault_unless_told_otherwise() {
        let fault = |e: ApiError| body_of(error_response(&e, None))["fault"].clone();
        assert_eq!(fault(ApiError::unauthenticated()), "device");
        assert_eq!(fault(ApiError::not_found("f")), "device");
        assert_eq!(fault(ApiError::payload_too_large(1)), "device");
        assert_eq!(fault(ApiError::internal("bug")), "internal");
        assert_eq!(
            fault(ApiError::unavailable("full", Duration::from_secs(1))),
            "capacity"
        );
        let hit = crate::model::LimitHit::new(
            crate::model::LimitScope::Tenant,
            crate::model::LimitKind::Rate,
            1,
        );
        assert_eq!(
            fault(ApiError::throttled(
                hit,
                "slow down",
                Duration::from_secs(1)
            )),
            "capacity"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn capacity_errors_carry_retry_after() {
        let r = error_response(
            &ApiError::unavailable("no region", Duration::from_secs(2)),
            Some(RequestId(1)),
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert!(r.headers().contains_key(REQUEST_ID));
    }

    #[test]
    fn quota_refusals_map_by_class_and_name_the_quota() {
        use crate::model::Quota;
        let status = |q| {
            error_response(
                &ApiError::quota_exceeded(q, 1, "x", Duration::from_secs(3)),
                None,
            )
            .status()
        };
        assert_eq!(status(Quota::EnvBytes), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(Quota::Functions), StatusCode::CONFLICT);
        let r = error_response(
            &ApiError::quota_exceeded(Quota::QueuedEventBytes, 9, "x", Duration::from_secs(3)),
            None,
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    }
}
