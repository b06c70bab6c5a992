//! The `http` ABI (DESIGN §3): WebAssembly components exporting
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world, 0.2.x), as `wasmtime serve`,
//! Spin and wasmCloud run them.
//!
//! Owns compiling and pre-linking components (WASI preview 2 and `wasi:http`, from
//! `wasmtime-wasi` and `wasmtime-wasi-http`), and running one request: a fresh store and
//! instance per request (like a command), the device's request handed to the guest as an
//! `incoming-request`, and its `outgoing-response` collected (status, fields, body up to
//! [`super::SandboxConfig::max_stdout_bytes`]). Limits are the other ABIs': the memory
//! limiter (over the sum of the component's memories), fuel, epoch yields and the
//! deadline, plus an outer timer at the deadline for a guest waiting in a host call.
//! Outcomes are classified with `run::classify`. The guest's stdout and stderr are its
//! log. Outbound requests (`wasi:http/outgoing-handler`) go through [`super::outbound`]'s
//! hooks, refused unless the function allows the host. Never reuses an instance.

use super::limits::MemoryLimiter;
use super::outbound::{Outbound, OutboundRules};
use super::run::{Guarded, Observed, arm, classify, is_capacity, prepare};
use super::stdio::Stdio;
use super::{Code, CompiledModule, Execution, Inner, Invocation, ModuleError, Sandbox};
use super::{ModuleInner, SandboxError};
use crate::model::{
    ArtifactDigest, FunctionError, FunctionErrorKind, HttpRequestHead, HttpResponseHead, StartKind,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// A pre-linked `wasi:http/proxy` component.
pub(super) type Proxy = ProxyPre<HttpState>;

/// The component layer's version (bytes 4..8 of the header): a core module has `1, 0`
/// there, a component `0x0d, 0, 1, 0`.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Whether `wasm` is a WebAssembly component (the `http` ABI) rather than a core module,
/// judged by its header: what `strata deploy` uses to pick the ABI.
pub fn is_component(wasm: &[u8]) -> bool {
    wasm.starts_with(super::WASM_MAGIC) && wasm.get(4..8) == Some(&COMPONENT_VERSION[..])
}

/// What a component's store carries.
pub(super) struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    deadline: Option<Instant>,
    outbound: Outbound,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl Guarded for HttpState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// The linker every component is pre-linked with: WASI preview 2 (no preopened
/// directories, no sockets: the context grants none) and `wasi:http`.
pub(super) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HttpState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// Compiles and pre-links a component: see [`Sandbox::compile`].
pub(super) fn compile(sandbox: &Sandbox, wasm: &[u8]) -> Result<CompiledModule, ModuleError> {
    let component = Component::from_binary(&sandbox.inner.engine, wasm)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    prelink(sandbox, component, ArtifactDigest::of(wasm), wasm.len())
}

/// Checks `component`'s imports and its `wasi:http/incoming-handler` export, and
/// pre-links it.
pub(super) fn prelink(
    sandbox: &Sandbox,
    component: Component,
    digest: ArtifactDigest,
    size_bytes: usize,
) -> Result<CompiledModule, ModuleError> {
    let engine = &sandbox.inner.engine;
    let count = component.component_type().imports(engine).len();
    if count > sandbox.inner.cfg.max_imports {
        return Err(ModuleError::TooManyImports {
            count,
            limit: sandbox.inner.cfg.max_imports,
        });
    }
    let pre = sandbox
        .inner
        .components
        .instantiate_pre(&component)
        .map_err(|e| ModuleError::Link(format!("{e:#}")))?;
    let proxy = ProxyPre::new(pre).map_err(|e| ModuleError::Abi {
        abi: "http",
        reason: format!("the component does not export `wasi:http/incoming-handler@0.2`: {e:#}"),
    })?;
    Ok(CompiledModule {
        inner: Arc::new(ModuleInner {
            digest,
            code: Code::Http(proxy),
            size_bytes,
        }),
    })
}

/// An `http`-ABI invocation's outcome: the execution (the response body as its stdout,
/// the guest's stdout and stderr as its log) and the response's status and fields when
/// the guest answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpExecution {
    /// The execution, classified as for the other ABIs.
    pub execution: Execution,
    /// The guest's response head; `None` when it failed.
    pub response: Option<HttpResponseHead>,
    /// How long the guest's outbound requests were in flight, summed; `None` when it sent
    /// none.
    pub outbound: Option<Duration>,
}

