//! Why an invocation did not run, by the layer that stopped it and whose fault that is.
//!
//! The pipeline's layers return [`InvokeError`]; it becomes an [`ApiError`] (kind, status,
//! `fault`) exactly once, where the invocation leaves the region: the HTTP edge
//! ([`common::edge::Invoker::invoke`]), the QUIC service ([`crate::quic`]) and the async
//! queue's worker ([`crate::events::Execute`]). A guest's own failure is not an error
//! here: the invocation ran, and its response carries the function error
//! ([`common::model::Fault::Guest`] at the edge).
//!
//! The token check ([`AuthError`]), registry lookups ([`LookupError`]), the tenants'
//! limits ([`LimitRefusal`]), admission and the fleets ([`Refusal`]) answer typed errors
//! with their own fault. Services that still answer [`ApiError`] (the executor, the
//! queue) are wrapped in the
//! layer's own variant, so the kind, message, limit and wait they chose reach the caller
//! unchanged.

use crate::admission::Refusal;
use crate::limits::LimitRefusal;
use crate::registry::{AuthError, LookupError};
use common::model::{ApiError, Fault, RouteId};
use common::sandbox::{ModuleError, Release};

/// An invocation the region did not run, by the pipeline layer that stopped it.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// auth: the token was missing, unknown or expired, or the token store failed.
    #[error("auth: the token was not accepted")]
    Auth(#[from] AuthError),
    /// auth: the HTTP route the request came through no longer exists or no longer
    /// leads to the function (a POP's route table may be stale).
    #[error("auth: route {route} no longer exists")]
    RouteGone {
        /// The route named by the request's grant.
        route: RouteId,
    },
    /// resolve: the payload is over the region's limit.
    #[error("resolve: the payload of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// resolve: no such function, version or alias for the caller, or the registry failed.
    #[error("resolve: the function was not resolved")]
    Resolve(#[from] LookupError),
    /// admit: the tenant's own limits refused (its rate or concurrency: 429).
    #[error("admit: the tenant's limits refused")]
    Limited(#[from] LimitRefusal),
    /// admit: the region's capacity refused (full, the tenant's share of a fleet, no
    /// slot or worker turn).
    #[error("admit: the region's capacity refused")]
    Refused(#[from] Refusal),
    /// admit: the origin plan has no run step (a planner bug).
    #[error("admit: the origin plan has no run step")]
    NoRunStep,
    /// queue: the async queue refused the event (full, over a quota) or failed to store it.
    #[error("queue: the event was not queued")]
    Queue(#[source] ApiError),
    /// execute: the resolved function's code could not be read (the store failed, or
    /// its blob is missing: the platform's fault either way).
    #[error("execute: the module was not read from the store")]
    Store(#[source] LookupError),
    /// execute: a task on the blocking pool ended without an answer.
    #[error("execute: the {what} task failed")]
    Task {
        /// What the task did.
        what: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// execute: `release` refused the module (it passed validation at deploy, so this is
    /// the platform's failure, not the caller's).
    #[error("execute: release {release} refused the module")]
    Module {
        /// The runtime release that refused it.
        release: Release,
        /// Why.
        #[source]
        source: ModuleError,
    },
    /// execute: the executor could not run it (no instance slot, a sandbox failure).
    #[error("execute: the function was not run")]
    Run(#[source] ApiError),
}

impl InvokeError {
    /// Whose fault it is: fixed by the layer where the layer knows (the caller's payload,
    /// the region's capacity, the platform's module and tasks), else the service's own
    /// classification of what it refused.
    pub fn fault(&self) -> Fault {
        match self {
            Self::PayloadTooLarge { .. } | Self::RouteGone { .. } => Fault::Device,
            Self::Auth(e) => e.fault(),
            Self::Limited(r) => r.fault(),
            Self::Refused(r) => r.fault(),
            Self::NoRunStep | Self::Task { .. } | Self::Module { .. } | Self::Store(_) => {
                Fault::Internal
            }
            Self::Resolve(e) => e.fault(),
            Self::Queue(e) | Self::Run(e) => e.fault,
        }
    }
}

/// The one mapping from the pipeline's errors to the platform error the edges render.
impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let fault = e.fault();
        let api = match e {
            InvokeError::Queue(e) | InvokeError::Run(e) => e,
            InvokeError::Limited(r) => ApiError::from(r),
            InvokeError::PayloadTooLarge { limit, .. } => ApiError::payload_too_large(limit as u64),
            InvokeError::Auth(e) => ApiError::from(e),
            InvokeError::Resolve(e) | InvokeError::Store(e) => ApiError::from(e),
            InvokeError::RouteGone { route } => {
                ApiError::not_found(format_args!("route {route} no longer exists"))
            }
            InvokeError::Refused(r) => ApiError::from(r),
            e @ (InvokeError::NoRunStep | InvokeError::Task { .. }) => {
                ApiError::internal(chain(&e))
            }
            // A module's refusal keeps its kind (`invalid_module`), as before the layers.
            InvokeError::Module { source, .. } => ApiError::from(source),
        };
        api.with_fault(fault)
    }
}

/// `e` and its causes, `: `-separated (what a log line or a 500's message says).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use common::model::{ErrorKind, LimitHit, LimitKind, LimitScope, RequestId, TenantId};
    use common::policy::share::ShareExceeded;
    use std::time::Duration;

    fn throttled() -> LimitRefusal {
        LimitRefusal::Concurrency {
            tenant: TenantId::new("acme").expect("id"),
            limit: 2,
            retry_after: Duration::from_millis(200),
        }
    }

    /// What the HTTP edge renders for `e`: status and the body's `error` object.
    async fn rendered(e: InvokeError) -> (StatusCode, serde_json::Value) {
        let r = common::edge::error_response(&ApiError::from(e), Some(RequestId(7)));
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        (status, v["error"].clone())
    }

    #[tokio::test]
    async fn every_layer_error_maps_to_one_status_and_its_fault() {
        let join_error = tokio::spawn(async { panic!("boom") })
            .await
            .expect_err("the task panics");
        let cases = [
            (
                InvokeError::Auth(AuthError::Unknown),
                StatusCode::UNAUTHORIZED,
                Fault::Device,
            ),
            (
                InvokeError::Auth(AuthError::Expired),
                StatusCode::UNAUTHORIZED,
                Fault::Device,
            ),
            (
                InvokeError::Auth(AuthError::Record(ApiError::internal("corrupt"))),
                StatusCode::INTERNAL_SERVER_ERROR,
                Fault::Internal,
            ),
            (
                InvokeError::RouteGone {
                    route: RouteId::of(
                        &common::model::HostPattern::new("shop.example").expect("host"),
                        &common::model::PathPrefix::new("/").expect("prefix"),
                    ),
                },
                StatusCode::NOT_FOUND,
                Fault::Device,
            ),
            (
                InvokeError::PayloadTooLarge {
                    size: 11,
                    limit: 10,
                },
                StatusCode::PAYLOAD_TOO_LARGE,
                Fault::Device,
            ),
            (
                InvokeError::Resolve(LookupError::Function(
                    common::model::FunctionName::new("f").expect("name"),
                )),
                StatusCode::NOT_FOUND,
                Fault::Device,
            ),
            (
                InvokeError::Resolve(LookupError::Record(ApiError::internal("corrupt"))),
                StatusCode::INTERNAL_SERVER_ERROR,
                Fault::Internal,
            ),
            (
                InvokeError::Limited(throttled()),
                StatusCode::TOO_MANY_REQUESTS,
                Fault::Capacity,
            ),
            (
                InvokeError::Refused(Refusal::Full),
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
            (
                InvokeError::Refused(Refusal::FleetFull),
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
            (
                InvokeError::Refused(Refusal::ShuttingDown),
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
            (
                InvokeError::Refused(share_refusal()),
                StatusCode::TOO_MANY_REQUESTS,
                Fault::Capacity,
            ),
            (
                InvokeError::NoRunStep,
                StatusCode::INTERNAL_SERVER_ERROR,
                Fault::Internal,
            ),
            (
                InvokeError::Queue(ApiError::unavailable("queue full", Duration::from_secs(1))),
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
            (
                InvokeError::Store(LookupError::Record(ApiError::internal("store: disk gone"))),
                StatusCode::INTERNAL_SERVER_ERROR,
                Fault::Internal,
            ),
            (
                InvokeError::Store(LookupError::Module(common::model::ArtifactDigest::of(
                    b"gone",
                ))),
                StatusCode::NOT_FOUND,
                Fault::Internal,
            ),
            (
                InvokeError::Task {
                    what: "store",
                    source: join_error,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                Fault::Internal,
            ),
            (
                InvokeError::Module {
                    release: Release::Next,
                    source: ModuleError::Link("unknown import".into()),
                },
                StatusCode::BAD_REQUEST,
                Fault::Internal,
            ),
            (
                InvokeError::Run(ApiError::unavailable(
                    "no instance slot",
                    Duration::from_secs(1),
                )),
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
        ];
        for (error, status, fault) in cases {
            let name = format!("{error:?}");
            assert_eq!(error.fault(), fault, "{name}");
            let (got, body) = rendered(error).await;
            assert_eq!(got, status, "{name}");
            assert_eq!(body["fault"], fault.as_str(), "{name}");
        }
    }

    fn share_refusal() -> Refusal {
        Refusal::Share {
            tenant: TenantId::new("acme").expect("id"),
            pool: "execution slots",
            share: ShareExceeded {
                cap: 4,
                slots: 8,
                retry_after: Duration::from_millis(30),
            },
        }
    }

    #[test]
    fn a_refusal_keeps_its_limit_and_wait() {
        let e = ApiError::from(InvokeError::Limited(throttled()));
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_millis(200)));
        assert_eq!(e.limit.map(|l| l.kind), Some(LimitKind::Concurrency));
        let e = ApiError::from(InvokeError::Refused(share_refusal()));
        assert_eq!(e.retry_after, Some(Duration::from_millis(30)));
        assert_eq!(
            e.limit,
            Some(LimitHit::new(LimitScope::Tenant, LimitKind::SlotShare, 4))
        );
    }

    #[test]
    fn an_internal_error_names_its_cause_chain() {
        let e = InvokeError::Store(LookupError::Record(ApiError::internal("store: disk gone")));
        assert_eq!(
            chain(&e),
            "execute: the module was not read from the store: a registry record is corrupt: \
             store: disk gone"
        );
    }
}
