//! The messages exchanged between tiers.

use crate::model::{
    AliasName, AliasRouting, ApiError, ArtifactDigest, FunctionKey, InvokeRequest, InvokeResponse,
    NodeId, NodeLoad, ResolvedFunction, Route, TenantId, TokenHash,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// Identifies an engine configuration: precompiled artifacts are only loaded by an engine
/// with the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EngineFingerprint(pub String);

/// What an artifact's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactKind {
    /// The original WebAssembly module; the receiver compiles it.
    Wasm,
    /// Code precompiled for the requested engine fingerprint.
    Precompiled,
}

/// How an artifact's bytes are encoded on the wire. Precompiled code is several times the
/// size of its wasm and compresses about sixfold, so a region sends it compressed (once,
/// at deploy) and a POP decodes it with a bound ([`MAX_FRAME_LEN`](super::MAX_FRAME_LEN):
/// compression never lets a peer send more than it could uncompressed). Wasm is always
/// sent as `Identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactEncoding {
    /// The bytes as they are.
    Identity,
    /// One zstd frame that declares its decoded size.
    Zstd,
}

/// One registry change, as a region pushes it to its POPs: what a POP needs to
/// authenticate and resolve without asking. `None` means deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// A token (by hash) now belongs to a tenant, or was revoked. A POP that learns of a
    /// revocation forgets the token whether it was pushed or learned from a forward.
    Token {
        /// SHA-256 of the token.
        hash: TokenHash,
        /// Its tenant; `None` when revoked.
        tenant: Option<TenantId>,
        /// When it stops being accepted, milliseconds since the Unix epoch; `None` never
        /// (added in `strata/2`).
        expires_at_ms: Option<u64>,
    },
    /// A function's `$LATEST` changed, or the function was deleted (with its versions and
    /// aliases).
    Function {
        /// The function.
        key: FunctionKey,
        /// `$LATEST` as it now resolves; `None` when deleted.
        latest: Option<ResolvedFunction>,
    },
    /// A version was published or deleted.
    Version {
        /// The function.
        key: FunctionKey,
        /// The version number.
        version: NonZeroU32,
        /// What it resolves to; `None` when deleted.
        function: Option<ResolvedFunction>,
    },
    /// An alias was set, moved or deleted.
    Alias {
        /// The function.
        key: FunctionKey,
        /// The alias.
        alias: AliasName,
        /// Where it points; `None` when deleted.
        routing: Option<AliasRouting>,
    },
    /// A tenant's TLS certificate for `host` was uploaded, replaced or deleted (added in
    /// `strata/3`). The POP serves it for that SNI until it expires.
    Certificate {
        /// The host (normalised; `*.suffix` for a wildcard).
        host: String,
        /// The certificate; `None` when deleted.
        certificate: Option<PushedCertificate>,
    },
}

