//! The wasmtime engine every sandbox runs on: the pooling allocator's slots and how a
//! freed slot's memory is reset, epoch interruption, fuel, fiber stacks; and the
//! fingerprint that says which engines can exchange compiled code.
//!
//! Owns the engine's configuration; never links, compiles or runs anything.

use super::{SandboxConfig, SandboxError, limits};
use crate::model::MAX_MEMORY_MB;
use crate::wire::EngineFingerprint;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// The engine family in fingerprints; the hash after it carries the exact version.
const ENGINE_NAME: &str = "wasmtime-48";
/// The largest linear memory any instance slot can hold: the largest memory a function
/// may configure ([`crate::model::MAX_MEMORY_MB`]).
const MAX_SLOT_MEMORY_BYTES: usize = (MAX_MEMORY_MB as usize) << 20;
/// Stack a fiber keeps for host code beyond the guest's own `max_wasm_stack_bytes`: WASI
/// and the `strata` imports run on the guest's fiber.
const HOST_STACK_BYTES: usize = 1 << 20;

/// Bytes at the bottom of a pooled linear memory (and of a pooled table) reset in place
/// when its instance is freed, where the kernel can say which pages the instance touched
/// (Linux's `PAGEMAP_SCAN`, 6.7 and later): only the touched pages are copied back from
/// the module's image, and they stay mapped for the slot's next instance, instead of
/// `madvise` giving them back and the next instance faulting them in again (which costs a
/// system call, page faults and, on a busy multi-core node, TLB shoot-downs: the largest
/// part of a command module's per-request cost). Worst case this keeps
/// `max_instances` times this much resident.
const KEEP_RESIDENT_BYTES: usize = 256 << 10;
const TABLE_KEEP_RESIDENT_BYTES: usize = 16 << 10;

/// The engine for `cfg`: epoch interruption, fuel, Cranelift optimising for speed, the
/// pooling allocator sized by `max_instances`, copy-on-write memory images.
///
/// # Errors
/// [`SandboxError::Engine`] when wasmtime refuses the configuration.
pub(super) fn build(cfg: &SandboxConfig) -> Result<Engine, SandboxError> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_core_instances(cfg.max_instances)
        .total_memories(cfg.max_instances)
        .total_tables(cfg.max_instances)
        .max_memories_per_module(1)
        .max_tables_per_module(limits::MAX_TABLES as u32)
        .table_elements(limits::MAX_TABLE_ELEMENTS)
        .max_memory_size(MAX_SLOT_MEMORY_BYTES)
        // Every execution runs on a fiber stack of its own, taken from this pool; an
        // execution needs an instance slot too, so the stacks never run out first.
        .total_stacks(cfg.max_instances)
        // A component is several core instances (program, libc, adapters) sharing a
        // slot budget with modules; each of them still takes a core instance slot.
        .total_component_instances(cfg.max_instances)
        .max_core_instances_per_component(limits::MAX_COMPONENT_INSTANCES as u32)
        .max_memories_per_component(limits::MAX_COMPONENT_MEMORIES as u32)
        .max_tables_per_component(limits::MAX_COMPONENT_TABLES as u32);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // Without the scan, wasmtime would reset the whole kept range with `memset`
        // whether touched or not, which costs more than it saves.
        pooling
            .pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
    }
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        // Fuel costs a counter update per basic block; it is the only bound on CPU
        // that does not depend on the machine's speed, which some functions need.
        .consume_fuel(true)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(cfg.release.canonicalizes_nans())
        .max_wasm_stack(cfg.max_wasm_stack_bytes)
        // A fiber stack holds the guest's stack plus room for the host calls it makes.
        .async_stack_size(cfg.max_wasm_stack_bytes.saturating_add(HOST_STACK_BYTES))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        // Linear memory starts as a copy-on-write mapping of the module's data
        // segments instead of being copied in at every instantiation.
        .memory_init_cow(true);
    Engine::new(&config).map_err(|e| SandboxError::Engine(format!("engine configuration: {e:#}")))
}

/// `ENGINE_NAME/<hash>`, the hash being SHA-256 over wasmtime's compatibility hash (which
/// covers the exact wasmtime version, target, compiler flags, tunables and features).
pub(super) fn fingerprint(engine: &Engine) -> EngineFingerprint {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = hasher.0.finalize();
    EngineFingerprint(format!("{ENGINE_NAME}/{}", hex::encode(&digest[..16])))
}

/// A [`Hasher`] feeding SHA-256, so the fingerprint does not depend on std's hasher
/// (whose output may change between Rust releases).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}
