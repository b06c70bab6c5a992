//! Sandbox benchmarks (issue 3; budgets in DESIGN §7), run with `cargo bench -p common`:
//!
//! - `command/instantiate_run_trivial`: one command invocation of a module whose `_start`
//!   returns at once: WASI context, store, pooled instance, `_start`, output collection.
//! - `command/naive_baseline`: the same with a plain wasmtime set-up (default on-demand
//!   allocator, no copy-on-write images, linker resolved per request): the "naive
//!   per-request wasmtime server" core the POP's command path is compared with.
//! - `reactor/warm_call`: one `strata_handle` call in a warm reactor instance.
//! - `component/fresh_request`: one request through `examples/http/hello.wat` (an
//!   `http`-ABI component) in a fresh instance, as without `reuse_instances`.
//! - `component/reused_request`: the same request in a warm, reused instance
//!   (`reuse_instances`).
//! - `artifact/deserialize_1mb`: loading a ~1 MB precompiled artifact.
//! - `artifact/compile_from_source`: compiling the same module from its wasm.
//!
//! Criterion reports the median, which is the p50 the budgets speak of. Guests run as
//! futures (on the caller's task, as in the nodes); each iteration drives one to completion
//! on a current-thread tokio runtime, whose `block_on` is part of what is measured.

use bytes::Bytes;
use common::model::{ArtifactDigest, FunctionKey, FunctionName, HttpRequestHead, TenantId};
use common::sandbox::{Invocation, Reuse, Sandbox, SandboxConfig, WarmKey, WarmLane};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const TRIVIAL_COMMAND: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
const TRIVIAL_REACTOR: &str = r#"(module (memory (export "memory") 1)
  (func (export "strata_handle") (result i32) (i32.const 0)))"#;

fn invocation() -> Invocation {
    Invocation {
        stdin: Bytes::new(),
        env: Vec::new(),
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(5),
        fuel: None,
        state: None,
    }
}

/// A module whose precompiled artifact is about 1 MB: `n` small distinct functions.
fn big_module(n: usize) -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..n {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i32) (result i32) \
             (i32.add (i32.mul (local.get 0) (i32.const {i})) (i32.load (i32.const {})))) \n",
            (i % 1000) * 4
        ));
    }
    wat.push_str("(func (export \"_start\")))");
    wat::parse_str(&wat).expect("generated WAT is valid")
}

/// The runtime iterations run guests on: one thread, with timers (guests sleep on them).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn command(c: &mut Criterion) {
    let rt = runtime();
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let wasm = wat::parse_str(TRIVIAL_COMMAND).expect("wat");
    let module = sandbox.compile(&wasm).expect("compiles");
    let mut g = c.benchmark_group("command");
    g.bench_function("instantiate_run_trivial", |b| {
        b.iter(|| {
            let e = rt
                .block_on(sandbox.run(&module, invocation()))
                .expect("runs");
            black_box(e);
        });
    });
    let naive = naive::Naive::new(&wasm);
    g.bench_function("naive_baseline", |b| b.iter(|| naive.run()));
    g.finish();
}

fn reactor(c: &mut Criterion) {
    let rt = runtime();
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let module = sandbox
        .compile(&wat::parse_str(TRIVIAL_REACTOR).expect("wat"))
        .expect("compiles");
    let key = WarmKey {
        function: FunctionKey {
            tenant: TenantId::new("bench").expect("tenant"),
            name: FunctionName::new("trivial").expect("name"),
        },
        version: "$LATEST".into(),
        digest: module.digest(),
        memory_bytes: 16 << 20,
    };
    let mut g = c.benchmark_group("reactor");
    g.bench_function("warm_call", |b| {
        b.iter(|| {
            let e = rt
                .block_on(sandbox.run_reactor(&key, &module, invocation(), None))
                .expect("runs");
            black_box(e);
        });
    });
    g.finish();
}

