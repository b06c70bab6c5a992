//! The one HTTP serve loop both node kinds run their device/API port with (instead of
//! `axum::serve`), and the limits it enforces on every connection ([`HttpLimits`]).
//!
//! Owns connections, not requests: accepting (at most `max_connections` at once; a
//! connection over the cap is accepted and closed at once, so the kernel's backlog never
//! fills with connections nobody will read), HTTP/1.1 parsing limits (header count and
//! size, header-read timeout: hyper's own), a deadline on reading each request body, the
//! idle keep-alive timeout, and graceful shutdown. The caller binds the
//! [`tokio::net::TcpListener`] (so backlog and address are the node's business) and passes
//! the app as an axum [`Router`]. Each connection speaks HTTP/1.1 or HTTP/2, chosen by the
//! client's preface (h2c on plain connections, ALPN `h2` on TLS ones); [`serve_tls`] runs
//! the same loop with a TLS handshake (bounded by the header-read timeout) first, so every
//! limit holds on both. Nothing above this module sees the socket.
//!
//! The HTTP/1 header-read timeout is kept by the connection's own watchdog, the one timer
//! that also keeps the idle timeout, rather than by hyper: hyper's arms a timer of its own
//! for every request head (an allocation, a clock read and a trip through the runtime's
//! timer wheel, about 4% of a small request's CPU). It means the same: a head must be whole
//! within the timeout after the server starts waiting for it (when the connection opens,
//! and when the previous response has been written).

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Limits of a node's HTTP server (`[http]` in both nodes' configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// A request's line and headers must arrive within this after the server starts
    /// reading them, or the connection is closed. In milliseconds; default 10 000.
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this after its headers, or reading it
    /// fails (400, kind `bad_request`) and the connection is closed. In milliseconds;
    /// default 60 000 (a 6 MiB body then needs at least ~100 KiB/s).
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request in progress and no bytes moving for this
    /// long is closed. In milliseconds; default 30 000.
    pub idle_timeout_ms: u64,
    /// Connections open at once; one more is accepted and closed at once. Keep it below
    /// the process's open-file limit (`ulimit -n`). Default 4096.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes; more gets 431. Default 16 384.
    pub max_header_bytes: usize,
    /// Most request header fields; more gets 431. Default 64.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            max_connections: 4096,
            max_header_bytes: 16 << 10,
            max_headers: 64,
        }
    }
}

impl HttpLimits {
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        // hyper's HTTP/1 read buffer bounds the request line plus headers (it cannot go
        // below 8 KiB); HTTP/2 bounds the decoded header list instead.
        b.http1()
            // Kept by `connection`'s watchdog instead (see the module docs).
            .header_read_timeout(None)
            .max_headers(self.max_headers.max(1))
            .max_buf_size(self.max_header_bytes.max(8 << 10));
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(u32::try_from(self.max_headers.max(1) * 4).unwrap_or(256));
        b
    }
}

/// Why reading a request body failed at this layer.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    /// The body did not arrive within `body_read_timeout_ms`.
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The connection failed while the body was read.
    #[error("{0}")]
    Connection(#[from] hyper::Error),
    /// The HTTP/3 request stream failed (reset by the client, connection lost) while the
    /// body was read.
    #[error("{0}")]
    Http3(h3::error::StreamError),
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets open connections finish their current request, and returns when every
/// connection has closed. Dropping the returned future cuts every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, None, app, limits, shutdown).await;
}

/// [`serve`] over TLS: each accepted connection completes its handshake with `acceptor`
/// within the header-read timeout (a failed or slow handshake closes it), then is served
/// with the same limits.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, Some(acceptor), app, limits, shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let builder = limits.builder();
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors or a reset before accept: back off a
                        // little instead of spinning on the same error.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!("HTTP connection over max_connections; closed");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (app, builder, stopping) = (app.clone(), builder.clone(), stopping.clone());
                let Some(acceptor) = tls.clone() else {
                    conns.spawn(connection(stream, app, builder, limits, stopping, permit));
                    continue;
                };
                let handshake = Duration::from_millis(limits.header_read_timeout_ms.max(1));
                conns.spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            connection(tls, app, builder, limits, stopping, permit).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    stop.send_replace(true);
    while conns.join_next().await.is_some() {}
}

/// What a connection has been doing, for the idle and header-read timeouts.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Milliseconds after `base` when bytes last moved.
    last_ms: AtomicU64,
    /// Milliseconds after `base` when the server started waiting for the request head it
    /// has not had whole yet ([`NO_HEAD`] while a request is being served).
    head_since_ms: AtomicU64,
    /// Requests whose response has not been fully written.
    in_flight: AtomicUsize,
    /// The client spoke HTTP/2 (its preface), which has no header-read timeout here.
    h2: AtomicBool,
}

