//! `run FILE.toml`: load a scenario, simulate it with a progress bar, write its report and
//! plots, and with `--live` run it scaled down against real nodes and compare.

use crate::report::Report;
use crate::scenario::{Arrivals, Scenario};
use crate::sim::{self, trace::Trace};
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The scenario file.
    pub file: PathBuf,
    /// Report directory. Default: `target/scenario-reports/<name>/`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run the scenario scaled down against real nodes on loopback and compare.
    #[arg(long)]
    pub live: bool,
    /// Simulate the scenario as the live workload replay scales it down (its first POPs,
    /// regions and functions, compressed in time), without starting any node: the
    /// simulated half of `--live`'s replay comparison, for studying the model quickly.
    #[arg(long, conflicts_with = "live")]
    pub scaled: bool,
}

/// Simulates `s` (loading its trace if it replays one), timing the simulation only.
///
/// # Errors
/// When the trace cannot be loaded.
pub fn simulate(s: &Scenario, show_progress: bool) -> anyhow::Result<(sim::Outcome, f64)> {
    let trace = match &s.arrivals {
        Arrivals::Trace { file, max_rows } => Some(Trace::load(file, *max_rows)?),
        _ => None,
    };
    let total_ms = (s.duration_s * 1e3) as u64;
    let bar = if show_progress && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} simulated ms ({eta} left)")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let outcome = sim::simulate(s, trace.as_ref(), &mut |t| {
        bar.set_position(t.as_millis() as u64);
    })?;
    let wall = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((outcome, wall))
}

/// The default report directory of a scenario.
pub fn default_out(s: &Scenario) -> PathBuf {
    Path::new("target").join("scenario-reports").join(&s.name)
}

/// Runs `args`: returns the report and the directory it was written to.
///
/// # Errors
/// When the scenario is invalid, its trace unreadable, the report cannot be written, or a
/// live run fails to start.
pub async fn run(args: &RunArgs) -> anyhow::Result<(Report, PathBuf)> {
    let mut s =
        Scenario::load(&args.file).with_context(|| format!("scenario {}", args.file.display()))?;
    let (outcome, wall) = if args.scaled {
        s = crate::live::replay::scaled(&s)?;
        s.name = format!("{}-scaled", s.name);
        // The replay's very requests, as `--live` simulates them.
        let (functions, _) = sim::population(&s)?;
        let plan = crate::live::replay::schedule(&s, &functions);
        let started = Instant::now();
        let outcome = sim::simulate_schedule(&s, &plan, &mut |_| {})?;
        (outcome, started.elapsed().as_secs_f64())
    } else {
        simulate(&s, true)?
    };
    let mut report = Report::new(&s, &outcome, wall);
    if let Some(spec) = &s.keepalive {
        let trend = crate::keepalive::evaluate::TrendModel {
            warm: s.pop.warm.clone(),
            idle_keep_alive_s: s.pop.keep_alive_s,
        };
        report.keepalive = Some(crate::keepalive::compare(spec, &trend, s.seed)?);
    }
    if args.live {
        // The paths' load comes from `strata-load` beside this binary (`scenarios` or
        // `strata`), found before any node starts.
        let load = crate::live::load::Loadgen::build_and_locate()?;
        report.live = Some(crate::live::scenario::compare(&s, &load).await?);
        if s.live.duration_s > 0.0 {
            if matches!(s.arrivals, Arrivals::Trace { .. }) {
                eprintln!("live: a trace scenario compares the paths only (no workload replay)");
            } else {
                report.live_workload = Some(crate::live::workload::compare(&s).await?);
            }
        }
        if let Some(spec) = &s.keepalive {
            report.live_keepalive = Some(crate::live::keepalive::compare(spec, s.seed).await?);
        }
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&s));
    report.write(&out, &outcome)?;
    Ok((report, out))
}

