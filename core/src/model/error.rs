//! The platform error: everything that is not the guest's own failure. One type for the
//! invoke path, the control API and the wire, mapped to an HTTP status exactly once, in
//! [`crate::edge`].

use super::quota::{Quota, QuotaBreach, QuotaClass};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Whose fault an error is; status codes, retries and metrics depend on it. Rendered as
/// the `fault` field of error bodies and the `fault` label of
/// `strata_invoke_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The caller sent something wrong (bad token, too large, unknown function); retrying
    /// the same request cannot help.
    Device,
    /// The platform is out of capacity (a limit, a full queue); retrying later may work.
    Capacity,
    /// A bug or broken invariant inside Strata, or a store it depends on failing.
    Internal,
    /// The function's own code failed (a trap, a non-zero exit, its timeout or memory
    /// limit): the invocation ran.
    Guest,
    /// Another node failed to answer: a POP lost its region (the connection, the stream,
    /// the reply) before it could tell what happened there.
    Peer,
}

impl Fault {
    /// Every fault, in declaration order.
    pub const ALL: [Self; 5] = [
        Self::Device,
        Self::Capacity,
        Self::Internal,
        Self::Guest,
        Self::Peer,
    ];

    /// The fault's name, as in error bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Capacity => "capacity",
            Self::Internal => "internal",
            Self::Guest => "guest",
            Self::Peer => "peer",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stable, machine-readable error kind: the `error.kind` field of every error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed request (400).
    BadRequest,
    /// Uploaded module failed validation (400).
    InvalidModule,
    /// Missing or unknown credentials (401).
    Unauthenticated,
    /// Valid credentials, but not for this resource (403).
    Forbidden,
    /// No such function, version, alias or resource (404).
    NotFound,
    /// A write lost a race or contradicts existing state (409).
    Conflict,
    /// The host (or one above or under it) belongs to another tenant (409).
    HostOwned,
    /// The host may not be used by a tenant: an IP literal, `localhost`, or a public
    /// suffix (or a wildcard at or above one) (400).
    HostNotAllowed,
    /// Request body over the limit (413).
    PayloadTooLarge,
    /// A rate or concurrency limit refused the request (429).
    Throttled,
    /// No capacity anywhere, or no reachable region (503).
    Unavailable,
    /// An internal failure (500).
    Internal,
    /// A per-tenant quota refused the request: 413 for one oversized item, 409 for a
    /// count or stored total, 429 with `retry-after` for queued bytes that drain (see
    /// [`QuotaClass`]). Appended last so older kinds keep their wire encoding.
    QuotaExceeded(QuotaBreach),
    /// An uploaded TLS certificate was refused: its chain or key does not parse, the key
    /// is not the leaf's, the leaf does not cover the host, or it has expired (400).
    /// Appended after `QuotaExceeded` for the same reason (`strata/3`).
    InvalidCertificate,
}

impl ErrorKind {
    /// The kind's wire name, as in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidModule => "invalid_module",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::HostOwned => "host_owned",
            Self::HostNotAllowed => "host_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::InvalidCertificate => "invalid_certificate",
        }
    }

    /// Whose fault an error of this kind is when nothing more is known (the default
    /// [`ApiError::fault`]; a peer's failure is reported as [`ErrorKind::Unavailable`]
    /// with [`Fault::Peer`], a store's as [`Fault::Internal`]).
    pub fn fault(self) -> Fault {
        match self {
            Self::Throttled | Self::Unavailable => Fault::Capacity,
            Self::QuotaExceeded(b) if b.quota.class() == QuotaClass::Drains => Fault::Capacity,
            Self::Internal => Fault::Internal,
            _ => Fault::Device,
        }
    }
}

/// What a limit applies to: the `limit.scope` of a 429 `throttled` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// One tenant (its concurrency, its rate, its share of a region's slots).
    Tenant,
    /// One function (its rate).
    Function,
    /// The region's async event queue.
    Queue,
    /// The region as a whole (how many tenants it tracks).
    Region,
}

/// What a limit counts: the `limit.kind` of a 429 `throttled` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Invocations running at once (the tenant's adaptive concurrency limit).
    Concurrency,
    /// Invocations per second.
    Rate,
    /// Execution slots of a region pool one tenant may hold.
    SlotShare,
    /// Events queued.
    Depth,
    /// Tenants with concurrency books.
    Tenants,
}

/// The limit that refused a request, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHit {
    /// What it applies to.
    pub scope: LimitScope,
    /// What it counts.
    pub kind: LimitKind,
    /// Its value when it refused (per second for a rate).
    pub value: u64,
}

impl LimitHit {
    /// The limit `kind` of `scope` at `value`.
    pub fn new(scope: LimitScope, kind: LimitKind, value: u64) -> Self {
        Self { scope, kind, value }
    }
}

/// A platform error with its kind, a human message, whose fault it is and, for capacity
/// errors, when to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong, machine-readable.
    pub kind: ErrorKind,
    /// What went wrong, for a person, ideally with what to do about it.
    pub message: String,
    /// For [`ErrorKind::Throttled`] and [`ErrorKind::Unavailable`]: the `retry-after`.
    pub retry_after: Option<Duration>,
    /// For [`ErrorKind::Throttled`]: the limit that refused.
    pub limit: Option<LimitHit>,
    /// Whose fault it is: the kind's ([`ErrorKind::fault`]) unless whoever raised it knew
    /// better ([`ApiError::with_fault`]). Carried on the wire (`strata/5`), so a POP relays a
    /// region's fault as the region classified it.
    pub fault: Fault,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            limit: None,
            fault: kind.fault(),
        }
    }

    /// The same error, recorded as `fault`'s.
    #[must_use]
    pub fn with_fault(self, fault: Fault) -> Self {
        Self { fault, ..self }
    }

    /// 400: a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 401: no or unknown credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorKind::Unauthenticated,
            "missing or unknown token: send `authorization: Bearer <tenant token>`",
        )
    }

    /// 403: the credentials do not grant access to this resource.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// 404: `what` does not exist (for this tenant).
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }

    /// 413: the body is over `limit` bytes.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            format!("request body is over the limit of {limit} bytes"),
        )
    }

    /// 503: no capacity or no reachable region; retry after `retry_after`.
    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(ErrorKind::Unavailable, message)
        }
    }

    /// 429: `limit` refused the request; retry after `retry_after`, which the limiter
    /// computed from its state (a rate's next token, a slot's likely end).
    pub fn throttled(limit: LimitHit, message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            limit: Some(limit),
            ..Self::new(ErrorKind::Throttled, message)
        }
    }

    /// A refusal by `quota` at `limit`, with what was asked for in `message`; bytes that
    /// drain carry a `retry-after` of `retry_after`.
    pub fn quota_exceeded(
        quota: Quota,
        limit: u64,
        message: impl std::fmt::Display,
        retry_after: std::time::Duration,
    ) -> Self {
        let kind = ErrorKind::QuotaExceeded(QuotaBreach { quota, limit });
        Self {
            retry_after: (quota.class() == QuotaClass::Drains).then_some(retry_after),
            ..Self::new(kind, format!("quota {quota} ({limit}) exceeded: {message}"))
        }
    }

    /// The quota that refused, when one did.
    pub fn quota(&self) -> Option<QuotaBreach> {
        match self.kind {
            ErrorKind::QuotaExceeded(b) => Some(b),
            _ => None,
        }
    }

    /// 500: an internal failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}
