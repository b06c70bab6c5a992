//! Durable state of a region, behind one interface shaped after NATS JetStream's
//! semantics: key-value buckets with store-wide revisions, conditional writes and a watch
//! from a revision; a content-addressed blob store; and durable streams (append, read from
//! a sequence, ack/delete). Two backends implement [`Backend`]: the embedded redb file
//! ([`RedbBackend`]) and NATS JetStream ([`JetStreamBackend`], shared by every region on
//! the same server); callers do not change, and both pass the conformance suite
//! (docs/architecture.md maps each operation).
//!
//! Owns the on-disk format; knows nothing about functions or tenants (that is
//! [`crate::registry`]). Every write is one ACID transaction; a crash never leaves a torn
//! record. Writes wait for an fsync, so async callers run them on the blocking pool; point
//! reads are served from redb's in-memory page cache once warm and are made inline on the
//! invoke path (a blocking-pool hop would cost more than the read).

#[cfg(test)]
mod conformance;
pub mod jetstream;
mod redb_backend;
mod watch;

pub use jetstream::{JetStreamBackend, JetStreamConfig};
pub use redb_backend::RedbBackend;
pub use watch::{Watch, WatchEvent};

use common::model::ArtifactDigest;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;

/// A key-value bucket. Each is a separate keyspace (a redb table; a JetStream KV bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Tenant records by tenant id.
    Tenants,
    /// Tenant ids by token hash.
    Tokens,
    /// Function records (`$LATEST`) by `tenant/name`.
    Functions,
    /// Published versions by `tenant/name/NNNNNNNNNN` (zero-padded, so keys sort by number).
    Versions,
    /// Aliases by `tenant/name/alias`.
    Aliases,
    /// HTTP routes (owned by the routes API).
    Routes,
    /// Functions' shared state by `tenant/group/key` (owned by [`crate::state`]).
    State,
    /// Runtime canary verdicts by `tenant/name` (owned by [`crate::canary`]).
    Canary,
    /// Operator-set tenant limit overrides by tenant id (owned by [`crate::limits`]).
    Limits,
    /// Tenant TLS certificates by host (owned by [`crate::certs`]; pushed to POPs).
    Certificates,
    /// Right-size statistics (peak samples, learned sizes) by `tenant/name` (owned by
    /// [`crate::sizes`]).
    Sizes,
    /// Tenants' concurrency limits as divided among regions sharing the store
    /// (`policy::split::Allocation`), by tenant id (owned by [`crate::limits`]).
    Shares,
}

impl Bucket {
    /// Every bucket, in a fixed order.
    pub const ALL: [Bucket; 12] = [
        Bucket::Tenants,
        Bucket::Tokens,
        Bucket::Functions,
        Bucket::Versions,
        Bucket::Aliases,
        Bucket::Routes,
        Bucket::State,
        Bucket::Canary,
        Bucket::Limits,
        Bucket::Certificates,
        Bucket::Sizes,
        Bucket::Shares,
    ];

    /// A stable one-byte code, used in the change history.
    pub fn code(self) -> u8 {
        match self {
            Bucket::Tenants => 0,
            Bucket::Tokens => 1,
            Bucket::Functions => 2,
            Bucket::Versions => 3,
            Bucket::Aliases => 4,
            Bucket::Routes => 5,
            Bucket::State => 6,
            Bucket::Canary => 7,
            Bucket::Limits => 8,
            Bucket::Certificates => 9,
            Bucket::Sizes => 10,
            Bucket::Shares => 11,
        }
    }

    /// The bucket with `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.code() == code)
    }
}

/// A stored value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The store-wide revision of the write; strictly increasing across all buckets.
    pub revision: u64,
}

/// The precondition of a conditional write (JetStream: create / update with last revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write unconditionally.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this revision.
    Revision(u64),
}

/// What a change did to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The key now holds these bytes.
    Put(Vec<u8>),
    /// The key was deleted (JetStream: a delete marker).
    Delete,
}

/// One write, as the watch and the history report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The store-wide revision of the write.
    pub revision: u64,
    /// The bucket written.
    pub bucket: Bucket,
    /// The key written.
    pub key: String,
    /// What was written.
    pub op: Op,
}