/// How the guest's part of a request ended, with what the host observed of it.
struct GuestEnd {
    result: wasmtime::Result<()>,
    instantiate: Duration,
    memory_denied: bool,
    peak: u64,
}

/// What the guest's `response-outparam` and body delivered.
enum Answer {
    /// The guest never set a response.
    None,
    /// The guest set an error code instead of a response.
    Error(String),
    /// A response whose body the guest aborted.
    Broken(String),
    /// A response whose body went over the cap: the guest's failure, whatever happened
    /// next (its writes then fail, which may make it trap).
    OverCap(usize),
    /// A complete response.
    Complete(HttpResponseHead, Vec<u8>),
}

/// Runs one request through a component: see [`Sandbox::run_http`].
pub(super) async fn run_http(
    inner: &Inner,
    module: &CompiledModule,
    inv: Invocation,
    head: Option<HttpRequestHead>,
    rules: Option<Arc<OutboundRules>>,
) -> Result<HttpExecution, SandboxError> {
    if !Engine::same(module.engine(), &inner.engine) {
        return Err(SandboxError::ForeignModule);
    }
    let Code::Http(proxy) = &module.inner.code else {
        return Err(SandboxError::WrongKind(
            "a core module cannot run as a component",
        ));
    };
    let cfg = &inner.cfg;
    let Invocation {
        stdin: body,
        env,
        memory_bytes,
        timeout,
        fuel,
        state: _,
    } = inv;
    let started = Instant::now();
    let deadline = started.checked_add(timeout);
    let (stdio, wasi) = Stdio::build_p2(cfg, started, &env);
    stdio.begin(Bytes::new(), started);
    let request = hyper_request(head, body)?;
    let mut store = Store::try_new(
        &inner.engine,
        HttpState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::for_component(memory_bytes),
            deadline,
            outbound: Outbound::new(rules, deadline),
        },
    )
    .map_err(|e| SandboxError::Engine(format!("creating a store: {e:#}")))?;
    prepare(&mut store);
    arm(&mut store, fuel)?;
    let outbound = store.data().outbound.timer();
    let internal = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
    let scheme = if request.uri().scheme_str() == Some("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(scheme, request)
        .map_err(internal)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(tx)
        .map_err(internal)?;
    let proxy = proxy.clone();
    // The guest runs in one future and its response is read in another, polled together
    // on this task: the body's channel is bounded, so a guest writing a large body waits
    // for the reader. The guest's future owns the store and drops it when the handler
    // returns, which ends a body the guest never finished.
    let guest = async move {
        let result = async {
            let instance = proxy.instantiate_async(&mut store).await?;
            let instantiate = started.elapsed();
            let handled = instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            Ok::<_, wasmtime::Error>((handled, instantiate))
        }
        .await;
        let (result, instantiate) = match result {
            Ok((handled, instantiate)) => (handled, instantiate),
            Err(e) => (Err(e), started.elapsed()),
        };
        let limiter = &store.data().limiter;
        GuestEnd {
            result,
            instantiate,
            memory_denied: limiter.denied(),
            peak: limiter.peak(),
        }
    };
    let cap = cfg.max_stdout_bytes;
    let reader = async move {
        match rx.await {
            Err(_) => Answer::None,
            Ok(Err(code)) => Answer::Error(format!("{code:?}")),
            Ok(Ok(response)) => read_response(response, cap).await,
        }
    };
    let timer = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let both = async { tokio::join!(guest, reader) };
    let ended = tokio::select! {
        ended = both => Some(ended),
        () = timer => None,
    };
    let log = stdio.finish(cfg);
    let mut logged = log.stdout;
    logged.extend_from_slice(&log.stderr);
    logged.truncate(cfg.max_stderr_bytes);
    let Some((end, answer)) = ended else {
        // The guest was waiting in a host call (a sleep, a body read) at its deadline.
        return Ok(HttpExecution {
            execution: Execution {
                stdout: Vec::new(),
                stderr: logged,
                failure: Some(FunctionError {
                    kind: FunctionErrorKind::Timeout,
                    message: format!("timed out after {} ms", timeout.as_millis()),
                }),
                start: StartKind::Cold,
                instantiate: Duration::ZERO,
                exec: started.elapsed(),
                peak_memory_bytes: 0,
                platform_fault: true,
            },
            response: None,
            outbound: outbound.total(),
        });
    };
    if let Err(e) = &end.result
        && is_capacity(e)
    {
        return Err(SandboxError::Capacity(format!("{e:#}")));
    }
    let exec = started.elapsed().saturating_sub(end.instantiate);
    let observed = Observed {
        stdout_over: false,
        stderr_over: log.stdout_over || log.stderr_over,
        memory_denied: end.memory_denied,
    };
    let trapped = end.result.is_err();
    let guest_failure = classify(end.result, observed, cfg, timeout, memory_bytes, fuel);
    let unhandled = |message: String| FunctionError {
        kind: FunctionErrorKind::Unhandled,
        message,
    };
    // A body over the cap decides the outcome (as output over its cap does for the other
    // ABIs); then a trap does, even after a response was set: the body may be partial.
    let (failure, chose, response, body) = match (guest_failure, answer) {
        (_, Answer::OverCap(cap)) => (
            Some(unhandled(format!("response body over {cap} bytes"))),
            true,
            None,
            Vec::new(),
        ),
        (Some(f), _) => (Some(f), !trapped, None, Vec::new()),
        (None, Answer::Complete(head, body)) => (None, false, Some(head), body),
        (None, Answer::None) => (
            Some(unhandled(
                "the handler returned without setting a response".into(),
            )),
            true,
            None,
            Vec::new(),
        ),
        (None, Answer::Error(code)) => (
            Some(unhandled(format!("the handler answered with error {code}"))),
            true,
            None,
            Vec::new(),
        ),
        (None, Answer::Broken(why)) => (Some(unhandled(why)), true, None, Vec::new()),
    };
    Ok(HttpExecution {
        execution: Execution {
            stdout: body,
            stderr: logged,
            platform_fault: failure.is_some() && !chose,
            failure,
            start: StartKind::Cold,
            instantiate: end.instantiate,
            exec,
            peak_memory_bytes: end.peak,
        },
        response,
        outbound: outbound.total(),
    })
}

