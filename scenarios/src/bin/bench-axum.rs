//! Benchmark baseline: a plain axum server answering every POST with its body, no Strata
//! at all, the ceiling DESIGN §7 compares the POP's HTTP path with. Prints its URL as one
//! JSON line and serves until its stdin closes (`scenarios bench` drives it).

use axum::routing::post;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/v1/functions/{name}/invoke",
        post(|body: axum::body::Bytes| async move { body }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/functions/echo/invoke", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    scenarios::bench::server::announce_and_wait(&serde_json::json!({ "url": url })).await
}
