//! Types that exist to describe the HTTP API in its OpenAPI document: the error body every
//! non-2xx answer carries (DESIGN §2). The edge renders them with `serde_json` in
//! [`super::error_response`]; these mirror that shape for the schema.

use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind: `bad_request`, `invalid_module`, `unauthenticated`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`, `throttled`,
    /// `unavailable`, `internal`, `quota_exceeded` (with `quota` and `limit`),
    /// `invalid_certificate`; for guest failures `unhandled`, `out-of-memory`,
    /// `timeout`; for a route's malformed CGI output `invalid_cgi_response`.
    #[schema(example = "not_found")]
    pub kind: String,
    /// For a person, ideally saying what to do.
    pub message: String,
    /// Whose fault it is: `device` (the request), `capacity` (a limit or full queue; retry
    /// later), `internal` (Strata), `guest` (the function's own failure) or `peer` (a POP
    /// lost its region).
    #[schema(example = "device")]
    pub fault: String,
    /// For `quota_exceeded`: the quota's name, e.g. `env_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// For `quota_exceeded`: the quota's limit, in its unit (bytes or items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}
