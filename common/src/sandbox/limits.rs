//! The per-invocation resource limiter: linear memory, tables and instance counts.
//!
//! Owns the memory bound of one store and the facts the outcome classification needs
//! (peak memory, whether a growth was denied). Never classifies outcomes itself and never
//! allocates: it only answers wasmtime's questions.

use wasmtime::ResourceLimiter;

/// Most elements any one table may hold.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 10_000;
/// Most tables one instance may define (also the pooling allocator's per-module bound).
pub(crate) const MAX_TABLES: usize = 4;
/// Every store (a command invocation, a warm reactor instance) holds exactly one instance.
const MAX_INSTANCES: usize = 1;
/// One linear memory, so that the memory bound is the bound on the whole guest.
const MAX_MEMORIES: usize = 1;

/// Bounds one store's linear memory to `limit` bytes and records what happened.
#[derive(Debug, Clone)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    peak: u64,
    /// The linear memory's current size, as last granted.
    current: u64,
    denied: bool,
}

impl MemoryLimiter {
    /// A limiter allowing at most `limit` bytes of linear memory.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            peak: 0,
            current: 0,
            denied: false,
        }
    }

    /// Starts a new invocation in a reused instance: the peak restarts at the memory the
    /// instance already has, and earlier denials are forgotten.
    pub(crate) fn start_invocation(&mut self) {
        self.peak = self.current;
        self.denied = false;
    }

    /// The largest linear-memory size granted so far, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// Whether a memory growth (or the initial memory) was refused for exceeding the limit.
    pub(crate) fn denied(&self) -> bool {
        self.denied
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired_bytes = u64::try_from(desired).unwrap_or(u64::MAX);
        if desired_bytes > self.limit {
            self.denied = true;
            return Ok(false);
        }
        // Growth past the module's own maximum fails in wasmtime regardless; only count
        // sizes that will actually exist.
        if maximum.is_none_or(|max| desired <= max) {
            self.peak = self.peak.max(desired_bytes);
            self.current = desired_bytes;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_limit_is_denied_and_remembered() {
        let mut l = MemoryLimiter::new(2 << 20);
        assert!(matches!(l.memory_growing(0, 1 << 20, None), Ok(true)));
        assert!(matches!(
            l.memory_growing(1 << 20, 3 << 20, None),
            Ok(false)
        ));
        assert!(l.denied());
        assert_eq!(l.peak(), 1 << 20);
    }

    #[test]
    fn growth_past_module_maximum_does_not_count_as_peak() {
        let mut l = MemoryLimiter::new(8 << 20);
        assert!(matches!(
            l.memory_growing(0, 2 << 20, Some(1 << 20)),
            Ok(true)
        ));
        assert!(!l.denied());
        assert_eq!(l.peak(), 0);
    }
}
