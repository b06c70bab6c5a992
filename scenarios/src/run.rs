//! `run FILE.toml`: load a scenario, simulate it with a progress bar, write its report and
//! plots, and with `--live` run it scaled down against real nodes and compare.
//!
//! `agree`: `run --live` over the shipped scenarios, each judged against a cost model
//! calibrated just before its live run (the host's per-call costs drift over minutes
//! more than the tolerances allow; [`agree`] says by how much), or with
//! `--model-from-files` against the models the files name.

use crate::live::calibrate::{self, CalibrateArgs};
use crate::live::interleave::{self, SameSitting};
use crate::live::load::Loadgen;
use crate::live::scenario::MeasuredPaths;
use crate::report::Report;
use crate::scenario::model::CostModel;
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
    run_with_model(args, None, None).await
}

/// As [`run`], with `model` (when given) in place of the cost model the scenario file
/// names ([`Scenario::load_with_model`]), and with `--live` the paths already measured
/// (`paths`, on the nodes `model` was calibrated on) instead of measuring them again: how
/// `agree` judges against a model calibrated just before.
///
/// # Errors
/// As [`run`].
pub async fn run_with_model(
    args: &RunArgs,
    model: Option<CostModel>,
    paths: Option<MeasuredPaths>,
) -> anyhow::Result<(Report, PathBuf)> {
    let mut s = Scenario::load_with_model(&args.file, model)
        .with_context(|| format!("scenario {}", args.file.display()))?;
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
        report.live = Some(match &paths {
            Some(measured) => crate::live::scenario::judge(&s, measured)?,
            None => crate::live::scenario::compare(&s, &Loadgen::build_and_locate()?).await?,
        });
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
    /// Judge each scenario against the cost model its file names (the committed one)
    /// instead of calibrating just before its live run.
    #[arg(long)]
    pub model_from_files: bool,
    /// Where each scenario's freshly calibrated model is written, as `<name>.model.toml`
    /// (set `model = ` to it to simulate a disagreement again).
    #[arg(long, default_value = "target/agree")]
    pub models_out: PathBuf,
    /// Pairs of rounds (a calibration round, a compared round) the POP-local calls of the
    /// calibration and of the comparison are sent in, alternating on the same nodes.
    #[arg(long, default_value_t = interleave::ROUND_PAIRS)]
    pub local_round_pairs: u64,
}

/// `agree [FILES]`: runs each scenario with `--live` (paths and workload replay), prints
/// every row, and fails when any scenario disagrees within its `[live]` tolerances (by
/// default 10% at p50 and p90, 15% at p99, 0.03 on the edge hit ratio and the 429 and
/// 503 shares). Meant for release builds: a debug build's overheads are not the model's.
///
/// Each scenario is judged against a model calibrated in the same sitting: on the very
/// nodes of its paths comparison, `calibrate`'s measurement (its load from `strata-load`,
/// the scenario's `[live]` delay and concurrency) is taken and used in place of the model
/// the file names, for the paths and the workload replay; its local calls alternate with
/// the compared local calls in short rounds ([`crate::live::interleave`]), so both see the
/// same drift. The host drifts: on the 2-vCPU VM the calibrated POP overhead
/// was anywhere from 0.110 to 0.177 ms over 25 minutes, and another set of nodes started
/// a minute later sat 25-40% away, while on one set of nodes within a minute it repeated
/// within about ±8% (docs/performance.md, issue 20); a model calibrated once, or on other
/// nodes, cannot match within 10%, and even on the same nodes the level moved by more
/// than 10% between one block of 4000 local calls and the next. Checked this way, the simulator is held to the
/// machine's state at the time, as a user calibrating on their own machine class would
/// hold it. `--model-from-files` judges against the committed models instead.
///
/// # Errors
/// When a scenario cannot run, a calibration fails, or any scenario disagrees.
pub async fn agree(args: &AgreeArgs) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = if args.files.is_empty() {
        SHIPPED.iter().map(PathBuf::from).collect()
    } else {
        args.files.clone()
    };
    let load = Loadgen::build_and_locate()?;
    let mut verdicts = Vec::new();
    for file in files {
        let scenario = || format!("scenario {}", file.display());
        // `used`: the model judged against (printed); `model`: the override, if any.
        let (model, used, paths, source) = if args.model_from_files {
            let s = Scenario::load(&file).with_context(scenario)?;
            let source = s.model.as_ref().map(|m| m.display().to_string());
            (None, s.cost_model, None, source)
        } else {
            let (m, paths, written) = calibrate_for(&file, args, &load)
                .await
                .with_context(scenario)?;
            let source = Some(written.display().to_string());
            (Some(m.clone()), Some(m), Some(paths), source)
        };
        let run_args = RunArgs {
            file: file.clone(),
            out: None,
            live: true,
            scaled: false,
        };
        let (report, _) = run_with_model(&run_args, model, paths)
            .await
            .with_context(scenario)?;
        println!("# {}", report.name);
        match (&used, &source) {
            (Some(m), Some(source)) => println!("{}", model_line(m, source)),
            _ => println!("model: none (the scenario's fixed overheads)"),
        }
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

/// Calibrates for the scenario in `file` (its `[live]` one-way delay and concurrency,
/// `calibrate`'s default call counts) on the nodes of its paths comparison, its local calls
/// interleaved with the compared ones in `agree.local_round_pairs` pairs of rounds
/// ([`crate::live::interleave`]), and writes the model to
/// `agree.models_out/<name>.model.toml`.
async fn calibrate_for(
    file: &Path,
    agree: &AgreeArgs,
    load: &Loadgen,
) -> anyhow::Result<(CostModel, MeasuredPaths, PathBuf)> {
    let s = Scenario::load(file)?;
    let out = agree.models_out.join(format!("{}.model.toml", s.name));
    let args = CalibrateArgs {
        out: out.clone(),
        requests: calibrate::REQUESTS,
        local_requests: calibrate::LOCAL_REQUESTS,
        concurrency: s.live.concurrency,
        one_way_delay_ms: s.live.one_way_delay_ms,
    };
    eprintln!("agree: calibrating for {} ...", s.name);
    let sitting = SameSitting {
        args,
        round_pairs: agree.local_round_pairs,
    };
    let (model, paths) = crate::live::scenario::measure(&s, load, Some(&sitting)).await?;
    let model = model.context("the calibration returned no model")?;
    model.write(&out)?;
    Ok((model, paths, out))
}

/// One line of the model values a scenario was judged against, ms.
fn model_line(m: &CostModel, source: &str) -> String {
    // The 99th percentile is the ninth of `OVERHEAD_LEVELS`.
    let p99 = |q: &Option<Vec<f64>>| {
        q.as_ref()
            .and_then(|q| q.get(8))
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
    };
    format!(
        "model ({source}): pop overhead p50 {:.3} / p99 {}, region overhead p50 {:.3} / p99 {}, \
         exec {:.3}, instantiate {}",
        m.pop_overhead_ms,
        m.pop_overhead_p99_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
        m.region_overhead_ms,
        p99(&m.region_overhead_quantiles_ms),
        m.exec_ms,
        m.instantiate_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
    )
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
