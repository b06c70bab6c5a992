//! HTTP/3 at the device edge: a QUIC endpoint (ALPN `h3`, TLS 1.3, certificates from the
//! same [`CertTable`] as HTTPS over TCP) and its serve loop, which hands every request to
//! the same axum [`Router`] the TCP listeners serve, so the invoke API, routes and
//! headers behave identically on all three protocols.
//!
//! Owns QUIC connections and HTTP/3 request streams, and applies the `[http]` limits to
//! them as [`super::server`] does to TCP: at most `max_connections` connections (one more
//! is refused with QUIC's `CONNECTION_REFUSED` before its handshake), the handshake and
//! each request's headers within the header-read timeout, header size (h3 answers 431) and
//! count (431), each request body within the body-read timeout, and a connection with no
//! request in flight for the idle timeout is closed. QUIC adds two bounds of its own: the
//! request streams a connection may have open at once (the peer gets no credit for more)
//! and how much unread request body the node buffers per stream and per connection
//! (flow-control windows). The request body reaches the handler as a lazily read stream,
//! so the handlers' token check still runs before any body is read. 0-RTT is off: early
//! data can be replayed by an attacker, and an invocation is not idempotent.

use crate::edge::HttpLimits;
use crate::edge::server::BodyReadError;
use crate::edge::tls::{CertTable, h3_server_config};
use axum::Router;
use axum::body::Body;
use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use h3::server::{RequestResolver, RequestStream};
use http::{HeaderName, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use quinn::VarInt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// Unread request body bytes the node buffers per request stream before the client must
/// wait (QUIC stream flow-control window): 256 KiB, enough to keep a loopback or LAN
/// upload moving at full speed while a handler reads.
const STREAM_WINDOW: u32 = 256 << 10;
/// Unread request body bytes the node buffers per connection, across its streams: 1 MiB.
const CONNECTION_WINDOW: u32 = 1 << 20;
/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder
/// and decoder); the rest leaves room for reserved (grease) stream types.
const UNI_STREAMS: u32 = 8;
/// `H3_NO_ERROR`: the code a connection closed for being idle carries.
const H3_NO_ERROR: u32 = 0x100;

/// QUIC-level limits of the HTTP/3 listener (the `[http]` ones apply too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// Request streams one connection may have open at once; the client gets no credit for
    /// more until one ends.
    pub max_streams: u32,
}

/// Why the HTTP/3 listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Http3Error {
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS configuration has no cipher suite QUIC can start with.
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A limit is out of QUIC's range.
    #[error("QUIC transport configuration: {0}")]
    Transport(String),
    /// The UDP socket could not be bound.
    #[error("binding the HTTP/3 listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the HTTP/3 endpoint on UDP `addr`, serving certificates from `certs` (updates
/// apply to the next handshake) within `limits` and `quic`. Must be called inside a tokio
/// runtime.
///
/// # Errors
/// [`Http3Error`] naming the configuration or socket that failed.
pub fn bind(
    addr: SocketAddr,
    certs: Arc<CertTable>,
    limits: &HttpLimits,
    quic: QuicLimits,
) -> Result<quinn::Endpoint, Http3Error> {
    let tls = h3_server_config(certs)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let idle = Duration::from_millis(limits.idle_timeout_ms.max(1));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(quic.max_streams.max(1)))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        // A peer that stops answering is dropped after the idle timeout; one that answers
        // keeps the connection while a long request runs (the pings below), and the serve
        // loop closes it once no request has been in flight for the idle timeout.
        .max_idle_timeout(Some(idle.try_into().map_err(
            |e: quinn::VarIntBoundsExceeded| Http3Error::Transport(e.to_string()),
        )?))
        .keep_alive_interval(Some(idle / 3));
    config.transport_config(Arc::new(transport));
    // Connection attempts waiting for the accept loop: beyond the cap they would be
    // refused anyway.
    config.max_incoming(limits.max_connections.max(1));
    Ok(quinn::Endpoint::server(config, addr)?)
}

