//! A function's configuration (DESIGN §5), validated once on write.

use super::FunctionName;
use crate::policy::outbound::OutboundRules;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which guest ABI a module implements (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Abi {
    /// `_start` runs once per invocation in a fresh instance.
    #[default]
    Command,
    /// `strata_handle` runs per invocation in a reused instance.
    Reactor,
    /// A component exporting `wasi:http/incoming-handler` (the `wasi:http/proxy` world,
    /// 0.2.x): the device's request and the guest's response map one to one.
    Http,
}

/// Where a function may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The POP decides by popularity and capacity.
    #[default]
    Auto,
    /// Run at the edge whenever the POP has capacity.
    Edge,
    /// Always forward to a region.
    Region,
}

/// Largest memory a function may configure, in MiB, before per-tenant maxima apply.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Longest timeout a function may configure, in milliseconds (15 minutes).
pub const MAX_TIMEOUT_MS: u32 = 900_000;
/// Most fuel a function may configure (about that many wasm instructions per invocation).
pub const MAX_FUEL: u64 = 1 << 50;
/// Most environment variables a function may configure.
pub const MAX_ENV_VARS: usize = 64;
/// Most retries of an async invocation.
pub const MAX_RETRIES: u32 = 10;
/// Smallest `max_event_age_s`.
pub const MIN_EVENT_AGE_S: u32 = 60;
/// Largest (and default) `max_event_age_s`: 6 hours.
pub const MAX_EVENT_AGE_S: u32 = 21_600;

/// A function's configuration. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionConfig {
    /// Memory limit per instance in MiB. Default 128, at most [`MAX_MEMORY_MB`].
    pub memory_mb: u32,
    /// Wall-clock limit per invocation in milliseconds. Default 3000.
    pub timeout_ms: u32,
    /// Guest ABI. Default `command`.
    pub abi: Abi,
    /// Where the function may run. Default `auto`.
    pub placement: Placement,
    /// Reserved concurrency (carved out of the tenant's). Default none.
    pub max_concurrency: Option<u32>,
    /// Environment variables given to every invocation. Default empty.
    pub env: BTreeMap<String, String>,
    /// A deterministic CPU bound per invocation in wasmtime fuel units (about one per wasm
    /// instruction), in `1..=MAX_FUEL`; running out fails the invocation as a timeout.
    /// Default none: only `timeout_ms` bounds it.
    pub fuel: Option<u64>,
    /// The shared-state group the function's `strata` host imports read and write
    /// (`[a-z0-9][a-z0-9-_]{0,63}`). Default none: no shared state.
    pub resource_group: Option<String>,
    /// A function of the same tenant run with the failure record when an async invocation
    /// finally fails. Default none.
    pub on_failure: Option<FunctionName>,
    /// Retries of a failed async invocation, `0..=MAX_RETRIES`. Default 2.
    pub retries: u32,
    /// Oldest an async event may get before it is sent to the dead-letter queue instead of
    /// run (checked before every attempt, the first included; `on_failure` still runs),
    /// in seconds from acceptance, `MIN_EVENT_AGE_S..=MAX_EVENT_AGE_S`. Default 21 600
    /// (6 hours).
    pub max_event_age_s: u32,
    /// Pins the function to a runtime release (`[a-z0-9][a-z0-9.-_]{0,63}`). Default none:
    /// the node's current runtime, canaried onto the next.
    pub runtime: Option<String>,
    /// A function of the same tenant run with the result when an async invocation
    /// succeeds (its payload is the success record). Default none.
    #[serde(default)]
    pub on_success: Option<FunctionName>,
    /// Also keep failed synchronous invocations that ran at the region in the dead-letter
    /// queue. Default false: only async events are dead-lettered.
    #[serde(default)]
    pub dead_letter_sync: bool,
    /// A function of the same tenant run with the owner's notification (a JSON record with
    /// the canary's counts) when the runtime canary pins this function to the current
    /// runtime release; queued in the region's durable async queue, like `on_failure`.
    /// Default none.
    pub on_runtime_incompatible: Option<FunctionName>,
    /// A function of the same tenant run with the owner's notification (a JSON record with
    /// the rollout's counts) when an alias of this function with `auto_rollback` is rolled
    /// back to its older version; queued like `on_runtime_incompatible`. Default none.
    #[serde(default)]
    pub on_rollback: Option<FunctionName>,
    /// Retry an out-of-memory failure once at double the memory (bounded by
    /// `max_memory_mb`) and keep the size that worked for the next invocations, decaying
    /// back when peak usage falls. Default false.
    pub auto_resize: bool,
    /// The most memory one invocation may get, in MiB, through `x-strata-memory-mb` or
    /// `auto_resize`; at least `memory_mb`. Default: `memory_mb`.
    pub max_memory_mb: Option<u32>,
    /// Requests per second this function accepts (bursts up to the same number); more get
    /// 429 with `retry-after`. Enforced by each POP for what it runs and by the region for
    /// what it runs (not split between them). Default none: unlimited.
    #[serde(default)]
    pub rate_limit_rps: Option<u32>,
    /// Outbound HTTP from an `http`-ABI guest (`wasi:http/outgoing-handler`): the
    /// destinations it may reach, as Spin names them (`scheme://host[:port]`, with `*`
    /// for any scheme, host or port and `*.suffix` for the hosts under a domain; at most
    /// 32), and the bounds per invocation. Default off.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Keep an `http`-ABI component's instance warm after a request and hand it the next
    /// request of the same function version (as Spin's and wasmtime serve's instance reuse
    /// do), instead of a fresh instance per request: the guest's globals and linear memory
    /// persist between requests; everything per request (WASI context, resources, limits)
    /// is reset, and an instance that failed or kept a resource is dropped
    /// (docs/guest-abi.md). Only with `abi = "http"`. Default false.
    #[serde(default)]
    pub reuse_instances: bool,
}

