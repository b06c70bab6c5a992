//! Outcomes per function version, from the region's own runs and from the POPs' load
//! reports, folded into the runtime canary, the alias rollout judges and the right-size
//! statistics (peak memory); and what their
//! decisions set off: stored verdicts and rollbacks, and the owners' control functions.
//!
//! Counting is in memory on the invoke path (or the load report's stream); a decision costs
//! one store write and, when the function names a control function, one append to the
//! durable async queue. A POP's report carries no request: control events it causes get a
//! fresh request id.

use crate::canary::VerdictRecord;
use crate::events::EventKind;
use crate::region::Region;
use crate::rollout::Decided;
use common::model::{
    FunctionConfig, FunctionKey, FunctionName, InvokeResponse, RequestId, ResolvedFunction,
    TenantId, VersionOutcomes,
};
use common::policy::canary::Verdict;
use common::sandbox::Release;
use serde::Serialize;
use std::sync::Arc;
use tracing::warn;

/// Counts one run at this region in the rollout judges (the runtime canary counts it in
/// the invoke pipeline, where the release is chosen), and rolls back what that decided.
pub async fn own_run(
    region: &Region,
    function: &ResolvedFunction,
    request_id: RequestId,
    response: Option<&InvokeResponse>,
) {
    let Some(r) = response else {
        return;
    };
    let rollouts = &region.rollouts;
    let failed = u32::from(r.function_error.is_some());
    let decided = rollouts.record(&function.key, &function.version, 1, failed);
    roll_back(region, decided, request_id).await;
}

/// Folds a POP's reported outcomes into the runtime canary (those the POP sampled, while
/// this region canaries) and the rollout judges, then acts on what they decided.
pub async fn fold(region: &Region, outcomes: Vec<VersionOutcomes>) {
    let canary = region.live_canary();
    for o in outcomes {
        // Peaks at POPs count in the right-size recommendation like the region's own.
        region.executor.observe_peaks(&o.function, &o.peak_bytes);
        let sampled = o.canary_release.as_deref().and_then(Release::from_name);
        if let (Some(canary), Some(release)) = (canary, sampled)
            && let Some(record) =
                canary.record_many(&o.function, release, o.invocations, o.platform_failures)
        {
            let control =
                control_of(region, &o.function, |c| c.on_runtime_incompatible.clone()).await;
            canary_decided(region, &o.function, control, RequestId::random(), record).await;
        }
        let decided = region
            .rollouts
            .record(&o.function, &o.version, o.invocations, o.errors);
        roll_back(region, decided, RequestId::random()).await;
    }
}

/// Acts on a canary verdict for `key` decided by `request_id`'s outcome (or a report):
/// queues the owner's `control` function when it pins, then stores the verdict. The
/// control event is queued first: a crash in between decides the verdict again after the
/// restart (the owner may hear twice), never stores it with the owner unnotified.
pub async fn canary_decided(
    region: &Region,
    key: &FunctionKey,
    control: Option<FunctionName>,
    request_id: RequestId,
    record: VerdictRecord,
) {
    let canary = &region.canary;
    if record.verdict == Verdict::Pinned {
        let note = crate::canary::notification(record.clone());
        queue_control(
            region,
            &key.tenant,
            request_id,
            control,
            EventKind::OnRuntimeIncompatible,
            &note,
        )
        .await;
    }
    let (c, key) = (Arc::clone(canary), key.clone());
    if let Err(e) = tokio::task::spawn_blocking(move || c.persist(&key, &record)).await {
        warn!(error = %e, "canary verdict task failed");
    }
}

/// Stores each rollback in `decided` and queues the function's `on_rollback`. The alias
/// is stored first (a rollback that did not happen, because the owner moved the alias,
/// notifies no one); a crash before the control event is queued leaves the notification
/// listed but the control function unrun.
async fn roll_back(region: &Region, decided: Vec<Decided>, request_id: RequestId) {
    let rollouts = &region.rollouts;
    for d in decided {
        let (r, job) = (Arc::clone(rollouts), d.clone());
        let alias = match tokio::task::spawn_blocking(move || r.roll_back(&job)).await {
            Ok(Ok(Some(alias))) => alias,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                warn!(function = %d.key, alias = %d.alias, error = %e.message,
                    "rollback not stored");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "rollback task failed");
                continue;
            }
        };
        let control = control_of(region, &d.key, |c| c.on_rollback.clone()).await;
        let note = crate::rollout::notification(alias);
        queue_control(
            region,
            &d.key.tenant,
            request_id,
            control,
            EventKind::OnRollback,
            &note,
        )
        .await;
    }
}

/// The control function `pick` names in `key`'s `$LATEST` configuration (blocking read on
/// the pool); `None` when it names none or the function cannot be read.
async fn control_of(
    region: &Region,
    key: &FunctionKey,
    pick: impl FnOnce(&FunctionConfig) -> Option<FunctionName> + Send + 'static,
) -> Option<FunctionName> {
    let (registry, key) = (Arc::clone(&region.registry), key.clone());
    tokio::task::spawn_blocking(move || {
        registry
            .function(&key.tenant, &key.name)
            .ok()
            .and_then(|f| pick(&f.config))
    })
    .await
    .ok()
    .flatten()
}

/// Queues `control`, if any, as a `kind` control event of `tenant` with `note` as its
/// payload, on behalf of `request_id`. It runs from the durable queue like `on_failure`:
/// retried under its own `retries`, dead-lettered when it fails finally. When it cannot be
/// queued (a full or failing store) that is logged; the notification stays
/// listed in `GET /v1/notifications`.
pub async fn queue_control(
    region: &Region,
    tenant: &TenantId,
    request_id: RequestId,
    control: Option<FunctionName>,
    kind: EventKind,
    note: &impl Serialize,
) {
    let Some(control) = control else {
        return;
    };
    let events = &region.events;
    let payload = match serde_json::to_vec(note) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "notification not encoded");
            return;
        }
    };
    let queued = events
        .enqueue_control(tenant.clone(), request_id, control.clone(), kind, payload)
        .await;
    if let Err(e) = queued {
        warn!(function = %control, ?kind, error = %e.message, "control function not queued");
    }
}
