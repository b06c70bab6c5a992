//! The region's side: a QUIC endpoint accepting POP connections and their request streams.
//!
//! Owns the listening socket and the per-stream reply/reject protocol. Never decides what a
//! request means: callers read a [`Message`], call their domain function and reply. The
//! caller drives concurrency (one task per connection and per stream); this module never
//! spawns.

use std::net::SocketAddr;

use quinn::{ConnectionError, RecvStream, SendStream};

use super::{
    CLOSE_NORMAL, NodeTls, STREAM_REJECTED, TransportError, handshake_failed, write_failed,
};
use crate::wire::{self, Message};

/// A region's QUIC server: demands a client certificate chaining to the CA and speaks ALPN
/// [`crate::wire::ALPN`] only.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
}

impl Server {
    /// Binds a UDP socket on `addr` (port 0 picks a free port; see
    /// [`Server::local_addr`]). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the socket cannot be bound or no runtime is running.
    pub fn bind(addr: SocketAddr, tls: &NodeTls) -> Result<Self, TransportError> {
        let endpoint = quinn::Endpoint::server(tls.server_config(), addr)?;
        Ok(Self { endpoint })
    }

    /// The address the server is bound to.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the socket cannot report it.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Waits for the next incoming connection attempt; `None` once the server is closed.
    pub async fn accept(&self) -> Option<Connecting> {
        self.endpoint
            .accept()
            .await
            .map(|incoming| Connecting { incoming })
    }

    /// Closes every connection and stops accepting new ones.
    pub fn close(&self) {
        self.endpoint.close(CLOSE_NORMAL, b"server shutting down");
    }

    /// Waits until every connection has finished closing (after [`Self::close`]); only then
    /// does the endpoint release its UDP socket, so a restarted node can bind the same
    /// address.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// An incoming connection whose handshake (including client certificate verification)
/// has not run yet.
#[derive(Debug)]
pub struct Connecting {
    incoming: quinn::Incoming,
}

impl Connecting {
    /// Runs the handshake.
    ///
    /// # Errors
    /// [`TransportError::Connect`] when it fails: a client certificate from another CA,
    /// another ALPN, or a peer that went away.
    pub async fn handshake(self) -> Result<PeerConnection, TransportError> {
        let connecting = self.incoming.accept().map_err(handshake_failed)?;
        let conn = connecting.await.map_err(handshake_failed)?;
        Ok(PeerConnection { conn })
    }

    /// The address the connection attempt comes from (not yet authenticated).
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }
}

/// An authenticated connection from a POP. Cheap to clone; the connection stays open while
/// a clone lives or until either side closes it.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    conn: quinn::Connection,
}

impl PeerConnection {
    /// Waits for the POP's next request stream.
    ///
    /// Returns `Ok(None)` when the connection was closed normally (by the peer, or by this
    /// side through [`Server::close`]).
    ///
    /// # Errors
    /// [`TransportError::ConnectionLost`] when the connection failed (timed out, reset,
    /// closed with an error code).
    pub async fn accept_stream(&self) -> Result<Option<ServerStream>, TransportError> {
        match self.conn.accept_bi().await {
            Ok((send, recv)) => Ok(Some(ServerStream { send, recv })),
            Err(ConnectionError::ApplicationClosed(close)) if close.error_code == CLOSE_NORMAL => {
                Ok(None)
            }
            Err(ConnectionError::LocallyClosed) => Ok(None),
            Err(e) => Err(TransportError::ConnectionLost(e.to_string())),
        }
    }

    /// The POP's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The POP id its certificate names (a DNS name `<id>.pop.strata`, see
    /// [`super::dev_ca::pop_dns_name`]), or `None` when it names none.
    pub fn pop_id(&self) -> Option<String> {
        let identity = self.conn.peer_identity()?;
        let certs = identity
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        super::dev_ca::pop_id_of(certs.first()?)
    }
}

/// One request stream: read one request, then [`reply`](Self::reply) or
/// [`reject`](Self::reject).
#[derive(Debug)]
pub struct ServerStream {
    send: SendStream,
    recv: RecvStream,
}

impl ServerStream {
    /// Reads the request frame; `limit` caps its body (at most
    /// [`crate::wire::MAX_FRAME_LEN`]).
    ///
    /// # Errors
    /// [`TransportError::Wire`] when the bytes are not one valid frame within `limit`;
    /// [`TransportError::Stream`] or [`TransportError::ConnectionLost`] when the stream or
    /// connection failed.
    pub async fn read_request(&mut self, limit: usize) -> Result<Message, TransportError> {
        super::read_frame(&mut self.recv, limit).await
    }

    /// Writes `msg` as one frame and keeps the stream open: for the long-lived push stream,
    /// which carries a sequence of frames.
    ///
    /// # Errors
    /// As [`Self::reply`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), TransportError> {
        let frame = wire::encode(msg)?;
        self.send.write_all(&frame).await.map_err(write_failed)
    }

    /// Completes when the POP stops reading this stream (it dropped it, or the connection
    /// ended), so a long-lived stream's task can end without waiting for its next write.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stopped = self.send.stopped();
        async move {
            // Stopped with a code, finished, or connection lost: the stream is over in
            // every case.
            let _ = stopped.await;
        }
    }

    /// Writes `msg` as the reply frame and finishes the stream.
    ///
    /// # Errors
    /// [`TransportError::Wire`] when the message cannot be encoded; stream or connection
    /// errors when the POP went away or stopped the stream.
    pub async fn reply(mut self, msg: &Message) -> Result<(), TransportError> {
        let frame = wire::encode(msg)?;
        self.send.write_all(&frame).await.map_err(write_failed)?;
        self.send
            .finish()
            .map_err(|e| TransportError::Stream(e.to_string()))
    }

    /// Abandons the stream with an application error code: resets our send side and asks
    /// the peer to stop sending. Used on input that is not a valid request; the connection
    /// and its other streams are unaffected.
    pub fn reject(mut self, reason: &str) {
        tracing::debug!(reason, id = %self.send.id(), "rejecting stream");
        // Either call fails only when that half is already closed, which is the goal.
        let _ = self.send.reset(STREAM_REJECTED);
        let _ = self.recv.stop(STREAM_REJECTED);
    }
}
