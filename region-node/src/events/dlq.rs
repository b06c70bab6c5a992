//! The dead-letter queue's operations, scoped to one tenant: list, show, replay, purge,
//! and dead-lettering failed synchronous invocations (`dead_letter_sync`). A replay
//! re-enqueues first and removes the dead letter only once the event is committed, so a
//! crash in between leaves both (run at least once), never neither. Each tenant's dead
//! letters are a stream of their own ([`dlq_stream`]): no operation reads another
//! tenant's, a listing reads one page bounded in bytes, and replaying or purging all of
//! them holds one dead letter's payload at a time.

use super::ledger::Held;
use super::record::{LEGACY_DLQ_STREAM, Meta, dlq_stream};
use super::{DeadLetter, Events, FailureCause, SCAN_PAGE, is_full, scan};
use crate::store::{Store, StoreError};
use common::model::{ApiError, ErrorKind, InvokeRequest, ResolvedFunction, TenantId};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// Payload bytes past which a listing page ends early (it always holds at least one dead
/// letter): a page of 100 dead letters of 6 MiB each would otherwise be 600 MiB.
pub const PAGE_PAYLOAD_BYTES: usize = 8 << 20;

/// One page of a tenant's dead letters, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DlqPage {
    /// The dead letters.
    pub items: Vec<DeadLetter>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<u64>,
}

impl Events {
    /// The tenant's dead letters with an id above `after`: at most `limit`, and no more
    /// than [`PAGE_PAYLOAD_BYTES`] of payloads past the first, so a page of large dead
    /// letters stays small; `next` continues where it stopped.
    ///
    /// # Errors
    /// 500 on a store failure.
    pub async fn dlq_list(
        &self,
        tenant: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<DlqPage, ApiError> {
        let stream = dlq_stream(&tenant);
        self.blocking(move |s| {
            let mut items: Vec<DeadLetter> = Vec::new();
            let mut bytes = 0;
            let mut from = after.saturating_add(1);
            loop {
                let page = s.read(&stream, from, SCAN_PAGE)?;
                let done = page.len() < SCAN_PAGE;
                for m in page {
                    from = m.seq + 1;
                    if items.len() >= limit || bytes >= PAGE_PAYLOAD_BYTES {
                        // A message past this page: the page ends at its last item.
                        let next = items.last().map(|d| d.id);
                        return Ok(DlqPage { items, next });
                    }
                    if let Some(d) = decode(m.seq, &m.value) {
                        bytes += d.payload.len();
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
        let stream = dlq_stream(tenant);
        self.blocking(move |s| s.read(&stream, id, 1))
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
        self.append(letter.replay(self.now_ms()), self.config.max_queued, true)
            .await?;
        self.remove(tenant, id).await
    }

    /// Replays every dead letter of the tenant; returns how many were replayed. Stops at
    /// the first that cannot be re-enqueued (a full queue): those left stay dead letters.
    ///
    /// # Errors
    /// 429 when the queue filled before anything was replayed; 500 on a store failure.
    pub async fn dlq_replay_all(&self, tenant: &TenantId) -> Result<u64, ApiError> {
        let mut replayed = 0;
        for id in self.tenant_letter_ids(tenant).await? {
            // One letter in memory at a time; an undecodable one stays where it is.
            let letter = match self.dlq_get(tenant, id).await {
                Ok(letter) => letter,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match self
                .append(letter.replay(self.now_ms()), self.config.max_queued, true)
                .await
            {
                Ok(_) => {}
                Err(e) if is_full(&e) && replayed > 0 => break,
                Err(e) => return Err(e),
            }
            self.remove(tenant, letter.id).await?;
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
        for id in self.tenant_letter_ids(tenant).await? {
            self.remove(tenant, id).await?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Keeps a failed synchronous invocation of a function with `dead_letter_sync`.
    ///
    /// # Errors
    /// 500 on a store failure; 503 when the dead-letter queue is full; 409
    /// `quota_exceeded` past the tenant's or the region's dead-letter bytes.
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
        let payload = letter.payload.len() as u64;
        self.append_counted(Held::Dead, tenant, payload, bytes, bound, true)
            .await?;
        self.dlq_depth.fetch_add(1, Ordering::Relaxed);
        self.count(super::Outcome::DeadLettered);
        Ok(())
    }

    /// The ids of the tenant's dead letters, read a page at a time (payloads are never
    /// all in memory).
    async fn tenant_letter_ids(&self, tenant: &TenantId) -> Result<Vec<u64>, ApiError> {
        let stream = dlq_stream(tenant);
        self.blocking(move |s| {
            let mut ids = Vec::new();
            scan(s, &stream, |m| {
                ids.push(m.seq);
                Ok(())
            })?;
            Ok(ids)
        })
        .await
    }

    async fn remove(&self, tenant: &TenantId, id: u64) -> Result<(), ApiError> {
        if self.ack_counted(Held::Dead, tenant, id).await? {
            self.dlq_depth.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Moves every dead letter left in the shared stream of earlier releases into its
/// tenant's stream (append, then ack: a crash in between leaves a copy in both, never
/// neither), under `bound` per tenant stream; what does not fit or cannot be decoded
/// stays where it is (nothing is destroyed). Blocking; run once when the queue opens.
///
/// # Errors
/// [`StoreError`] when a stream cannot be read or written.
pub(super) fn move_legacy_letters(store: &Store, bound: u64) -> Result<(), StoreError> {
    scan(store, LEGACY_DLQ_STREAM, |m| {
        let Ok(d) = serde_json::from_slice::<Meta<'_>>(&m.value) else {
            return Ok(());
        };
        match store.append(&dlq_stream(&d.tenant), &m.value, bound) {
            Ok(_) => {
                store.ack(LEGACY_DLQ_STREAM, m.seq)?;
            }
            Err(StoreError::StreamFull { .. }) => {
                tracing::warn!(seq = m.seq, tenant = %d.tenant, "legacy dead letter left: the tenant's DLQ is full");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    })
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
