//! The async queue's side of the pipeline: an event invocation is durably queued after
//! resolve (202, run later by the queue's workers through the same admit and execute
//! layers), and a failed synchronous invocation of a function with `dead_letter_sync` is
//! dead-lettered after execute.
//!
//! Appends to the queue; never runs a guest.

use super::InvokeError;
use crate::events::{Events, FailureCause};
use common::model::{
    ExecutedAt, InvokeRequest, InvokeResponse, NodeId, ResolvedFunction, StartKind, TenantId,
    Timing,
};

/// Durably queues `req` (an event) of `tenant` as `function`; its acceptance (202).
///
/// # Errors
/// [`InvokeError::Queue`] when the queue is full, over the tenant's quota, or its store
/// fails.
pub async fn accept(
    events: &Events,
    node: &NodeId,
    tenant: TenantId,
    function: &ResolvedFunction,
    req: InvokeRequest,
) -> Result<InvokeResponse, InvokeError> {
    events
        .accept(tenant, &req)
        .await
        .map_err(InvokeError::Queue)?;
    Ok(InvokeResponse {
        request_id: req.request_id,
        executed_at: ExecutedAt::Region(node.clone()),
        start: StartKind::Warm,
        version: function.version.clone(),
        body: bytes::Bytes::new(),
        function_error: None,
        timing: Timing::default(),
        peak_memory_bytes: 0,
        queued: true,
        runtime: None,
        http: None,
    })
}

/// Dead-letters `req` when `function` asks for it (`dead_letter_sync`) and `response` is
/// the guest's failure; a failed append is logged (the caller still gets the failure).
pub async fn dead_letter_sync(
    events: &Events,
    tenant: &TenantId,
    function: &ResolvedFunction,
    req: &InvokeRequest,
    response: &Result<InvokeResponse, InvokeError>,
) {
    if !function.config.dead_letter_sync {
        return;
    }
    let Ok(Some(fe)) = response.as_ref().map(|r| r.function_error.as_ref()) else {
        return;
    };
    let cause = FailureCause {
        kind: fe.kind.as_str().to_owned(),
        message: fe.message.clone(),
    };
    if let Err(e) = events.dead_letter_sync(tenant, function, req, cause).await {
        tracing::warn!(request_id = %req.request_id, error = %e.message, fault = %e.fault,
            "failed synchronous invocation could not be dead-lettered");
    }
}
