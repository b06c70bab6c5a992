//! The embedded backend: one redb file in the region's state directory.
//!
//! Tables: one per KV bucket (value = 8-byte big-endian revision + bytes), `history`
//! (revision -> encoded change, the newest `history_limit` kept), `blobs` (digest ->
//! bytes), `streams` ((stream, seq) -> bytes) with `stream_meta` (stream -> (last seq,
//! count)), and `meta` (the store-wide revision).

use super::{
    Backend, Bucket, Change, Entry, Expect, History, Op, Snapshot, StoreError, StreamMessage,
};
use crate::store::Expect::{Absent, Any, Revision};
use common::model::ArtifactDigest;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::broadcast;

const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_tenants");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_tokens");
const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_functions");
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_versions");
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_aliases");
const ROUTES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_routes");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_state");
const CANARY: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_canary");
const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_limits");
const CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_certificates");
const SIZES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_sizes");
const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv_shares");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
const STREAMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("streams");
const STREAM_META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("stream_meta");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// Changes kept in the history by default; a watcher further behind gets a snapshot.
pub const DEFAULT_HISTORY: u64 = 10_000;

/// Live changes buffered per watcher before it lags and re-reads the history.
const LIVE_CHANNEL: usize = 1024;

fn table(bucket: Bucket) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match bucket {
        Bucket::Tenants => TENANTS,
        Bucket::Tokens => TOKENS,
        Bucket::Functions => FUNCTIONS,
        Bucket::Versions => VERSIONS,
        Bucket::Aliases => ALIASES,
        Bucket::Routes => ROUTES,
        Bucket::State => STATE,
        Bucket::Canary => CANARY,
        Bucket::Limits => LIMITS,
        Bucket::Certificates => CERTIFICATES,
        Bucket::Sizes => SIZES,
        Bucket::Shares => SHARES,
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

/// History record: bucket code, op (0 put, 1 delete), key length (u32 BE), key, value.
fn encode_change(bucket: Bucket, key: &str, value: Option<&[u8]>) -> Vec<u8> {
    let op = u8::from(value.is_none());
    let value = value.unwrap_or_default();
    let mut out = Vec::with_capacity(6 + key.len() + value.len());
    out.push(bucket.code());
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_change(revision: u64, raw: &[u8]) -> Result<Change, StoreError> {
    let corrupt = || StoreError::Backend(format!("corrupt history record {revision}"));
    let [code, op, rest @ ..] = raw else {
        return Err(corrupt());
    };
    let bucket = Bucket::from_code(*code).ok_or_else(corrupt)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(*len) as usize;
    let key = rest.get(..len).ok_or_else(corrupt)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?.to_owned();
    let op = match op {
        0 => Op::Put(rest[len..].to_vec()),
        1 => Op::Delete,
        _ => return Err(corrupt()),
    };
    Ok(Change {
        revision,
        bucket,
        key,
        op,
    })
}

/// The embedded store (see the module docs).
#[derive(Debug)]
pub struct RedbBackend {
    db: Database,
    history_limit: u64,
    live: broadcast::Sender<Change>,
    /// Held across commit and broadcast, so live changes are sent in revision order (redb
    /// serialises write transactions anyway, so this costs no concurrency).
    write_order: Mutex<()>,
}

impl RedbBackend {
    /// Opens (creating if needed) the store file at `path`, keeping the newest
    /// `history_limit` changes (at least 1) for watchers that catch up.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be opened or is not a redb database.
    pub fn open(path: &Path, history_limit: u64) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        // Create every table up front so readers never see "table does not exist".
        let tx = db.begin_write()?;
        for b in Bucket::ALL {
            tx.open_table(table(b))?;
        }
        tx.open_table(HISTORY)?;
        tx.open_table(BLOBS)?;
        tx.open_table(STREAMS)?;
        tx.open_table(STREAM_META)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self {
            db,
            history_limit: history_limit.max(1),
            live: broadcast::channel(LIVE_CHANNEL).0,
            write_order: Mutex::new(()),
        })
    }

    /// Writes (or with `value: None` deletes) `key` if `expect` holds, recording the
    /// change in the history; returns the revision, or `None` for a delete of nothing.
    fn write(
        &self,
        bucket: Bucket,
        key: &str,
        value: Option<&[u8]>,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError> {
        let _order = self.write_order.lock().unwrap_or_else(|p| p.into_inner());
        let tx = self.db.begin_write()?;
        let revision = {
            let mut t = tx.open_table(table(bucket))?;
            let actual = t.get(key)?.map(|v| split(v.value())).transpose()?;
            check(key, expect, actual.as_ref().map(|e| e.revision))?;
            if value.is_none() && actual.is_none() {
                return Ok(None);
            }
            let revision = self.next_revision(&tx)?;
            match value {
                Some(value) => {
                    let mut raw = Vec::with_capacity(8 + value.len());
                    raw.extend_from_slice(&revision.to_be_bytes());
                    raw.extend_from_slice(value);
                    t.insert(key, raw.as_slice())?;
                }
                None => {
                    t.remove(key)?;
                }
            }
            let mut history = tx.open_table(HISTORY)?;
            history.insert(revision, encode_change(bucket, key, value).as_slice())?;
            if revision > self.history_limit {
                history.remove(revision - self.history_limit)?;
            }
            revision
        };
        tx.commit()?;
        let op = value.map_or(Op::Delete, |v| Op::Put(v.to_vec()));
        // No receiver is fine: nobody is watching.
        let _ = self.live.send(Change {
            revision,
            bucket,
            key: key.to_owned(),
            op,
        });
        Ok(Some(revision))
    }

    fn next_revision(&self, tx: &WriteTransaction) -> Result<u64, StoreError> {
        let mut meta = tx.open_table(META)?;
        let revision = meta.get(REVISION_KEY)?.map_or(0, |v| v.value()) + 1;
        meta.insert(REVISION_KEY, revision)?;
        Ok(revision)
    }
}

impl Backend for RedbBackend {
    fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(bucket))?;
        t.get(key)?.map(|v| split(v.value())).transpose()
    }

    fn put(
        &self,
        bucket: Bucket,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        self.write(bucket, key, Some(value), expect)?
            .ok_or_else(|| StoreError::Backend("a put wrote nothing".into()))
    }

    fn delete(&self, bucket: Bucket, key: &str, expect: Expect) -> Result<Option<u64>, StoreError> {
        self.write(bucket, key, None, expect)
    }

    fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
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

    fn list_page(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: &str,
        max: usize,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table(bucket))?;
        let start = if after > prefix { after } else { prefix };
        let mut out = Vec::new();
        for item in t.range(start..)? {
            let (k, v) = item?;
            let key = k.value();
            if !key.starts_with(prefix) || out.len() == max {
                break;
            }
            if key > after {
                out.push((key.to_owned(), split(v.value())?));
            }
        }
        Ok(out)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(REVISION_KEY)?.map_or(0, |v| v.value()))
    }

    fn history(&self, since: u64, max: usize) -> Result<History, StoreError> {
        let tx = self.db.begin_read()?;
        let current = tx
            .open_table(META)?
            .get(REVISION_KEY)?
            .map_or(0, |v| v.value());
        if current <= since {
            return Ok(History::Changes(Vec::new()));
        }
        let t = tx.open_table(HISTORY)?;
        let oldest = t.first()?.map(|(k, _)| k.value());
        if oldest.is_none_or(|o| o > since + 1) {
            return Ok(History::Compacted);
        }
        let mut out = Vec::new();
        for item in t.range(since + 1..)?.take(max) {
            let (k, v) = item?;
            out.push(decode_change(k.value(), v.value())?);
        }
        Ok(History::Changes(out))
    }

    fn snapshot(&self, buckets: &[Bucket]) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read()?;
        let revision = tx
            .open_table(META)?
            .get(REVISION_KEY)?
            .map_or(0, |v| v.value());
        let mut entries = Vec::new();
        for &bucket in buckets {
            let t = tx.open_table(table(bucket))?;
            for item in t.iter()? {
                let (k, v) = item?;
                entries.push((bucket, k.value().to_owned(), split(v.value())?));
            }
        }
        Ok(Snapshot { revision, entries })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.live.subscribe()
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<ArtifactDigest, StoreError> {
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

    fn get_blob(&self, digest: &ArtifactDigest) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BLOBS)?;
        Ok(t.get(digest.as_bytes())?.map(|v| v.value().to_vec()))
    }

    fn delete_blob(&self, digest: &ArtifactDigest) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(BLOBS)?.remove(digest.as_bytes())?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    fn append(&self, stream: &str, value: &[u8], max_messages: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let seq = {
            let mut meta = tx.open_table(STREAM_META)?;
            let (last, count) = meta.get(stream)?.map_or((0, 0), |v| v.value());
            if count >= max_messages {
                return Err(StoreError::StreamFull {
                    stream: stream.to_owned(),
                    max: max_messages,
                });
            }
            let seq = last + 1;
            meta.insert(stream, (seq, count + 1))?;
            tx.open_table(STREAMS)?.insert((stream, seq), value)?;
            seq
        };
        tx.commit()?;
        Ok(seq)
    }

    fn read(&self, stream: &str, from: u64, max: usize) -> Result<Vec<StreamMessage>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(STREAMS)?;
        let mut out = Vec::new();
        for item in t.range((stream, from)..=(stream, u64::MAX))?.take(max) {
            let (k, v) = item?;
            out.push(StreamMessage {
                seq: k.value().1,
                value: v.value().to_vec(),
            });
        }
        Ok(out)
    }

    fn ack(&self, stream: &str, seq: u64) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let existed = tx.open_table(STREAMS)?.remove((stream, seq))?.is_some();
            if existed {
                let mut meta = tx.open_table(STREAM_META)?;
                let (last, count) = meta.get(stream)?.map_or((0, 0), |v| v.value());
                meta.insert(stream, (last, count.saturating_sub(1)))?;
            }
            existed
        };
        tx.commit()?;
        Ok(existed)
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
    use crate::store::Store;

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

    #[test]
    fn deletes_take_a_revision_and_the_history_replays_every_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = RedbBackend::open(&dir.path().join("s.redb"), 100).expect("opens");
        let r1 = b.put(Bucket::Functions, "t/a", b"1", Any).expect("put");
        let r2 = b.delete(Bucket::Functions, "t/a", Any).expect("delete");
        assert_eq!(
            b.delete(Bucket::Functions, "t/a", Any).expect("again"),
            None
        );
        let r3 = b.put(Bucket::Aliases, "t/a/prod", b"x", Any).expect("put");
        assert_eq!(r2, Some(r1 + 1));
        let History::Changes(h) = b.history(0, 10).expect("history") else {
            panic!("not compacted");
        };
        let ops: Vec<_> = h
            .iter()
            .map(|c| (c.revision, c.bucket, c.op.clone()))
            .collect();
        assert_eq!(
            ops,
            [
                (r1, Bucket::Functions, Op::Put(b"1".to_vec())),
                (r1 + 1, Bucket::Functions, Op::Delete),
                (r3, Bucket::Aliases, Op::Put(b"x".to_vec())),
            ]
        );
        let History::Changes(tail) = b.history(r1 + 1, 10).expect("history") else {
            panic!("not compacted");
        };
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn a_watcher_behind_the_compacted_history_gets_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = RedbBackend::open(&dir.path().join("s.redb"), 2).expect("opens");
        for i in 0..5u8 {
            b.put(Bucket::Functions, &format!("t/{i}"), &[i], Any)
                .expect("put");
        }
        assert_eq!(b.history(0, 10).expect("history"), History::Compacted);
        assert!(matches!(b.history(3, 10).expect("history"), History::Changes(c) if c.len() == 2));
        let s = b.snapshot(&[Bucket::Functions]).expect("snapshot");
        assert_eq!((s.revision, s.entries.len()), (5, 5));
    }

    #[test]
    fn streams_append_read_ack_and_refuse_when_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = RedbBackend::open(&dir.path().join("s.redb"), 10).expect("opens");
        assert_eq!(b.append("q", b"a", 2).expect("append"), 1);
        assert_eq!(b.append("q", b"b", 2).expect("append"), 2);
        assert!(matches!(
            b.append("q", b"c", 2),
            Err(StoreError::StreamFull { max: 2, .. })
        ));
        assert_eq!(b.append("other", b"x", 2).expect("append"), 1);
        let msgs = b.read("q", 2, 10).expect("read");
        assert_eq!(
            msgs,
            [StreamMessage {
                seq: 2,
                value: b"b".to_vec()
            }]
        );
        assert!(b.ack("q", 1).expect("ack"));
        assert!(!b.ack("q", 1).expect("ack twice"));
        assert_eq!(b.append("q", b"c", 2).expect("room again"), 3);
        assert_eq!(b.read("q", 0, 10).expect("read").len(), 2);
    }
}
