//! The POP's side: QUIC client endpoints and one [`Channel`] per region connection.
//!
//! Owns the client sockets (an IPv4 endpoint bound at construction, an IPv6 one bound on
//! first use) and the request protocol: one bidirectional stream per request, one frame
//! each way. Never retries and never picks a region: callers decide, using
//! [`TransportError::request_was_not_sent`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    CLOSE_NORMAL, CLOSE_SILENT, KEEP_ALIVE_INTERVAL, NodeTls, STREAM_TIMED_OUT, TransportError,
    handshake_failed, open_failed, read_failed, wire_failed, write_failed,
};
use crate::wire::{self, Message};

/// Upper bound on what [`Channel::request_raw`] reads back.
const RAW_REPLY_LIMIT: usize = 1 << 20;

/// A POP's QUIC client: presents the node certificate and verifies regions against the
/// CA. Cheap to clone; clones share the sockets.
#[derive(Debug, Clone)]
pub struct Client {
    config: quinn::ClientConfig,
    v4: quinn::Endpoint,
    /// Bound lazily: hosts without IPv6 must still be able to reach IPv4 regions.
    v6: Arc<Mutex<Option<quinn::Endpoint>>>,
}

impl Client {
    /// Binds the IPv4 client endpoint on `0.0.0.0:0`, with keep-alives every
    /// [`KEEP_ALIVE_INTERVAL`]. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`TransportError::Io`] when the socket cannot be bound or no runtime is running.
    pub fn new(tls: &NodeTls) -> Result<Self, TransportError> {
        Self::with_keep_alive(tls, KEEP_ALIVE_INTERVAL)
    }

    /// As [`Client::new`], sending a keep-alive after `keep_alive` without traffic (at
    /// most [`KEEP_ALIVE_INTERVAL`]): the POP uses a fraction of its silence threshold, so
    /// a live region is always heard from well within it ([`Channel::received`]).
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_keep_alive(tls: &NodeTls, keep_alive: Duration) -> Result<Self, TransportError> {
        let v4 = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        Ok(Self {
            config: tls.client_config(keep_alive),
            v4,
            v6: Arc::new(Mutex::new(None)),
        })
    }

