//! `strata-load`: the load generator of `scenarios run --live` (the paths comparison) and
//! `scenarios calibrate`, in its own process so that its client work does not share a
//! runtime with the nodes it measures (scenarios/src/live/load/mod.rs).
//!
//! Reads one `LoadSpec` as JSON on stdin, runs its closed loop on a current-thread
//! runtime, writes the `LoadOutcome` (every measured request) as JSON on stdout.
//!
//! ```sh
//! echo '{"url":"http://127.0.0.1:8080/v1/functions/echo/invoke","token":"T","expect":"pop/",
//!        "warmup":32,"requests":4000,"concurrency":8,"within":{"secs":60,"nanos":0}}' \
//!   | ./target/release/strata-load
//! ```

use anyhow::Context as _;
use scenarios::live::load::{LoadSpec, generator};
use std::io::Write as _;

fn main() -> anyhow::Result<()> {
    let spec: LoadSpec =
        serde_json::from_reader(std::io::stdin().lock()).context("a load spec as JSON on stdin")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the runtime")?;
    let outcome = runtime.block_on(generator::generate(&spec))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome).context("writing the outcome")?;
    out.flush().context("writing the outcome")?;
    Ok(())
}
