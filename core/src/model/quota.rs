//! Per-tenant quotas as data: which quota a refusal names, its limit, and the status class
//! of each (a single oversized item, a count that only a delete frees, or bytes that drain
//! on their own). Never performs I/O; the region enforces them, [`crate::edge`] maps them.

use serde::{Deserialize, Serialize};

/// A per-tenant (or per-region) quota, named in every refusal it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quota {
    /// Bytes of one function's `env` (names plus values).
    EnvBytes,
    /// Functions of one tenant.
    Functions,
    /// Published versions of one function.
    VersionsPerFunction,
    /// HTTP routes of one tenant.
    Routes,
    /// Shared-state keys of one tenant's resource group.
    StateKeys,
    /// Shared-state bytes (keys plus values) of one tenant's resource group.
    StateBytes,
    /// Payload bytes of one tenant's queued async events.
    QueuedEventBytes,
    /// Payload bytes of every tenant's queued async events in this region.
    RegionQueuedEventBytes,
    /// Payload bytes of one tenant's dead letters.
    DeadLetterBytes,
    /// Payload bytes of every tenant's dead letters in this region.
    RegionDeadLetterBytes,
    /// TLS certificates of one tenant.
    Certificates,
    /// Bytes of one uploaded certificate (chain plus key PEM).
    CertificateBytes,
}

/// How a refusal by a quota is answered at the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaClass {
    /// One item is over the quota by itself: 413.
    Size,
    /// A count or stored total that only a delete frees: 409.
    Count,
    /// Bytes that drain as queued work completes: 429 with `retry-after`.
    Drains,
}

impl Quota {
    /// The quota's wire name, as in error bodies and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EnvBytes => "env_bytes",
            Self::Functions => "functions",
            Self::VersionsPerFunction => "versions_per_function",
            Self::Routes => "routes",
            Self::StateKeys => "state_keys",
            Self::StateBytes => "state_bytes",
            Self::QueuedEventBytes => "queued_event_bytes",
            Self::RegionQueuedEventBytes => "region_queued_event_bytes",
            Self::DeadLetterBytes => "dead_letter_bytes",
            Self::RegionDeadLetterBytes => "region_dead_letter_bytes",
            Self::Certificates => "certificates",
            Self::CertificateBytes => "certificate_bytes",
        }
    }

    /// How a refusal by this quota is answered.
    pub fn class(self) -> QuotaClass {
        match self {
            Self::EnvBytes | Self::CertificateBytes => QuotaClass::Size,
            Self::Certificates
            | Self::Functions
            | Self::VersionsPerFunction
            | Self::Routes
            | Self::StateKeys
            | Self::StateBytes
            | Self::DeadLetterBytes
            | Self::RegionDeadLetterBytes => QuotaClass::Count,
            Self::QueuedEventBytes | Self::RegionQueuedEventBytes => QuotaClass::Drains,
        }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal by a quota: which one and its limit (in bytes or items, per the quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotaBreach {
    /// The quota that refused.
    pub quota: Quota,
    /// Its limit.
    pub limit: u64,
}
