//! `scenarios bench`: the DESIGN §7 HTTP budgets, measured in one sitting.
//!
//! Starts each server alone, as its own process ([`server`]): the plain axum echo
//! (`bench-axum`), the naive per-request wasm server (`bench-naive`), then a Strata region
//! and POP (`bench-strata`). Drives each path from `wrk` ([`wrk`]), a separate process,
//! with a warm-up, at 64 connections and at one connection, with the server process's
//! CPU time per request ([`cpu`]); then measures cold starts at
//! the POP (`bench-strata --cold N`). Prints the table, the ratios and pass/fail per
//! budget. `--smoke` runs every step for one second and judges nothing.
//!
//! The guests ([`guests`]) are WAT: a 1 KiB POST echo, the same command module for the
//! naive server and the POP.
//!
//! The POP's local reactor path is also driven over TLS in the same sitting: HTTP/1.1 and
//! HTTP/2 from `h2load` ([`h2load`]), HTTP/3 from our own client ([`h3`]; Debian's
//! `h2load` has no HTTP/3), at 64 connections and at one; then the set-up cost of a new
//! connection ([`handshake`]): TCP, TCP + TLS 1.3, QUIC 1-RTT.
//!
//! The `http` ABI ([`components`]): the WAT component, and the Python and JavaScript
//! handlers when their toolchains are here, warm at the POP (a row each) and their cold
//! starts at the POP.

pub mod components;
pub mod cpu;
pub mod guests;
pub mod h2load;
pub mod h3;
pub mod handshake;
pub mod server;
pub mod wrk;

use anyhow::Context as _;
use serde::Serialize;
use server::Server;
use std::fmt::Write as _;
use std::time::Duration;
use wrk::LoadResult;

/// Options of a benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Run every step for one second and judge nothing (CI smoke).
    #[arg(long)]
    pub smoke: bool,
    /// Seconds of each measured run at 64 connections.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct modules in the cold-start step.
    #[arg(long, default_value_t = 7)]
    pub cold_modules: u32,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One path's two runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PathResult {
    /// Which path.
    pub path: &'static str,
    /// At 64 connections.
    pub c64: LoadResult,
    /// At one connection.
    pub c1: LoadResult,
}

/// Everything one sitting measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The paths, baselines first.
    pub paths: Vec<PathResult>,
    /// Cold starts at the POP, microseconds, in the order measured.
    pub cold_us: Vec<u64>,
    /// Cold starts of the `http` components at the POP: (name, bytes, microseconds).
    pub cold_components: Vec<(String, u64, u64)>,
    /// New-connection set-up at the POP, one at a time.
    pub handshakes: Option<handshake::HandshakeResult>,
    /// The load average when the run started.
    pub load_average: String,
    /// Whether this was a smoke run (nothing judged).
    pub smoke: bool,
}

/// How long each step runs.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warm_up: Duration,
    c64: Duration,
    c1: Duration,
}

