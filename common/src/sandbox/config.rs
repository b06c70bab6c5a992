//! The sandbox's configuration: the limits that hold for every module and invocation.
//!
//! Owns the defaults and their range checks; never touches wasmtime. Per-invocation limits
//! (memory, timeout) come with each [`super::Invocation`], not from here.

use super::SandboxError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Limits that hold for every module and every invocation of one [`super::Sandbox`].
///
/// Unknown fields are refused. Every field has a default, so an empty table is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Largest module accepted by [`super::Sandbox::compile`], in bytes; a bigger one is
    /// refused with [`super::ModuleError::TooLarge`]. Default 32 MiB.
    pub max_module_bytes: usize,
    /// Most bytes a guest may write to stdout in one invocation. Writing more fails the
    /// invocation as `Unhandled` ("stdout over N bytes"); output is never silently
    /// truncated. Default 6 MiB.
    pub max_stdout_bytes: usize,
    /// Most bytes a guest may write to stderr in one invocation, with the same rule as
    /// stdout. Default 256 KiB.
    pub max_stderr_bytes: usize,
    /// Milliseconds between epoch ticks: the granularity of timeouts, and how often a
    /// running guest yields its tokio worker to other tasks (once it has run for a whole
    /// tick: the first check is two ticks after the call starts). At least 1. Default 1.
    pub epoch_tick_ms: u64,
    /// Most native stack a guest may use, in bytes; deeper recursion traps with a stack
    /// overflow. Each running execution's fiber stack is this plus 1 MiB for host calls.
    /// Default 512 KiB.
    pub max_wasm_stack_bytes: usize,
    /// Most imports a module may declare; more is refused at compile time with
    /// [`super::ModuleError::TooManyImports`]. Default 256.
    pub max_imports: usize,
    /// Instance slots of the pooling allocator: the most instances alive at once, warm
    /// reactor instances included. An instantiation beyond it fails the invocation with
    /// [`super::SandboxError::Capacity`] (a 503 at the edge). Each slot reserves address
    /// space (not memory) for the largest linear memory. Also the number of fiber stacks
    /// executions run on (one per running execution, which also holds an instance).
    /// Default 512.
    pub max_instances: u32,
    /// Most warm instances kept per reactor function version. Default 4.
    pub warm_pool_size: usize,
    /// Most reactor function versions with a warm pool; when a new one needs a pool, the
    /// least recently used pool is dropped with its instances. `max_warm_pools *
    /// warm_pool_size` must stay below `max_instances` so that warm instances never take
    /// every slot. Default 64.
    pub max_warm_pools: usize,
    /// How long an idle warm instance is kept, in milliseconds. Default 60 000.
    pub warm_idle_ms: u64,
    /// A command run that starts after no command run started for this long, in
    /// microseconds, has its module's next instance made ahead once it is done (when no
    /// other command run is in flight): an idle node then answers that module's next
    /// request without instantiating on its path. A busy node makes none (it would only
    /// move the work, at a cost). 0 makes one after every lone run. Default 1 000.
    pub make_ahead_after_idle_us: u64,
    /// The runtime release this sandbox is (`current` or `next`): which `strata` imports
    /// it offers and how it compiles. Default `current`.
    pub release: super::Release,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_module_bytes: 32 << 20,
            max_stdout_bytes: 6 << 20,
            max_stderr_bytes: 256 << 10,
            epoch_tick_ms: 1,
            max_wasm_stack_bytes: 512 << 10,
            max_imports: 256,
            max_instances: 512,
            warm_pool_size: 4,
            max_warm_pools: 64,
            warm_idle_ms: 60_000,
            make_ahead_after_idle_us: 1_000,
            release: super::Release::Current,
        }
    }
}

impl SandboxConfig {
    /// Checks every field against its range.
    ///
    /// # Errors
    /// [`SandboxError::Config`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.epoch_tick_ms == 0 {
            return Err(SandboxError::Config(
                "epoch_tick_ms must be at least 1".into(),
            ));
        }
        if self.max_wasm_stack_bytes == 0 {
            return Err(SandboxError::Config(
                "max_wasm_stack_bytes must be at least 1".into(),
            ));
        }
        if self.max_instances == 0 {
            return Err(SandboxError::Config(
                "max_instances must be at least 1".into(),
            ));
        }
        let warm = self.max_warm_pools.saturating_mul(self.warm_pool_size);
        if warm >= self.max_instances as usize {
            return Err(SandboxError::Config(format!(
                "max_warm_pools * warm_pool_size ({warm}) must be below max_instances ({})",
                self.max_instances
            )));
        }
        Ok(())
    }

    /// How long an idle warm instance is kept.
    pub fn warm_idle(&self) -> Duration {
        Duration::from_millis(self.warm_idle_ms)
    }

    /// The time between epoch ticks.
    pub fn epoch_tick(&self) -> Duration {
        Duration::from_millis(self.epoch_tick_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults_and_unknown_fields_are_refused() {
        let c: SandboxConfig = serde_json::from_str("{}").expect("empty config");
        assert_eq!(c, SandboxConfig::default());
        assert_eq!(c.validate(), Ok(()));
        let r: Result<SandboxConfig, _> = serde_json::from_str(r#"{"max_stdout": 1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn zero_epoch_tick_is_refused() {
        let c = SandboxConfig {
            epoch_tick_ms: 0,
            ..SandboxConfig::default()
        };
        assert!(matches!(c.validate(), Err(SandboxError::Config(_))));
    }

    #[test]
    fn warm_pools_that_could_take_every_instance_slot_are_refused() {
        let c = SandboxConfig {
            max_instances: 8,
            warm_pool_size: 4,
            max_warm_pools: 2,
            ..SandboxConfig::default()
        };
        assert!(matches!(c.validate(), Err(SandboxError::Config(_))));
    }
}
