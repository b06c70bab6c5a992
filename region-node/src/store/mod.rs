//! Durable state of a region, behind one interface shaped after key-value-with-revisions
//! and a content-addressed blob store (the semantics NATS JetStream's KV and object store
//! offer), with the embedded redb backend.
//!
//! Owns the on-disk format; knows nothing about functions or tenants (that is
//! [`crate::registry`]). Every write is one ACID transaction; a crash never leaves a torn
//! record. Writes wait for an fsync, so async callers run them on the blocking pool; point
//! reads are served from redb's in-memory page cache once warm and are made inline on the
//! invoke path (a blocking-pool hop would cost more than the read).

mod redb_backend;

pub use redb_backend::Store;

/// A key-value bucket. Each is a separate keyspace (a redb table; a JetStream KV bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Tenant records by tenant id.
    Tenants,
    /// Tenant ids by token hash.
    Tokens,
    /// Function records by `tenant/name`.
    Functions,
    /// HTTP routes by route id, and the route table's revision under `~revision`.
    Routes,
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
    /// The backend failed (disk, corruption).
    #[error("store backend: {0}")]
    Backend(String),
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