/// A tenant certificate as pushed to POPs: the chain and its private key. Travels only
/// inside the tiers' mutually authenticated QUIC connection; its `Debug` never shows the
/// key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedCertificate {
    /// The owning tenant (for logs; the region checked ownership before storing it).
    pub tenant: TenantId,
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PEM.
    pub key_pem: String,
    /// End of the leaf's validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl std::fmt::Debug for PushedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedCertificate")
            .field("tenant", &self.tenant)
            .field("chain_pem_bytes", &self.chain_pem.len())
            .field("key_pem", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// One protocol message. Each bidirectional stream carries one request message and one
/// reply message, except the push stream: [`Message::Subscribe`] then a sequence of
/// [`Message::Updates`] and one [`Message::CaughtUp`], interleaved with
/// [`Message::Trending`] and [`Message::Releases`].
// Messages are built once and moved into the encoder; boxing the large variant would add
// an allocation per invocation for no benefit.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// POP -> region: run this invocation.
    Invoke(InvokeRequest),
    /// Region -> POP: the invocation's outcome, and the function's resolution when the
    /// region found it (so the POP can run it itself next time).
    InvokeResult {
        /// The response, or the platform error that prevented running it.
        result: Result<InvokeResponse, ApiError>,
        /// The function as resolved for the request's token and qualifier.
        function: Option<ResolvedFunction>,
        /// The region's load when it answered, so the POP can back off from a busy
        /// region; `None` from a region that does not report it.
        #[serde(default)]
        pressure: Option<Pressure>,
    },
    /// POP -> region: send the module with this digest, precompiled for `engine` if the
    /// region can.
    FetchArtifact {
        /// The module's content address.
        digest: ArtifactDigest,
        /// The requesting engine's fingerprint.
        engine: EngineFingerprint,
    },
    /// Region -> POP: the artifact asked for. `Precompiled` only when the region's engine
    /// fingerprint equals the one asked for; otherwise the original `Wasm`.
    Artifact {
        /// The source module's content address (SHA-256 of the original wasm bytes), also
        /// for precompiled code: the wasm it was compiled from.
        digest: ArtifactDigest,
        /// Whether `bytes` is wasm or precompiled code.
        kind: ArtifactKind,
        /// How `bytes` is encoded (`Identity` for `Wasm`).
        encoding: ArtifactEncoding,
        /// SHA-256 of `bytes` as sent, encoded (equal to `digest` for `Wasm`), checked by
        /// the receiver before it decodes or uses them.
        checksum: ArtifactDigest,
        /// The bytes, encoded as `encoding` says.
        bytes: Bytes,
    },
    /// Either way: liveness and RTT probe.
    Ping {
        /// Echoed in the [`Message::Pong`].
        nonce: u64,
    },
    /// Reply to [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// POP -> region, every report interval: the POP's load for the capacity view.
    LoadReport(NodeLoad),
    /// POP -> region: open the push stream, starting after `since_revision` (0: from the
    /// beginning). The region answers with [`Message::Updates`] until either side closes.
    Subscribe {
        /// The last registry revision the POP has applied.
        since_revision: u64,
    },
    /// Region -> POP on the push stream: registry changes up to `revision`.
    ///
    /// A snapshot too large for one message comes in chunks: the first says `snapshot`,
    /// every chunk but the last carries revision 0 and is never empty (a registry at
    /// revision 0 holds nothing). The POP's state is the region's only once
    /// [`Message::CaughtUp`] arrives.
    Updates {
        /// The registry revision these updates bring the POP to (0: a chunk of a snapshot
        /// that continues in the next message).
        revision: u64,
        /// True when the history no longer reached back to the POP's revision: forget
        /// everything pushed before and apply these as the whole state.
        snapshot: bool,
        /// The changes, oldest first.
        updates: Vec<Update>,
    },
    /// Either way: the request could not be served (unknown digest, unexpected message).
    Error(ApiError),
    /// POP -> region: send the route table if it changed since `since_revision` (0: never
    /// fetched).
    FetchRoutes {
        /// The revision of the table the POP holds.
        since_revision: u64,
    },
    /// Region -> POP: the route table at `revision`; `routes` is `None` when the POP's
    /// revision is current.
    RouteTable {
        /// The table's revision.
        revision: u64,
        /// Every route, or `None` for "unchanged".
        routes: Option<Vec<Route>>,
    },
    /// POP -> region: a batch of function log output collected at the POP.
    Logs {
        /// The lines, oldest first.
        entries: Vec<ShippedLog>,
        /// Lines the POP dropped since its previous batch because its queue was full.
        dropped: u64,
    },
    /// Region -> POP: the [`Message::Logs`] batch was recorded.
    Ack,
    /// Region -> POP on the push stream: `function`'s traffic is trending up across the
    /// deployment; prepare its code `digest` before local traffic makes it popular. Advisory:
    /// a POP may ignore it.
    Trending {
        /// The function.
        function: FunctionKey,
        /// Its current code.
        digest: ArtifactDigest,
    },
    /// POP -> region: lease `slots` more concurrency slots of `tenant` to `holder`, and
    /// renew everything `holder` already leases of it (`slots` 0: renew only). Answered
    /// with [`Message::LeaseGranted`].
    LeaseAcquire {
        /// The POP asking.
        holder: NodeId,
        /// Whose budget.
        tenant: TenantId,
        /// How many more slots it wants.
        slots: u32,
    },
    /// Region -> POP: `slots` (at most what was asked) were added to the lease; the whole
    /// lease may be drawn from for `ttl_ms` after the request was sent.
    LeaseGranted {
        /// Whose budget.
        tenant: TenantId,
        /// Slots added now.
        slots: u32,
        /// How long the POP may draw from its lease without renewing it.
        ttl_ms: u64,
        /// The tenant's current limit (informational, for the POP's gauges).
        limit: u32,
        /// Everything the region counts as leased to this holder now, after the grant: a
        /// POP that holds more locally lost part of its lease (it expired) and must
        /// shrink to this.
        held: u32,
    },
    /// POP -> region: `holder` stopped drawing from `slots` of its lease of `tenant` and
    /// gives them back. Answered with [`Message::Ack`].
    LeaseReturn {
        /// The POP returning.
        holder: NodeId,
        /// Whose budget.
        tenant: TenantId,
        /// How many slots.
        slots: u32,
    },
    /// Region -> POP on the push stream: the runtime release each listed function runs on
    /// at POPs, as the region's runtime canary decided it (pinned to the current release,
    /// or promoted to the next). Sent as the whole state right after subscribing (and
    /// again when the stream fell behind), then one small message per verdict change.
    Releases {
        /// True on the first message of the whole state: forget every release hinted
        /// before (a function not listed runs on the current release).
        full: bool,
        /// The functions and their releases.
        releases: Vec<ReleaseHint>,
        /// Share of an undecided function's invocations the canary runs on the next
        /// release, in percent: a POP samples its own runs of undecided functions with it
        /// (the same draw as the region, `policy::canary::draw`) and reports their outcomes
        /// in its load reports. 0: POPs run undecided functions on the current release.
        canary_percent: u8,
    },
    /// Region -> POP on the push stream: every registry change up to `revision` has been
    /// sent, and `revision` is at least the registry's revision when the POP subscribed.
    /// Only from then on is the POP's pushed state the region's (a fresh POP's starts
    /// empty and fills change by change): until it, the POP must not refuse a token for
    /// being absent from it. Sent again after the region re-read its history for a POP
    /// that fell behind.
    CaughtUp {
        /// The revision the POP has caught up to.
        revision: u64,
    },
}

/// Which runtime release a function runs on at POPs. Not registry state (verdicts live
/// outside the revisioned registry), so it travels beside [`Message::Updates`], not in them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseHint {
    /// The function.
    pub function: FunctionKey,
    /// The release's name (`2026.10`, `2026.11`), as in [`ResolvedFunction::release`]: a
    /// name the POP does not host runs on its current release.
    pub release: String,
}

/// A region's load as it reports it with each invocation result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pressure {
    /// The region is under pressure (its admission queue is past its threshold, or it
    /// refused this invocation for capacity): send elsewhere for a while.
    pub busy: bool,
    /// Execution slots free when it answered.
    pub spare_slots: u32,
}

/// Log output of one invocation at a POP, shipped to the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedLog {
    /// The function that wrote it.
    pub function: FunctionKey,
    /// The invocation (32 hex digits).
    pub request_id: String,
    /// When it was collected, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Where it ran (`pop/<id>`).
    pub node: String,
    /// The text, one or more lines.
    pub text: String,
}