/// Outbound HTTP for `http`-ABI guests (`FunctionConfig::outbound`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// The destinations allowed; empty (the default) refuses every request.
    pub allowed_outbound_hosts: Vec<String>,
    /// Most requests one invocation may send, `1..=1024`. Default 16.
    pub max_requests: u32,
    /// Most requests one invocation may have in flight at once, `1..=64`. Default 4.
    pub max_concurrent: u32,
    /// Longest one request may take to connect, and then to answer, in milliseconds
    /// (never past the invocation's deadline), `1..=MAX_TIMEOUT_MS`. Default 5000.
    pub timeout_ms: u32,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allowed_outbound_hosts: Vec::new(),
            max_requests: 16,
            max_concurrent: 4,
            timeout_ms: 5000,
        }
    }
}

impl OutboundConfig {
    /// The rules the sandbox applies; `None` when outbound HTTP is off.
    ///
    /// # Errors
    /// [`ConfigError::Outbound`] for an entry that is not a destination pattern, or a
    /// bound out of range.
    pub fn rules(&self) -> Result<Option<OutboundRules>, ConfigError> {
        if !(1..=1024).contains(&self.max_requests)
            || !(1..=64).contains(&self.max_concurrent)
            || !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms)
        {
            return Err(ConfigError::Outbound(
                "max_requests must be 1..=1024, max_concurrent 1..=64 and timeout_ms \
                 1..=900000"
                    .into(),
            ));
        }
        if self.allowed_outbound_hosts.is_empty() {
            return Ok(None);
        }
        OutboundRules::new(
            &self.allowed_outbound_hosts,
            self.max_requests,
            self.max_concurrent,
            Duration::from_millis(u64::from(self.timeout_ms)),
        )
        .map(Some)
        .map_err(|e| ConfigError::Outbound(e.to_string()))
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            timeout_ms: 3000,
            abi: Abi::Command,
            placement: Placement::Auto,
            max_concurrency: None,
            env: BTreeMap::new(),
            fuel: None,
            resource_group: None,
            on_failure: None,
            retries: 2,
            max_event_age_s: MAX_EVENT_AGE_S,
            runtime: None,
            on_success: None,
            dead_letter_sync: false,
            on_runtime_incompatible: None,
            on_rollback: None,
            auto_resize: false,
            max_memory_mb: None,
            rate_limit_rps: None,
            outbound: OutboundConfig::default(),
            reuse_instances: false,
        }
    }
}

