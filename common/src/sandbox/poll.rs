//! The sandbox's own `poll_oneoff`, bounded by the invocation's deadline, and the guest's
//! monotonic clock it relies on.
//!
//! `poll_oneoff` is the one WASI preview 1 call that waits for a guest-chosen time (a
//! `sleep`), and epoch interruption cannot stop host code: with wasmtime-wasi's version a
//! guest sleeping an hour waits an hour whatever its timeout. This module replaces it.
//! Guests have only in-memory stdio, which is always ready, so a poll either returns at
//! once (some fd subscription) or sleeps until its earliest clock; a sleep that would pass
//! the deadline sleeps until the deadline and then traps with [`Trap::Interrupt`], exactly
//! like a guest interrupted at an epoch tick. The sleep is a tokio timer: the guest's
//! fiber is suspended and its worker serves other tasks meanwhile. Never waits past the
//! deadline, never blocks a thread; never touches guest memory outside the subscription
//! and event arrays and the event count.

use super::StoreState;
use super::stdio::ClockOrigin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::{Caller, Extern, Linker, Trap, format_err};
use wasmtime_wasi::HostMonotonicClock;

/// WASI preview 1's import module.
const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// Size of one `subscription` record in guest memory.
const SUBSCRIPTION_BYTES: usize = 48;
/// Most subscriptions one call may pass: checked before anything is read or allocated
/// (a guest could otherwise make the host allocate for millions of them).
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Size of one `event` record in guest memory.
const EVENT_BYTES: usize = 32;
/// `eventtype` values: the subscription and event tags.
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
/// `clockid::realtime` and `clockid::monotonic`; the CPU-time clocks are refused.
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
/// `subclockflags::subscription_clock_abstime`.
const ABSTIME: u16 = 1;
/// `errno` values returned to the guest.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// The guest's monotonic clock: nanoseconds since the invocation's origin, which the
/// store state also keeps (`clock_origin`) so that absolute-time subscriptions can be
/// turned into waits. The origin is shared with the context's stdio, which moves it at
/// the start of every invocation.
#[derive(Debug, Clone)]
pub(super) struct GuestClock {
    /// The instant the clock reads zero.
    pub(super) origin: Arc<ClockOrigin>,
}

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.origin.elapsed_nanos()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Replaces `poll_oneoff` in `linker` (which already holds WASI preview 1) with the
/// deadline-bounded version.
///
/// # Errors
/// wasmtime refused the definition (a platform bug).
pub(super) fn bound_poll_oneoff(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        WASI_MODULE,
        "poll_oneoff",
        |caller: Caller<'_, StoreState>, (subs, events, n, nevents): (i32, i32, i32, i32)| {
            Box::new(poll_oneoff(
                caller,
                subs.cast_unsigned(),
                events.cast_unsigned(),
                n.cast_unsigned(),
                nevents.cast_unsigned(),
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One subscription: its `userdata` and what it waits for.
#[derive(Debug, Clone, Copy)]
struct Subscription {
    userdata: u64,
    /// `EVENTTYPE_*`.
    kind: u8,
    /// For clocks, how long from now until it fires.
    wait: Duration,
}

/// `poll_oneoff(subs, events, n, nevents) -> errno`.
async fn poll_oneoff(
    mut caller: Caller<'_, StoreState>,
    subs: u32,
    events: u32,
    n: u32,
    nevents: u32,
) -> wasmtime::Result<i32> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| format_err!("missing required memory export"))?;
    let origin = caller.data().clock_origin;
    let subs = match read_subscriptions(memory.data(&caller), subs, n, origin) {
        Ok(subs) if subs.is_empty() => return Ok(ERRNO_INVAL),
        Ok(subs) => subs,
        Err(errno) => return Ok(errno),
    };

    let clocks = subs.iter().filter(|s| s.kind == EVENTTYPE_CLOCK);
    let ready: Vec<Subscription> = if subs.iter().any(|s| s.kind != EVENTTYPE_CLOCK) {
        // In-memory stdio is always ready: return at once with the fds and due clocks.
        subs.iter()
            .filter(|s| s.kind != EVENTTYPE_CLOCK || s.wait.is_zero())
            .copied()
            .collect()
    } else {
        let wait = clocks.map(|s| s.wait).min().unwrap_or_default();
        if let Some(deadline) = caller.data().deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if wait > remaining {
                tokio::time::sleep(remaining).await;
                return Err(Trap::Interrupt.into());
            }
        }
        tokio::time::sleep(wait).await;
        subs.iter().filter(|s| s.wait <= wait).copied().collect()
    };

    let data = memory.data_mut(&mut caller);
    for (i, sub) in ready.iter().enumerate() {
        let Some(event) = slice_mut(data, events, i, EVENT_BYTES) else {
            return Ok(ERRNO_FAULT);
        };
        event.fill(0);
        event[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
        event[10] = sub.kind;
        let nbytes: u64 = if sub.kind == EVENTTYPE_CLOCK { 0 } else { 1 };
        event[16..24].copy_from_slice(&nbytes.to_le_bytes());
    }
    let count = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    let Some(out) = slice_mut(data, nevents, 0, 4) else {
        return Ok(ERRNO_FAULT);
    };
    out.copy_from_slice(&count.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// Parses `n` subscriptions at `at`, or the errno the whole call fails with.
fn read_subscriptions(
    data: &[u8],
    at: u32,
    n: u32,
    origin: Instant,
) -> Result<Vec<Subscription>, i32> {
    let n = usize::try_from(n).map_err(|_| ERRNO_FAULT)?;
    if n > MAX_SUBSCRIPTIONS {
        return Err(ERRNO_INVAL);
    }
    // Bounds-check the whole array before allocating for it.
    let total = n.checked_mul(SUBSCRIPTION_BYTES).ok_or(ERRNO_FAULT)?;
    slice(data, at, 0, total).ok_or(ERRNO_FAULT)?;
    let mut subs = Vec::with_capacity(n);
    for i in 0..n {
        let sub = slice(data, at, i, SUBSCRIPTION_BYTES).ok_or(ERRNO_FAULT)?;
        let field = |range: std::ops::Range<usize>| sub.get(range).ok_or(ERRNO_FAULT);
        let userdata = u64::from_le_bytes(array(field(0..8)?)?);
        let kind = *sub.get(8).ok_or(ERRNO_FAULT)?;
        let wait = match kind {
            EVENTTYPE_CLOCK => {
                let id = u32::from_le_bytes(array(field(16..20)?)?);
                let timeout = u64::from_le_bytes(array(field(24..32)?)?);
                let flags = u16::from_le_bytes(array(field(40..42)?)?);
                let now = match (id, flags & ABSTIME != 0) {
                    (CLOCK_REALTIME | CLOCK_MONOTONIC, false) => 0,
                    (CLOCK_MONOTONIC, true) => nanos(origin.elapsed()),
                    (CLOCK_REALTIME, true) => SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, nanos),
                    _ => return Err(ERRNO_INVAL),
                };
                Duration::from_nanos(timeout.saturating_sub(now))
            }
            EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                let fd = u32::from_le_bytes(array(field(16..20)?)?);
                let stdio = if kind == EVENTTYPE_FD_READ {
                    fd == 0
                } else {
                    fd == 1 || fd == 2
                };
                if !stdio {
                    return Err(ERRNO_BADF);
                }
                Duration::ZERO
            }
            _ => return Err(ERRNO_INVAL),
        };
        subs.push(Subscription {
            userdata,
            kind,
            wait,
        });
    }
    Ok(subs)
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], i32> {
    bytes.try_into().map_err(|_| ERRNO_FAULT)
}

/// Where the `index`th record of `size` bytes of the array at guest address `at` lies.
fn range(at: u32, index: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(at)
        .ok()?
        .checked_add(index.checked_mul(size)?)?;
    Some(start..start.checked_add(size)?)
}

fn slice(data: &[u8], at: u32, index: usize, size: usize) -> Option<&[u8]> {
    data.get(range(at, index, size)?)
}

fn slice_mut(data: &mut [u8], at: u32, index: usize, size: usize) -> Option<&mut [u8]> {
    data.get_mut(range(at, index, size)?)
}

#[cfg(test)]
mod tests {
    use crate::model::FunctionErrorKind;
    use crate::sandbox::tests::{failure, invocation, run};
    use std::time::Duration;

    /// A guest polling one clock subscription (`clockid` `id`, `flags`, `timeout` ns).
    fn sleeper(id: u32, flags: u32, timeout: i64) -> String {
        format!(
            r#"(module
                 (import "wasi_snapshot_preview1" "poll_oneoff"
                   (func $poll (param i32 i32 i32 i32) (result i32)))
                 (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start")
                   (i32.store8 (i32.const 8) (i32.const 0))
                   (i32.store (i32.const 16) (i32.const {id}))
                   (i64.store (i32.const 24) (i64.const {timeout}))
                   (i32.store16 (i32.const 40) (i32.const {flags}))
                   (if (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
                     (then (call $proc_exit (i32.const 1))))))"#
        )
    }

    #[test]
    fn too_many_subscriptions_are_refused_before_reading_them() {
        // 2000 zeroed subscriptions (realtime clocks due now) fit the two pages: the count
        // alone is refused with `inval` (28), nothing read or allocated for them.
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (memory (export "memory") 2)
          (func (export "_start")
            (call $proc_exit
              (call $poll (i32.const 0) (i32.const 0) (i32.const 2000) (i32.const 130000)))))"#;
        let e = run(wat, invocation(b""));
        assert_eq!(failure(&e).1, "exited with code 28");
    }

    #[test]
    fn sleep_past_timeout_is_timeout() {
        let mut inv = invocation(b"");
        inv.timeout = Duration::from_millis(50);
        let e = run(&sleeper(1, 0, 60_000_000_000), inv);
        assert_eq!(
            failure(&e),
            (FunctionErrorKind::Timeout, "timed out after 50 ms")
        );
    }

    #[test]
    fn absolute_sleep_past_timeout_is_timeout() {
        let mut inv = invocation(b"");
        inv.timeout = Duration::from_millis(50);
        let e = run(&sleeper(0, 1, i64::MAX), inv);
        assert_eq!(failure(&e).0, FunctionErrorKind::Timeout);
    }

    #[test]
    fn short_sleep_within_timeout_succeeds() {
        let e = run(&sleeper(1, 0, 1_000_000), invocation(b""));
        assert_eq!(e.failure, None);
    }

    #[test]
    fn poll_on_stdin_and_a_long_clock_returns_at_once_with_stdin_ready() {
        // Two subscriptions: a one-hour clock (userdata 1) and stdin readable (userdata 2).
        // The guest exits with the event count * 10 + the first event's userdata.
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i64.store (i32.const 0) (i64.const 1))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 3600000000000))
            (i64.store (i32.const 48) (i64.const 2))
            (i32.store8 (i32.const 56) (i32.const 1))
            (i32.store (i32.const 64) (i32.const 0))
            (if (call $poll (i32.const 0) (i32.const 128) (i32.const 2) (i32.const 256))
              (then (call $proc_exit (i32.const 99))))
            (call $proc_exit
              (i32.add
                (i32.mul (i32.load (i32.const 256)) (i32.const 10))
                (i32.wrap_i64 (i64.load (i32.const 128)))))))"#;
        let e = run(wat, invocation(b"x"));
        assert_eq!(failure(&e).1, "exited with code 12");
    }
}