/// Runs the benchmark and prints its report.
///
/// # Errors
/// When `wrk` is missing, a server cannot start, or a path answers wrongly.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    wrk::check_installed()?;
    h2load::check_installed()?;
    server::build_bins()?;
    let timing = if args.smoke {
        Timing {
            warm_up: Duration::from_secs(1),
            c64: Duration::from_secs(1),
            c1: Duration::from_secs(1),
        }
    } else {
        Timing {
            warm_up: Duration::from_secs(2),
            c64: Duration::from_secs(args.seconds.max(1)),
            c1: Duration::from_secs(args.seconds.div_ceil(2).max(1)),
        }
    };
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let plain = wrk::script(dir.path(), None)?;
    let mut paths = Vec::new();

    // The budgets' baselines are measured before and again after the POP's budget rows,
    // and judged against the mean of the two: this VM's speed drifts by 10-20% over
    // minutes (docs/performance.md), which a single baseline run minutes away from the
    // row it is compared with turns into a false verdict either way.
    for (path, binary) in BASELINES {
        let s = Server::start(&server::sibling(binary)?, &[])?;
        paths.push(measure(path, &s, "url", &plain, timing)?);
    }
    {
        let strata = Server::start(&server::sibling("bench-strata")?, &[])?;
        let authed = wrk::script(dir.path(), Some(&strata.field("token")?))?;
        for (path, field) in BUDGET_ROWS {
            paths.push(measure(path, &strata, field, &authed, timing)?);
        }
    }
    for ((_, binary), again) in BASELINES.into_iter().zip(BASELINES_AGAIN) {
        let s = Server::start(&server::sibling(binary)?, &[])?;
        paths.push(measure(again, &s, "url", &plain, timing)?);
    }
    let http_components = components::build_all(dir.path())?;
    let mut component_args = Vec::new();
    for c in &http_components {
        component_args.push("--component".to_owned());
        component_args.push(c.arg());
    }
    let args_of = |extra: &[String]| -> Vec<String> {
        extra
            .iter()
            .cloned()
            .chain(component_args.iter().cloned())
            .collect()
    };
    let strata_args = args_of(&[]);
    let strata = Server::start(
        &server::sibling("bench-strata")?,
        &strata_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let authed = wrk::script(dir.path(), Some(&strata.field("token")?))?;
    for c in &http_components {
        for (field, row) in [
            ("components", c.row()),
            ("components_reused", c.reused_row()),
        ] {
            let url = strata.ready[field][&c.name]
                .as_str()
                .context("bench-strata did not report a component's URL")?
                .to_owned();
            paths.push(measure_url(row, &url, strata.pid(), &authed, timing)?);
        }
    }
    let handshakes = over_tls(&strata, dir.path(), timing, args.smoke, &mut paths)?;
    drop(strata);
    let n = if args.smoke {
        2
    } else {
        args.cold_modules.max(1)
    };
    let cold_args = args_of(&["--cold".to_owned(), n.to_string()]);
    let cold = Server::start(
        &server::sibling("bench-strata")?,
        &cold_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let cold_us = cold.ready["cold"]
        .as_array()
        .context("the cold-start step's results")?
        .iter()
        .filter_map(|r| r["total_us"].as_u64())
        .collect();
    let cold_components = cold.ready["cold_components"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|r| {
                    Some((
                        r["name"].as_str()?.to_owned(),
                        r["component_bytes"].as_u64()?,
                        r["total_us"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    drop(cold);

    let report = BenchReport {
        paths,
        cold_us,
        cold_components,
        handshakes: Some(handshakes),
        load_average: load_average.trim().to_owned(),
        smoke: args.smoke,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Measures the path at `server`'s ready-line field `field`.
fn measure(
    path: &'static str,
    server: &Server,
    field: &str,
    script: &std::path::Path,
    t: Timing,
) -> anyhow::Result<PathResult> {
    measure_url(path, &server.field(field)?, server.pid(), script, t)
}

/// Drives `url` (served by process `pid`) from `wrk`: the warm-up, then 64 connections and
/// one, each with the server's CPU per request.
fn measure_url(
    path: &'static str,
    url: &str,
    pid: u32,
    script: &std::path::Path,
    t: Timing,
) -> anyhow::Result<PathResult> {
    eprintln!("bench: {path}");
    wrk::run(url, script, 64, t.warm_up)?;
    let c64 = metered(pid, || wrk::run(url, script, 64, t.c64))?;
    let c1 = metered(pid, || wrk::run(url, script, 1, t.c1))?;
    // Failed requests are reported in the table (a path that answers some requests with
    // an error is a finding, not a reason to lose the rest of the sitting).
    if c64.errors + c1.errors > 0 {
        eprintln!(
            "bench: {path}: {} failed requests (non-2xx or socket errors) at 64 connections, {} at one",
            c64.errors, c1.errors
        );
    }
    Ok(PathResult { path, c64, c1 })
}

/// Runs `load` against process `pid` and adds the process's CPU per request to its result.
fn metered(
    pid: u32,
    load: impl FnOnce() -> anyhow::Result<LoadResult>,
) -> anyhow::Result<LoadResult> {
    let meter = cpu::Meter::start(pid);
    let mut r = load()?;
    r.server_cpu_us = meter.per_request(r.requests);
    Ok(r)
}

/// Drives the POP's local reactor path over TLS (HTTP/1.1 and HTTP/2 from `h2load`,
/// HTTP/3 from [`h3::load`]) at 64 connections and at one, adding a row each, then
/// measures connection set-up.
fn over_tls(
    strata: &Server,
    dir: &std::path::Path,
    t: Timing,
    smoke: bool,
    paths: &mut Vec<PathResult>,
) -> anyhow::Result<handshake::HandshakeResult> {
    let token = strata.field("token")?;
    let https = strata.field("pop_reactor_https")?;
    for (path, protocol) in [
        ("POP local, reactor, HTTP/1.1 + TLS", h2load::Protocol::H1),
        ("POP local, reactor, HTTP/2 + TLS", h2load::Protocol::H2),
    ] {
        eprintln!("bench: {path}");
        let pid = strata.pid();
        let c64 = metered(pid, || {
            h2load::run(dir, &https, &token, protocol, 64, t.c64)
        })?;
        let c1 = metered(pid, || h2load::run(dir, &https, &token, protocol, 1, t.c1))?;
        paths.push(PathResult { path, c64, c1 });
    }
    let h3_url = strata.field("pop_reactor_h3")?;
    let h3_addr: std::net::SocketAddr = strata.field("pop_h3_addr")?.parse()?;
    let https_addr: std::net::SocketAddr = strata.field("pop_https_addr")?.parse()?;
    let ca = std::path::PathBuf::from(strata.field("ca_cert")?);
    let config = h3::client_config(&ca)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let path = "POP local, reactor, HTTP/3";
    eprintln!("bench: {path}");
    let (c64, c1) = rt.block_on(async {
        h3::load(&config, h3_addr, &h3_url, &token, 64, t.warm_up).await?;
        let mut out = Vec::with_capacity(2);
        for (connections, secs) in [(64, t.c64), (1, t.c1)] {
            let meter = cpu::Meter::start(strata.pid());
            let mut r = h3::load(&config, h3_addr, &h3_url, &token, connections, secs).await?;
            r.server_cpu_us = meter.per_request(r.requests);
            out.push(r);
        }
        anyhow::Ok((out[0], out[1]))
    })?;
    paths.push(PathResult { path, c64, c1 });
    eprintln!("bench: connection set-up");
    let samples = if smoke { 20 } else { 500 };
    rt.block_on(handshake::measure(https_addr, h3_addr, &ca, samples))
}

/// One DESIGN §7 budget's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The budget, as DESIGN words it.
    pub budget: &'static str,
    /// What was measured, with its ratio or difference.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// The baselines (row, binary), measured first.
const BASELINES: [(&str, &str); 2] = [("plain axum", "bench-axum"), ("naive wasm", "bench-naive")];
/// Their rows when measured again after [`BUDGET_ROWS`].
const BASELINES_AGAIN: [&str; 2] = ["plain axum (again)", "naive wasm (again)"];
/// The POP's rows the budgets judge (row, field of `bench-strata`'s ready line).
const BUDGET_ROWS: [(&str, &str); 4] = [
    ("POP local, command", "pop_command"),
    ("POP local, reactor", "pop_reactor"),
    ("POP forwarded to region", "pop_forward"),
    ("region direct", "region_direct"),
];

fn find<'a>(r: &'a BenchReport, path: &str) -> Option<&'a PathResult> {
    r.paths.iter().find(|p| p.path == path)
}

/// Baseline `i` of [`BASELINES`]: the mean of its two runs (the first alone when the
/// report has no second, as older reports do not).
fn baseline(r: &BenchReport, i: usize) -> Option<PathResult> {
    let first = *find(r, BASELINES[i].0)?;
    let Some(again) = find(r, BASELINES_AGAIN[i]) else {
        return Some(first);
    };
    let mean = |a: LoadResult, b: LoadResult| LoadResult {
        requests_per_sec: (a.requests_per_sec + b.requests_per_sec) / 2.0,
        p50_us: (a.p50_us + b.p50_us) / 2.0,
        ..a
    };
    Some(PathResult {
        path: first.path,
        c64: mean(first.c64, again.c64),
        c1: mean(first.c1, again.c1),
    })
}

/// Judges the report against every HTTP budget of DESIGN §7.
pub fn verdicts(r: &BenchReport) -> Vec<Verdict> {
    let mut out = Vec::new();
    let (axum, naive) = (baseline(r, 0), baseline(r, 1));
    let (Some(axum), Some(naive), Some(cmd), Some(rx), Some(fwd), Some(region)) = (
        axum.as_ref(),
        naive.as_ref(),
        find(r, "POP local, command"),
        find(r, "POP local, reactor"),
        find(r, "POP forwarded to region"),
        find(r, "region direct"),
    ) else {
        return out;
    };
    let ratio = cmd.c64.requests_per_sec / naive.c64.requests_per_sec.max(1e-9);
    out.push(Verdict {
        budget: "command ABI, 64 conns: >= 1.5x naive req/s",
        measured: format!("{ratio:.2}x"),
        met: ratio >= 1.5,
    });
    let share = rx.c64.requests_per_sec / axum.c64.requests_per_sec.max(1e-9);
    out.push(Verdict {
        budget: "reactor ABI, 64 conns: >= 50% of plain axum req/s",
        measured: format!("{:.1}%", share * 100.0),
        met: share >= 0.5,
    });
    for (name, p) in [
        ("one conn p50, reactor: <= axum + 25 us", rx),
        ("one conn p50, command: <= axum + 25 us", cmd),
    ] {
        let over = p.c1.p50_us - axum.c1.p50_us;
        out.push(Verdict {
            budget: name,
            measured: format!("+{over:.0} us"),
            met: over <= 25.0,
        });
    }
    let added = fwd.c1.p50_us - region.c1.p50_us;
    out.push(Verdict {
        budget: "forward adds <= 150 us p50 (one conn)",
        measured: format!("+{added:.0} us"),
        met: added <= 150.0,
    });
    if let Some(p50) = median(&r.cold_us) {
        out.push(Verdict {
            budget: "cold start at a POP, 100 KB module: p50 <= 5 ms",
            measured: format!(
                "{:.2} ms over {} modules",
                p50 as f64 / 1e3,
                r.cold_us.len()
            ),
            met: p50 <= 5_000,
        });
    }
    out
}

fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The report as Markdown: the table, then the verdicts (or a note that a smoke run
/// judges nothing).
pub fn render(r: &BenchReport) -> String {
    let mut s = format!("load average at start: {}\n\n", r.load_average);
    s.push_str(
        "| path | req/s, 64 conns | p50, 64 conns | p99, 64 conns | p50, 1 conn | p99, 1 conn | failed (64 / 1) | server CPU per request (64 / 1) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let cpu = |us: Option<f64>| us.map_or_else(|| "-".to_owned(), |us| format!("{us:.0} us"));
    for p in &r.paths {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} us | {:.0} us | {:.0} us | {:.0} us | {} / {} | {} / {} |",
            p.path,
            p.c64.requests_per_sec,
            p.c64.p50_us,
            p.c64.p99_us,
            p.c1.p50_us,
            p.c1.p99_us,
            p.c64.errors,
            p.c1.errors,
            cpu(p.c64.server_cpu_us),
            cpu(p.c1.server_cpu_us),
        );
    }
    let _ = writeln!(s, "\ncold starts at the POP (us): {:?}\n", r.cold_us);
    for (name, bytes, us) in &r.cold_components {
        let _ = writeln!(
            s,
            "cold start at the POP, http component ({name}, {bytes} bytes): {:.1} ms",
            *us as f64 / 1e3
        );
    }
    if !r.cold_components.is_empty() {
        s.push('\n');
    }
    if let Some(h) = r.handshakes {
        let _ = writeln!(
            s,
            "new connection at the POP, p50 of {} one at a time: TCP connect {:.0} us; \
             TCP + TLS 1.3 {:.0} us (+{:.0} us for TLS); QUIC 1-RTT {:.0} us; 0-RTT off\n",
            h.samples,
            h.tcp_us,
            h.tls13_us,
            h.tls13_us - h.tcp_us,
            h.quic_us
        );
    }
    if r.smoke {
        s.push_str("smoke run: nothing judged\n");
        return s;
    }
    s.push_str("| budget (DESIGN §7) | measured | verdict |\n| --- | --- | --- |\n");
    for v in verdicts(r) {
        let verdict = if v.met { "pass" } else { "FAIL" };
        let _ = writeln!(s, "| {} | {} | {verdict} |", v.budget, v.measured);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(path: &'static str, rps: f64, p50_1: f64) -> PathResult {
        let c = |rps, p50| LoadResult {
            requests_per_sec: rps,
            p50_us: p50,
            ..LoadResult::default()
        };
        PathResult {
            path,
            c64: c(rps, 400.0),
            c1: c(rps / 10.0, p50_1),
        }
    }

    /// A judged (not smoke) report of `paths` and `cold_us`.
    fn report(paths: Vec<PathResult>, cold_us: Vec<u64>) -> BenchReport {
        BenchReport {
            paths,
            cold_us,
            cold_components: vec![("wat".into(), 11_000, 2_000)],
            handshakes: None,
            load_average: String::new(),
            smoke: false,
        }
    }

    #[test]
    fn verdicts_judge_each_budget_by_its_ratio() {
        let r = report(
            vec![
                path("plain axum", 100_000.0, 80.0),
                path("naive wasm", 20_000.0, 120.0),
                path("POP local, command", 30_000.0, 100.0),
                path("POP local, reactor", 49_000.0, 105.0),
                path("POP forwarded to region", 10_000.0, 400.0),
                path("region direct", 12_000.0, 200.0),
            ],
            vec![6_000, 3_000, 4_000],
        );
        let v = verdicts(&r);
        let met: Vec<bool> = v.iter().map(|v| v.met).collect();
        assert_eq!(met, [true, false, true, true, false, true]);
        assert_eq!(v[1].measured, "49.0%");
        assert_eq!(v[4].measured, "+200 us");
        assert!(render(&r).contains("| FAIL |"));
    }

    #[test]
    fn the_table_shows_the_servers_cpu_per_request_where_it_was_measured() {
        let mut measured = path("POP local, reactor", 49_000.0, 105.0);
        measured.c64.server_cpu_us = Some(35.4);
        measured.c1.server_cpu_us = Some(120.6);
        let r = report(vec![measured, path("plain axum", 100_000.0, 80.0)], vec![]);
        let table = render(&r);
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| {name} |")))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            row("POP local, reactor").ends_with("| 0 / 0 | 35 us / 121 us |"),
            "{table}"
        );
        assert!(row("plain axum").ends_with("| 0 / 0 | - / - |"), "{table}");
        let header = table.lines().find(|l| l.starts_with("| path |"));
        assert!(
            header.is_some_and(|h| h.ends_with("| server CPU per request (64 / 1) |")),
            "{table}"
        );
    }

    #[test]
    fn baselines_measured_twice_are_judged_by_their_mean() {
        // The machine slowed between the two axum runs: the reactor's row, measured in
        // between, is judged against the mean (50% of 90 000), not the faster first run.
        let r = report(
            vec![
                path("plain axum", 100_000.0, 80.0),
                path("naive wasm", 22_000.0, 120.0),
                path("POP local, command", 30_000.0, 100.0),
                path("POP local, reactor", 45_000.0, 100.0),
                path("POP forwarded to region", 10_000.0, 300.0),
                path("region direct", 12_000.0, 200.0),
                path("plain axum (again)", 80_000.0, 70.0),
                path("naive wasm (again)", 18_000.0, 110.0),
            ],
            vec![4_000],
        );
        let v = verdicts(&r);
        assert_eq!(v[0].measured, "1.50x");
        assert_eq!(v[1].measured, "50.0%");
        assert!(v[1].met, "{v:?}");
        assert_eq!(v[2].measured, "+25 us");
    }
}
