//! The POP<->region protocol: typed messages, bincode encoding, length-prefixed frames.
//!
//! Owns the byte format and nothing else: never opens a socket or reads a stream (the
//! async framing over a stream is `common::wire`), never allocates a frame
//! beyond [`MAX_FRAME_LEN`], and turns any input into either a [`Message`] or a typed
//! [`WireError`], never a panic. Protocol versions are negotiated by ALPN ([`ALPN`]); a
//! peer speaking another version is refused at the TLS handshake.

mod frame;
mod message;

pub use frame::{FrameHeader, WireError, decode, encode};
pub use message::{
    ArtifactEncoding, ArtifactKind, EngineFingerprint, Message, Pressure, PushedCertificate,
    ReleaseHint, ShippedLog, Update,
};

/// The ALPN protocol id of this protocol version. `strata/2`: token updates carry an
/// expiry (token revocation and expiry reach POPs over the push stream). `strata/3`:
/// tenant TLS certificates reach POPs as [`Update::Certificate`], errors may be
/// `invalid_certificate`, and a platform error names the limit that refused it
/// (`ApiError::limit`), so a POP relays a region's 429 with its limit and wait.
/// `strata/4`: invocations carry the device request's HTTP head and results the
/// `http`-ABI guest's response head (`InvokeRequest::http`, `InvokeResponse::http`),
/// timings the outbound time, and function configs the outbound HTTP settings; load
/// reports carry outcomes per function version (`NodeLoad::outcomes`) and release hints
/// the canary's share (`Message::Releases::canary_percent`), so the region judges runtime
/// canaries and alias rollouts on what POPs run. `strata/5`: a platform error carries
/// whose fault it is (`ApiError::fault`: device, capacity, internal, guest, peer), so a
/// POP relays a region's classification instead of guessing it from the kind (the
/// encoding of every `ErrorKind` is unchanged; the struct gained a field), and the push
/// stream says when a POP has caught up (`Message::CaughtUp`: before it, a POP's pushed
/// state is partial and refuses no token). `strata/6`: an artifact says how its bytes are
/// encoded (`Message::Artifact::encoding`): precompiled code crosses compressed. Peers of
/// earlier versions are refused at the handshake.
pub const ALPN: &[u8] = b"strata/6";

/// Hard limit on one frame's body, in bytes. Payload and module limits must stay below it.
pub const MAX_FRAME_LEN: usize = 64 << 20;
