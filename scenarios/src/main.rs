//! `scenarios`: latency scenario runner.
//!
//! `cargo run --release -p scenarios -- run scenarios/flash-crowd.toml` simulates a scenario
//! and writes its report; `live` measures the real invoke paths on loopback; `bench`
//! judges the DESIGN §7 HTTP budgets with `wrk` against servers in their own processes.

use clap::{Parser, Subcommand};
use scenarios::fault;
use scenarios::live::{self, LiveParams};
use scenarios::run::{self, RunArgs};

/// mimalloc keeps the simulator's many small, long-lived allocations (per-POP tables and
/// lists, per-function pools) packed closer together than the system allocator, and a
/// fleet-scale run is bound by memory latency (docs/performance.md, "Simulator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strata latency scenarios.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a scenario file and write its report (Markdown, JSON, plots).
    Run(RunArgs),
    /// Measure the DESIGN §7 HTTP budgets: plain axum, the naive wasm server and the POP's
    /// paths, each server its own process, driven by `wrk`; prints table and verdicts.
    Bench(scenarios::bench::BenchArgs),
    /// Start a region and a POP on loopback and measure the local, forwarded and
    /// region-direct invoke paths.
    Live {
        /// Requests per path.
        #[arg(long, default_value_t = 2000)]
        requests: u64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
        /// Measure the POP-local path steady and while its function is redeployed
        /// continuously (dynamic deployment), instead of the tier paths.
        #[arg(long)]
        deploy: bool,
        /// Compare trend-driven and reactive warm pools on a ramp (the rate doubling every
        /// `--step-ms`), counting the POP's cold starts, instead of the tier paths.
        #[arg(long)]
        ramp: bool,
        /// Ramp: first step's arrival rate, requests/s.
        #[arg(long, default_value_t = 10.0)]
        start_rps: f64,
        /// Ramp: number of doublings.
        #[arg(long, default_value_t = 6)]
        steps: u32,
        /// Ramp: length of one step, milliseconds.
        #[arg(long, default_value_t = 3000)]
        step_ms: u64,
    },
    /// Run scenarios with `--live` (default: the seven shipped ones) and exit non-zero when
    /// any simulated and live result disagree within the scenario's tolerances.
    Agree(scenarios::run::AgreeArgs),
    /// Measure the simulator's per-hop costs on real nodes (one POP, one region, a known
    /// delay between them) from their `server-timing`, and write the cost model a
    /// scenario loads with `model = "FILE"`.
    Calibrate(scenarios::live::calibrate::CalibrateArgs),
    /// Fault runs against `region-node` and `pop-node` as separate processes (build them
    /// first: `cargo build --release -p region-node -p pop-node`).
    #[command(subcommand)]
    Fault(Fault),
}

#[derive(Debug, Subcommand)]
enum Fault {
    /// Mixed load, `kill -9` of the region, restart on the same state: status counts, the
    /// zero-completion gap, recovery time, POP-local p99.
    RegionKill {
        /// Closed-loop connections per function (POP-local and forwarded).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds of load before the kill.
        #[arg(long, default_value_t = 5)]
        steady_s: u64,
        /// Seconds between the kill and the restart.
        #[arg(long, default_value_t = 3)]
        down_s: u64,
        /// Seconds of load after the region is back.
        #[arg(long, default_value_t = 5)]
        after_s: u64,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Rounds of idle connections to a POP: connect latency and the POP's RSS before,
    /// holding and after.
    ConnBurst {
        /// Connections per round (raise `ulimit -n` above it).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Milliseconds to wait after closing before measuring RSS.
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
        /// The POP's listen backlog.
        #[arg(long, default_value_t = common::edge::listener::DEFAULT_BACKLOG)]
        backlog: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Run(args) => run::main(&args).await,
        Command::Agree(args) => run::agree(&args).await,
        Command::Calibrate(args) => {
            let load = live::load::Loadgen::build_and_locate()?;
            let model = live::calibrate::measure(&args, &load).await?;
            model.write(&args.out)?;
            print!("{}", toml::to_string(&model)?);
            println!("cost model: {}", args.out.display());
            anyhow::ensure!(model.run.errors == 0, "{} calls failed", model.run.errors);
            Ok(())
        }
        Command::Fault(Fault::RegionKill {
            connections,
            steady_s,
            down_s,
            after_s,
            json,
        }) => {
            let report = fault::region_kill::run(fault::region_kill::Params {
                connections,
                steady: std::time::Duration::from_secs(steady_s),
                down: std::time::Duration::from_secs(down_s),
                after: std::time::Duration::from_secs(after_s),
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", fault::region_kill::table(&report));
            }
            Ok(())
        }
        Command::Fault(Fault::ConnBurst {
            connections,
            rounds,
            settle_ms,
            backlog,
        }) => {
            let rounds = fault::burst::run(fault::burst::Params {
                connections,
                rounds,
                settle: std::time::Duration::from_millis(settle_ms),
                backlog,
            })
            .await?;
            print!("{}", fault::burst::table(&rounds));
            Ok(())
        }
        Command::Bench(args) => {
            tokio::task::spawn_blocking(move || scenarios::bench::run(&args)).await?
        }
        Command::Live {
            json,
            ramp: true,
            start_rps,
            steps,
            step_ms,
            ..
        } => {
            let reports = live::ramp::compare(live::ramp::RampParams {
                start_rps,
                steps,
                step: std::time::Duration::from_millis(step_ms),
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                print!("{}", live::ramp::table(&reports));
            }
            Ok(())
        }
        Command::Live {
            requests,
            concurrency,
            json,
            deploy,
            ..
        } => live_paths(requests, concurrency, json, deploy).await,
    }
}

async fn live_paths(
    requests: u64,
    concurrency: usize,
    json: bool,
    deploy: bool,
) -> anyhow::Result<()> {
    let params = LiveParams {
        requests,
        concurrency,
    };
    let reports = if deploy {
        let (reports, deploys) = live::deploy_under_load(params).await?;
        eprintln!("{deploys} deploys of `popular` during pop-local-deploying");
        reports
    } else {
        live::run(params).await?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!("live run: {requests} requests per path, concurrency {concurrency}\n");
        print!("{}", live::table(&reports));
    }
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    anyhow::ensure!(
        errors == 0,
        "{errors} requests failed or ran at the wrong tier"
    );
    Ok(())
}