/// The request the guest receives: `head` (or `POST /` for an invocation without one,
/// such as an async retry) with `body`.
fn hyper_request(
    head: Option<HttpRequestHead>,
    body: Bytes,
) -> Result<
    http::Request<impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error>>,
    SandboxError,
> {
    let head = head.unwrap_or_else(|| HttpRequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "localhost".into(),
        path_and_query: "/".into(),
        headers: Vec::new(),
    });
    // The device chose the `Host` field: one that is no valid authority reads as none.
    let authority = http::uri::Authority::try_from(head.authority.as_str())
        .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
    let uri = http::Uri::builder()
        .scheme(head.scheme.as_str())
        .authority(authority)
        .path_and_query(head.path_and_query.as_str())
        .build()
        .map_err(|e| SandboxError::Engine(format!("request URI: {e}")))?;
    let mut builder = http::Request::builder()
        .method(head.method.as_str())
        .uri(uri);
    for (name, value) in &head.headers {
        builder = builder.header(name.as_str(), value.as_ref());
    }
    let body = Full::new(body).map_err(|never: std::convert::Infallible| match never {});
    builder
        .body(body)
        .map_err(|e| SandboxError::Engine(format!("request head: {e}")))
}

/// Reads the guest's response: its head, and its body up to `cap` bytes.
async fn read_response(
    response: http::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
    cap: usize,
) -> Answer {
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Answer::Broken("the handler aborted its response body".into());
        };
        // Trailers are not sent on to the device (docs/guest-abi.md).
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len().saturating_add(data.len()) > cap {
            return Answer::OverCap(cap);
        }
        out.extend_from_slice(&data);
    }
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    Answer::Complete(
        HttpResponseHead {
            status: parts.status.as_u16(),
            headers,
        },
        out,
    )
}
