//! The shared-state interface the `strata` host imports call: a key-value namespace per
//! (tenant, resource group), and the bounds that hold for every implementation.
//!
//! Owns the [`SharedState`] trait, its error type and the key, value and listing bounds.
//! Never stores anything itself: the region implements the trait over its durable store,
//! and a node without shared state gives guests none. The trait is synchronous (the
//! region's implementations block on disk or network I/O); the host imports call it on
//! tokio's blocking pool, never on the worker the guest runs on.

use std::sync::Arc;

/// Longest key, in bytes. Keys are UTF-8 and non-empty.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most keys one `list` returns; a guest pages by asking again with a longer prefix.
pub const MAX_LIST_KEYS: usize = 128;

/// Why a shared-state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The key is empty, over [`MAX_KEY_BYTES`] or not UTF-8.
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The value is over [`MAX_VALUE_BYTES`].
    #[error("value is {0} bytes, over the limit of {MAX_VALUE_BYTES}")]
    ValueTooLarge(usize),
    /// The durable store failed; nothing is known to have been written.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// The write would take the namespace past a quota; nothing was written.
    #[error("shared state quota {} ({}) exceeded", .0.quota, .0.limit)]
    QuotaExceeded(crate::model::QuotaBreach),
}

/// One key-value namespace (a tenant's resource group). Every call blocks until the
/// operation is durable (writes) or read.
///
/// Consistency: each key is linearizable (every write is one store transaction, and the
/// store serialises them); there are no multi-key transactions.
pub trait SharedState: Send + Sync + std::fmt::Debug {
    /// The value of `key`, or `None` when absent.
    ///
    /// # Errors
    /// [`StateError::BadKey`], [`StateError::Unavailable`].
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key` to `value` unconditionally.
    ///
    /// # Errors
    /// [`StateError::ValueTooLarge`], [`StateError::BadKey`], [`StateError::Unavailable`].
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StateError>;
    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    /// [`StateError::BadKey`], [`StateError::Unavailable`].
    fn delete(&self, key: &str) -> Result<bool, StateError>;
    /// Sets `key` to `new` only if it currently holds `expected` (`None`: only if absent);
    /// returns whether it swapped. Nothing is written when it did not.
    ///
    /// # Errors
    /// As [`SharedState::put`].
    fn cas(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, StateError>;
    /// At most `limit` keys starting with `prefix`, in byte order.
    ///
    /// # Errors
    /// [`StateError::Unavailable`].
    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StateError>;
}

/// The namespace an invocation's `strata` imports use.
pub type StateHandle = Arc<dyn SharedState>;

/// Checks a key against the bounds every implementation enforces.
///
/// # Errors
/// [`StateError::BadKey`] for an empty or over-long key.
pub fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        return Err(StateError::BadKey("empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StateError::BadKey(format!(
            "{} bytes, over the limit of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against [`MAX_VALUE_BYTES`].
///
/// # Errors
/// [`StateError::ValueTooLarge`].
pub fn check_value(value: &[u8]) -> Result<(), StateError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StateError::ValueTooLarge(value.len()));
    }
    Ok(())
}
