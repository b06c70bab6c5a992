//! Why a tenant's limits refused an invocation at the region: typed, with the limit that
//! refused and the wait the limiter computed, so the invoke pipeline's admit layer can
//! carry it and the edges render it once (429 `throttled`, `limit` and `retry-after`).

use common::model::{ApiError, Fault, FunctionKey, LimitHit, LimitKind, LimitScope, TenantId};
use std::num::NonZeroU32;
use std::time::Duration;

/// A refusal by a tenant's (or a function's) rate or concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The tenant is over its `rate_limit_rps`.
    #[error("tenant {tenant} is over its rate limit of {rps}/s")]
    TenantRate {
        /// The tenant.
        tenant: TenantId,
        /// Its rate, per second.
        rps: NonZeroU32,
        /// When its next token comes.
        retry_after: Duration,
    },
    /// The function is over its own `rate_limit_rps`.
    #[error("function {function} is over its rate limit of {rps}/s")]
    FunctionRate {
        /// The function.
        function: FunctionKey,
        /// Its rate, per second.
        rps: NonZeroU32,
        /// When its next token comes.
        retry_after: Duration,
    },
    /// The tenant is at its (adaptive) concurrency limit.
    #[error("tenant {tenant} is at its concurrency limit of {limit}")]
    Concurrency {
        /// The tenant.
        tenant: TenantId,
        /// Its limit now.
        limit: u32,
        /// When a slot is likely to free.
        retry_after: Duration,
    },
    /// The region keeps books for as many tenants as it may (`max_tenants`).
    #[error("the region tracks too many tenants right now")]
    Tenants {
        /// The bound.
        max: usize,
        /// When to try again.
        retry_after: Duration,
    },
}

impl LimitRefusal {
    /// Whose fault it is: a limit, so the platform's capacity as the tenant is entitled
    /// to it.
    pub fn fault(&self) -> Fault {
        Fault::Capacity
    }

    /// The limit that refused, as the `limit` of a 429 body.
    pub fn hit(&self) -> LimitHit {
        match self {
            Self::TenantRate { rps, .. } => {
                LimitHit::new(LimitScope::Tenant, LimitKind::Rate, u64::from(rps.get()))
            }
            Self::FunctionRate { rps, .. } => {
                LimitHit::new(LimitScope::Function, LimitKind::Rate, u64::from(rps.get()))
            }
            Self::Concurrency { limit, .. } => LimitHit::new(
                LimitScope::Tenant,
                LimitKind::Concurrency,
                u64::from(*limit),
            ),
            Self::Tenants { max, .. } => {
                LimitHit::new(LimitScope::Region, LimitKind::Tenants, *max as u64)
            }
        }
    }

    /// How long the caller should wait.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::TenantRate { retry_after, .. }
            | Self::FunctionRate { retry_after, .. }
            | Self::Concurrency { retry_after, .. }
            | Self::Tenants { retry_after, .. } => *retry_after,
        }
    }
}

/// The edges' rendering: 429 `throttled` naming the limit and the wait.
impl From<LimitRefusal> for ApiError {
    fn from(r: LimitRefusal) -> Self {
        ApiError::throttled(r.hit(), r.to_string(), r.retry_after()).with_fault(r.fault())
    }
}
