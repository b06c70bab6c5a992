//! Benchmark baseline: the naive per-request wasm server of DESIGN §7. axum and wasmtime,
//! the module pre-linked once (`InstancePre`), the pooling allocator, a fresh store and
//! instance per request, WASI preview 1 (sync) with the body on stdin and stdout as the
//! answer, run on tokio's blocking pool; no auth, no limits beyond wasmtime's defaults.
//! Runs the same command echo as the POP. Prints its URL as one JSON line and serves until
//! its stdin closes (`scenarios bench` drives it).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use std::sync::Arc;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

struct App {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
}

fn run(app: &App, body: Bytes) -> wasmtime::Result<Bytes> {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let wasi = WasiCtxBuilder::new()
        .stdin(MemoryInputPipe::new(body))
        .stdout(stdout.clone())
        .build_p1();
    let mut store = Store::new(&app.engine, wasi);
    let instance = app.pre.instantiate(&mut store)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    if let Err(e) = start.call(&mut store, ()) {
        match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(wasmtime_wasi::I32Exit(0)) => {}
            _ => return Err(e),
        }
    }
    drop(store);
    Ok(stdout.contents())
}

async fn invoke(State(app): State<Arc<App>>, body: Bytes) -> (StatusCode, Bytes) {
    let answer = tokio::task::spawn_blocking(move || run(&app, body)).await;
    match answer {
        Ok(Ok(out)) => (StatusCode::OK, out),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling.total_core_instances(1000).total_memories(1000);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&config)?;
    let wasm = wat::parse_str(scenarios::bench::guests::ECHO_COMMAND_WAT)?;
    let module = Module::new(&engine, wasm)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s)?;
    let pre = linker.instantiate_pre(&module)?;
    let app = Arc::new(App { engine, pre });
    let router = axum::Router::new()
        .route("/v1/functions/{name}/invoke", post(invoke))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/functions/echo/invoke", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    scenarios::bench::server::announce_and_wait(&serde_json::json!({ "url": url })).await
}
