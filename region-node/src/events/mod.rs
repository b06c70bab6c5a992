//! The durable async queue and dead-letter queue of a region (DESIGN §4-§6, "Failures").
//!
//! Owns accepting events (a 202 only after the event is committed to the store's
//! [`EVENTS_STREAM`]), the bounded workers that run them at least once, retries with
//! [`common::policy::retry`] backoff, dead letters in one stream per tenant
//! ([`record::dlq_stream`]) and control functions
//! (`on_failure`, `on_success`, and `on_runtime_incompatible` queued by the invoker when
//! the runtime canary pins a function). The store is the only truth: the in-memory schedule
//! holds just `(due time, sequence)` pairs and is rebuilt from the stream on start, so a
//! crash at any point loses no accepted event. Time is read only from the [`WallClock`]
//! the queue is given.
//!
//! Durability protocol (every step is one store transaction):
//! 1. accept: append the event; answer 202.
//! 2. before each attempt: append a copy with `attempts + 1`, then ack the old message.
//! 3. after a failure with retries left: append a copy with the error and due time, ack.
//! 4. on success: append the `on_success` control event (if any), then ack.
//! 5. on final failure: append the dead letter (and the `on_failure` control event), ack.
//!
//! A crash between an append and its ack leaves two copies; on restart the one with the
//! higher sequence wins and the other is acked, so an event runs at least once and is
//! never lost. Never executes guests itself: the worker hands them to the invoker.

mod dlq;
mod ledger;
pub mod record;
mod worker;

pub use common::clock::{SystemClock, WallClock};
pub use dlq::DlqPage;
pub use record::{DeadLetter, EventKind, EventRecord, FailureCause};
pub use worker::{Execute, spawn_workers};

use crate::quota::QuotaConfig;
use crate::store::{Store, StoreError};
use common::metrics::NodeStats;
use common::model::{
    ApiError, ErrorKind, FunctionName, InvokeRequest, LimitHit, LimitKind, LimitScope, RequestId,
    TenantId,
};
use common::policy::hold::HoldTime;
use common::policy::retry::RetryPolicy;
use ledger::{Held, Ledger};
use record::{EVENTS_STREAM, Meta, dlq_stream};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Bounds and timing of the async queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events executing at once. Default 4.
    pub workers: usize,
    /// Queued events accepted from devices; when full, new events get 429 with
    /// `retry-after`. Retries and control events may use up to as many again, so they are
    /// never refused behind device events. Default 10 000.
    pub max_queued: u64,
    /// Dead letters kept per tenant (each tenant's are a stream of their own). When full,
    /// an event that fails finally stays queued and dead-lettering is retried every second
    /// until the tenant purges or replays. Default 100 000.
    pub max_dead_letters: u64,
    /// Upper bound of the first retry's delay, ms. Default 1000.
    pub retry_base_ms: u64,
    /// Largest retry delay, ms. Default 300 000.
    pub retry_cap_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            max_queued: 10_000,
            max_dead_letters: 100_000,
            retry_base_ms: 1000,
            retry_cap_ms: 300_000,
        }
    }
}

impl EventsConfig {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms),
            factor: 2,
            cap: Duration::from_millis(self.retry_cap_ms.max(self.retry_base_ms)),
        }
    }
}

/// Totals since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events accepted (202).
    pub accepted: AtomicU64,
    /// Attempts rescheduled after a failure.
    pub retried: AtomicU64,
    /// Dead letters written.
    pub dead_lettered: AtomicU64,
}

/// What happened to an event, for the totals.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Accepted,
    Retried,
    DeadLettered,
}

/// The region's async queue and dead-letter queue.
#[derive(Debug)]
pub struct Events {
    store: Store,
    config: EventsConfig,
    retry: RetryPolicy,
    /// Due events, by `(due Unix ms, stream sequence)`; at most `2 * max_queued`.
    schedule: Mutex<BTreeSet<(u64, u64)>>,
    /// Events taken by a worker and not yet acked.
    running: AtomicU64,
    wake: Notify,
    dlq_depth: AtomicU64,
    /// Totals since start.
    pub counters: EventCounters,
    /// Where the totals are also exported (`strata_events_total`).
    stats: Option<Arc<NodeStats>>,
    /// Every time the queue reads (accepted, attempted, due, age).
    clock: Arc<dyn WallClock>,
    /// Payload bytes queued and dead-lettered, per tenant and in total.
    ledger: Mutex<Ledger>,
    /// The byte quotas on them.
    quotas: QuotaConfig,
    /// How long attempts run: a full queue's `retry-after`.
    attempt_time: Mutex<HoldTime>,
}

