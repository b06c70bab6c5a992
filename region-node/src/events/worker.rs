//! The workers that run queued events, following the durability protocol of the module
//! docs ([`super`]): record the attempt, run, then record the outcome before the ack.

use super::ledger::Held;
use super::record::{EVENTS_STREAM, SuccessRecord};
use super::{DeadLetter, EventKind, EventRecord, Events, FailureCause, cause_of};
use common::model::{
    ApiError, FunctionName, InvocationType, InvokeRequest, InvokeResponse, RequestId,
    ResolvedFunction, TenantId,
};
use common::policy::retry::{Budget, GiveUp, RetryDecision};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long a worker waits before trying again when the store refused a step (full or
/// failing): the event stays queued and nothing is lost.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What the workers need of the region to run an event: resolve its function as the
/// tenant that queued it, and run it (the region's invoker, `crate::invoker`, implements
/// it; the queue does not depend on the invoker).
pub trait Execute: Send + Sync + 'static {
    /// The function `req` names, as `tenant` sees it.
    ///
    /// # Errors
    /// The function or qualifier is gone, or the payload is over the limit.
    fn resolve_as(
        &self,
        tenant: &TenantId,
        req: &InvokeRequest,
    ) -> Result<ResolvedFunction, ApiError>;

    /// Runs `req` as `function`, through the region's admission.
    fn run_resolved(
        &self,
        function: &ResolvedFunction,
        req: &InvokeRequest,
    ) -> impl std::future::Future<Output = Result<InvokeResponse, ApiError>> + Send;
}

/// Starts `events`' workers on `tasks`; they run until the set is aborted.
pub fn spawn_workers<E: Execute>(events: &Arc<Events>, invoker: &Arc<E>, tasks: &mut JoinSet<()>) {
    for _ in 0..events.config.workers.max(1) {
        let (events, invoker) = (Arc::clone(events), Arc::clone(invoker));
        tasks.spawn(async move {
            loop {
                let mut seq = events.next_due().await;
                if let Err(e) = events.process(invoker.as_ref(), &mut seq).await {
                    tracing::warn!(seq, error = %e.message, "event step failed; will retry");
                    let retry_ms = u64::try_from(STORE_RETRY.as_millis()).unwrap_or(1000);
                    events.reschedule(seq, events.now_ms().saturating_add(retry_ms));
                }
                events.release();
            }
        });
    }
}

/// The request id of a stored event (its hex form), or a fresh one if it is malformed.
fn request_id(rec: &EventRecord) -> RequestId {
    u128::from_str_radix(&rec.request_id, 16).map_or_else(|_| RequestId::random(), RequestId)
}

