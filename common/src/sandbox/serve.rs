//! One request through an `http`-ABI component (DESIGN §3): the device's request handed
//! to the guest as an `incoming-request`, and its `outgoing-response` collected (status,
//! fields, body up to [`super::SandboxConfig::max_stdout_bytes`]).
//!
//! By default in a fresh store and instance per request, like a command. A function that
//! opts in to reuse (`reuse_instances`) runs in a warm [`ComponentInstance`] from its
//! [`super::pool`], as a reactor does, with everything per request replaced before the
//! call: the WASI context (environment, clock origin; stdio pipes re-armed and emptied),
//! the `wasi:http` context, the outbound budget, the deadline, fuel and the epoch
//! deadline, and the memory limiter's peak (its limit keeps counting the instance's
//! memory). The instance goes back to its slot only after a request that succeeded and
//! left nothing in its resource table but stdio streams; one that trapped, timed out,
//! ran out of memory or fuel, failed in any other way or kept a resource is dropped.
//!
//! Limits are the other ABIs': the memory limiter (over the sum of the component's
//! memories), fuel, epoch yields and the deadline, plus an outer timer at the deadline
//! for a guest waiting in a host call. Outcomes are classified with `run::classify`. The
//! guest's stdout and stderr are its log. Outbound requests
//! (`wasi:http/outgoing-handler`) go through [`super::outbound`]'s hooks, refused unless
//! the function allows the host.

use super::component::{ComponentInstance, HttpState};
use super::limits::MemoryLimiter;
use super::outbound::{Outbound, OutboundRules};
use super::pool::{WarmInstance, WarmKey};
use super::run::{Observed, arm, classify, is_capacity, prepare};
use super::stdio::Stdio;
use super::{Code, CompiledModule, Execution, Inner, Invocation, SandboxError, WarmLane};
use crate::model::{
    FunctionError, FunctionErrorKind, HttpRequestHead, HttpResponseHead, StartKind,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::Proxy as ProxyInstance;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

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

/// Where an `http`-ABI function that opted in to instance reuse keeps its warm
/// instances: a pool slot of `key`'s pool in `lane`, chosen by `affinity` like a
/// reactor's ([`super::Sandbox::run_reactor_in`]).
#[derive(Debug, Clone, Copy)]
pub struct Reuse<'a> {
    /// The function version's pool.
    pub key: &'a WarmKey,
    /// The request's affinity key, if any.
    pub affinity: Option<&'a str>,
    /// The pool's lane.
    pub lane: WarmLane,
}

/// How the guest's part of a request ended, with what the host observed of it, and the
/// store and handler when the instance may serve another request.
struct GuestEnd {
    result: wasmtime::Result<()>,
    instantiate: Duration,
    memory_denied: bool,
    peak: u64,
    kept: Option<(Store<HttpState>, ProxyInstance)>,
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

/// Runs one request through a component, in a warm instance of `reuse`'s pool when
/// given: see [`super::Sandbox::run_http`] and [`super::Sandbox::run_http_reusing`].
pub(super) async fn run_http(
    inner: &Inner,
    module: &CompiledModule,
    inv: Invocation,
    head: Option<HttpRequestHead>,
    rules: Option<Arc<OutboundRules>>,
    reuse: Option<Reuse<'_>>,
) -> Result<HttpExecution, SandboxError> {
    if !Engine::same(module.engine(), &inner.engine) {
        return Err(SandboxError::ForeignModule);
    }
    let Code::Http(pre) = &module.inner.code else {
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
    let request = hyper_request(head, body)?;
    // The slot is held until the instance goes back; dropped half-way (the caller went
    // away, the deadline passed) it is emptied.
    let (slot, warm) = match reuse {
        Some(r) => inner
            .pools
            .checkout(r.key, r.affinity, r.lane, started)
            .reserve(),
        None => (None, None),
    };
    let outbound = Outbound::new(rules, deadline);
    let (mut store, stdio, warm_proxy) = match warm.and_then(WarmInstance::component) {
        Some(instance) => {
            let ComponentInstance {
                mut store,
                proxy,
                stdio,
            } = *instance;
            let state = store.data_mut();
            state.wasi = stdio.context_p2(&env);
            state.http = WasiHttpCtx::new();
            state.deadline = deadline;
            state.outbound = outbound;
            state.limiter.start_invocation();
            (store, stdio, Some(proxy))
        }
        None => {
            let (stdio, wasi) = Stdio::build_p2(cfg, started, &env);
            let state = HttpState {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limiter: MemoryLimiter::for_component(memory_bytes),
                deadline,
                outbound,
            };
            let mut store = Store::try_new(&inner.engine, state)
                .map_err(|e| SandboxError::Engine(format!("creating a store: {e:#}")))?;
            prepare(&mut store);
            (store, stdio, None)
        }
    };
    let start = if warm_proxy.is_some() {
        StartKind::Warm
    } else {
        StartKind::Cold
    };
    stdio.begin(Bytes::new(), started);
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
    let pre = pre.clone();
    let keep = slot.is_some();
    let pipes = stdio.clone();
    // The guest runs in one future and its response is read in another, polled together
    // on this task: the body's channel is bounded, so a guest writing a large body waits
    // for the reader. The guest's future owns the store and, unless the instance is kept,
    // drops it when the handler returns, which ends a body the guest never finished.
    let guest = async move {
        let result = async {
            let (proxy, instantiate) = match warm_proxy {
                Some(proxy) => (proxy, Duration::ZERO),
                None => (pre.instantiate_async(&mut store).await?, started.elapsed()),
            };
            let handled = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            Ok::<_, wasmtime::Error>((handled, instantiate, proxy))
        }
        .await;
        let (result, instantiate, proxy) = match result {
            Ok((handled, instantiate, proxy)) => (handled, instantiate, Some(proxy)),
            Err(e) => (Err(e), started.elapsed(), None),
        };
        let limiter = &store.data().limiter;
        let (memory_denied, peak) = (limiter.denied(), limiter.peak());
        // Kept only after a clean return that left nothing behind but stdio streams: a
        // request, body or outbound response still in the table would reach the next
        // request (and a body never finished only ends when the store goes).
        let clean = keep && result.is_ok() && !memory_denied;
        let kept = match proxy {
            Some(proxy) if clean && store.data_mut().holds_only_stdio(&pipes) => {
                Some((store, proxy))
            }
            _ => None,
        };
        GuestEnd {
            result,
            instantiate,
            memory_denied,
            peak,
            kept,
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
                start,
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
    if let Some(slot) = slot {
        // Only an instance whose request succeeded serves another one.
        let instance = match end.kept {
            Some((store, proxy)) if failure.is_none() => {
                Some(WarmInstance::Component(Box::new(ComponentInstance {
                    store,
                    proxy,
                    stdio,
                })))
            }
            _ => None,
        };
        slot.give_back(instance, Instant::now());
    }
    Ok(HttpExecution {
        execution: Execution {
            stdout: body,
            stderr: logged,
            platform_fault: failure.is_some() && !chose,
            failure,
            start,
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
