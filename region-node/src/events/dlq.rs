//! The dead-letter queue's operations, scoped to one tenant: list, show, replay, purge,
//! and dead-lettering failed synchronous invocations (`dead_letter_sync`). A replay
//! re-enqueues first and removes the dead letter only once the event is committed, so a
//! crash in between leaves both (run at least once), never neither.

use super::record::DLQ_STREAM;
use super::{DeadLetter, Events, FailureCause, is_full, read_all};
use common::model::{ApiError, InvokeRequest, ResolvedFunction, TenantId};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// One page of a tenant's dead letters, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DlqPage {
    /// The dead letters.
    pub items: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<u64>,
}

impl Events {
    /// The tenant's dead letters with an id above `after`, at most `limit`.
    ///
    /// # Errors
    /// 500 on a store failure.
    pub async fn dlq_list(
        &self,
        tenant: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<DlqPage, ApiError> {
        // The stream is shared by tenants: scan it in pages until `limit` of this tenant's
        // are found (the stream is bounded by `max_dead_letters`, so this is too).
        self.blocking(move |s| {
            const PAGE: usize = 512;
            let mut items = Vec::new();
            let mut from = after.saturating_add(1);
            loop {
                let page = s.read(DLQ_STREAM, from, PAGE)?;
                let done = page.len() < PAGE;
                for m in page {
                    from = m.seq + 1;
                    if let Some(d) = decode(m.seq, &m.value).filter(|d| d.tenant == tenant) {
                        if items.len() == limit {
                            let next = items.last().map(|d: &DeadLetter| d.id);
                            return Ok(DlqPage { items, next });
                        }
                        items.push(d);
                    }
                }
                if done {
                    return Ok(DlqPage { items, next: None });
                }
            }
        })
        .await
    }

    /// The tenant's dead letter `id`.
    ///
    /// # Errors
    /// 404 when the tenant has no dead letter `id`; 500 on a store failure.
    pub async fn dlq_get(&self, tenant: &TenantId, id: u64) -> Result<DeadLetter, ApiError> {
        self.blocking(move |s| s.read(DLQ_STREAM, id, 1))
            .await?
            .into_iter()
            .find(|m| m.seq == id)
            .and_then(|m| decode(m.seq, &m.value))
            .filter(|d| &d.tenant == tenant)
            .ok_or_else(|| ApiError::not_found(format!("dead letter {id}")))
    }

    /// Re-enqueues dead letter `id` with fresh attempts, then removes it.
    ///
    /// # Errors
    /// 404 when the tenant has no dead letter `id`; 429 when the queue is full (the dead
    /// letter is kept); 500 on a store failure.
    pub async fn dlq_replay(&self, tenant: &TenantId, id: u64) -> Result<(), ApiError> {
        let letter = self.dlq_get(tenant, id).await?;
        self.append(letter.replay(self.now_ms()), self.config.max_queued)
            .await?;
        self.remove(id).await
    }

    /// Replays every dead letter of the tenant; returns how many were replayed. Stops at
    /// the first that cannot be re-enqueued (a full queue): those left stay dead letters.
    ///
    /// # Errors
    /// 429 when the queue filled before anything was replayed; 500 on a store failure.
    pub async fn dlq_replay_all(&self, tenant: &TenantId) -> Result<u64, ApiError> {
        let mut replayed = 0;
        for letter in self.tenant_letters(tenant).await? {
            match self
                .append(letter.replay(self.now_ms()), self.config.max_queued)
                .await
            {
                Ok(_) => {}
                Err(e) if is_full(&e) && replayed > 0 => break,
                Err(e) => return Err(e),
            }
            self.remove(letter.id).await?;
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Deletes every dead letter of the tenant; returns how many.
    ///
    /// # Errors
    /// 500 on a store failure (some may have been deleted).
    pub async fn dlq_purge(&self, tenant: &TenantId) -> Result<u64, ApiError> {
        let mut purged = 0;
        for letter in self.tenant_letters(tenant).await? {
            self.remove(letter.id).await?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Keeps a failed synchronous invocation of a function with `dead_letter_sync`.
    ///
    /// # Errors
    /// 500 on a store failure; 429 when the dead-letter queue is full.
    pub async fn dead_letter_sync(
        &self,
        tenant: &TenantId,
        function: &ResolvedFunction,
        req: &InvokeRequest,
        cause: FailureCause,
    ) -> Result<(), ApiError> {
        let now = self.now_ms();
        let letter = DeadLetter {
            id: 0,
            request_id: req.request_id.to_string(),
            kind: super::EventKind::Invocation,
            tenant: tenant.clone(),
            function: req.function.clone(),
            qualifier: req.qualifier.clone(),
            version: Some(function.version.clone()),
            payload: req.payload.to_vec(),
            error: cause,
            reason: "sync".into(),
            attempts: 1,
            first_attempt_ms: Some(now),
            last_attempt_ms: Some(now),
            enqueued_at_ms: now,
        };
        let bytes = serde_json::to_vec(&letter)
            .map_err(|e| ApiError::internal(format!("encoding dead letter: {e}")))?;
        let bound = self.config.max_dead_letters;
        self.blocking(move |s| s.append(DLQ_STREAM, &bytes, bound))
            .await?;
        self.dlq_depth.fetch_add(1, Ordering::Relaxed);
        self.count(super::Outcome::DeadLettered);
        Ok(())
    }

    async fn tenant_letters(&self, tenant: &TenantId) -> Result<Vec<DeadLetter>, ApiError> {
        let tenant = tenant.clone();
        self.blocking(move |s| {
            Ok(read_all(s, DLQ_STREAM)?
                .into_iter()
                .filter_map(|m| decode(m.seq, &m.value))
                .filter(|d| d.tenant == tenant)
                .collect())
        })
        .await
    }

    async fn remove(&self, id: u64) -> Result<(), ApiError> {
        if self.blocking(move |s| s.ack(DLQ_STREAM, id)).await? {
            self.dlq_depth.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A stored dead letter with its id filled in; `None` (and logged) when undecodable.
fn decode(seq: u64, bytes: &[u8]) -> Option<DeadLetter> {
    match serde_json::from_slice::<DeadLetter>(bytes) {
        Ok(d) => Some(DeadLetter { id: seq, ..d }),
        Err(e) => {
            tracing::error!(seq, error = %e, "undecodable dead letter skipped");
            None
        }
    }
}
