//! Durable operator overrides: each tenant's override is a JSON [`TenantLimits`] in
//! [`Bucket::Limits`] under the tenant id. An override is written to the store (fsynced by
//! redb, acknowledged by JetStream) before it applies in memory and before the API
//! answers; a failed write changes nothing. Start-up loads every stored override. Regions
//! sharing a JetStream store follow the bucket's watch: a change only names the tenant,
//! whose record is then re-read, so a late or repeated change never undoes a newer one and
//! every region ends at the store's last value.
//!
//! Owns the overrides' record format and their sync with the store; never decides a limit
//! (that is [`super`]).

use super::{Limits, LimitsConfig, TenantLimits};
use crate::store::{Bucket, Expect, Store, StoreError, WatchEvent};
use common::model::{ApiError, ErrorKind, TenantId};
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::warn;

/// Pause before a failed watch is re-created (the store is likely unreachable).
const FOLLOW_RETRY: Duration = Duration::from_millis(500);
/// How long a 503 for an unwritable override asks the operator to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A stored override, or `None` (with a warning) when the record is unreadable: a tenant
/// with an unreadable record gets the defaults rather than stopping the region.
fn decode(key: &str, value: &[u8]) -> Option<(TenantId, TenantLimits)> {
    let parsed = TenantId::new(key).ok().and_then(|tenant| {
        let limits: TenantLimits = serde_json::from_slice(value).ok()?;
        limits.validate().ok()?;
        Some((tenant, limits))
    });
    if parsed.is_none() {
        warn!(%key, "unreadable tenant limit override skipped");
    }
    parsed
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::unavailable(
        format!("the tenant limits could not be stored, nothing changed: {e}"),
        RETRY_AFTER,
    )
}

impl Limits {
    /// A budget owner with `config` whose overrides are kept in `store`, starting with
    /// those stored before. Blocking: reads the store.
    ///
    /// # Errors
    /// [`StoreError`] when the overrides cannot be read. Unreadable records are skipped
    /// with a warning (that tenant gets the defaults), as are records beyond
    /// `max_tenants`.
    pub fn open(config: LimitsConfig, store: Store) -> Result<Self, StoreError> {
        let mut limits = Self::new(config);
        // Read the revision first: a change made between it and the listing is delivered
        // again to `follow`, which re-reads it (harmless), rather than missed.
        limits.loaded_at = store.revision()?;
        limits.reload(&store)?;
        if limits.rebalancing() {
            // Start from the shares the regions agreed on, not from the static split
            // (another region may hold more than its static part now).
            limits.load_shares(&store)?;
        }
        limits.store = Some(store);
        Ok(limits)
    }

