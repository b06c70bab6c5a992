//! [`Backend`] for [`JetStreamBackend`]: each operation as NATS requests (the mapping is
//! in the parent module's docs).

use super::names::kv_key;
use super::{DELETE_RETRIES, JetStreamBackend, check, err};
use crate::store::{
    Backend, Bucket, Change, Entry, Expect, History, Op, Snapshot, StoreError, StreamMessage,
};
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use common::model::ArtifactDigest;
use std::collections::BTreeMap;
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

impl Backend for JetStreamBackend {
    fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        let subject = format!("{}{}", self.inner.kv_subject, kv_key(bucket, key));
        self.call("get", |inner| async move {
            Ok(match inner.last(&subject).await? {
                Some((revision, Some(value))) => Some(Entry { value, revision }),
                _ => None,
            })
        })
    }

    fn put(
        &self,
        bucket: Bucket,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let subject = format!("{}{}", self.inner.kv_subject, kv_key(bucket, key));
        let (key, value) = (key.to_owned(), value.to_vec());
        self.call("put", move |inner| async move {
            if expect == Expect::Any {
                return inner
                    .publish(subject, Some(&value), None)
                    .await?
                    .ok_or_else(|| err("put", "an unconditional write was refused"));
            }
            // Check the precondition against the subject's last message, then write only
            // if that is still the last message: one atomic step at the server.
            let last = inner.last(&subject).await?;
            let live = last.as_ref().and_then(|(seq, v)| v.as_ref().map(|_| *seq));
            check(&key, expect, live)?;
            let expected_last = last.map_or(0, |(seq, _)| seq);
            match inner
                .publish(subject, Some(&value), Some(expected_last))
                .await?
            {
                Some(revision) => Ok(revision),
                None => Err(StoreError::Conflict {
                    key,
                    expected: expect,
                    actual: None,
                }),
            }
        })
    }

    fn delete(&self, bucket: Bucket, key: &str, expect: Expect) -> Result<Option<u64>, StoreError> {
        let subject = format!("{}{}", self.inner.kv_subject, kv_key(bucket, key));
        let key = key.to_owned();
        self.call("delete", move |inner| async move {
            for _ in 0..DELETE_RETRIES {
                let last = inner.last(&subject).await?;
                let live = last.as_ref().and_then(|(seq, v)| v.as_ref().map(|_| *seq));
                check(&key, expect, live)?;
                let Some(seq) = live else {
                    return Ok(None);
                };
                if let Some(revision) = inner.publish(subject.clone(), None, Some(seq)).await? {
                    return Ok(Some(revision));
                }
                // Another write landed between the read and the delete.
                if expect != Expect::Any {
                    return Err(StoreError::Conflict {
                        key,
                        expected: expect,
                        actual: None,
                    });
                }
            }
            Err(err("delete", format!("{key} kept changing; gave up")))
        })
    }

    fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        let prefix = prefix.to_owned();
        self.call("list", move |inner| async move {
            let mut out = BTreeMap::new();
            for c in inner.changes(1, usize::MAX).await? {
                if c.bucket != bucket || !c.key.starts_with(&prefix) {
                    continue;
                }
                match c.op {
                    Op::Put(value) => {
                        out.insert(
                            c.key,
                            Entry {
                                value,
                                revision: c.revision,
                            },
                        );
                    }
                    Op::Delete => {
                        out.remove(&c.key);
                    }
                }
            }
            Ok(out.into_iter().collect())
        })
    }

    fn revision(&self) -> Result<u64, StoreError> {
        self.call(
            "revision",
            |inner| async move { inner.last_sequence().await },
        )
    }

    fn history(&self, since: u64, max: usize) -> Result<History, StoreError> {
        self.call("history", move |inner| async move {
            Ok(History::Changes(
                inner.changes(since.saturating_add(1), max).await?,
            ))
        })
    }

    fn snapshot(&self, buckets: &[Bucket]) -> Result<Snapshot, StoreError> {
        let buckets = buckets.to_vec();
        self.call("snapshot", move |inner| async move {
            // Scanning in sequence order sees every key's latest message as of the last
            // sequence read (a key rewritten during the scan shows up again later), so
            // the folded state is the state at that sequence.
            let floor = inner.last_sequence().await?;
            let changes = inner.changes(1, usize::MAX).await?;
            let revision = changes.last().map_or(floor, |c| c.revision.max(floor));
            let mut state = BTreeMap::new();
            for c in changes {
                match c.op {
                    Op::Put(value) => {
                        let entry = Entry {
                            value,
                            revision: c.revision,
                        };
                        state.insert((c.bucket.code(), c.key), (c.bucket, entry));
                    }
                    Op::Delete => {
                        state.remove(&(c.bucket.code(), c.key));
                    }
                }
            }
            let mut entries: Vec<_> = state
                .into_iter()
                .filter(|(_, (b, _))| buckets.contains(b))
                .map(|((_, key), (b, entry))| (b, key, entry))
                .collect();
            entries.sort_by_key(|(b, _, _)| buckets.iter().position(|x| x == b));
            Ok(Snapshot { revision, entries })
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.live.subscribe()
    }

    fn put_blob(&self, bytes: &[u8]) -> Result<ArtifactDigest, StoreError> {
        let digest = ArtifactDigest::of(bytes);
        let name = digest.to_string();
        let bytes = bytes.to_vec();
        self.call("put_blob", move |inner| async move {
            // Immutable and content-addressed: an existing object is this one. A deleted
            // one keeps its metadata, marked deleted, and is stored again.
            if inner.blobs.info(&name).await.is_ok_and(|i| !i.deleted) {
                return Ok(digest);
            }
            inner
                .blobs
                .put(name.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| err("storing a blob", e))?;
            Ok(digest)
        })
    }

    fn get_blob(&self, digest: &ArtifactDigest) -> Result<Option<Vec<u8>>, StoreError> {
        let name = digest.to_string();
        self.call("get_blob", move |inner| async move {
            use async_nats::jetstream::object_store::GetErrorKind;
            let mut object = match inner.blobs.get(&name).await {
                Ok(o) => o,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(err("reading a blob", e)),
            };
            let mut out = Vec::new();
            object
                .read_to_end(&mut out)
                .await
                .map_err(|e| err("reading a blob", e))?;
            Ok(Some(out))
        })
    }

    fn delete_blob(&self, digest: &ArtifactDigest) -> Result<bool, StoreError> {
        let name = digest.to_string();
        self.call("delete_blob", move |inner| async move {
            if !inner.blobs.info(&name).await.is_ok_and(|i| !i.deleted) {
                return Ok(false);
            }
            inner
                .blobs
                .delete(name.as_str())
                .await
                .map_err(|e| err("deleting a blob", e))?;
            Ok(true)
        })
    }

    fn append(&self, stream: &str, value: &[u8], max_messages: u64) -> Result<u64, StoreError> {
        let (name, value) = (stream.to_owned(), value.to_vec());
        self.call("append", move |inner| async move {
            inner.append(&name, value, max_messages).await
        })
    }

    fn read(&self, stream: &str, from: u64, max: usize) -> Result<Vec<StreamMessage>, StoreError> {
        let name = stream.to_owned();
        self.call("read", move |inner| async move {
            let Some((s, _)) = inner.stream(&name, None).await? else {
                return Ok(Vec::new());
            };
            let subject = inner.stream_subject(&name);
            let mut out = Vec::new();
            let mut seq = from.max(1);
            while out.len() < max {
                let Some(m) = inner.next(&s, &subject, seq).await? else {
                    break;
                };
                seq = m.sequence + 1;
                out.push(StreamMessage {
                    seq: m.sequence,
                    value: m.payload.to_vec(),
                });
            }
            Ok(out)
        })
    }

    fn ack(&self, stream: &str, seq: u64) -> Result<bool, StoreError> {
        let name = stream.to_owned();
        self.call("ack", move |inner| async move {
            let Some((s, _)) = inner.stream(&name, None).await? else {
                return Ok(false);
            };
            match s.delete_message(seq).await {
                Ok(deleted) => Ok(deleted),
                // The server answers "no message found" for a sequence already deleted.
                Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => Ok(false),
                Err(e) => Err(err("acking", e)),
            }
        })
    }
}
