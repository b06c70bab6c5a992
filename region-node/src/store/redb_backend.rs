//! The embedded backend: one redb file in the region's state directory.

use super::{Bucket, Entry, Expect, StoreError};
use crate::store::Expect::{Absent, Any, Revision};
use common::model::ArtifactDigest;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

// Values in KV tables are the 8-byte big-endian revision followed by the value bytes.
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_tenants");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_tokens");
const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_functions");
const ROUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_routes");
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

fn table(bucket: Bucket) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match bucket {
        Bucket::Tenants => TENANTS,
        Bucket::Tokens => TOKENS,
        Bucket::Functions => FUNCTIONS,
        Bucket::Routes => ROUTES,
    }
}

fn split(raw: &[u8]) -> Result<Entry, StoreError> {
    let (rev, value) = raw
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Backend("stored value shorter than its revision".into()))?;
    Ok(Entry {
        value: value.to_vec(),
        revision: u64::from_be_bytes(*rev),
    })
}

/// The region's durable store (see the module docs of [`crate::store`]).
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (creating if needed) the store file at `path`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        // Create every table up front so readers never see "table does not exist".
        let tx = db.begin_write()?;
        for t in [TENANTS, TOKENS, FUNCTIONS, ROUTES] {
            tx.open_table(t)?;
        }
        tx.open_table(BLOBS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// The value of `key` in `bucket`, with its revision.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    pub fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(bucket))?;
        t.get(key)?.map(|v| split(v.value())).transpose()
    }

    /// Writes `value` at `key` if `expect` holds; returns the new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when `expect` does not hold; nothing is written.
    pub fn put(
        &self,
        bucket: Bucket,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let revision = {
            let mut t = tx.open_table(table(bucket))?;
            let actual = t.get(key)?.map(|v| split(v.value())).transpose()?;
            check(key, expect, actual.as_ref().map(|e| e.revision))?;
            let mut meta = tx.open_table(META)?;
            let revision = meta.get(REVISION_KEY)?.map_or(0, |v| v.value()) + 1;
            meta.insert(REVISION_KEY, revision)?;
            let mut raw = Vec::with_capacity(8 + value.len());
            raw.extend_from_slice(&revision.to_be_bytes());
            raw.extend_from_slice(value);
            t.insert(key, raw.as_slice())?;
            revision
        };
        tx.commit()?;
        Ok(revision)
    }

    /// Deletes `key` if `expect` holds; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when `expect` does not hold; nothing is deleted.
    pub fn delete(&self, bucket: Bucket, key: &str, expect: Expect) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut t = tx.open_table(table(bucket))?;
            let actual = t.get(key)?.map(|v| split(v.value())).transpose()?;
            check(key, expect, actual.as_ref().map(|e| e.revision))?;
            t.remove(key)?.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    /// Every entry of `bucket` whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    pub fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(bucket))?;
        let mut out = Vec::new();
        for item in t.range(prefix..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), split(v.value())?));
        }
        Ok(out)
    }

    /// Stores `bytes` under their digest (idempotent: a blob is immutable).
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<ArtifactDigest, StoreError> {
        let digest = ArtifactDigest::of(bytes);
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(BLOBS)?;
            if t.get(digest.as_bytes())?.is_none() {
                t.insert(digest.as_bytes(), bytes)?;
            }
        }
        tx.commit()?;
        Ok(digest)
    }

    /// The blob with `digest`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    pub fn get_blob(&self, digest: &ArtifactDigest) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOBS)?;
        Ok(t.get(digest.as_bytes())?.map(|v| v.value().to_vec()))
    }
}

fn check(key: &str, expected: Expect, actual: Option<u64>) -> Result<(), StoreError> {
    let ok = match expected {
        Any => true,
        Absent => actual.is_none(),
        Revision(r) => actual == Some(r),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&dir.path().join("s.redb")).expect("opens");
        (dir, s)
    }

    #[test]
    fn revisions_increase_and_conditional_writes_conflict() {
        let (_d, s) = store();
        let r1 = s
            .put(Bucket::Functions, "t/a", b"1", Absent)
            .expect("create");
        assert!(matches!(
            s.put(Bucket::Functions, "t/a", b"2", Absent),
            Err(StoreError::Conflict { .. })
        ));
        let r2 = s
            .put(Bucket::Functions, "t/a", b"2", Revision(r1))
            .expect("update");
        assert!(r2 > r1);
        assert!(s.put(Bucket::Functions, "t/a", b"3", Revision(r1)).is_err());
        let e = s
            .get(Bucket::Functions, "t/a")
            .expect("get")
            .expect("present");
        assert_eq!((e.value.as_slice(), e.revision), (&b"2"[..], r2));
    }

    #[test]
    fn list_is_by_prefix_and_delete_removes() {
        let (_d, s) = store();
        for k in ["a/x", "a/y", "b/z"] {
            s.put(Bucket::Functions, k, b"v", Any).expect("put");
        }
        let keys: Vec<_> = s
            .list(Bucket::Functions, "a/")
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a/x", "a/y"]);
        assert!(s.delete(Bucket::Functions, "a/x", Any).expect("delete"));
        assert!(s.get(Bucket::Functions, "a/x").expect("get").is_none());
    }

    #[test]
    fn blobs_are_content_addressed_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let d = Store::open(&path)
            .expect("opens")
            .put_blob(b"module")
            .expect("put");
        let s = Store::open(&path).expect("reopens");
        assert_eq!(s.get_blob(&d).expect("get"), Some(b"module".to_vec()));
        assert_eq!(d, ArtifactDigest::of(b"module"));
    }
}
