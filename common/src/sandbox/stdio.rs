//! One WASI context's stdio and monotonic clock, re-armed for every invocation, so that a
//! warm reactor instance keeps one context for its whole life instead of building one per
//! call.
//!
//! Owns the in-memory stdin, stdout and stderr the guest sees and the guest clock's origin.
//! [`Stdio::begin`] gives the guest one invocation's payload and restarts its clock;
//! [`Stdio::finish`] takes everything the guest wrote and empties stdin, so nothing of one
//! invocation (payload left unread, output) is visible to the next. Output is capped:
//! each pipe holds one byte more than its cap, so a guest that tried to write past the cap
//! is told apart from one that wrote exactly the cap, and the invocation fails; output is
//! never silently truncated. A full pipe answers the guest's writes as closed (EIO).
//!
//! The context keeps the stream handles it was given until the guest closes or renumbers
//! a stdio descriptor, which drops one; [`Stdio::intact`] reports that, and a reactor
//! instance whose stdio is no longer intact is discarded rather than handed to the next
//! invocation with missing or rearranged descriptors. A reused component instance keeps
//! its pipes and gets a new preview 2 context on them for every request
//! ([`Stdio::context_p2`]); the stream resources it got earlier keep writing to the same
//! pipes, and [`Stdio::live_handles`] counts them, so that they can be told apart from
//! resources a request left behind. Never blocks and never does I/O.

use super::poll::GuestClock;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError};

/// The guest's `argv[0]`; guests get no other arguments.
const PROGRAM_NAME: &str = "function";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field moves or a copy that cannot panic
    // half-way, so a poisoned lock still guards consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the guest wrote in one invocation, cut to the caps, and whether it tried to write
/// more than a cap.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) stdout_over: bool,
    pub(super) stderr_over: bool,
}

/// The instant the guest's monotonic clock reads zero, shared by the context's clock and
/// the host. Stored as nanoseconds after a fixed base so it can change without a lock.
#[derive(Debug)]
pub(super) struct ClockOrigin {
    base: Instant,
    after_base_nanos: AtomicU64,
}

impl ClockOrigin {
    fn new(origin: Instant) -> Self {
        Self {
            base: origin,
            after_base_nanos: AtomicU64::new(0),
        }
    }

    fn set(&self, origin: Instant) {
        let after = nanos(origin.saturating_duration_since(self.base).as_nanos());
        self.after_base_nanos.store(after, Ordering::Relaxed);
    }

    /// Nanoseconds since the origin.
    pub(super) fn elapsed_nanos(&self) -> u64 {
        let since_base = nanos(self.base.elapsed().as_nanos());
        since_base.saturating_sub(self.after_base_nanos.load(Ordering::Relaxed))
    }
}