/// Changes after a revision, as far as the bounded history still holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// The changes after the asked revision, oldest first, at most the asked number.
    Changes(Vec<Change>),
    /// Changes after the asked revision were compacted away: read a [`Snapshot`] instead.
    Compacted,
}

/// Every entry of some buckets at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's revision when the snapshot was read.
    pub revision: u64,
    /// The entries, by bucket then key.
    pub entries: Vec<(Bucket, String, Entry)>,
}

/// One message of a durable stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMessage {
    /// Its sequence number in the stream: 1, 2, ... never reused.
    pub seq: u64,
    /// The bytes appended.
    pub value: Vec<u8>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write's precondition did not hold.
    #[error("conflict: {key} is at revision {actual:?}, expected {expected:?}")]
    Conflict {
        /// The key written.
        key: String,
        /// The precondition.
        expected: Expect,
        /// The key's revision when the write was attempted (`None`: absent).
        actual: Option<u64>,
    },
    /// A stream holds its maximum number of messages; nothing was appended (JetStream:
    /// discard policy `new`). The caller refuses the work (429/503) or retries later.
    #[error("stream {stream} is full ({max} messages)")]
    StreamFull {
        /// The stream.
        stream: String,
        /// Its bound.
        max: u64,
    },
    /// The backend failed (disk, corruption).
    #[error("store backend: {0}")]
    Backend(String),
}

/// A storage engine. Every method is blocking; see the module docs for which callers may
/// call them inline.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `key` in `bucket`, with its revision.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Writes `value` at `key` if `expect` holds; returns the new revision.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when `expect` does not hold; nothing is written.
    fn put(
        &self,
        bucket: Bucket,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError>;
    /// Deletes `key` if `expect` holds; returns the revision of the delete, `None` when the
    /// key did not exist (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when `expect` does not hold; nothing is deleted.
    fn delete(&self, bucket: Bucket, key: &str, expect: Expect) -> Result<Option<u64>, StoreError>;
    /// Every entry of `bucket` whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError>;
    /// At most `max` entries of `bucket` whose key starts with `prefix` and sorts after
    /// `after`, in key order: one page of [`Backend::list`]. The default reads the whole
    /// listing and keeps the page; a backend with ordered keys reads only the page.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn list_page(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: &str,
        max: usize,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        Ok(self
            .list(bucket, prefix)?
            .into_iter()
            .filter(|(k, _)| k.as_str() > after)
            .take(max)
            .collect())
    }
    /// The revision of the last write (0 before any).
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn revision(&self) -> Result<u64, StoreError>;
    /// At most `max` changes with a revision above `since`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn history(&self, since: u64, max: usize) -> Result<History, StoreError>;
    /// Every entry of `buckets`, read at one revision.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn snapshot(&self, buckets: &[Bucket]) -> Result<Snapshot, StoreError>;
    /// Live changes from now on. A receiver that falls behind the channel's bound gets
    /// `Lagged` and re-reads the history from its last revision.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
    /// Stores `bytes` under their digest (idempotent: a blob is immutable).
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn put_blob(&self, bytes: &[u8]) -> Result<ArtifactDigest, StoreError>;
    /// The blob with `digest`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn get_blob(&self, digest: &ArtifactDigest) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes the blob with `digest`; returns whether it was stored. The caller knows
    /// nothing refers to it any more ([`crate::registry`] checks).
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn delete_blob(&self, digest: &ArtifactDigest) -> Result<bool, StoreError>;
    /// Appends `value` to `stream` unless it already holds `max_messages`; returns its
    /// sequence number. The bound is this append's: callers may use different bounds on
    /// one stream, and a smaller bound than the stream holds only refuses this append
    /// (it never removes a message).
    ///
    /// # Errors
    /// [`StoreError::StreamFull`] when the stream is at its bound.
    fn append(&self, stream: &str, value: &[u8], max_messages: u64) -> Result<u64, StoreError>;
    /// At most `max` messages of `stream` with a sequence at or above `from`, in order.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn read(&self, stream: &str, from: u64, max: usize) -> Result<Vec<StreamMessage>, StoreError>;
    /// Removes message `seq` of `stream` (an ack of a work-queue message); returns whether
    /// it existed.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on a backend failure.
    fn ack(&self, stream: &str, seq: u64) -> Result<bool, StoreError>;
}

