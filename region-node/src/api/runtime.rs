//! `GET /v1/runtime` (the two runtime releases and the caller's functions' canary
//! verdicts) and `GET /v1/notifications` (the caller's owner notifications), both scoped
//! to the caller's tenant.

use super::Caller;
use super::ControlState;
use crate::canary::{Notification, VerdictRecord};
use axum::Json;
use axum::extract::State;

use common::edge::HttpError;
use common::edge::doc::ErrorBody;
use common::sandbox::Release;
use serde::Serialize;

/// The runtime releases this region hosts and the canary's verdicts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuntimeView {
    /// The release in production.
    pub current: String,
    /// The release being canaried.
    pub next: String,
    /// Share of an undecided function's invocations run on `next`, in percent.
    pub canary_percent: u8,
    /// The caller's functions with a verdict or canary counts.
    pub functions: Vec<VerdictRecord>,
}

/// The caller's notifications, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    /// One per event: a function pinned to the current runtime (`runtime_incompatible`),
    /// an alias rolled back automatically (`rollback`, listed while the alias stays as
    /// the rollback left it).
    pub notifications: Vec<Notification>,
}

/// The runtime releases and the caller's canary verdicts.
#[utoipa::path(get, path = "/v1/runtime", tag = "functions",
    responses(
        (status = 200, description = "Releases and verdicts", body = RuntimeView),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn view(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<RuntimeView>, HttpError> {
    let canary = std::sync::Arc::clone(&s.region.canary);
    let canary_percent = canary.percent();
    let functions = super::blocking(move || Ok(canary.verdicts(&tenant))).await?;
    Ok(Json(RuntimeView {
        current: Release::Current.name().into(),
        next: Release::Next.name().into(),
        canary_percent,
        functions,
    }))
}

/// The caller's owner notifications.
#[utoipa::path(get, path = "/v1/notifications", tag = "functions",
    responses(
        (status = 200, description = "Notifications", body = NotificationList),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn notifications(
    State(s): State<ControlState>,
    Caller(tenant): Caller,
) -> Result<Json<NotificationList>, HttpError> {
    let canary = std::sync::Arc::clone(&s.region.canary);
    let rollouts = std::sync::Arc::clone(&s.region.rollouts);
    let mut notifications = super::blocking(move || {
        let mut notes = canary.notifications(&tenant);
        notes.extend(
            rollouts
                .rolled_back(&tenant)?
                .into_iter()
                .map(crate::rollout::notification),
        );
        Ok(notes)
    })
    .await?;
    notifications.sort_by_key(|n| n.at_ms);
    Ok(Json(NotificationList { notifications }))
}