fn nanos(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One context's stdio: the host's side of the guest's three pipes and its clock origin.
/// Cloning shares the pipes.
#[derive(Debug, Clone)]
pub(super) struct Stdio {
    stdin: Input,
    stdout: Output,
    stderr: Output,
    clock: Arc<ClockOrigin>,
}

impl Stdio {
    /// A WASI preview 1 context wired to new, empty pipes (stdout and stderr capped at the
    /// config's caps), with the program name as its only argument and no environment (the
    /// environment is per invocation: see `environ`). Built once per store.
    pub(super) fn build(cfg: &super::SandboxConfig, now: Instant) -> (Self, WasiP1Ctx) {
        let (stdio, mut builder) = Self::builder(cfg, now);
        (stdio, builder.build_p1())
    }

    /// A WASI preview 2 context (for a component) wired like [`Stdio::build`]'s, with
    /// `env` as its environment: a component's context lives for one invocation.
    pub(super) fn build_p2(
        cfg: &super::SandboxConfig,
        now: Instant,
        env: &[(String, String)],
    ) -> (Self, wasmtime_wasi::WasiCtx) {
        let (stdio, mut builder) = Self::builder(cfg, now);
        builder.envs(env);
        (stdio, builder.build())
    }

    /// A new WASI preview 2 context on these same pipes and clock, with `env` as its
    /// environment: the next request's context in a reused component instance, whose
    /// stdio stream resources (made by an earlier context) keep writing to the same pipes.
    pub(super) fn context_p2(&self, env: &[(String, String)]) -> wasmtime_wasi::WasiCtx {
        let mut builder = self.wire();
        builder.envs(env);
        builder.build()
    }

    fn builder(cfg: &super::SandboxConfig, now: Instant) -> (Self, WasiCtxBuilder) {
        let stdio = Self {
            stdin: Input::default(),
            stdout: Output::new(cfg.max_stdout_bytes),
            stderr: Output::new(cfg.max_stderr_bytes),
            clock: Arc::new(ClockOrigin::new(now)),
        };
        let builder = stdio.wire();
        (stdio, builder)
    }

    fn wire(&self) -> WasiCtxBuilder {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdin(self.stdin.clone())
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone())
            .arg(PROGRAM_NAME)
            .monotonic_clock(GuestClock {
                origin: Arc::clone(&self.clock),
            });
        builder
    }

    /// Arms the pipes for one invocation: `stdin` is what the guest reads and the guest
    /// clock reads zero at `origin`. The outputs are already empty: new pipes are, and
    /// [`Stdio::finish`] empties them after every invocation.
    pub(super) fn begin(&self, stdin: Bytes, origin: Instant) {
        *lock(&self.stdin.shared.bytes) = stdin;
        debug_assert!(lock(&self.stdout.shared.buf).is_empty());
        debug_assert!(lock(&self.stderr.shared.buf).is_empty());
        self.clock.set(origin);
    }

    /// Takes what the guest wrote since [`Stdio::begin`] and drops any stdin it did not
    /// read. Call once the guest no longer runs.
    pub(super) fn finish(&self, cfg: &super::SandboxConfig) -> Captured {
        *lock(&self.stdin.shared.bytes) = Bytes::new();
        let (stdout, stdout_over) = self.stdout.take(cfg.max_stdout_bytes);
        let (stderr, stderr_over) = self.stderr.take(cfg.max_stderr_bytes);
        Captured {
            stdout,
            stderr,
            stdout_over,
            stderr_over,
        }
    }

    /// Whether the context still holds every stream handle it was given: false once the
    /// guest closed or renumbered a stdio descriptor.
    pub(super) fn intact(&self) -> bool {
        !self.stdin.shared.dropped.load(Ordering::Relaxed)
            && !self.stdout.shared.dropped.load(Ordering::Relaxed)
            && !self.stderr.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many stream handles of these pipes exist (held by a WASI context or, for a
    /// component, in its resource table).
    pub(super) fn live_handles(&self) -> usize {
        self.stdin.shared.live.load(Ordering::Relaxed)
            + self.stdout.shared.live.load(Ordering::Relaxed)
            + self.stderr.shared.live.load(Ordering::Relaxed)
    }

    /// The guest's stderr, for host imports that log.
    pub(super) fn stderr(&self) -> &Output {
        &self.stderr
    }

    /// The guest's stdout.
    pub(super) fn stdout(&self) -> &Output {
        &self.stdout
    }

    /// Moves as much of stdin as fits into `dst` (the guest's buffer); returns how much:
    /// 0 once stdin is used up.
    pub(super) fn read_stdin(&self, dst: &mut [u8]) -> usize {
        let mut bytes = lock(&self.stdin.shared.bytes);
        let n = dst.len().min(bytes.len());
        dst[..n].copy_from_slice(&bytes.split_to(n));
        n
    }
}

#[derive(Debug, Default)]
struct InputShared {
    bytes: Mutex<Bytes>,
    /// Set when a stream handle the context held was dropped.
    dropped: AtomicBool,
    /// Stream handles alive.
    live: AtomicUsize,
}

/// The guest's stdin: the host's side, which also makes the context's stream handles.
#[derive(Debug, Clone, Default)]
struct Input {
    shared: Arc<InputShared>,
}

/// A stream handle of [`Input`] held by the WASI context.
struct InputHandle {
    shared: Arc<InputShared>,
}

impl Input {
    fn handle(&self) -> InputHandle {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        InputHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for InputHandle {
    fn drop(&mut self) {
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
        self.shared.dropped.store(true, Ordering::Relaxed);
    }
}

impl IsTerminal for Input {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for Input {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.handle())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.handle())
    }
}

impl InputStream for InputHandle {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        let mut bytes = lock(&self.shared.bytes);
        if bytes.is_empty() {
            return Err(StreamError::Closed);
        }
        let n = size.min(bytes.len());
        Ok(bytes.split_to(n))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for InputHandle {
    // In-memory stdin is always ready.
    async fn ready(&mut self) {}
}

impl AsyncRead for InputHandle {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut bytes = lock(&self.shared.bytes);
        let n = buf.remaining().min(bytes.len());
        buf.put_slice(&bytes.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug)]
struct OutputShared {
    buf: Mutex<Vec<u8>>,
    /// The cap plus one byte of headroom: see the module docs.
    capacity: usize,
    /// Set when a stream handle the context held was dropped.
    dropped: AtomicBool,
    /// Stream handles alive.
    live: AtomicUsize,
}

/// The guest's stdout or stderr: the host's side, which also makes the context's stream
/// handles.
#[derive(Debug, Clone)]
pub(super) struct Output {
    shared: Arc<OutputShared>,
}

impl Output {
    fn new(cap: usize) -> Self {
        Self {
            shared: Arc::new(OutputShared {
                buf: Mutex::new(Vec::new()),
                capacity: cap.saturating_add(1),
                dropped: AtomicBool::new(false),
                live: AtomicUsize::new(0),
            }),
        }
    }

    fn handle(&self) -> OutputHandle {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        OutputHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Takes the buffer (no copy: it becomes the invocation's output) cut to `cap`, and
    /// whether more than `cap` was written.
    fn take(&self, cap: usize) -> (Vec<u8>, bool) {
        let mut out = std::mem::take(&mut *lock(&self.shared.buf));
        let over = out.len() > cap;
        out.truncate(cap);
        (out, over)
    }

    /// Bytes that still fit (the cap's one byte of headroom included): a host import
    /// copies at most this much guest memory.
    pub(super) fn room(&self) -> usize {
        self.shared
            .capacity
            .saturating_sub(lock(&self.shared.buf).len())
    }

    /// Appends all of `bytes` if they fit (the cap's one byte of headroom included) and
    /// returns true; otherwise writes nothing and returns false.
    pub(super) fn append_whole(&self, bytes: &[u8]) -> bool {
        let mut buf = lock(&self.shared.buf);
        if bytes.len() > self.shared.capacity.saturating_sub(buf.len()) {
            return false;
        }
        buf.extend_from_slice(bytes);
        true
    }

    /// Appends as much of `bytes` as fits: a host import's log line. What does not fit is
    /// dropped, and the pipe is then full, so the cap check sees the overflow.
    pub(super) fn append(&self, bytes: &[u8]) {
        let mut buf = lock(&self.shared.buf);
        let room = self.shared.capacity.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// A stream handle of [`Output`] held by the WASI context.
struct OutputHandle {
    shared: Arc<OutputShared>,
}

impl Drop for OutputHandle {
    fn drop(&mut self) {
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
        self.shared.dropped.store(true, Ordering::Relaxed);
    }
}

impl IsTerminal for Output {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Output {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.handle())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.handle())
    }
}

impl OutputStream for OutputHandle {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let mut buf = lock(&self.shared.buf);
        // WASI writes at most what `check_write` allowed; more is the caller's bug.
        if bytes.len() > self.shared.capacity.saturating_sub(buf.len()) {
            return Err(StreamError::trap("write beyond the pipe's capacity"));
        }
        buf.extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        let used = lock(&self.shared.buf).len();
        match self.shared.capacity.saturating_sub(used) {
            // Full for good (until the next invocation): the guest's write fails.
            0 => Err(StreamError::Closed),
            room => Ok(room),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputHandle {
    // In-memory output is always ready.
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputHandle {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buf = lock(&self.shared.buf);
        let n = bytes
            .len()
            .min(self.shared.capacity.saturating_sub(buf.len()));
        buf.extend_from_slice(&bytes[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
