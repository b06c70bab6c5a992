//! QUIC between the tiers: quinn endpoints with mutual TLS, and the development CA.
//!
//! Owns every use of quinn and rustls in Strata: certificate loading ([`NodeTls`]), the
//! region's listening endpoint ([`Server`]), the POP's connecting endpoint ([`Client`]),
//! per-invocation streams ([`ServerStream`], [`Channel::request`]) and the dev CA
//! ([`dev_ca`]). Message bytes are produced and parsed by [`crate::wire`] only: this module
//! moves frames, it never looks inside them.
//!
//! Security invariants:
//! - a region accepts a connection only when the peer presents a certificate chaining to
//!   the deployment CA, and only for ALPN [`crate::wire::ALPN`];
//! - a POP verifies the region's certificate against the same CA and a server name
//!   ([`REGION_SERVER_NAME`] by default);
//! - only TLS 1.3 with the ring provider, installed per configuration (never a process
//!   default).
//!
//! Liveness: both sides send keep-alives every [`KEEP_ALIVE_INTERVAL`] at most and drop a
//! connection silent for [`IDLE_TIMEOUT`] (5 s), the transport's own backstop. The same
//! bound caps a handshake with an unreachable address. A POP does not wait that long for a
//! region that dies silently (power, `kill -9`, a cut link: no close frame): its client
//! sends keep-alives every fraction of its silence threshold
//! ([`Client::with_keep_alive`]), watches [`Channel::received`], and drops a connection
//! that heard nothing for the threshold (about 1 s, [`crate::policy::liveness`]) with
//! [`Channel::close_silent`]. Forwards in flight then fail (503; they were sent, so they
//! are not retried elsewhere) and new ones go to another region or fail fast.

mod client;
pub mod dev_ca;
mod server;
mod tls;

use std::time::Duration;

use quinn::{ConnectionError, ReadError, TransportErrorCode, VarInt, WriteError};

use crate::wire::WireError;

pub use client::{Channel, Client, Subscription};
pub use server::{Connecting, PeerConnection, Server, ServerStream};
pub use tls::{NodeTls, TlsFiles};

/// The TLS server name a POP verifies regions against unless configured otherwise. Region
/// certificates from [`dev_ca`] carry it as a DNS subject alternative name.
pub const REGION_SERVER_NAME: &str = "strata-region";

/// Interval between keep-alive packets on an otherwise idle connection.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// A connection that has heard nothing from its peer for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bidirectional streams a region lets one POP have open at once; further requests wait
/// for stream credit (back-pressure) rather than fail.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Reads the one frame a request or reply stream carries, then the stream's end when it has
/// already arrived (it travels in the packet with the frame's last bytes). quinn answers a
/// stream dropped before its end was read with a STOP_SENDING to the peer: an extra packet
/// and an acknowledgement back on every request, each a wake-up of the other node. Never
/// waits for the end: a stream the peer has not finished yet is stopped on drop, as it
/// should be.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limit: usize,
) -> Result<crate::wire::Message, TransportError> {
    let msg = crate::wire::read_message(recv, limit)
        .await
        .map_err(wire_failed)?;
    // `Ok(None)`: the end, read. Bytes after the frame (a peer breaking the protocol) or
    // an end not yet here leave the stream to be stopped when dropped.
    let _ = futures::FutureExt::now_or_never(recv.read_chunk(1, true));
    Ok(msg)
}

/// Application error code of a normal close of a connection.
const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);

/// Application error code of a connection the POP dropped because its region went silent.
const CLOSE_SILENT: VarInt = VarInt::from_u32(2);

/// Application error code used to reset and stop a stream whose input was refused.
const STREAM_REJECTED: VarInt = VarInt::from_u32(1);

/// Application error code used to reset and stop a request stream whose reply did not
/// arrive within the caller's bound ([`Channel::request_within`]).
const STREAM_TIMED_OUT: VarInt = VarInt::from_u32(2);

