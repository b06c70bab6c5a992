//! The JetStream backend: the region's durable state in a NATS server, so several region
//! nodes configured with the same server (and name prefix) share functions, queues and
//! state.
//!
//! Mapping (docs/architecture.md has the reasoning):
//! - all [`Bucket`]s live in ONE KV bucket `<prefix>-kv`, keys `b<bucket code>.<escaped
//!   key>_`, so the KV stream's sequence is the store-wide revision: [`revision`] is its
//!   last sequence and [`history`] reads it from a sequence on;
//! - conditional writes publish with `Nats-Expected-Last-Subject-Sequence` set to the
//!   sequence the precondition was checked against, so check and write are one atomic
//!   step at the server;
//! - [`subscribe`] is fed by a KV watcher, so every region sees every region's writes
//!   (and its POP push streams carry them);
//! - blobs live in the object store `<prefix>-blobs`, named by digest;
//! - each named stream is a JetStream stream `<prefix>-q-<escaped name>` with discard
//!   policy `new` and `max_msgs` = the largest bound any append asked for (raised, never
//!   lowered: lowering `max_msgs` makes the server delete the oldest messages, which
//!   would drop accepted events); an append under a smaller bound checks the count and
//!   publishes with `Nats-Expected-Last-Sequence`, so check and append are one atomic
//!   step; ack deletes the message.
//!
//! The KV bucket keeps one message per key (history 1): the history skips writes that a
//! later write of the same key superseded, which watchers (they fold changes into state)
//! cannot tell apart; it is never [`Compacted`]. KV scans (list, snapshot, history)
//! stream the bucket through one ordered consumer; a stream read costs one direct-get
//! round trip per message.
//!
//! [`Bucket`]: crate::store::Bucket
//! [`revision`]: crate::store::Backend::revision
//! [`history`]: crate::store::Backend::history
//! [`subscribe`]: crate::store::Backend::subscribe
//! [`Compacted`]: crate::store::History::Compacted

mod backend;
mod bridge;
mod names;
pub mod nats_server;
mod streams;

use self::bridge::Bridge;
use self::names::{escape, parse_kv_key, valid_prefix};
use super::{Change, Expect, Op, StoreError};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::StreamMessage as NatsMessage;
use async_nats::jetstream::stream::{self, DirectGetErrorKind, DiscardPolicy, Stream};
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::warn;

/// Live changes buffered per subscriber before it lags and re-reads the history.
const LIVE_CHANNEL: usize = 1024;
/// Retries of an unconditional delete that raced another write of the same key.
const DELETE_RETRIES: usize = 8;
/// The KV operation header and its delete values (as the NATS KV clients write them).
const KV_OPERATION: &str = "KV-Operation";
/// Pause before a failed KV watcher is re-created.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Where and how to reach JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// The server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of every bucket and stream name; regions that share state use the same one.
    pub prefix: String,
    /// Deadline of each store operation (and of connecting).
    pub timeout: Duration,
}

/// See the module docs.
#[derive(Debug)]
pub struct JetStreamBackend {
    bridge: Bridge,
    inner: Arc<Inner>,
    live: broadcast::Sender<Change>,
}

/// What the runtime thread's futures share.
struct Inner {
    js: jetstream::Context,
    /// The KV bucket's stream, for direct gets and its last sequence.
    kv_stream: Stream,
    /// The KV bucket, for its watchers (scans and the live feed).
    kv: kv::Store,
    /// `$KV.<bucket>.`, the subject prefix of every key.
    kv_subject: String,
    blobs: object_store::ObjectStore,
    prefix: String,
    /// Named streams already created, with their server-side `max_msgs` (the largest
    /// bound asked for). Bounded by the set of stream names the region uses (a handful:
    /// queues, dead letters).
    streams: Mutex<HashMap<String, (Stream, u64)>>,
}

impl std::fmt::Debug for Inner {
    // The object store handle has no `Debug`; the names say which state this is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("prefix", &self.prefix)
            .field("kv_subject", &self.kv_subject)
            .finish_non_exhaustive()
    }
}

impl JetStreamBackend {
    /// Connects, creates the KV bucket and object store if missing, and starts the
    /// watcher that feeds [`Backend::subscribe`](crate::store::Backend::subscribe).
    ///
    /// # Errors
    /// [`StoreError::Backend`] naming the URL when the server is unreachable, has no
    /// JetStream, or the prefix is not `[A-Za-z0-9_-]{1,32}`.
    pub fn connect(config: &JetStreamConfig) -> Result<Self, StoreError> {
        if !valid_prefix(&config.prefix) {
            return Err(StoreError::Backend(format!(
                "store prefix {:?} must be 1-32 characters of [A-Za-z0-9_-]",
                config.prefix
            )));
        }
        let bridge = Bridge::start(config.timeout)?;
        let (url, prefix, timeout) = (config.url.clone(), config.prefix.clone(), config.timeout);
        let inner = bridge.call("connecting to NATS", async move {
            Inner::connect(&url, prefix, timeout).await
        })?;
        let inner = Arc::new(inner);
        let from = bridge.call("reading the KV revision", {
            let inner = Arc::clone(&inner);
            async move { inner.last_sequence().await }
        })? + 1;
        let live = broadcast::channel(LIVE_CHANNEL).0;
        bridge.spawn(feed(Arc::clone(&inner), from, live.clone()));
        Ok(Self {
            bridge,
            inner,
            live,
        })
    }