    /// Connects to a region at `addr`, verifying its certificate for `server_name`
    /// (usually [`super::REGION_SERVER_NAME`]).
    ///
    /// # Errors
    /// [`TransportError::Connect`] when the address is unreachable within the idle
    /// timeout, the name is invalid, or the handshake fails (certificate or ALPN refused).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Channel, TransportError> {
        let endpoint = self.endpoint_for(addr)?;
        let connecting = endpoint
            .connect_with(self.config.clone(), addr, server_name)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let conn = connecting.await.map_err(handshake_failed)?;
        Ok(Channel { conn })
    }

    fn endpoint_for(&self, addr: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
        if addr.is_ipv4() {
            return Ok(self.v4.clone());
        }
        // A poisoned lock only means another thread panicked between checking and
        // storing; the Option inside is still consistent.
        let mut v6 = self.v6.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(endpoint) = v6.as_ref() {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .map_err(|e| TransportError::Connect(format!("cannot bind an IPv6 socket: {e}")))?;
        *v6 = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// An established, authenticated connection to one region. Cheap to clone; requests on
/// clones run concurrently on their own streams.
#[derive(Debug, Clone)]
pub struct Channel {
    conn: quinn::Connection,
}

impl Channel {
    /// Sends `msg` on a new stream and waits for the one reply frame (body at most
    /// `reply_limit` bytes).
    ///
    /// Waits for stream credit when the region's concurrent stream limit is reached.
    ///
    /// # Errors
    /// [`TransportError::Closed`] or [`TransportError::Connect`] when the request was not
    /// sent; [`TransportError::ConnectionLost`] when it may have been received;
    /// [`TransportError::Stream`] when the region refused the stream;
    /// [`TransportError::Wire`] when the reply is not a valid frame.
    pub async fn request(
        &self,
        msg: &Message,
        reply_limit: usize,
    ) -> Result<Message, TransportError> {
        let frame = wire::encode(msg)?;
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(open_failed)?;
        send.write_all(&frame).await.map_err(write_failed)?;
        send.finish()
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        super::read_frame(&mut recv, reply_limit).await
    }

    /// As [`Channel::request`], but gives up when the reply has not arrived `within` of
    /// the stream opening: the stream is then reset and stopped (so the region sees the
    /// request abandoned) and [`TransportError::TimedOut`] returned.
    ///
    /// # Errors
    /// As [`Channel::request`]; [`TransportError::TimedOut`] past the bound.
    pub async fn request_within(
        &self,
        msg: &Message,
        reply_limit: usize,
        within: Duration,
    ) -> Result<Message, TransportError> {
        let frame = wire::encode(msg)?;
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(open_failed)?;
        let exchange = async {
            send.write_all(&frame).await.map_err(write_failed)?;
            send.finish()
                .map_err(|e| TransportError::Stream(e.to_string()))?;
            super::read_frame(&mut recv, reply_limit).await
        };
        match tokio::time::timeout(within, exchange).await {
            Ok(reply) => reply,
            Err(_) => {
                // Either may already be finished or stopped; a reset is best effort.
                let _ = send.reset(STREAM_TIMED_OUT);
                let _ = recv.stop(STREAM_TIMED_OUT);
                Err(TransportError::TimedOut(within))
            }
        }
    }

    /// Opens a long-lived stream: sends `msg` and returns the [`Subscription`] that reads
    /// the peer's frames as they come. Dropping it stops the stream.
    ///
    /// # Errors
    /// As [`Channel::request`] for opening the stream and sending `msg`.
    pub async fn subscribe(&self, msg: &Message) -> Result<Subscription, TransportError> {
        let frame = wire::encode(msg)?;
        let (mut send, recv) = self.conn.open_bi().await.map_err(open_failed)?;
        send.write_all(&frame).await.map_err(write_failed)?;
        send.finish()
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        Ok(Subscription { recv })
    }

    /// Diagnostics and tests: sends arbitrary `bytes` on a new stream and reads the reply
    /// to its end (at most 1 MiB).
    ///
    /// # Errors
    /// As [`Channel::request`]; [`TransportError::Stream`] when the reply is too long.
    pub async fn request_raw(&self, bytes: &[u8]) -> Result<Vec<u8>, TransportError> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(open_failed)?;
        send.write_all(bytes).await.map_err(write_failed)?;
        send.finish()
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        recv.read_to_end(RAW_REPLY_LIMIT)
            .await
            .map_err(|e| match e {
                quinn::ReadToEndError::Read(e) => read_failed(e),
                quinn::ReadToEndError::TooLong => {
                    TransportError::Stream(format!("reply longer than {RAW_REPLY_LIMIT} bytes"))
                }
            })
    }

    /// The current smoothed round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// The lowest round-trip time this connection has seen: the path's delay, without the
    /// queueing and slow acknowledgements of a busy peer that inflate [`Self::rtt`].
    pub fn min_rtt(&self) -> Duration {
        self.conn.stats().path.min_rtt
    }

    /// How many UDP datagrams this connection has received so far. It grows while the
    /// region is alive (its replies, acknowledgements of our keep-alives, its own
    /// keep-alives); a count that stops growing means a silent region
    /// ([`crate::policy::liveness::Silence`]).
    pub fn received(&self) -> u64 {
        self.conn.stats().udp_rx.datagrams
    }

    /// How many STOP_SENDING frames this connection has sent and received: a request or
    /// reply stream read to its end sends none, so on a healthy connection both stay at
    /// zero (a rejected request or an abandoned one, [`Self::request_within`], counts).
    pub fn stops(&self) -> (u64, u64) {
        let stats = self.conn.stats();
        (stats.frame_tx.stop_sending, stats.frame_rx.stop_sending)
    }

    /// Drops a connection whose region went silent: requests in flight on it fail at once
    /// with [`TransportError::ConnectionLost`] (they may have been received), and new ones
    /// with [`TransportError::Closed`] (not sent). No close frame reaches a dead peer; a
    /// live one that was only slow learns why.
    pub fn close_silent(&self) {
        self.conn.close(CLOSE_SILENT, b"region silent");
    }

    /// True once the connection is closed, for whatever reason.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Completes when the connection is closed (by either side, or by the idle timeout).
    pub async fn closed(&self) {
        let reason = self.conn.closed().await;
        tracing::debug!(remote = %self.conn.remote_address(), %reason, "channel closed");
    }

    /// The region's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Closes the connection normally; requests in flight fail.
    pub fn close(&self) {
        self.conn.close(CLOSE_NORMAL, b"closed");
    }
}

/// The receiving end of a long-lived stream opened with [`Channel::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    recv: quinn::RecvStream,
}

impl Subscription {
    /// Waits for the next frame (body at most `limit` bytes).
    ///
    /// # Errors
    /// [`TransportError::Wire`] when the bytes are not a valid frame (including the peer
    /// finishing the stream); stream or connection errors when either failed.
    pub async fn next(&mut self, limit: usize) -> Result<Message, TransportError> {
        wire::read_message(&mut self.recv, limit)
            .await
            .map_err(wire_failed)
    }
}