/// `run` as a command: runs `args` and prints a summary (shared by `strata scenario run`).
///
/// # Errors
/// As [`run`], and when a `--live` comparison disagrees.
pub async fn main(args: &RunArgs) -> anyhow::Result<()> {
    let (report, out) = run(args).await?;
    let all = &report.latency_ms["all"];
    println!(
        "{}: {} invocations in {:.2} s wall ({:.0} simulated invocations/s)",
        report.name, report.invocations, report.run.wall_seconds, report.run.invocations_per_sec
    );
    println!(
        "latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; edge hit ratio {:.3}; cold-start ratio {:.4}",
        all.p50, all.p99, all.p999, report.edge_hit_ratio, report.cold_start_ratio
    );
    if let Some(live) = &report.live {
        print!("{}", live.markdown());
    }
    if let Some(live) = &report.live_workload {
        print!("{}", live.markdown());
    }
    if let Some(live) = &report.live_keepalive {
        print!("{}", live.markdown());
    }
    for k in report.keepalive.iter().flatten() {
        println!(
            "keep-alive {}: app cold-start % p50 {:.2}, p75 {:.2}; wasted memory {:.0} GB·s",
            k.policy, k.cold_start_pct_p50, k.cold_start_pct_p75, k.wasted_memory_gb_s
        );
    }
    println!("report: {}", out.join("report.md").display());
    anyhow::ensure!(
        report.live.as_ref().is_none_or(|l| l.agrees),
        "simulated and live percentiles of the paths disagree"
    );
    anyhow::ensure!(
        report.live_workload.as_ref().is_none_or(|l| l.agrees),
        "the simulated and live workload replays disagree"
    );
    anyhow::ensure!(
        report.live_keepalive.as_ref().is_none_or(|l| l.agrees),
        "the live keep-alive replay disagrees with the model"
    );
    Ok(())
}

/// The shipped scenarios `agree` checks by default (relative to the repository root): the
/// six with a workload replay, and the keep-alive comparison (paths and the keep-alive
/// replay).
pub const SHIPPED: [&str; 7] = [
    "scenarios/steady-zipf.toml",
    "scenarios/flash-crowd.toml",
    "scenarios/region-failure.toml",
    "scenarios/runtime-canary.toml",
    "scenarios/trace-replay.toml",
    "scenarios/pops-500x5.toml",
    "scenarios/keepalive-azure.toml",
];

/// Options of `agree`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgreeArgs {
    /// Scenario files. Default: the seven shipped scenarios.
    pub files: Vec<PathBuf>,
}

/// `agree [FILES]`: runs each scenario with `--live` (paths and workload replay), prints
/// every row, and fails when any scenario disagrees within its `[live]` tolerances (by
/// default 10% at p50 and p90, 15% at p99, 0.03 on the edge hit ratio and the 429 and
/// 503 shares). Meant for release builds: a debug build's overheads are not the model's.
///
/// # Errors
/// When a scenario cannot run, or any disagrees.
pub async fn agree(args: &AgreeArgs) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = if args.files.is_empty() {
        SHIPPED.iter().map(PathBuf::from).collect()
    } else {
        args.files.clone()
    };
    let mut verdicts = Vec::new();
    for file in files {
        let run_args = RunArgs {
            file: file.clone(),
            out: None,
            live: true,
            scaled: false,
        };
        let (report, _) = run(&run_args)
            .await
            .with_context(|| format!("scenario {}", file.display()))?;
        println!("# {}", report.name);
        let paths = report.live.as_ref().map(|l| {
            print!("{}", l.markdown());
            l.agrees
        });
        let workload = report.live_workload.as_ref().map(|l| {
            print!("{}", l.markdown());
            l.agrees
        });
        let keepalive = report.live_keepalive.as_ref().map(|l| {
            print!("{}", l.markdown());
            l.agrees
        });
        verdicts.push((report.name, paths, workload, keepalive));
    }
    let word = |v: Option<bool>| match v {
        Some(true) => "agree",
        Some(false) => "DISAGREE",
        None => "not run",
    };
    println!("\n| scenario | paths | workload replay | keep-alive replay |\n|---|---|---|---|");
    for (name, paths, workload, keepalive) in &verdicts {
        println!(
            "| {name} | {} | {} | {} |",
            word(*paths),
            word(*workload),
            word(*keepalive)
        );
    }
    let disagree: Vec<&str> = verdicts
        .iter()
        .filter(|(_, p, w, k)| [p, w, k].iter().any(|v| **v == Some(false)))
        .map(|(n, ..)| n.as_str())
        .collect();
    anyhow::ensure!(disagree.is_empty(), "disagree: {}", disagree.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agree_checks_the_shipped_scenarios() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for f in SHIPPED {
            let s = Scenario::load(&root.join(f)).expect(f);
            assert!(s.live.duration_s > 0.0 || matches!(s.arrivals, Arrivals::Trace { .. }));
        }
    }
}
