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
    /// Milliseconds between epoch ticks: the granularity of timeouts. At least 1.
    /// Default 1.
    pub epoch_tick_ms: u64,
    /// Most native stack a guest may use, in bytes; deeper recursion traps with a stack
    /// overflow. Default 512 KiB.
    pub max_wasm_stack_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_module_bytes: 32 << 20,
            max_stdout_bytes: 6 << 20,
            max_stderr_bytes: 256 << 10,
            epoch_tick_ms: 1,
            max_wasm_stack_bytes: 512 << 10,
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
        Ok(())
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
}
