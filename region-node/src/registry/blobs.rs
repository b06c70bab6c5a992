//! Code blobs' lifetime: a module's blob is kept while any function (`$LATEST`) or
//! published version of any tenant refers to its digest, and deleted by the write that
//! drops the last reference (delete, replace, version removal). Blobs are shared by
//! digest across versions and tenants, so the count is taken over every record, under
//! [`Registry::blob_lock`] so a deploy of the same code cannot slip in between the count
//! and the delete (within this process; regions sharing a JetStream store may race,
//! and the next deploy of that code stores it again).

use super::functions::FunctionRecord;
use super::versions::VersionRecord;
use super::{Registry, decode};
use crate::store::Bucket;
use common::model::{ApiError, ArtifactDigest};
use std::collections::BTreeSet;
use std::sync::MutexGuard;

impl Registry {
    /// Serialises writes that add or drop blob references in this process.
    pub(super) fn blob_lock(&self) -> MutexGuard<'_, ()> {
        self.blob_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many records refer to `digest`. An undecodable record counts as a reference
    /// (its digest is unknown, so the blob is kept).
    ///
    /// # Errors
    /// 500 on a store failure.
    pub fn blob_references(&self, digest: &ArtifactDigest) -> Result<u64, ApiError> {
        let mut n = 0;
        for (_, e) in self.store.list(Bucket::Functions, "")? {
            let rec = decode::<FunctionRecord>(&e.value);
            n += u64::from(rec.is_err() || rec.is_ok_and(|r| &r.digest == digest));
        }
        for (k, e) in self.store.list(Bucket::Versions, "")? {
            // `tenant/name` holds the publish counter; `tenant/name/N` a version.
            if k.matches('/').count() != 2 {
                continue;
            }
            let rec = decode::<VersionRecord>(&e.value);
            n += u64::from(rec.is_err() || rec.is_ok_and(|r| &r.digest == digest));
        }
        Ok(n)
    }

    /// Deletes each of `digests` that no record refers to any more. Call with
    /// [`Self::blob_lock`] held, after the write that dropped the references.
    ///
    /// # Errors
    /// 500 on a store failure (a blob left behind is only space; nothing breaks).
    pub(super) fn collect_blobs(
        &self,
        digests: impl IntoIterator<Item = ArtifactDigest>,
    ) -> Result<(), ApiError> {
        let unique: BTreeSet<ArtifactDigest> = digests.into_iter().collect();
        for digest in unique {
            if self.blob_references(&digest)? == 0 && self.store.delete_blob(&digest)? {
                tracing::info!(%digest, "deleted an unreferenced code blob");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::QuotaConfig;
    use crate::store::Store;
    use common::model::{FunctionConfig, FunctionName, Quota, TenantId};
    use std::num::NonZeroU32;

    fn registry(quotas: QuotaConfig) -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("r.redb")).expect("opens");
        let r = Registry::new(store).with_quotas(quotas);
        for t in ["a", "b"] {
            r.create_tenant(TenantId::new(t).expect("tenant"), 512)
                .expect("tenant");
        }
        (dir, r)
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    fn f(s: &str) -> FunctionName {
        FunctionName::new(s).expect("valid")
    }

    fn stored(r: &Registry, code: &[u8]) -> bool {
        let blob = r.store.get_blob(&ArtifactDigest::of(code)).expect("get");
        blob.is_some()
    }

    #[test]
    fn a_blob_goes_with_its_last_reference_and_a_shared_one_stays() {
        let (_d, r) = registry(QuotaConfig::default());
        let config = FunctionConfig::default();
        r.deploy(&t("a"), &f("x"), config.clone(), b"one", None)
            .expect("deploy");
        r.deploy(&t("b"), &f("y"), config.clone(), b"one", None)
            .expect("another tenant, same code");
        r.deploy(&t("a"), &f("z"), config.clone(), b"two", None)
            .expect("deploy");
        r.publish(&t("a"), &f("z"), None).expect("publish");
        // Replaced, but version 1 still runs `two`.
        r.deploy(&t("a"), &f("z"), config.clone(), b"three", None)
            .expect("replace");
        assert!(stored(&r, b"two"));
        r.delete_version(&t("a"), &f("z"), NonZeroU32::MIN)
            .expect("delete version");
        assert!(!stored(&r, b"two"), "no record refers to it any more");
        assert!(stored(&r, b"three"));
        // Tenant b's function still refers to `one`.
        r.delete_function(&t("a"), &f("x")).expect("delete");
        assert!(stored(&r, b"one"));
        r.delete_function(&t("b"), &f("y")).expect("delete");
        assert!(!stored(&r, b"one"));
        // Replacing `three` with itself keeps it; deploying `two` again stores it again.
        r.deploy(&t("a"), &f("z"), config.clone(), b"three", None)
            .expect("same code");
        assert!(stored(&r, b"three"));
        r.deploy(&t("a"), &f("w"), config, b"two", None)
            .expect("deploy");
        assert_eq!(
            r.module(&ArtifactDigest::of(b"two")).expect("module"),
            b"two"
        );
    }

    #[test]
    fn count_and_env_quotas_refuse_and_change_nothing() {
        let quotas = QuotaConfig {
            functions: 1,
            versions_per_function: 1,
            env_bytes: 4,
            ..QuotaConfig::default()
        };
        let (_d, r) = registry(quotas);
        let mut config = FunctionConfig::default();
        r.deploy(&t("a"), &f("x"), config.clone(), b"one", None)
            .expect("deploy");
        let quota = |e: ApiError| e.quota().map(|b| b.quota);
        let e = r.deploy(&t("a"), &f("y"), config.clone(), b"two", None);
        assert_eq!(e.map(drop).map_err(quota), Err(Some(Quota::Functions)));
        assert!(!stored(&r, b"two"), "a refused deploy stores nothing");
        r.deploy(&t("b"), &f("y"), config.clone(), b"two", None)
            .expect("another tenant has its own count");
        r.publish(&t("a"), &f("x"), None).expect("publish");
        r.deploy(&t("a"), &f("x"), config.clone(), b"three", None)
            .expect("replace");
        let e = r.publish(&t("a"), &f("x"), None);
        assert_eq!(
            e.map(drop).map_err(quota),
            Err(Some(Quota::VersionsPerFunction))
        );
        config.env.insert("KEY".into(), "xx".into());
        let e = r.deploy(&t("a"), &f("x"), config, b"four", None);
        assert_eq!(e.map(drop).map_err(quota), Err(Some(Quota::EnvBytes)));
        assert_eq!(
            r.function(&t("a"), &f("x")).expect("get").digest,
            ArtifactDigest::of(b"three")
        );
    }
}
