//! The server's CPU time per request: read from `/proc/<pid>/stat` (user and system time
//! of every thread of the server process, exited ones included) before and after a load
//! run, divided by the requests the load generator completed.
//!
//! Requests per second move with this VM's speed from minute to minute; the CPU a path
//! spends on a request moves less, and is what a change to the path changes, so the table
//! shows both. For `bench-strata`, the process holds the region and the POP: a forwarded
//! request's CPU is both nodes'.

use anyhow::Context as _;
use std::time::Duration;

/// Linux reports `/proc` times in `USER_HZ` ticks, which is 100 on every architecture
/// Strata builds for (x86-64, aarch64); `sysconf(_SC_CLK_TCK)` returns the same constant.
const USER_HZ: u64 = 100;

/// The CPU time `pid` has used so far, or `None` where `/proc` cannot tell (not Linux,
/// the process gone).
pub fn used(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).ok()
}

/// User plus system time from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(line: &str) -> anyhow::Result<Duration> {
    let (_, rest) = line.rsplit_once(')').context("no command name")?;
    // After the name: state (field 3), ..., utime (field 14), stime (field 15).
    let mut fields = rest.split_whitespace().skip(11);
    let mut ticks = |name: &str| -> anyhow::Result<u64> {
        fields
            .next()
            .with_context(|| format!("no {name} field"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let total = ticks("utime")?.saturating_add(ticks("stime")?);
    Ok(Duration::from_micros(
        total.saturating_mul(1_000_000 / USER_HZ),
    ))
}

/// A measurement of one process's CPU over a load run.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pid: u32,
    start: Option<Duration>,
}

impl Meter {
    /// Starts measuring `pid`.
    pub fn start(pid: u32) -> Self {
        Self {
            pid,
            start: used(pid),
        }
    }

    /// Microseconds of the process's CPU per request since [`Meter::start`], or `None`
    /// when `/proc` could not tell or no request completed.
    pub fn per_request(&self, requests: u64) -> Option<f64> {
        let spent = used(self.pid)?.checked_sub(self.start?)?;
        (requests > 0).then(|| spent.as_secs_f64() * 1e6 / requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (bench (a) b) S 1 4242 4242 0 -1 4194560 123 0 0 0 \
                    250 75 0 0 20 0 9 0 1000 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(line).expect("parses"),
            Duration::from_millis(3_250)
        );
        assert!(parse_stat("4242 (x) S 1 2").is_err());
        assert!(parse_stat("no parenthesis at all").is_err());
        assert!(parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 12").is_err());
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let me = std::process::id();
        let meter = Meter::start(me);
        assert!(meter.start.is_some(), "/proc/self/stat is readable");
        // Spin until the process has used at least two ticks more than at the start.
        let mut x = 0u64;
        while used(me).zip(meter.start).is_none_or(|(now, start)| {
            now.saturating_sub(start) < Duration::from_millis(2_000 / USER_HZ)
        }) {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
        let per = meter.per_request(10).expect("measured");
        assert!(per >= 2_000.0, "{per} us per request over 10 requests");
        assert_eq!(meter.per_request(0), None);
        assert!(Meter::start(u32::MAX).per_request(1).is_none());
    }
}
