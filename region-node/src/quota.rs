//! Per-tenant quotas of a region (`[quotas]`): their configured limits and the checks that
//! refuse with [`ApiError::quota_exceeded`] naming the quota. Never performs I/O: callers
//! count what they hold and ask here whether one more fits.

use common::model::{ApiError, FunctionConfig, Quota};
use serde::Deserialize;
use std::time::Duration;

/// When a refusal for queued bytes tells the caller to retry.
pub const DRAIN_RETRY: Duration = Duration::from_secs(1);

/// The `[quotas]` section: limits per tenant (and, for queued bytes, per region too).
/// Log retention is bounded per function by `[function_logs]`, so a tenant's log lines are
/// bounded by `functions` times `function_logs.lines_per_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Bytes of one function's `env`, names plus values. Default 16 KiB. Refused with 413.
    pub env_bytes: u64,
    /// Functions per tenant. Default 1000. Refused with 409.
    pub functions: u64,
    /// Published versions per function. Default 1000. Refused with 409.
    pub versions_per_function: u64,
    /// HTTP routes per tenant. Default 1000. Refused with 409.
    pub routes: u64,
    /// Shared-state keys per tenant resource group. Default 100 000. A guest's write is
    /// refused with the host call's `quota` status.
    pub state_keys: u64,
    /// Shared-state bytes (keys plus values) per tenant resource group. Default 64 MiB.
    pub state_bytes: u64,
    /// Payload bytes of one tenant's queued async events. Default 64 MiB. Refused with
    /// 429 and `retry-after` (the queue drains).
    pub queued_event_bytes: u64,
    /// Payload bytes of every tenant's queued async events. Default 1 GiB. As above.
    pub region_queued_event_bytes: u64,
    /// Payload bytes of one tenant's dead letters. Default 64 MiB. A synchronous dead
    /// letter over it is refused with 409; an async event that fails finally stays queued
    /// (and is retried into the DLQ every second) until the tenant purges or replays.
    pub dead_letter_bytes: u64,
    /// Payload bytes of every tenant's dead letters. Default 1 GiB. As above.
    pub region_dead_letter_bytes: u64,
    /// TLS certificates per tenant. Default 100. Refused with 409.
    pub certificates: u64,
    /// Bytes of one uploaded certificate, chain plus key PEM. Default 64 KiB. Refused with
    /// 413 (a request body past twice this is not read further).
    pub certificate_bytes: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            env_bytes: 16 << 10,
            functions: 1000,
            versions_per_function: 1000,
            routes: 1000,
            state_keys: 100_000,
            state_bytes: 64 << 20,
            queued_event_bytes: 64 << 20,
            region_queued_event_bytes: 1 << 30,
            dead_letter_bytes: 64 << 20,
            region_dead_letter_bytes: 1 << 30,
            certificates: 100,
            certificate_bytes: 64 << 10,
        }
    }
}

/// Refuses when `used` plus `more` passes `limit` of `quota`.
///
/// # Errors
/// [`ApiError::quota_exceeded`] naming `quota`.
pub fn check(quota: Quota, limit: u64, used: u64, more: u64, what: &str) -> Result<(), ApiError> {
    if used.saturating_add(more) > limit {
        return Err(ApiError::quota_exceeded(
            quota,
            limit,
            format!("{what}: {used} in use, {more} more asked"),
            DRAIN_RETRY,
        ));
    }
    Ok(())
}

impl QuotaConfig {
    /// Refuses a function config whose `env` is over [`Self::env_bytes`].
    ///
    /// # Errors
    /// 413 `quota_exceeded` (`env_bytes`).
    pub fn check_env(&self, config: &FunctionConfig) -> Result<(), ApiError> {
        let bytes: usize = config.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        check(
            Quota::EnvBytes,
            self.env_bytes,
            0,
            bytes as u64,
            "env bytes (names plus values)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::model::ErrorKind;

    #[test]
    fn check_refuses_past_the_limit_and_names_the_quota() {
        assert!(check(Quota::Functions, 2, 1, 1, "functions").is_ok());
        let e = check(Quota::Functions, 2, 2, 1, "functions").expect_err("over");
        assert!(
            matches!(e.kind, ErrorKind::QuotaExceeded(b) if b.limit == 2 && b.quota == Quota::Functions)
        );
    }

    #[test]
    fn a_large_env_is_refused() {
        let q = QuotaConfig {
            env_bytes: 8,
            ..QuotaConfig::default()
        };
        let mut c = FunctionConfig::default();
        c.env.insert("K".into(), "1234567".into());
        assert!(q.check_env(&c).is_ok());
        c.env.insert("L".into(), "x".into());
        let e = q.check_env(&c).expect_err("over");
        assert_eq!(e.quota().map(|b| b.quota), Some(Quota::EnvBytes));
    }
}
