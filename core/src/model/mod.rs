//! Plain data shared by every component: names, digests, function configuration,
//! invocation requests and results, and the platform error type.
//!
//! Never performs I/O and never reads a clock; every type here is serde-serialisable so it
//! can cross the wire and the control API unchanged.

mod capacity;
mod config;
mod digest;
mod error;
mod http;
mod invoke;
mod name;
mod quota;
mod route;
mod token;
mod version;

pub use capacity::{
    FunctionLoad, LoadTotals, NodeLoad, TenantLoad, Tier, VersionOutcomes, WindowCounts,
};
pub use config::{
    Abi, ConfigError, FunctionConfig, MAX_FUEL, MAX_MEMORY_MB, MAX_TIMEOUT_MS, OutboundConfig,
    Placement,
};
pub use digest::{ArtifactDigest, DigestParseError};
pub use error::{ApiError, ErrorKind, Fault, LimitHit, LimitKind, LimitScope};
pub use http::{HeadSource, HttpRequestHead, HttpResponseHead};
pub use invoke::{
    ExecutedAt, FunctionError, FunctionErrorKind, InvocationType, InvokeRequest, InvokeResponse,
    ResolvedFunction, StartKind, Timing,
};
pub use name::{FunctionKey, FunctionName, NameError, NodeId, Qualifier, RequestId, TenantId};
pub use quota::{Quota, QuotaBreach, QuotaClass};
pub use route::{
    AffinityFrom, HostPattern, PathPrefix, Route, RouteError, RouteGrant, RouteId, is_reserved_path,
};
pub use token::TokenHash;
pub use version::{
    Alias, AliasError, AliasName, AliasRouting, Rollback, RouteSpec, RouteWeight, Version,
};