/// Why a transport operation failed. The variants say how far a request got, which
/// decides whether it may be retried elsewhere (see
/// [`TransportError::request_was_not_sent`]).
#[derive(thiserror::Error, Debug)]
pub enum TransportError {
    /// Certificates or keys could not be parsed, or do not form a valid configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A local I/O operation failed (reading certificate files, binding a socket).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer could not be reached or the handshake failed: nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection died while a request was in flight: the peer may have received it.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The stream failed (reset or stopped by the peer) while the connection lives on.
    #[error("stream failed: {0}")]
    Stream(String),
    /// The bytes on the stream were not a valid frame or message.
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    /// The connection or endpoint was already closed before the request's stream opened.
    #[error("connection closed")]
    Closed,
    /// No reply within the caller's bound; the stream was reset and stopped (the peer
    /// may have received the request).
    #[error("no reply within {0:?}; the stream was reset")]
    TimedOut(Duration),
}

impl TransportError {
    /// True when the peer certainly did not receive the request, so it is safe to send it
    /// to another region: the connection was never established, or was closed before the
    /// request's stream was opened.
    pub fn request_was_not_sent(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Closed)
    }
}

/// True for a TLS alert carried as a QUIC error code (RFC 9001 §4.8: 0x100-0x1ff).
fn is_crypto_code(code: TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Maps a handshake failure: whatever went wrong, no application data was exchanged.
fn handshake_failed(e: ConnectionError) -> TransportError {
    TransportError::Connect(e.to_string())
}

/// Maps a connection failure seen after the request's stream was opened.
fn connection_failed(e: ConnectionError) -> TransportError {
    match e {
        // The peer's TLS stack aborted the handshake (e.g. refused our certificate): its
        // application never saw the connection, so no request was received.
        ConnectionError::ConnectionClosed(ref close) if is_crypto_code(close.error_code) => {
            TransportError::Connect(e.to_string())
        }
        ConnectionError::TransportError(ref t) if is_crypto_code(t.code) => {
            TransportError::Connect(e.to_string())
        }
        ConnectionError::VersionMismatch => TransportError::Connect(e.to_string()),
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

/// Maps a failure to open a stream: the request was not sent on it.
fn open_failed(e: ConnectionError) -> TransportError {
    match connection_failed(e) {
        TransportError::ConnectionLost(reason) => {
            tracing::debug!(%reason, "connection gone before opening a stream");
            TransportError::Closed
        }
        other => other,
    }
}

fn read_failed(e: ReadError) -> TransportError {
    match e {
        ReadError::ConnectionLost(c) => connection_failed(c),
        ReadError::Reset(code) => TransportError::Stream(format!("peer reset the stream ({code})")),
        other => TransportError::Stream(other.to_string()),
    }
}

fn write_failed(e: WriteError) -> TransportError {
    match e {
        WriteError::ConnectionLost(c) => connection_failed(c),
        WriteError::Stopped(code) => {
            TransportError::Stream(format!("peer stopped the stream ({code})"))
        }
        other => TransportError::Stream(other.to_string()),
    }
}

/// Maps a [`WireError`] from reading a quinn stream: I/O errors carry the quinn error that
/// caused them, which says whether the stream or the whole connection failed.
fn wire_failed(e: WireError) -> TransportError {
    match e {
        WireError::Io(io) => match io.into_inner().map(|inner| inner.downcast::<ReadError>()) {
            Some(Ok(read)) => read_failed(*read),
            Some(Err(other)) => TransportError::Stream(other.to_string()),
            None => TransportError::Stream("stream read failed".into()),
        },
        other => TransportError::Wire(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unsent_requests_are_retryable() {
        assert!(TransportError::Connect("x".into()).request_was_not_sent());
        assert!(TransportError::Closed.request_was_not_sent());
        assert!(!TransportError::ConnectionLost("x".into()).request_was_not_sent());
        assert!(!TransportError::Stream("x".into()).request_was_not_sent());
        assert!(!TransportError::Wire(WireError::Truncated).request_was_not_sent());
    }

    #[test]
    fn tls_alerts_are_crypto_codes() {
        assert!(is_crypto_code(TransportErrorCode::crypto(48)));
        assert!(!is_crypto_code(TransportErrorCode::PROTOCOL_VIOLATION));
    }

    #[test]
    fn a_dead_connection_before_the_stream_opened_means_nothing_was_sent() {
        assert!(open_failed(ConnectionError::TimedOut).request_was_not_sent());
        assert!(!connection_failed(ConnectionError::TimedOut).request_was_not_sent());
        assert!(open_failed(ConnectionError::LocallyClosed).request_was_not_sent());
        assert!(!connection_failed(ConnectionError::LocallyClosed).request_was_not_sent());
    }
}