impl Events {
    /// Runs the event at `*seq` one step. On `Err`, `*seq` is the event's current copy,
    /// still in the stream: the caller reschedules it and the step is repeated later.
    async fn process<E: Execute>(&self, invoker: &E, seq: &mut u64) -> Result<(), ApiError> {
        let current = *seq;
        let Some(msg) = self
            .blocking(move |s| s.read(EVENTS_STREAM, current, 1))
            .await?
            .into_iter()
            .find(|m| m.seq == current)
        else {
            return Ok(()); // Already acked (a duplicate schedule entry).
        };
        let mut rec: EventRecord = match serde_json::from_slice(&msg.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(seq = current, error = %e, "undecodable event record left unrun");
                return Ok(());
            }
        };
        let now = self.now_ms();
        let id = request_id(&rec);
        let req = InvokeRequest {
            request_id: id,
            token: None,
            function: rec.function.clone(),
            qualifier: rec.qualifier.clone(),
            payload: rec.payload.clone().into(),
            invocation_type: InvocationType::Event,
            affinity: None,
            memory_mb: None,
            env: Vec::new(),
            route: None,
            http: None,
            http_source: None,
            authorized_tenant: None,
        };
        let resolved = match invoker.resolve_as(&rec.tenant, &req) {
            Ok(r) => r,
            // The function (or qualifier) is gone: nothing to retry.
            Err(e) => {
                return self
                    .dead_letter(current, &rec, cause_of(&e), "unresolvable")
                    .await;
            }
        };
        let budget = Budget {
            retries: resolved.config.retries,
            max_age: Duration::from_secs(u64::from(resolved.config.max_event_age_s)),
            enqueued_at_ms: rec.enqueued_at_ms,
        };
        // Checked before every attempt, the first included: an event that waited past its
        // age (a backlog, a region that was down) is given up without running, and its
        // function's `on_failure` runs with the dead letter as for any final failure.
        if budget.expired(now) {
            let cause = rec.last_error.clone().unwrap_or_else(|| FailureCause {
                kind: GiveUp::TooOld.as_str().into(),
                message: format!(
                    "the event was older than max_event_age_s ({} s) before it could run",
                    resolved.config.max_event_age_s
                ),
            });
            let on_failure = resolved.config.on_failure.clone();
            return self
                .dead_letter_then(current, &rec, cause, GiveUp::TooOld.as_str(), on_failure)
                .await;
        }
        // Record the attempt before running it, so a crash mid-run counts it.
        rec.attempts += 1;
        rec.first_attempt_ms.get_or_insert(now);
        rec.last_attempt_ms = Some(now);
        rec.version = Some(resolved.version.clone());
        *seq = self.replace_unscheduled(current, &rec).await?;
        let current = *seq;
        let started = std::time::Instant::now();
        let outcome = invoker.run_resolved(&resolved, &req).await;
        self.attempted(started.elapsed());
        let failure = match &outcome {
            Ok(resp) => resp.function_error.as_ref().map(|fe| FailureCause {
                kind: fe.kind.as_str().to_owned(),
                message: fe.message.clone(),
            }),
            Err(e) => Some(cause_of(e)),
        };
        let Some(cause) = failure else {
            let body = outcome.map(|r| r.body.to_vec()).unwrap_or_default();
            return self
                .succeeded(current, &rec, resolved.config.on_success, body)
                .await;
        };
        let jitter: f64 = rand::random();
        match self
            .retry
            .after_failure(&budget, rec.attempts, self.now_ms(), jitter)
        {
            RetryDecision::RetryAt(due) => {
                rec.next_attempt_ms = due;
                rec.last_error = Some(cause);
                let next = self.replace_unscheduled(current, &rec).await?;
                self.count(super::Outcome::Retried);
                self.reschedule(next, due);
                Ok(())
            }
            RetryDecision::DeadLetter(why) => {
                rec.last_error = Some(cause.clone());
                let on_failure = resolved.config.on_failure.clone();
                self.dead_letter_then(current, &rec, cause, why.as_str(), on_failure)
                    .await
            }
        }
    }

    /// Appends `rec` as the new copy of the event at `seq`, then acks `seq`; returns the
    /// new copy's sequence. The new copy is not scheduled (the caller holds it).
    async fn replace_unscheduled(&self, seq: u64, rec: &EventRecord) -> Result<u64, ApiError> {
        let bytes = serde_json::to_vec(rec)
            .map_err(|e| ApiError::internal(format!("encoding event: {e}")))?;
        let bound = self.internal_bound();
        // The copy takes over the old message's bytes (counted once, not twice while both
        // exist), so the ack that follows has nothing left to release.
        let next = self
            .append_counted(Held::Queued, &rec.tenant, 0, bytes, bound, false)
            .await?;
        self.ledger().transfer(Held::Queued, &rec.tenant, seq, next);
        self.ack_counted(Held::Queued, &rec.tenant, seq).await?;
        Ok(next)
    }

    /// Records a success: the `on_success` control event first (unless this is itself a
    /// control event), then the ack.
    async fn succeeded(
        &self,
        seq: u64,
        rec: &EventRecord,
        on_success: Option<FunctionName>,
        result: Vec<u8>,
    ) -> Result<(), ApiError> {
        if let Some(f) = on_success.filter(|_| !rec.kind.is_control()) {
            let record = SuccessRecord {
                request_id: rec.request_id.clone(),
                function: rec.function.clone(),
                version: rec.version.clone().unwrap_or_default(),
                attempts: rec.attempts,
                result,
            };
            let payload = serde_json::to_vec(&record)
                .map_err(|e| ApiError::internal(format!("encoding success record: {e}")))?;
            self.control(rec, f, EventKind::OnSuccess, payload).await?;
        }
        self.ack_counted(Held::Queued, &rec.tenant, seq).await?;
        Ok(())
    }

    /// Queues a control function run for `rec`, as the same tenant and request id.
    async fn control(
        &self,
        rec: &EventRecord,
        function: FunctionName,
        kind: EventKind,
        payload: Vec<u8>,
    ) -> Result<(), ApiError> {
        self.enqueue_control(rec.tenant.clone(), request_id(rec), function, kind, payload)
            .await
    }

    /// Dead-letters the event at `seq` without running a control function.
    async fn dead_letter(
        &self,
        seq: u64,
        rec: &EventRecord,
        cause: FailureCause,
        reason: &str,
    ) -> Result<(), ApiError> {
        self.dead_letter_then(seq, rec, cause, reason, None).await
    }

    /// Writes the dead letter of the event at `seq`, queues `on_failure` with it (unless
    /// the event is itself a control event: no loops), then acks `seq`.
    async fn dead_letter_then(
        &self,
        seq: u64,
        rec: &EventRecord,
        cause: FailureCause,
        reason: &str,
        on_failure: Option<FunctionName>,
    ) -> Result<(), ApiError> {
        let letter = DeadLetter::of(rec, cause, reason);
        if rec.kind.is_control() {
            tracing::warn!(
                request_id = %rec.request_id, function = %rec.function,
                error = %letter.error.message, "control function failed; dead-lettered"
            );
        }
        let bytes = serde_json::to_vec(&letter)
            .map_err(|e| ApiError::internal(format!("encoding dead letter: {e}")))?;
        let bound = self.config.max_dead_letters;
        let payload = letter.payload.len() as u64;
        let id = self
            .append_counted(Held::Dead, &rec.tenant, payload, bytes, bound, true)
            .await?;
        self.dlq_depth.fetch_add(1, Ordering::Relaxed);
        self.count(super::Outcome::DeadLettered);
        if let Some(f) = on_failure.filter(|_| !rec.kind.is_control()) {
            let record = DeadLetter { id, ..letter };
            let payload = serde_json::to_vec(&record)
                .map_err(|e| ApiError::internal(format!("encoding failure record: {e}")))?;
            self.control(rec, f, EventKind::OnFailure, payload).await?;
        }
        self.ack_counted(Held::Queued, &rec.tenant, seq).await?;
        Ok(())
    }
}
