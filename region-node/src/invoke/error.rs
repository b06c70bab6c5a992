//! Why an invocation did not run, by the layer that stopped it and whose fault that is.
//!
//! The pipeline's layers return [`InvokeError`]; it becomes an [`ApiError`] (kind, status,
//! `fault`) exactly once, where the invocation leaves the region: the HTTP edge
//! ([`common::edge::Invoker::invoke`]), the QUIC service ([`crate::quic`]) and the async
//! queue's worker ([`crate::events::Execute`]). A guest's own failure is not an error
//! here: the invocation ran, and its response carries the function error
//! ([`common::model::Fault::Guest`] at the edge).
//!
//! Services the layers call (the registry, the limits, admission, the executor, the
//! queue) still answer [`ApiError`]; a layer wraps what they say with its own variant, so
//! the kind, message, limit and wait they chose reach the caller unchanged.

use common::model::{ApiError, Fault};
use common::policy::origin::Step;
use common::sandbox::{ModuleError, Release};
use std::time::Duration;

/// An invocation the region did not run, by the pipeline layer that stopped it.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// auth: the request names no caller this region knows (no or an unknown token, a
    /// route that no longer exists), or the token store failed.
    #[error("auth: the caller was not established")]
    Auth(#[source] ApiError),
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
    Resolve(#[source] ApiError),
    /// admit: the region is full (every execution slot busy and its queue full).
    #[error("admit: the region is at capacity")]
    AtCapacity,
    /// admit: the plan's `step` refused (the tenant's rate or concurrency, its share of a
    /// fleet, a slot or a worker's turn).
    #[error("admit: refused at {step:?}")]
    Refused {
        /// The step that refused.
        step: Step,
        /// The refusal, with its limit and wait.
        #[source]
        source: ApiError,
    },
    /// admit: the origin plan has no run step (a planner bug).
    #[error("admit: the origin plan has no run step")]
    NoRunStep,
    /// queue: the async queue refused the event (full, over a quota) or failed to store it.
    #[error("queue: the event was not queued")]
    Queue(#[source] ApiError),
    /// execute: the module's code could not be read from the store.
    #[error("execute: the module was not read from the store")]
    Store(#[source] ApiError),
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
            Self::PayloadTooLarge { .. } => Fault::Device,
            Self::AtCapacity | Self::Refused { .. } => Fault::Capacity,
            Self::NoRunStep | Self::Task { .. } | Self::Module { .. } => Fault::Internal,
            Self::Auth(e) | Self::Resolve(e) | Self::Queue(e) | Self::Store(e) | Self::Run(e) => {
                e.fault
            }
        }
    }
}

/// The one mapping from the pipeline's errors to the platform error the edges render.
impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        let fault = e.fault();
        let api = match e {
            InvokeError::Auth(e)
            | InvokeError::Resolve(e)
            | InvokeError::Refused { source: e, .. }
            | InvokeError::Queue(e)
            | InvokeError::Store(e)
            | InvokeError::Run(e) => e,
            InvokeError::PayloadTooLarge { limit, .. } => ApiError::payload_too_large(limit as u64),
            InvokeError::AtCapacity => ApiError::unavailable(
                "region is at capacity: every execution slot is busy and its queue is full",
                Duration::from_secs(1),
            ),
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
    use common::model::{ErrorKind, LimitHit, LimitKind, LimitScope, RequestId};

    fn throttled() -> ApiError {
        ApiError::throttled(
            LimitHit::new(LimitScope::Tenant, LimitKind::Concurrency, 2),
            "tenant at its limit",
            Duration::from_millis(200),
        )
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
                InvokeError::Auth(ApiError::unauthenticated()),
                StatusCode::UNAUTHORIZED,
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
                InvokeError::Resolve(ApiError::not_found("function f")),
                StatusCode::NOT_FOUND,
                Fault::Device,
            ),
            (
                InvokeError::AtCapacity,
                StatusCode::SERVICE_UNAVAILABLE,
                Fault::Capacity,
            ),
            (
                InvokeError::Refused {
                    step: Step::Tenant,
                    source: throttled(),
                },
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
                InvokeError::Store(ApiError::internal("store: disk gone")),
                StatusCode::INTERNAL_SERVER_ERROR,
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

    #[tokio::test]
    async fn a_refusal_keeps_its_limit_and_wait() {
        let e = ApiError::from(InvokeError::Refused {
            step: Step::Share,
            source: throttled(),
        });
        assert_eq!(e.kind, ErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_millis(200)));
        assert_eq!(e.limit.map(|l| l.kind), Some(LimitKind::Concurrency));
    }

    #[test]
    fn an_internal_error_names_its_cause_chain() {
        let e = InvokeError::Store(ApiError::internal("store: disk gone"));
        assert_eq!(
            chain(&e),
            "execute: the module was not read from the store: store: disk gone"
        );
    }
}