/// `head_since_ms` while no request head is awaited.
const NO_HEAD: u64 = u64::MAX;

/// The start of the HTTP/2 client preface; an HTTP/1 request never begins with it.
const H2_PREFACE_START: &[u8] = b"PRI ";

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            // The first head is awaited from the start.
            head_since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
        }
    }

    /// Records that bytes moved now; returns when, in milliseconds after `base`.
    fn touch(&self) -> u64 {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms, Ordering::Relaxed);
        ms
    }

    /// Bytes moved. Only recorded while no request is in flight: the idle timeout never
    /// closes a connection with one, and the last one's end is recorded when it ends
    /// ([`InFlight`]'s drop), so a request's own reads and writes need no clock read.
    fn moved(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.touch();
        }
    }

    /// When the connection counts as idle if nothing happens before.
    fn idle_at(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    /// When the request head awaited now is late, if one is awaited (HTTP/1 only).
    fn head_due(&self, within: Duration) -> Option<Instant> {
        let since = self.head_since_ms.load(Ordering::Relaxed);
        let waiting = since != NO_HEAD
            && self.in_flight.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed);
        waiting.then(|| self.base + Duration::from_millis(since) + within)
    }
}

/// Counts a request in flight on its connection until dropped; its head has arrived.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        Self(Arc::clone(a))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        // The response is written: the server waits for the next head from now.
        let now = self.0.touch();
        self.0.head_since_ms.store(now, Ordering::Relaxed);
    }
}

async fn connection<S>(
    stream: S,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: HttpLimits,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let body_timeout = Duration::from_millis(limits.body_read_timeout_ms.max(1));
    let idle = Duration::from_millis(limits.idle_timeout_ms.max(1));
    let head_within = Duration::from_millis(limits.header_read_timeout_ms.max(1));
    let seen = Arc::clone(&activity);
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let guard = InFlight::new(&seen);
        let app = app.clone();
        async move {
            let req = req.map(|b| Body::new(Deadline::new(b, body_timeout)));
            let resp = match app.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            // The request stays in flight until its response body is fully written (a
            // long stream is not idle).
            Ok::<_, Infallible>(resp.map(move |b| {
                Body::new(b.map_frame(move |f| {
                    let _held = &guard;
                    f
                }))
            }))
        }
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
        sniffed: 0,
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity.idle_at(idle);
        let wake = activity
            .head_due(head_within)
            .map_or(idle_at, |due| due.min(idle_at));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stopping.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake), if !closing => {
                let now = Instant::now();
                if activity.head_due(head_within).is_some_and(|due| due <= now) {
                    // As hyper's own timeout did: the connection is closed, no response.
                    tracing::debug!("HTTP/1 request head not read within the timeout; closed");
                    return;
                }
                let quiet = activity.idle_at(idle) <= now;
                if quiet && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else if quiet {
                    // A request is running (a long invocation): not idle.
                    activity.touch();
                }
            }
        }
    }
}

/// A request body that fails once its deadline passes. The timer is armed only when the
/// body is not all there at once (most small bodies are): a timer per request costs an
/// allocation and a trip through the runtime's timer wheel.
struct Deadline {
    inner: Incoming,
    timeout: Duration,
    deadline: Instant,
    expires: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Instant::now() + timeout,
            expires: None,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BodyReadError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyReadError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyReadError::from)));
        }
        let deadline = this.deadline;
        let expires = this
            .expires
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match expires.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyReadError::TimedOut(this.timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that records when bytes last moved, and whether the client began with the
/// HTTP/2 preface.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// How many of the connection's first bytes have been compared with the preface's
    /// start (`H2_PREFACE_START.len()` once decided).
    sniffed: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved();
            if self.sniffed < H2_PREFACE_START.len() {
                let read = &buf.filled()[before..];
                self.sniff(read);
            }
        }
        r
    }
}

impl<S> Watched<S> {
    /// Compares the connection's first bytes, as they arrive, with the HTTP/2 preface.
    fn sniff(&mut self, read: &[u8]) {
        let want = &H2_PREFACE_START[self.sniffed..];
        let n = want.len().min(read.len());
        if read[..n] != want[..n] {
            self.sniffed = H2_PREFACE_START.len();
            return;
        }
        self.sniffed += n;
        if self.sniffed == H2_PREFACE_START.len() {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
