//! `/v1/certificates[/{host}]`: tenant TLS certificates for the POPs' HTTPS listeners. A
//! tenant uploads (or replaces) a chain and key for a host it owns, lists its own and
//! deletes them; the operator token lists and deletes any. No response carries a key.

use super::CallerOrOperator;
use super::{Caller, ControlState, blocking};
use crate::certs::CertView;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::ApiError;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// `GET /v1/certificates`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CertList {
    certificates: Vec<CertView>,
}

/// `PUT /v1/certificates/{host}`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCertificate {
    /// The chain, leaf first, PEM.
    chain: String,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1), PEM.
    key: String,
}

/// Seconds since the Unix epoch now (0 before it).
fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The caller's certificates, or every one for the operator token.
#[utoipa::path(get, path = "/v1/certificates", tag = "routes",
    responses(
        (status = 200, description = "Certificates by host, without keys", body = CertList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    CallerOrOperator(caller): CallerOrOperator,
) -> Result<Json<CertList>, HttpError> {
    Ok(Json(CertList {
        certificates: s.certs.list(caller.as_ref()),
    }))
}

/// Uploads or replaces the caller's certificate for `host` (exact or `*.suffix`),
/// claiming the host for the caller if nobody owns it. Served by POPs from the next
/// handshake after the push reaches them.
#[utoipa::path(put, path = "/v1/certificates/{host}", tag = "routes",
    params(("host" = String, Path, description = "The host, or `*.suffix` for a wildcard certificate")),
    request_body = NewCertificate,
    responses(
        (status = 200, description = "Stored", body = CertView),
        (status = 400, description = "Invalid host or body; `invalid_certificate` when the chain or key does not parse, the key is not the leaf's, the leaf does not cover the host or has expired; `host_not_allowed`", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 409, description = "`host_owned`: another tenant owns the host; `quota_exceeded` (`certificates`)", body = ErrorBody),
        (status = 413, description = "`quota_exceeded` (`certificate_bytes`)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn put(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(host): Path<String>,
    body: Body,
) -> Result<Json<CertView>, HttpError> {
    // The token was checked from the headers (`Caller`); only then is the body read, and
    // never past the bound. A body that declares more than the bound (`content-length`)
    // is refused before any of it is read, so the client gets the 413 rather than a reset
    // connection half-way through sending it.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if declared > u64::try_from(s.certs.max_body_bytes()).unwrap_or(u64::MAX) {
        return Err(s.certs.body_too_large().into());
    }
    let body = axum::body::to_bytes(body, s.certs.max_body_bytes())
        .await
        .map_err(|_| s.certs.body_too_large())?;
    let new: NewCertificate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    let certs = Arc::clone(&s.certs);
    Ok(
        blocking(move || certs.put(&tenant, &host, new.chain, new.key, now_unix_s()))
            .await
            .map(Json)?,
    )
}

/// Deletes a certificate: a tenant its own, the operator anyone's. POPs stop serving it
/// from the next handshake after the push reaches them.
#[utoipa::path(delete, path = "/v1/certificates/{host}", tag = "routes",
    params(("host" = String, Path, description = "The host it was uploaded for")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid host", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "No such certificate (of the caller's)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    CallerOrOperator(caller): CallerOrOperator,
    Path(host): Path<String>,
) -> Result<StatusCode, HttpError> {
    let certs = Arc::clone(&s.certs);
    blocking(move || certs.delete(caller.as_ref(), &host)).await?;
    Ok(StatusCode::NO_CONTENT)
}
