//! `/v1/functions[/{name}]`: deploy (multipart: `config` JSON + `module` wasm), get, list,
//! delete, scoped to the caller's tenant.

use super::openapi::DeployForm;
use super::{Caller, ControlState};
use crate::registry::FunctionView;
use axum::Json;
use axum::extract::multipart::MultipartError;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::model::{ApiError, FunctionConfig, FunctionKey, Qualifier};
use common::policy::resize::MemoryReport;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{blocking, name};

#[derive(Debug, Deserialize)]
pub(super) struct DeployQuery {
    /// Only deploy if the function is still at this revision (409 otherwise).
    expect_revision: Option<u64>,
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(common::model::ErrorKind::PayloadTooLarge, e.body_text())
    } else {
        ApiError::bad_request(format!("multipart body: {}", e.body_text()))
    }
}

/// Deploys code and configuration as the function's `$LATEST`.
#[utoipa::path(put, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name"),
        ("expect_revision" = Option<u64>, Query, description = "409 unless still at this revision")),
    request_body(content = DeployForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The deployed function", body = Object),
        (status = 400, description = "Invalid config or module", body = ErrorBody),
        (status = 409, description = "Lost a race with another deploy, or `quota_exceeded` (`functions`)", body = ErrorBody),
        (status = 413, description = "Module over the limit, or `quota_exceeded` (`env_bytes`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn deploy(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
    Query(q): Query<DeployQuery>,
    mut form: Multipart,
) -> Result<Json<FunctionView>, HttpError> {
    let name = name(raw)?;
    let mut config = FunctionConfig::default();
    let mut module: Option<Bytes> = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("config") => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                config = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("config: {e}")))?;
            }
            Some("module") => module = Some(field.bytes().await.map_err(multipart_error)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field {other:?}: send `config` (JSON) and `module` (wasm)"
                ))
                .into());
            }
        }
    }
    let module = module.ok_or_else(|| ApiError::bad_request("missing form field `module`"))?;
    // Validate by compiling: an invalid module (or one that does not fit its ABI) is
    // refused with the validator's message and nothing is stored. The compiled module
    // stays cached for the first invocation, its precompiled code for POPs.
    s.region
        .artifacts
        .prepare_deploy(module.clone(), &config)
        .await?;
    let registry = Arc::clone(&s.region.registry);
    let view =
        blocking(move || registry.deploy(&tenant, &name, config, &module, q.expect_revision))
            .await?;
    Ok(Json(view))
}

/// A function's `$LATEST` and what this region observed of its memory use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct FunctionDetail {
    /// The function's configuration and code (as in the deploy response).
    #[serde(flatten)]
    #[schema(ignore)]
    function: FunctionView,
    /// Peak memory percentiles of recent invocations of the function (at the region and,
    /// from their load reports, at its POPs), the recommended `memory_mb`, and the size
    /// `auto_resize` learned for `$LATEST`.
    memory: MemoryReport,
}

/// One function's `$LATEST`, with its observed memory use.
#[utoipa::path(get, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, description = "The function (deploy fields plus `memory`)",
            body = FunctionDetail),
        (status = 404, description = "No such function for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<Json<FunctionDetail>, HttpError> {
    let name = name(raw)?;
    let registry = Arc::clone(&s.region.registry);
    let key = FunctionKey {
        tenant: tenant.clone(),
        name: name.clone(),
    };
    let function = blocking(move || Ok(registry.function(&tenant, &name)?)).await?;
    let memory = s
        .region
        .executor
        .memory_report(&key, &Qualifier::Latest.to_string());
    Ok(Json(FunctionDetail { function, memory }))
}

#[derive(Debug, Serialize)]
pub(super) struct FunctionList {
    functions: Vec<FunctionDetail>,
}

/// The caller's functions.
#[utoipa::path(get, path = "/v1/functions", tag = "functions",
    responses((status = 200, description = "`{\"functions\": [...]}`, each as `GET /v1/functions/{name}` shows it (with `memory`)", body = Object),
        (status = 401, description = "Missing or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<FunctionList>, HttpError> {
    let registry = Arc::clone(&s.region.registry);
    let listing = tenant.clone();
    let functions = blocking(move || registry.functions(&listing))
        .await?
        .into_iter()
        .map(|function| {
            let key = FunctionKey {
                tenant: tenant.clone(),
                name: function.name.clone(),
            };
            let memory = s
                .region
                .executor
                .memory_report(&key, &Qualifier::Latest.to_string());
            FunctionDetail { function, memory }
        })
        .collect();
    Ok(Json(FunctionList { functions }))
}

/// Deletes a function.
#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such function for this tenant", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn delete(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
    Path(raw): Path<String>,
) -> Result<StatusCode, HttpError> {
    let name = name(raw)?;
    let registry = Arc::clone(&s.region.registry);
    blocking(move || registry.delete_function(&tenant, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