/// Messages per read when a whole stream is walked: small, because a message may hold a
/// payload of up to the edge's `max_payload_bytes`, and a walk holds one page at a time.
const SCAN_PAGE: usize = 16;

/// Calls `each` on every message of `stream`, oldest first, holding one page of
/// [`SCAN_PAGE`] messages in memory at a time.
fn scan(
    store: &Store,
    stream: &str,
    mut each: impl FnMut(crate::store::StreamMessage) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = 1;
    loop {
        let page = store.read(stream, from, SCAN_PAGE)?;
        let done = page.len() < SCAN_PAGE;
        for m in page {
            from = m.seq + 1;
            each(m)?;
        }
        if done {
            return Ok(());
        }
    }
}

impl Events {
    /// Opens the queue on `store`, rebuilding the schedule from the stream: every accepted
    /// event not yet acked is due again (at its recorded due time). Blocking.
    ///
    /// # Errors
    /// [`StoreError`] when the streams cannot be read or a duplicate cannot be acked.
    pub fn open(store: Store, config: EventsConfig) -> Result<Self, StoreError> {
        let mut latest: HashMap<(String, EventKind), (u64, u64)> = HashMap::new();
        let mut stale = Vec::new();
        let mut ledger = Ledger::default();
        scan(&store, EVENTS_STREAM, |m| {
            let Ok(rec) = serde_json::from_slice::<Meta<'_>>(&m.value) else {
                // Left in place (not acked) so nothing is destroyed; it is never run.
                tracing::error!(seq = m.seq, "undecodable event record skipped");
                return Ok(());
            };
            ledger.add(Held::Queued, m.seq, &rec.tenant, rec.payload_len());
            // Same request and kind twice: a crash between an append and its ack. The
            // later copy carries the newer attempt count.
            let entry = (m.seq, rec.next_attempt_ms);
            if let Some(old) = latest.insert((rec.request_id, rec.kind), entry) {
                stale.push((old.0, rec.tenant));
            }
            Ok(())
        })?;
        for (seq, tenant) in stale {
            store.ack(EVENTS_STREAM, seq)?;
            ledger.remove(Held::Queued, &tenant, seq);
        }
        let schedule = latest.into_values().map(|(seq, due)| (due, seq)).collect();
        dlq::move_legacy_letters(&store, config.max_dead_letters)?;
        let mut dlq_depth = 0;
        for (id, _) in store.list(crate::store::Bucket::Tenants, "")? {
            let Ok(tenant) = TenantId::new(&id) else {
                continue;
            };
            scan(&store, &dlq_stream(&tenant), |m| {
                dlq_depth += 1;
                if let Ok(d) = serde_json::from_slice::<Meta<'_>>(&m.value) {
                    ledger.add(Held::Dead, m.seq, &tenant, d.payload_len());
                }
                Ok(())
            })?;
        }
        Ok(Self {
            store,
            retry: config.retry_policy(),
            config,
            schedule: Mutex::new(schedule),
            running: AtomicU64::new(0),
            wake: Notify::new(),
            dlq_depth: AtomicU64::new(dlq_depth),
            counters: EventCounters::default(),
            stats: None,
            clock: Arc::new(SystemClock),
            ledger: Mutex::new(ledger),
            quotas: QuotaConfig::default(),
            attempt_time: Mutex::new(HoldTime::default()),
        })
    }

    /// Bounds queued and dead-lettered payload bytes by `quotas` instead of the defaults.
    #[must_use]
    pub fn with_quotas(mut self, quotas: QuotaConfig) -> Self {
        self.quotas = quotas;
        self
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `bytes`, a message of `tenant` holding `payload` payload bytes, to the
    /// stream of `held` under `bound`; with `checked`, only if the tenant's and the
    /// region's byte quotas allow it. The ledger counts it once appended.
    ///
    /// # Errors
    /// 429 (queued) or 409 (dead letters) `quota_exceeded`; 429 when the queue is at its
    /// count bound; 503 when the DLQ is; 500 on a store failure.
    async fn append_counted(
        &self,
        held: Held,
        tenant: &TenantId,
        payload: u64,
        bytes: Vec<u8>,
        bound: u64,
        checked: bool,
    ) -> Result<u64, ApiError> {
        let quotas = checked.then_some(&self.quotas);
        self.ledger().reserve(held, tenant, payload, quotas)?;
        let stream = match held {
            Held::Queued => EVENTS_STREAM.to_owned(),
            Held::Dead => dlq_stream(tenant),
        };
        let store = self.store.clone();
        let appended = tokio::task::spawn_blocking(move || store.append(&stream, &bytes, bound))
            .await
            .map_err(|e| ApiError::internal(format!("store task failed: {e}")))
            .and_then(|r| {
                r.map_err(|e| match e {
                    StoreError::StreamFull { max, .. } if held == Held::Queued => {
                        ApiError::throttled(
                            LimitHit::new(LimitScope::Queue, LimitKind::Depth, max),
                            format!("the async event queue is full ({max} events)"),
                            self.drains_in(),
                        )
                    }
                    other => ApiError::from(other),
                })
            });
        let mut ledger = self.ledger();
        match appended {
            Ok(seq) => {
                ledger.record(held, seq, tenant, payload);
                Ok(seq)
            }
            Err(e) => {
                ledger.release(held, tenant, payload);
                Err(e)
            }
        }
    }

    /// Acks `tenant`'s message `seq` of the stream of `held` and stops counting it;
    /// returns whether it existed.
    async fn ack_counted(&self, held: Held, tenant: &TenantId, seq: u64) -> Result<bool, ApiError> {
        let stream = match held {
            Held::Queued => EVENTS_STREAM.to_owned(),
            Held::Dead => dlq_stream(tenant),
        };
        let existed = self.blocking(move |s| s.ack(&stream, seq)).await?;
        self.ledger().remove(held, tenant, seq);
        Ok(existed)
    }

    /// Counts one attempt's run time (how fast the queue drains).
    fn attempted(&self, took: Duration) {
        self.attempt_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(took);
    }

    /// When a full queue likely has room: the first of the workers' attempts to end.
    fn drains_in(&self) -> Duration {
        let workers = u32::try_from(self.config.workers).unwrap_or(u32::MAX);
        self.attempt_time
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_free(workers)
    }

    /// Payload bytes `tenant` has queued (or running) and dead-lettered.
    pub fn tenant_bytes(&self, tenant: &TenantId) -> (u64, u64) {
        let l = self.ledger();
        (l.used(Held::Queued, tenant), l.used(Held::Dead, tenant))
    }

    /// Reads the time from `clock` instead of the system's wall clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The queue's time, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Exports the totals through `stats` too.
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<NodeStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Counts one event outcome.
    fn count(&self, outcome: Outcome) {
        let (counter, label) = match outcome {
            Outcome::Accepted => (&self.counters.accepted, "accepted"),
            Outcome::Retried => (&self.counters.retried, "retried"),
            Outcome::DeadLettered => (&self.counters.dead_lettered, "dead_lettered"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(stats) = &self.stats {
            stats.event(label);
        }
    }

    /// Events queued or running.
    pub fn queue_depth(&self) -> u64 {
        self.lock().len() as u64 + self.running.load(Ordering::Relaxed)
    }

    /// Dead letters kept.
    pub fn dlq_depth(&self) -> u64 {
        self.dlq_depth.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Durably queues a device's event invocation `req` of `tenant` (authenticated and
    /// resolved by the caller); returns once it is committed, which is when it may be
    /// answered 202.
    ///
    /// # Errors
    /// 429 when the queue holds `max_queued` events; 500 on a store failure.
    pub async fn accept(&self, tenant: TenantId, req: &InvokeRequest) -> Result<(), ApiError> {
        let now = self.now_ms();
        self.enqueue(EventRecord {
            request_id: req.request_id.to_string(),
            kind: EventKind::Invocation,
            tenant,
            function: req.function.clone(),
            qualifier: req.qualifier.clone(),
            payload: req.payload.to_vec(),
            enqueued_at_ms: now,
            attempts: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            next_attempt_ms: now,
            last_error: None,
            version: None,
        })
        .await
    }

    /// Durably queues `event` as a device's; returns once it is committed.
    ///
    /// # Errors
    /// 429 when the queue holds `max_queued` events, or `quota_exceeded` (429 with
    /// `retry-after`) past the tenant's or the region's queued payload bytes; 500 on a
    /// store failure.
    pub async fn enqueue(&self, event: EventRecord) -> Result<(), ApiError> {
        self.append(event, self.config.max_queued, true).await?;
        self.count(Outcome::Accepted);
        Ok(())
    }

    /// Durably queues a run of the control function `function` of `tenant` with `payload`
    /// on stdin, on behalf of request `request_id`; returns once it is committed. Control
    /// events share the internal bound of retries (never refused behind device events),
    /// retry under their function's `retries`, and are dead-lettered (never triggering
    /// another control function) when they fail finally.
    ///
    /// # Errors
    /// 429 when the queue is full even for internal events; 500 on a store failure.
    pub async fn enqueue_control(
        &self,
        tenant: TenantId,
        request_id: RequestId,
        function: FunctionName,
        kind: EventKind,
        payload: Vec<u8>,
    ) -> Result<(), ApiError> {
        debug_assert!(kind.is_control(), "{kind:?} is not a control event");
        let now = self.now_ms();
        let event = EventRecord {
            request_id: request_id.to_string(),
            kind,
            tenant,
            function,
            qualifier: common::model::Qualifier::Latest,
            payload,
            enqueued_at_ms: now,
            attempts: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            next_attempt_ms: now,
            last_error: None,
            version: None,
        };
        self.append(event, self.internal_bound(), false)
            .await
            .map(drop)
    }

    /// Appends `event` to the queue under `bound` (and, with `checked`, the byte quotas)
    /// and schedules it.
    async fn append(&self, event: EventRecord, bound: u64, checked: bool) -> Result<u64, ApiError> {
        let due = event.next_attempt_ms;
        let bytes = serde_json::to_vec(&event)
            .map_err(|e| ApiError::internal(format!("encoding event: {e}")))?;
        let payload = event.payload.len() as u64;
        let seq = self
            .append_counted(Held::Queued, &event.tenant, payload, bytes, bound, checked)
            .await?;
        self.lock().insert((due, seq));
        self.wake.notify_one();
        Ok(seq)
    }

    /// The bound for appends made by the queue itself (attempts, retries, control events).
    fn internal_bound(&self) -> u64 {
        self.config.max_queued.saturating_mul(2)
    }

    /// Runs a store operation on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
            .map_err(ApiError::from)
    }

    /// Waits for the next due event and takes it (it counts as running until released).
    async fn next_due(&self) -> u64 {
        loop {
            let wait = {
                let mut s = self.lock();
                match s.first().copied() {
                    Some((due, seq)) if due <= self.now_ms() => {
                        s.remove(&(due, seq));
                        self.running.fetch_add(1, Ordering::Relaxed);
                        return seq;
                    }
                    // Bounded so a wall clock that jumps is noticed within a second.
                    Some((due, _)) => {
                        Duration::from_millis(due.saturating_sub(self.now_ms())).min(MAX_IDLE)
                    }
                    None => MAX_IDLE,
                }
            };
            let _woken = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Puts a taken event back, due at `due`.
    fn reschedule(&self, seq: u64, due: u64) {
        self.lock().insert((due, seq));
        self.wake.notify_one();
    }

    fn release(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Longest a worker sleeps before looking at the schedule again.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// The failure cause of a platform error.
fn cause_of(e: &ApiError) -> FailureCause {
    FailureCause {
        kind: e.kind.as_str().to_owned(),
        message: e.message.clone(),
    }
}

/// Whether a platform error is the store (or a byte quota) refusing for lack of room.
fn is_full(e: &ApiError) -> bool {
    e.kind == ErrorKind::Throttled || e.quota().is_some()
}

#[cfg(test)]
mod tests;