fn is_label(s: &str, extra: &[char]) -> bool {
    s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `memory_mb` outside `1..=max`.
    #[error("memory_mb must be between 1 and {max}, got {got}")]
    Memory {
        /// The refused value.
        got: u32,
        /// The largest allowed value.
        max: u32,
    },
    /// `max_memory_mb` below `memory_mb` or above the maximum.
    #[error("max_memory_mb must be between memory_mb ({min}) and {max}, got {got}")]
    MaxMemory {
        /// The refused value.
        got: u32,
        /// `memory_mb`.
        min: u32,
        /// The largest allowed value.
        max: u32,
    },
    /// `timeout_ms` outside `1..=MAX_TIMEOUT_MS`.
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {0}")]
    Timeout(u32),
    /// `fuel` outside `1..=MAX_FUEL`.
    #[error("fuel must be between 1 and {MAX_FUEL}, got {0}")]
    Fuel(u64),
    /// `max_concurrency` of zero.
    #[error("max_concurrency must be at least 1")]
    Concurrency,
    /// `retries` over [`MAX_RETRIES`].
    #[error("retries must be between 0 and {MAX_RETRIES}, got {0}")]
    Retries(u32),
    /// `max_event_age_s` outside its range.
    #[error("max_event_age_s must be between {MIN_EVENT_AGE_S} and {MAX_EVENT_AGE_S}, got {0}")]
    EventAge(u32),
    /// A `resource_group` or `runtime` that is not a valid label.
    #[error(
        "{field} {value:?} must be 1 to 64 of a-z, 0-9, {allowed}, starting with a letter or digit"
    )]
    Label {
        /// The field.
        field: &'static str,
        /// The refused value.
        value: String,
        /// The punctuation allowed besides letters and digits.
        allowed: &'static str,
    },
    /// An environment variable name that is empty, contains `=` or NUL, or uses the
    /// reserved `STRATA_` prefix; or too many variables.
    #[error("invalid environment: {0}")]
    Env(String),
    /// `rate_limit_rps` of zero.
    #[error("rate_limit_rps must be at least 1")]
    RateLimit,
    /// An `outbound` setting out of range or a malformed destination.
    #[error("outbound: {0}")]
    Outbound(String),
    /// `reuse_instances` on a function whose ABI is not `http` (a reactor's instance is
    /// always reused, a command's never).
    #[error("reuse_instances is only for abi \"http\" (this function's abi is {0:?})")]
    ReuseNeedsHttp(Abi),
}

