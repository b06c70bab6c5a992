//! One invocation: what the device asked for and what it gets back.

use super::{
    ArtifactDigest, FunctionConfig, FunctionKey, FunctionName, NodeId, Qualifier, RequestId,
    RouteGrant,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// `x-strata-invocation-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InvocationType {
    /// Wait for the result (the default).
    #[default]
    RequestResponse,
    /// Queue durably and answer 202.
    Event,
}

/// An invocation as received at the edge; forwarded unchanged from POP to region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeRequest {
    /// Assigned by the first node that saw the request.
    pub request_id: RequestId,
    /// The bearer token as sent by the device (`None` when absent). Regions authenticate
    /// it; the channel between tiers is mutually authenticated TLS.
    pub token: Option<String>,
    /// The function to run.
    pub function: FunctionName,
    /// The version to run.
    pub qualifier: Qualifier,
    /// The request body, given to the guest on stdin.
    pub payload: Bytes,
    /// Synchronous or asynchronous.
    pub invocation_type: InvocationType,
    /// `x-strata-affinity`: requests with the same key go to the same instance.
    pub affinity: Option<String>,
    /// `x-strata-memory-mb`: memory asked for this invocation.
    pub memory_mb: Option<u32>,
    /// Per-invocation environment on top of the function's own (the CGI variables of a
    /// request that came in through a route); empty for API invocations.
    pub env: Vec<(String, String)>,
    /// Set when the request came in through an HTTP route instead of with a token: the
    /// route's owner is the tenant.
    pub route: Option<RouteGrant>,
    /// The device request's method, path, query and fields, for functions of the `http`
    /// ABI (the other ABIs ignore it); `None` for invocations that did not come from a
    /// device request (async retries, `on_failure` runs), which such a function sees as a
    /// `POST /`.
    #[serde(default)]
    pub http: Option<super::HttpRequestHead>,
    /// Where this node's edge can build `http` from when it is `None`: read it with
    /// [`InvokeRequest::http_head`]; [`InvokeRequest::settle_http_head`] builds it before
    /// the request leaves the node. Never on the wire.
    #[serde(skip)]
    pub http_source: Option<super::HeadSource>,
    /// The tenant this node's edge found for `token` when it authorized the request, so
    /// the invocation does not look the token up a second time. Never on the wire: a
    /// node trusts only its own authorization.
    #[serde(skip)]
    pub authorized_tenant: Option<super::TenantId>,
}

impl InvokeRequest {
    /// The device request's head, for an `http`-ABI run: as carried, or built now from
    /// what the edge kept.
    pub fn http_head(&self) -> Option<super::HttpRequestHead> {
        self.http
            .clone()
            .or_else(|| self.http_source.as_ref().map(super::HeadSource::build))
    }

    /// Builds the head from what the edge kept into `http`, for a request about to leave
    /// this node (the source is never on the wire).
    pub fn settle_http_head(&mut self) {
        if let Some(source) = self.http_source.take()
            && self.http.is_none()
        {
            self.http = Some(source.build());
        }
    }
}

/// Cold or warm start, as in `x-strata-start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartKind {
    /// A new instance was created for this invocation (or its code was fetched/compiled).
    Cold,
    /// An already prepared module or instance served it.
    Warm,
}

impl StartKind {
    /// `cold` or `warm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Warm => "warm",
        }
    }
}

/// Where an invocation ran, as in `x-strata-executed-at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutedAt {
    /// At a POP, locally.
    Pop(NodeId),
    /// At a region (directly or forwarded by a POP).
    Region(NodeId),
}

impl fmt::Display for ExecutedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pop(id) => write!(f, "pop/{id}"),
            Self::Region(id) => write!(f, "region/{id}"),
        }
    }
}

/// How a guest failed, as in `x-strata-function-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FunctionErrorKind {
    /// Non-zero exit, trap, or output over its cap (500).
    Unhandled,
    /// The guest needed more memory than its limit (500).
    OutOfMemory,
    /// The guest ran past its timeout (504).
    Timeout,
}

impl FunctionErrorKind {
    /// `unhandled`, `out-of-memory` or `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unhandled => "unhandled",
            Self::OutOfMemory => "out-of-memory",
            Self::Timeout => "timeout",
        }
    }

    /// Whose fault a guest failure is: always the guest's ([`super::Fault::Guest`]), also
    /// for the failures the runtime canary counts against a release (a trap).
    pub fn fault(self) -> super::Fault {
        super::Fault::Guest
    }
}

/// The guest's own failure: the invocation ran but did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    /// The failure class.
    pub kind: FunctionErrorKind,
    /// What happened (trap message, exit code, limit).
    pub message: String,
}

/// Durations measured along the way, for `server-timing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timing {
    /// Time to create the instance (zero when warm).
    pub instantiate: Duration,
    /// Time the guest ran.
    pub exec: Duration,
    /// At a POP that forwarded: the round trip to the region.
    pub forward: Option<Duration>,
    /// An `http`-ABI guest's outbound requests, their times in flight summed; `None` when
    /// it sent none.
    #[serde(default)]
    pub outbound: Option<Duration>,
    /// At a region whose run had to compile the function's module (not compiled there
    /// since the region started, or evicted): reading the wasm and compiling it; `None`
    /// when the module was cached.
    #[serde(default)]
    pub compile: Option<Duration>,
}

/// The result of an invocation that ran (successfully or with a [`FunctionError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeResponse {
    /// The invocation's id.
    pub request_id: RequestId,
    /// Where it ran.
    pub executed_at: ExecutedAt,
    /// Cold or warm.
    pub start: StartKind,
    /// The version that ran (`$LATEST` or a number).
    pub version: String,
    /// The guest's stdout (the response body) on success.
    pub body: Bytes,
    /// Set when the guest failed.
    pub function_error: Option<FunctionError>,
    /// Durations for `server-timing`.
    pub timing: Timing,
    /// Highest linear-memory size the guest reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Set when this is not a result but an async event's acceptance: the event is durably
    /// queued at the region and the edge answers 202 `{"request_id": ...}`.
    #[serde(default)]
    pub queued: bool,
    /// The runtime release that ran the guest (`2026.10`, `2026.11`), rendered as
    /// `x-strata-runtime`; `None` when no guest ran (a queued event).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The status and fields an `http`-ABI guest answered with; `None` for the other ABIs
    /// (whose success is a 200 with their stdout) and when the guest failed.
    #[serde(default)]
    pub http: Option<super::HttpResponseHead>,
}

/// What a POP needs to know to run a function itself: sent by the region with every
/// forwarded result so a POP learns functions without extra round trips.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedFunction {
    /// The function's identity (its tenant is the token's tenant).
    pub key: FunctionKey,
    /// The version this resolution is for (`$LATEST` or a number).
    pub version: String,
    /// The code's content address.
    pub digest: ArtifactDigest,
    /// The configuration in force.
    pub config: FunctionConfig,
    /// The registry revision this was read at; higher is newer.
    pub revision: u64,
    /// The runtime release the region decided this function runs on at POPs (the
    /// canary's verdict, or the function's `runtime` config): `None` or the current
    /// release's name runs on current; the next release's name runs on next.
    #[serde(default)]
    pub release: Option<String>,
}