    /// Runs `op` over the shared state on the NATS runtime.
    fn call<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.bridge.call(what, op(Arc::clone(&self.inner)))
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

impl Inner {
    async fn connect(url: &str, prefix: String, timeout: Duration) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .connect(url)
            .await
            .map_err(|e| err(&format!("connecting to NATS at {url}"), e))?;
        let js = jetstream::new(client);
        let bucket = format!("{prefix}-kv");
        // The KV bucket's stream, made as the NATS KV clients make it (history 1, direct
        // get, rollups, no message deletes). Created directly rather than through
        // `create_key_value`, which first reads the account info in a shape older
        // servers (Debian's 2.9) do not send. Creating an existing identical stream is a
        // no-op, so two regions starting together agree.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&format!("creating KV bucket {bucket} at {url}"), e))?;
        let kv_stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| err("opening the KV stream", e))?;
        let kv = js
            .get_key_value(&bucket)
            .await
            .map_err(|e| err("opening the KV bucket", e))?;
        let blob_bucket = format!("{prefix}-blobs");
        let blobs = match js.get_object_store(&blob_bucket).await {
            Ok(b) => b,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: blob_bucket.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|e| err(&format!("creating object store {blob_bucket}"), e))?,
        };
        Ok(Self {
            js,
            kv_stream,
            kv,
            kv_subject: format!("$KV.{bucket}."),
            blobs,
            prefix,
            streams: Mutex::new(HashMap::new()),
        })
    }

    async fn last_sequence(&self) -> Result<u64, StoreError> {
        let info = self
            .kv_stream
            .get_info()
            .await
            .map_err(|e| err("reading the KV stream", e))?;
        Ok(info.state.last_sequence)
    }

    /// The last message of `subject`: `(sequence, Some(value))` for a put,
    /// `(sequence, None)` for a delete marker; `None` when the subject has none.
    async fn last(&self, subject: &str) -> Result<Option<(u64, Option<Vec<u8>>)>, StoreError> {
        match self.kv_stream.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Some((m.sequence, put_value(&m.headers, &m.payload)))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("reading a key", e)),
        }
    }

    /// The first message at or after `seq` on subjects matching `filter`.
    async fn next(
        &self,
        stream: &Stream,
        filter: &str,
        seq: u64,
    ) -> Result<Option<NatsMessage>, StoreError> {
        match stream.direct_get_next_for_subject(filter, Some(seq)).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("scanning a stream", e)),
        }
    }

    /// Publishes a put (`Some`) or delete marker (`None`) on `subject`, only if the
    /// subject's last sequence is `expected_last` when given; `Ok(None)` when it was not.
    async fn publish(
        &self,
        subject: String,
        value: Option<&[u8]>,
        expected_last: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let mut headers = HeaderMap::new();
        if let Some(seq) = expected_last {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                seq.to_string().as_str(),
            );
        }
        if value.is_none() {
            headers.insert(KV_OPERATION, "DEL");
        }
        let payload = value.map(|v| v.to_vec()).unwrap_or_default();
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| err("publishing", e))?
            .await;
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(err("publishing", e)),
        }
    }

    /// The KV stream's changes from sequence `from` (at most `max`), up to the last
    /// sequence when the scan starts: one ordered consumer (a KV watcher) streams them in
    /// batches instead of a round trip per message.
    async fn changes(&self, from: u64, max: usize) -> Result<Vec<Change>, StoreError> {
        let from = from.max(1);
        let last = self.last_sequence().await?;
        if last < from || max == 0 {
            return Ok(Vec::new());
        }
        let mut watch = self
            .kv
            .watch_all_from_revision(from)
            .await
            .map_err(|e| err("scanning the KV bucket", e))?;
        let mut out = Vec::new();
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| err("scanning the KV bucket", e))?;
            // `delta` is what the consumer still has pending: 0 at the stream's end. A
            // message at or past `last` always comes (KV messages are only superseded by
            // later ones), so the scan ends.
            let done = entry.revision >= last || entry.delta == 0;
            out.extend(change_of(&entry));
            if done || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    fn stream_subject(&self, name: &str) -> String {
        format!("{}.q.{}", self.prefix, escape(name, false))
    }
}

/// A KV watcher's entry as a change; `None` for a key this store did not write.
fn change_of(entry: &kv::Entry) -> Option<Change> {
    let (bucket, key) = parse_kv_key(&entry.key)?;
    let op = match entry.operation {
        kv::Operation::Put => Op::Put(entry.value.to_vec()),
        kv::Operation::Delete | kv::Operation::Purge => Op::Delete,
    };
    Some(Change {
        revision: entry.revision,
        bucket,
        key,
        op,
    })
}

/// The value of a KV message, `None` for a delete or purge marker.
fn put_value(headers: &HeaderMap, payload: &[u8]) -> Option<Vec<u8>> {
    match headers.get(KV_OPERATION).map(|v| v.as_str()) {
        Some("DEL" | "PURGE") => None,
        _ => Some(payload.to_vec()),
    }
}

/// Checks `expect` against the key's state; `Err(Conflict)` when it does not hold.
fn check(key: &str, expected: Expect, actual: Option<u64>) -> Result<(), StoreError> {
    let ok = match expected {
        Expect::Any => true,
        Expect::Absent => actual.is_none(),
        Expect::Revision(r) => actual == Some(r),
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

/// Feeds `live` from a KV watcher starting at revision `from`, re-creating the watcher
/// after a failure from the last revision it delivered; runs until the runtime stops.
async fn feed(inner: Arc<Inner>, mut from: u64, live: broadcast::Sender<Change>) {
    loop {
        match inner.kv.watch_all_from_revision(from).await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            warn!(error = %e, "KV watcher failed; re-creating it");
                            break;
                        }
                    };
                    from = entry.revision + 1;
                    if let Some(change) = change_of(&entry) {
                        // No receiver is fine: nobody is watching.
                        let _ = live.send(change);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot watch the KV bucket; retrying"),
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}