impl FunctionConfig {
    /// Checks every field against its range; `max_memory_mb` is the tenant's maximum.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self, max_memory_mb: u32) -> Result<(), ConfigError> {
        let max = max_memory_mb.min(MAX_MEMORY_MB);
        if self.memory_mb == 0 || self.memory_mb > max {
            return Err(ConfigError::Memory {
                got: self.memory_mb,
                max,
            });
        }
        if let Some(got) = self.max_memory_mb
            && (got < self.memory_mb || got > max)
        {
            return Err(ConfigError::MaxMemory {
                got,
                min: self.memory_mb,
                max,
            });
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::Timeout(self.timeout_ms));
        }
        if let Some(fuel) = self.fuel
            && !(1..=MAX_FUEL).contains(&fuel)
        {
            return Err(ConfigError::Fuel(fuel));
        }
        if self.max_concurrency == Some(0) {
            return Err(ConfigError::Concurrency);
        }
        if self.rate_limit_rps == Some(0) {
            return Err(ConfigError::RateLimit);
        }
        if self.retries > MAX_RETRIES {
            return Err(ConfigError::Retries(self.retries));
        }
        if !(MIN_EVENT_AGE_S..=MAX_EVENT_AGE_S).contains(&self.max_event_age_s) {
            return Err(ConfigError::EventAge(self.max_event_age_s));
        }
        for (field, value, extra, allowed) in [
            (
                "resource_group",
                &self.resource_group,
                &['-', '_'][..],
                "'-', '_'",
            ),
            (
                "runtime",
                &self.runtime,
                &['.', '-', '_'][..],
                "'.', '-', '_'",
            ),
        ] {
            if let Some(v) = value
                && !is_label(v, extra)
            {
                return Err(ConfigError::Label {
                    field,
                    value: v.clone(),
                    allowed,
                });
            }
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(ConfigError::Env(format!(
                "at most {MAX_ENV_VARS} variables"
            )));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(ConfigError::Env(format!("bad variable {k:?}")));
            }
            if k.starts_with("STRATA_") {
                return Err(ConfigError::Env(format!(
                    "{k:?} uses the reserved STRATA_ prefix"
                )));
            }
        }
        self.outbound.rules()?;
        if self.reuse_instances && self.abi != Abi::Http {
            return Err(ConfigError::ReuseNeedsHttp(self.abi));
        }
        Ok(())
    }

    /// The invocation timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mb) << 20
    }

    /// The most memory one invocation may get, in MiB: `max_memory_mb`, at least
    /// `memory_mb`.
    pub fn memory_ceiling_mb(&self) -> u32 {
        self.max_memory_mb
            .unwrap_or(self.memory_mb)
            .max(self.memory_mb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        let c = FunctionConfig::default();
        assert_eq!(c.validate(4096), Ok(()));
        let big = FunctionConfig {
            memory_mb: 512,
            ..c.clone()
        };
        assert!(matches!(big.validate(256), Err(ConfigError::Memory { .. })));
        let t = FunctionConfig {
            timeout_ms: 0,
            ..c.clone()
        };
        assert_eq!(t.validate(4096), Err(ConfigError::Timeout(0)));
        let f = FunctionConfig {
            fuel: Some(0),
            ..c.clone()
        };
        assert_eq!(f.validate(4096), Err(ConfigError::Fuel(0)));
        let below = FunctionConfig {
            max_memory_mb: Some(64),
            ..c.clone()
        };
        assert!(matches!(
            below.validate(4096),
            Err(ConfigError::MaxMemory { got: 64, .. })
        ));
        let over = FunctionConfig {
            max_memory_mb: Some(512),
            ..c.clone()
        };
        assert!(matches!(
            over.validate(256),
            Err(ConfigError::MaxMemory { max: 256, .. })
        ));
        assert_eq!(c.memory_ceiling_mb(), 128);
        let mut e = c;
        e.env.insert("STRATA_X".into(), "1".into());
        assert!(matches!(e.validate(4096), Err(ConfigError::Env(_))));
    }

    #[test]
    fn async_and_runtime_fields_are_checked() {
        let ok: FunctionConfig = serde_json::from_str(
            r#"{"resource_group": "carts", "on_failure": "alert", "retries": 0, "max_event_age_s": 60, "runtime": "wasmtime-48.0"}"#,
        )
        .expect("valid config");
        assert_eq!(ok.validate(4096), Ok(()));
        let c = FunctionConfig::default();
        let bad = [
            FunctionConfig {
                retries: 11,
                ..c.clone()
            },
            FunctionConfig {
                max_event_age_s: 59,
                ..c.clone()
            },
            FunctionConfig {
                resource_group: Some("Carts".into()),
                ..c.clone()
            },
            FunctionConfig {
                runtime: Some(String::new()),
                ..c.clone()
            },
        ];
        for b in bad {
            assert!(b.validate(4096).is_err(), "{b:?} accepted");
        }
        assert!(serde_json::from_str::<FunctionConfig>(r#"{"on_failure": "Bad"}"#).is_err());
    }

    #[test]
    fn instance_reuse_is_only_for_components() {
        let http: FunctionConfig =
            serde_json::from_str(r#"{"abi": "http", "reuse_instances": true}"#)
                .expect("valid config");
        assert_eq!(http.validate(4096), Ok(()));
        assert!(!FunctionConfig::default().reuse_instances);
        for abi in [Abi::Command, Abi::Reactor] {
            let c = FunctionConfig {
                abi,
                ..http.clone()
            };
            assert_eq!(c.validate(4096), Err(ConfigError::ReuseNeedsHttp(abi)));
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<FunctionConfig, _> = serde_json::from_str(r#"{"memry_mb": 1}"#);
        assert!(r.is_err());
        let ok: FunctionConfig =
            serde_json::from_str(r#"{"memory_mb": 64, "abi": "reactor"}"#).expect("valid config");
        assert_eq!(ok.memory_mb, 64);
        assert_eq!(ok.abi, Abi::Reactor);
    }
}