    pub(super) fn writing(&self) -> MutexGuard<'_, ()> {
        // Guards no data of its own: a panic elsewhere leaves nothing half-written.
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Overrides `tenant`'s settings (`None`: back to the defaults): written to the store
    /// first when durable, then applied at once. Returns the settings now in force.
    /// Blocking when durable (waits for the store's write): async callers use the blocking
    /// pool.
    ///
    /// # Errors
    /// 400 for invalid settings; 409 when `max_tenants` other tenants have overrides; 503
    /// with `retry-after` when the store write fails. Nothing changes on any error.
    pub fn set_override(
        &self,
        tenant: &TenantId,
        limits: Option<TenantLimits>,
    ) -> Result<TenantLimits, ApiError> {
        if let Some(l) = &limits {
            l.validate()?;
        }
        let _writing = self.writing();
        if limits.is_some() && self.overrides_full(tenant) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "the region keeps at most {} tenant overrides; delete one first",
                    self.config.max_tenants
                ),
            ));
        }
        if let Some(store) = &self.store {
            match &limits {
                Some(l) => {
                    let bytes = serde_json::to_vec(l)
                        .map_err(|e| ApiError::internal(format!("encoding limits: {e}")))?;
                    store
                        .put(Bucket::Limits, tenant.as_str(), &bytes, Expect::Any)
                        .map_err(unavailable)?;
                }
                None => {
                    store
                        .delete(Bucket::Limits, tenant.as_str(), Expect::Any)
                        .map_err(unavailable)?;
                }
            }
        }
        self.apply(tenant, limits);
        Ok(self.settings(tenant))
    }

    /// Re-reads the override stored under `key` and applies it. Blocking.
    fn refresh(&self, store: &Store, key: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        let (tenant, stored) = match store.get(Bucket::Limits, key)? {
            Some(entry) => match decode(key, &entry.value) {
                Some((tenant, limits)) => (tenant, Some(limits)),
                None => return Ok(()),
            },
            None => match TenantId::new(key) {
                Ok(tenant) => (tenant, None),
                // Nothing with that key can be in memory.
                Err(_) => return Ok(()),
            },
        };
        if stored.is_some() && self.overrides_full(&tenant) {
            warn!(%tenant, "tenant limit override beyond max_tenants skipped");
            return Ok(());
        }
        self.apply(&tenant, stored);
        Ok(())
    }

    /// Replaces every override in memory with the store's. Blocking.
    fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut wanted = HashMap::new();
        for (key, entry) in store.list(Bucket::Limits, "")? {
            if wanted.len() >= self.config.max_tenants {
                warn!(%key, "tenant limit overrides beyond max_tenants skipped");
                break;
            }
            if let Some((tenant, limits)) = decode(&key, &entry.value) {
                wanted.insert(tenant, limits);
            }
        }
        let gone: Vec<TenantId> = self
            .lock()
            .overrides
            .keys()
            .filter(|t| !wanted.contains_key(*t))
            .cloned()
            .collect();
        for tenant in gone {
            self.apply(&tenant, None);
        }
        for (tenant, limits) in wanted {
            self.apply(&tenant, Some(limits));
        }
        Ok(())
    }

    /// Applies overrides other regions write to the shared store, until the task is
    /// aborted; returns at once when overrides are in memory only. A change that cannot
    /// be applied (the store is unreachable) is retried from its revision.
    pub async fn follow(self: Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut since = self.loaded_at;
        loop {
            let mut watch = store.watch(&[Bucket::Limits], since);
            loop {
                let (limits, s) = (Arc::clone(&self), store.clone());
                let step = match watch.next().await {
                    Ok(WatchEvent::Change(c)) => {
                        tokio::task::spawn_blocking(move || limits.refresh(&s, &c.key)).await
                    }
                    Ok(WatchEvent::Snapshot(_)) => {
                        tokio::task::spawn_blocking(move || limits.reload(&s)).await
                    }
                    // Not asked for (the watch does not announce it).
                    Ok(WatchEvent::Current(_)) => continue,
                    Err(e) => {
                        warn!(error = %e, "watching tenant limit overrides failed; re-watching");
                        break;
                    }
                };
                match step {
                    Ok(Ok(())) => since = watch.revision(),
                    Ok(Err(e)) => {
                        warn!(error = %e, "reading a tenant limit override failed; retrying");
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "applying a tenant limit override failed; retrying");
                        break;
                    }
                }
            }
            tokio::time::sleep(FOLLOW_RETRY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jetstream::nats_server::NatsServer;
    use crate::store::{JetStreamBackend, JetStreamConfig};

    fn t(s: &str) -> TenantId {
        TenantId::new(s.to_owned()).expect("valid tenant")
    }

    fn one(limit: u32) -> TenantLimits {
        TenantLimits {
            hard_max: limit,
            burst: limit,
            ..TenantLimits::default()
        }
    }

    fn jetstream(url: &str, timeout: Duration) -> Store {
        Store::with_backend(
            JetStreamBackend::connect(&JetStreamConfig {
                url: url.to_owned(),
                prefix: "limits".into(),
                timeout,
            })
            .expect("connects"),
        )
    }

    #[test]
    fn an_override_survives_reopening_the_store_until_it_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let config = LimitsConfig::default();
        let defaults = config.tenant;
        {
            let l = Limits::open(config, Store::open(&path).expect("opens")).expect("loads");
            assert_eq!(
                l.set_override(&t("acme"), Some(one(3))).expect("set"),
                one(3)
            );
        }
        let l = Limits::open(config, Store::open(&path).expect("reopens")).expect("loads");
        assert_eq!(l.settings(&t("acme")), one(3));
        assert_eq!(l.settings(&t("other")), defaults);
        assert_eq!(l.set_override(&t("acme"), None).expect("deleted"), defaults);
        drop(l);
        let l = Limits::open(config, Store::open(&path).expect("reopens")).expect("loads");
        assert_eq!(l.settings(&t("acme")), defaults);
    }

    #[test]
    fn unreadable_records_are_skipped_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("opens");
        store
            .put(Bucket::Limits, "acme", b"not json", Expect::Any)
            .expect("put");
        let invalid = serde_json::to_vec(&TenantLimits {
            burst: 9,
            hard_max: 1,
            ..TenantLimits::default()
        })
        .expect("json");
        store
            .put(Bucket::Limits, "bad", &invalid, Expect::Any)
            .expect("put");
        let l = Limits::open(LimitsConfig::default(), store).expect("loads");
        assert_eq!(l.settings(&t("acme")), TenantLimits::default());
        assert_eq!(l.settings(&t("bad")), TenantLimits::default());
    }

    #[test]
    fn overrides_beyond_max_tenants_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("opens");
        let config = LimitsConfig {
            max_tenants: 1,
            ..LimitsConfig::default()
        };
        let l = Limits::open(config, store.clone()).expect("loads");
        l.set_override(&t("a"), Some(one(2))).expect("first");
        l.set_override(&t("a"), Some(one(3)))
            .expect("same tenant again");
        let err = l.set_override(&t("b"), Some(one(2))).expect_err("full");
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert!(store.get(Bucket::Limits, "b").expect("get").is_none());
        assert_eq!(l.settings(&t("b")), TenantLimits::default());
    }

    #[ignore = "needs nats-server"]
    #[test]
    fn a_failed_store_write_is_a_503_and_changes_nothing() {
        let server = NatsServer::start().expect("nats-server starts");
        let store = jetstream(&server.url(), Duration::from_millis(500));
        let l = Limits::open(LimitsConfig::default(), store).expect("loads");
        l.set_override(&t("acme"), Some(one(3))).expect("stored");
        drop(server);
        let err = l
            .set_override(&t("acme"), Some(one(5)))
            .expect_err("the server is gone");
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.retry_after.is_some());
        assert_eq!(l.settings(&t("acme")), one(3));
        let err = l
            .set_override(&t("acme"), None)
            .expect_err("the server is gone");
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert_eq!(l.settings(&t("acme")), one(3));
    }

    #[ignore = "needs nats-server"]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_override_set_on_one_region_applies_on_another_sharing_the_store() {
        let server = NatsServer::start().expect("nats-server starts");
        let url = server.url();
        let (a, b) = tokio::task::spawn_blocking(move || {
            let open = || {
                Limits::open(
                    LimitsConfig::default(),
                    jetstream(&url, Duration::from_secs(10)),
                )
                .map(Arc::new)
                .expect("loads")
            };
            (open(), open())
        })
        .await
        .expect("joins");
        let follower = tokio::spawn(Arc::clone(&b).follow());
        let until = |want: TenantLimits| {
            let b = Arc::clone(&b);
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while b.settings(&t("acme")) != want && tokio::time::Instant::now() < deadline {
                    // The follower has no notification to wait on: poll its state.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                b.settings(&t("acme"))
            }
        };
        let setter = Arc::clone(&a);
        tokio::task::spawn_blocking(move || setter.set_override(&t("acme"), Some(one(2))))
            .await
            .expect("joins")
            .expect("stored");
        assert_eq!(until(one(2)).await, one(2));
        let setter = Arc::clone(&a);
        tokio::task::spawn_blocking(move || setter.set_override(&t("acme"), None))
            .await
            .expect("joins")
            .expect("deleted");
        assert_eq!(
            until(TenantLimits::default()).await,
            TenantLimits::default()
        );
        follower.abort();
    }
}
