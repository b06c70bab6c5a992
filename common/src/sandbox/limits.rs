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
/// Every store of a core module (a command invocation, a warm reactor instance) holds
/// exactly one instance.
const MAX_INSTANCES: usize = 1;
/// One linear memory, so that the memory bound is the bound on the whole guest.
const MAX_MEMORIES: usize = 1;
/// Most core instances one component may create (also the pooling allocator's bound per
/// component): a toolchain's component is its program, libc, adapters and shims.
pub(crate) const MAX_COMPONENT_INSTANCES: usize = 64;
/// Most linear memories one component may define; the memory bound is on their sum.
pub(crate) const MAX_COMPONENT_MEMORIES: usize = 16;
/// Most tables one component may define.
pub(crate) const MAX_COMPONENT_TABLES: usize = 64;

/// Bounds one store's linear memory (the sum over its memories) to `limit` bytes and
/// records what happened.
#[derive(Debug, Clone)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    peak: u64,
    /// The linear memories' current total size, as last granted.
    current: u64,
    denied: bool,
    /// Most instances, memories and tables the store may hold.
    counts: (usize, usize, usize),
}

impl MemoryLimiter {
    /// A limiter for a core module's store: one instance, one memory of at most `limit`
    /// bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            peak: 0,
            current: 0,
            denied: false,
            counts: (MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES),
        }
    }

    /// A limiter for a component's store: its core instances, memories and tables within
    /// the component bounds, and their memories together at most `limit` bytes.
    pub(crate) fn for_component(limit: u64) -> Self {
        Self {
            counts: (
                MAX_COMPONENT_INSTANCES,
                MAX_COMPONENT_MEMORIES,
                MAX_COMPONENT_TABLES,
            ),
            ..Self::new(limit)
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
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The store's total after this growth: the other memories plus this one's new size.
        let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let total = self
            .current
            .saturating_sub(bytes(current))
            .saturating_add(bytes(desired));
        if total > self.limit {
            self.denied = true;
            return Ok(false);
        }
        // Growth past the module's own maximum fails in wasmtime regardless; only count
        // sizes that will actually exist.
        if maximum.is_none_or(|max| desired <= max) {
            self.peak = self.peak.max(total);
            self.current = total;
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
        self.counts.0
    }

    fn tables(&self) -> usize {
        self.counts.2
    }

    fn memories(&self) -> usize {
        self.counts.1
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
    fn a_components_memories_count_together() {
        let mut l = MemoryLimiter::for_component(3 << 20);
        assert!(matches!(l.memory_growing(0, 2 << 20, None), Ok(true)));
        // A second memory of 1 MiB fits; growing it to 2 MiB would make 4 MiB in all.
        assert!(matches!(l.memory_growing(0, 1 << 20, None), Ok(true)));
        assert_eq!(l.peak(), 3 << 20);
        assert!(matches!(
            l.memory_growing(1 << 20, 2 << 20, None),
            Ok(false)
        ));
        assert!(l.denied());
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
