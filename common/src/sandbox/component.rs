//! The `http` ABI (DESIGN §3): WebAssembly components exporting
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world, 0.2.x), as `wasmtime serve`,
//! Spin and wasmCloud run them.
//!
//! Owns compiling and pre-linking components (WASI preview 2 and `wasi:http`, from
//! `wasmtime-wasi` and `wasmtime-wasi-http`), what a component's store carries
//! ([`HttpState`]) and what a warm component instance is ([`ComponentInstance`]), with
//! the check that decides whether an instance may serve another request: its resource
//! table holds nothing but stdio streams. Running a request is [`super::serve`]'s job.

use super::limits::MemoryLimiter;
use super::outbound::Outbound;
use super::run::Guarded;
use super::stdio::Stdio;
use super::{Code, CompiledModule, ModuleError, ModuleInner, Sandbox};
use crate::model::ArtifactDigest;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::{Proxy as ProxyInstance, ProxyPre};
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

/// What a component's store carries. Everything but the limiter and the table is
/// replaced for every request; the table is empty between requests but for the guest's
/// stdio streams.
pub(super) struct HttpState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) deadline: Option<Instant>,
    pub(super) outbound: Outbound,
}

impl HttpState {
    /// Whether the table holds nothing but stdio streams of `stdio` (the pipes a reused
    /// instance keeps, re-armed for every request): no request, body, fields, pollable,
    /// outbound response or anything else a request made survives into the next one.
    pub(super) fn holds_only_stdio(&mut self, stdio: &Stdio) -> bool {
        // Every live stream handle of these pipes is one table entry (a preview 2 context
        // makes one per `get-stdout` and the like, and nothing else holds one), so the
        // table holds anything else exactly when it has more entries than that.
        self.table.iter_mut().count() <= stdio.live_handles()
    }
}

/// A warm component instance: its store (which owns the instance, its memories and its
/// resource table), its handler, and the host's side of its stdio, kept for its life.
pub(super) struct ComponentInstance {
    pub(super) store: Store<HttpState>,
    pub(super) proxy: ProxyInstance,
    pub(super) stdio: Stdio,
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
            reads_env: true,
            exports: super::compiled::CoreExports::default(),
            runs_at_instantiation: Default::default(),
        }),
    })
}