/// Serves `app` over HTTP/3 on `endpoint` within `limits` until `shutdown` completes; then
/// stops accepting, tells open connections to finish their current requests (GOAWAY) and
/// returns when every connection has closed. Dropping the returned future cuts every
/// connection.
pub async fn serve_h3(
    endpoint: quinn::Endpoint,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(mut incoming) = incoming else { break };
                // Past half the cap, a client must first prove it receives at its source
                // address (a QUIC Retry, one round trip), so spoofed Initial packets cannot
                // hold slots until their handshakes time out.
                let scarce = slots.available_permits() < limits.max_connections.max(1) / 2;
                if scarce && !incoming.remote_address_validated() && incoming.may_retry() {
                    match incoming.retry() {
                        Ok(()) => continue,
                        Err(e) => incoming = e.into_incoming(),
                    }
                }
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!("HTTP/3 connection over max_connections; refused");
                    incoming.refuse();
                    continue;
                };
                conns.spawn(connection(incoming, app.clone(), limits, stopping.clone(), permit));
            }
        }
    }
    stop.send_replace(true);
    while conns.join_next().await.is_some() {}
    endpoint.close(VarInt::from_u32(H3_NO_ERROR), b"server shutting down");
}

async fn connection(
    incoming: quinn::Incoming,
    app: Router,
    limits: HttpLimits,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let handshake = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC connection attempt failed");
            return;
        }
    };
    let conn = match tokio::time::timeout(handshake, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    let mut builder = h3::server::builder();
    builder.max_field_section_size(u64::try_from(limits.max_header_bytes).unwrap_or(u64::MAX));
    let built = builder.build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()));
    let mut h3 = match tokio::time::timeout(handshake, built).await {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 connection set-up failed");
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/3 connection set-up timed out");
            return;
        }
    };
    let idle = Duration::from_millis(limits.idle_timeout_ms.max(1));
    let mut requests = JoinSet::new();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, app.clone(), limits));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/3 connection ended with an error");
                    break;
                }
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => last = Instant::now(),
            () = tokio::time::sleep_until(last + idle), if requests.is_empty() => {
                conn.close(VarInt::from_u32(H3_NO_ERROR), b"idle");
                break;
            }
            _ = stopping.changed() => {
                if let Err(e) = h3.shutdown(0).await {
                    tracing::debug!(error = %e, "HTTP/3 GOAWAY failed");
                }
                break;
            }
        }
    }
    // The requests already accepted finish; `h3` closes the connection when dropped after.
    while requests.join_next().await.is_some() {}
}

type Resolver = RequestResolver<h3_quinn::Connection, Bytes>;
type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

async fn request(resolver: Resolver, app: Router, limits: HttpLimits) {
    let headers_within = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let (req, stream) = match tokio::time::timeout(headers_within, resolver.resolve_request()).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request refused");
            return;
        }
        Err(_) => {
            tracing::debug!("HTTP/3 request headers did not arrive in time");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let result = if req.headers().len() > limits.max_headers.max(1) {
        // As hyper answers HTTP/1.1 requests with too many fields.
        let mut resp = http::Response::new(());
        *resp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        match send.send_response(resp).await {
            Ok(()) => send.finish().await,
            Err(e) => Err(e),
        }
    } else {
        let body_within = Duration::from_millis(limits.body_read_timeout_ms.max(1));
        let req = req.map(|()| Body::new(RequestBody::new(recv, body_within)));
        let resp = match app.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        respond(&mut send, resp).await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/3 response not delivered");
    }
}

/// Connection-specific fields HTTP/3 forbids (RFC 9114 §4.2); the platform never sends
/// them on this protocol.
const CONNECTION_SPECIFIC: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Writes `resp`'s head, streams its body and ends the stream (with trailers if the body
/// has them). A body that fails midway resets the stream so the client does not take a
/// truncated body for a whole one.
async fn respond(send: &mut SendHalf, resp: axum::response::Response) -> Result<(), StreamError> {
    let (mut parts, mut body) = resp.into_parts();
    for name in &CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    send.send_response(http::Response::from_parts(parts, ()))
        .await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await
}

/// A request body read from its HTTP/3 stream as the handler asks for it, failing once
/// the body-read deadline passes.
struct RequestBody {
    recv: RecvHalf,
    timeout: Duration,
    expires: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl RequestBody {
    fn new(recv: RecvHalf, timeout: Duration) -> Self {
        Self {
            recv,
            timeout,
            expires: Box::pin(tokio::time::sleep(timeout)),
            done: false,
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.recv.poll_recv_data(cx) {
            Poll::Ready(Ok(Some(mut buf))) => {
                let data = buf.copy_to_bytes(buf.remaining());
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Poll::Ready(Ok(None)) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                return Poll::Ready(Some(Err(BodyReadError::Http3(e))));
            }
            Poll::Pending => {}
        }
        match this.expires.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(Some(Err(BodyReadError::TimedOut(this.timeout))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