fn component(c: &mut Criterion) {
    let rt = runtime();
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let hello = include_str!("../../examples/http/hello.wat");
    let module = sandbox
        .compile(&wat::parse_str(hello).expect("wat"))
        .expect("compiles");
    let key = WarmKey {
        function: FunctionKey {
            tenant: TenantId::new("bench").expect("tenant"),
            name: FunctionName::new("hello-http").expect("name"),
        },
        version: "$LATEST".into(),
        digest: module.digest(),
        memory_bytes: 16 << 20,
    };
    let head = || {
        Some(HttpRequestHead {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "bench.example".into(),
            path_and_query: "/".into(),
            headers: Vec::new(),
        })
    };
    let mut g = c.benchmark_group("component");
    g.bench_function("fresh_request", |b| {
        b.iter(|| {
            let e = rt
                .block_on(sandbox.run_http(&module, invocation(), head(), None))
                .expect("runs");
            black_box(e);
        });
    });
    g.bench_function("reused_request", |b| {
        b.iter(|| {
            let reuse = Reuse {
                key: &key,
                affinity: None,
                lane: WarmLane::Dedicated,
            };
            let e = rt
                .block_on(sandbox.run_http_reusing(reuse, &module, invocation(), head(), None))
                .expect("runs");
            black_box(e);
        });
    });
    g.finish();
}

#[allow(unsafe_code)]
fn artifact(c: &mut Criterion) {
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let wasm = big_module(1500);
    let module = sandbox.compile(&wasm).expect("compiles");
    let artifact = sandbox.precompile(&module).expect("serializes");
    let digest = ArtifactDigest::of(&wasm);
    eprintln!(
        "artifact bench: wasm {} bytes, precompiled {} bytes",
        wasm.len(),
        artifact.len()
    );
    let mut g = c.benchmark_group("artifact");
    g.sample_size(20);
    g.bench_function("deserialize_1mb", |b| {
        b.iter(|| {
            // SAFETY: the bytes were produced above by this process's own sandbox.
            let m = unsafe { sandbox.load_precompiled(digest, &artifact) }.expect("loads");
            black_box(m);
        });
    });
    g.sample_size(10);
    g.bench_function("compile_from_source", |b| {
        b.iter(|| black_box(sandbox.compile(&wasm).expect("compiles")));
    });
    g.finish();
}

mod naive {
    //! The naive baseline: what a straightforward wasmtime embedding does per request.
    //! Benchmark code only; Strata itself only touches wasmtime in `common::sandbox`.

    use wasmtime::{Engine, Linker, Module, Store};
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::p1::{self, WasiP1Ctx};
    use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

    pub struct Naive {
        engine: Engine,
        module: Module,
    }

    impl Naive {
        pub fn new(wasm: &[u8]) -> Self {
            let engine = Engine::default();
            let module = Module::new(&engine, wasm).expect("compiles");
            Self { engine, module }
        }

        /// One request: linker, WASI context, store, instance, `_start`.
        pub fn run(&self) -> Vec<u8> {
            let mut linker: Linker<WasiP1Ctx> = Linker::new(&self.engine);
            p1::add_to_linker_sync(&mut linker, |s| s).expect("links");
            let stdout = MemoryOutputPipe::new(1 << 20);
            let wasi = WasiCtxBuilder::new()
                .stdin(MemoryInputPipe::new(bytes::Bytes::new()))
                .stdout(stdout.clone())
                .build_p1();
            let mut store = Store::new(&self.engine, wasi);
            let instance = linker
                .instantiate(&mut store, &self.module)
                .expect("instantiates");
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .expect("_start");
            start.call(&mut store, ()).expect("runs");
            drop(store);
            stdout.contents().to_vec()
        }
    }
}

fn config() -> Criterion {
    // Two shared cores: short runs, enough samples for a stable median.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = command, reactor, component, artifact
}
criterion_main!(benches);