/// The region's durable store: a cheap-to-clone handle on a [`Backend`].
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Opens (creating if needed) the embedded redb store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::with_backend(RedbBackend::open(
            path,
            redb_backend::DEFAULT_HISTORY,
        )?))
    }

    /// A store over any backend.
    pub fn with_backend(backend: impl Backend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// See [`Backend::get`].
    ///
    /// # Errors
    /// As [`Backend::get`].
    pub fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, StoreError> {
        self.backend.get(bucket, key)
    }

    /// See [`Backend::put`].
    ///
    /// # Errors
    /// As [`Backend::put`].
    pub fn put(
        &self,
        bucket: Bucket,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<u64, StoreError> {
        self.backend.put(bucket, key, value, expect)
    }

    /// Deletes `key` if `expect` holds; returns whether it existed.
    ///
    /// # Errors
    /// As [`Backend::delete`].
    pub fn delete(&self, bucket: Bucket, key: &str, expect: Expect) -> Result<bool, StoreError> {
        Ok(self.backend.delete(bucket, key, expect)?.is_some())
    }

    /// See [`Backend::list`].
    ///
    /// # Errors
    /// As [`Backend::list`].
    pub fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        self.backend.list(bucket, prefix)
    }

    /// See [`Backend::list_page`].
    ///
    /// # Errors
    /// As [`Backend::list_page`].
    pub fn list_page(
        &self,
        bucket: Bucket,
        prefix: &str,
        after: &str,
        max: usize,
    ) -> Result<Vec<(String, Entry)>, StoreError> {
        self.backend.list_page(bucket, prefix, after, max)
    }

    /// See [`Backend::revision`].
    ///
    /// # Errors
    /// As [`Backend::revision`].
    pub fn revision(&self) -> Result<u64, StoreError> {
        self.backend.revision()
    }

    /// See [`Backend::snapshot`].
    ///
    /// # Errors
    /// As [`Backend::snapshot`].
    pub fn snapshot(&self, buckets: &[Bucket]) -> Result<Snapshot, StoreError> {
        self.backend.snapshot(buckets)
    }

    /// Changes to `buckets` after revision `since`: first the history (or a snapshot when
    /// it was compacted), then live changes as they commit.
    pub fn watch(&self, buckets: &[Bucket], since: u64) -> Watch {
        Watch::new(Arc::clone(&self.backend), buckets, since)
    }

    /// See [`Backend::put_blob`].
    ///
    /// # Errors
    /// As [`Backend::put_blob`].
    pub fn put_blob(&self, bytes: &[u8]) -> Result<ArtifactDigest, StoreError> {
        self.backend.put_blob(bytes)
    }

    /// See [`Backend::get_blob`].
    ///
    /// # Errors
    /// As [`Backend::get_blob`].
    pub fn get_blob(&self, digest: &ArtifactDigest) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.get_blob(digest)
    }

    /// See [`Backend::delete_blob`].
    ///
    /// # Errors
    /// As [`Backend::delete_blob`].
    pub fn delete_blob(&self, digest: &ArtifactDigest) -> Result<bool, StoreError> {
        self.backend.delete_blob(digest)
    }

    /// See [`Backend::append`].
    ///
    /// # Errors
    /// As [`Backend::append`].
    pub fn append(&self, stream: &str, value: &[u8], max_messages: u64) -> Result<u64, StoreError> {
        self.backend.append(stream, value, max_messages)
    }

    /// See [`Backend::read`].
    ///
    /// # Errors
    /// As [`Backend::read`].
    pub fn read(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<StreamMessage>, StoreError> {
        self.backend.read(stream, from, max)
    }

    /// See [`Backend::ack`].
    ///
    /// # Errors
    /// As [`Backend::ack`].
    pub fn ack(&self, stream: &str, seq: u64) -> Result<bool, StoreError> {
        self.backend.ack(stream, seq)
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

macro_rules! backend_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Backend(e.to_string())
            }
        }
    )*};
}
backend_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
