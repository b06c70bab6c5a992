//! The guest's `fd_read` of stdin and `fd_write` of stdout and stderr, served straight
//! from and into the invocation's in-memory pipes ([`super::stdio::Stdio`]) instead of
//! through WASI preview 1's descriptor table, stream resources and async machinery: on
//! the reactor's hot path those took more CPU than the guest's own work.
//!
//! Only the plain case is served here: the descriptor is one of the three stdio ones and
//! the context still holds the stream it was given for each (no stdio descriptor closed or
//! renumbered: [`super::stdio::Stdio::intact`]), the iovec array and the buffer it names
//! are aligned and inside linear memory, and a write fits the pipe whole. Everything else
//! (other descriptors, bad or misaligned pointers, a full pipe, a guest that rearranged its
//! descriptors, buffers past the host-call fuel) goes to WASI's own implementation, so
//! every errno, partial write and trap is WASI's. Same semantics as WASI's for the plain
//! case: the first non-empty buffer is read or written, a read takes what stdin has (0 at
//! its end), and the count is stored after the data.

use super::StoreState;
use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1 as wasi;
use wiggle::GuestMemory;

/// WASI preview 1's import module.
const WASI_MODULE: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
/// Longer iovec arrays go to WASI, which charges them to the host-call fuel.
const MAX_DIRECT_IOVECS: u32 = 16;
/// An iovec: a 32-bit buffer pointer and a 32-bit length, 4-byte aligned.
const IOVEC_BYTES: usize = 8;

#[cfg(test)]
thread_local! {
    /// Calls served here rather than by WASI, on this thread (tests run guests on theirs).
    pub(super) static DIRECT_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Calls WASI's own implementation the way its linker entry does: the guest's memory
/// (plain or shared) and the context, with the store's host-call fuel.
macro_rules! with_wasi {
    ($caller:ident, |$ctx:ident, $mem:ident| $call:expr) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        match $caller.get_export("memory") {
            Some(Extern::Memory(m)) => {
                let (data, state) = m.data_and_store_mut(&mut $caller);
                let $ctx = &mut state.wasi;
                wasi::WasiSnapshotPreview1::set_hostcall_fuel($ctx, fuel);
                let $mem = &mut GuestMemory::Unshared(data);
                Ok($call.await?)
            }
            Some(Extern::SharedMemory(m)) => {
                let $ctx = &mut $caller.data_mut().wasi;
                wasi::WasiSnapshotPreview1::set_hostcall_fuel($ctx, fuel);
                let $mem = &mut GuestMemory::Shared(m.data());
                Ok($call.await?)
            }
            _ => Err(wasmtime::format_err!("missing required memory export")),
        }
    }};
}

/// Replaces `fd_read` and `fd_write` in `linker` (which already holds WASI preview 1)
/// with versions that serve the plain stdio case directly and hand the rest to WASI.
///
/// # Errors
/// wasmtime refused a definition (a platform bug).
pub(super) fn link(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        WASI_MODULE,
        "fd_read",
        |mut caller: Caller<'_, StoreState>, (fd, iovs, len, nread): (i32, i32, i32, i32)| {
            Box::new(async move {
                if let Some(errno) = direct(&mut caller, Op::Read, fd, iovs, len, nread) {
                    return Ok(errno);
                }
                with_wasi!(caller, |ctx, mem| wasi::fd_read(
                    ctx, mem, fd, iovs, len, nread
                ))
            })
        },
    )?;
    linker.func_wrap_async(
        WASI_MODULE,
        "fd_write",
        |mut caller: Caller<'_, StoreState>, (fd, iovs, len, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                if let Some(errno) = direct(&mut caller, Op::Write, fd, iovs, len, nwritten) {
                    return Ok(errno);
                }
                with_wasi!(caller, |ctx, mem| wasi::fd_write(
                    ctx, mem, fd, iovs, len, nwritten
                ))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// Serves the call from the pipes when it is the plain case (module docs) and returns
/// its errno; `None` leaves it, untouched, to WASI.
fn direct(
    caller: &mut Caller<'_, StoreState>,
    op: Op,
    fd: i32,
    iovs: i32,
    len: i32,
    count_at: i32,
) -> Option<i32> {
    if !matches!((op, fd), (Op::Read, 0) | (Op::Write, 1 | 2)) {
        return None;
    }
    let fuel = caller.as_context_mut().hostcall_fuel();
    let memory = match caller.data().memory {
        Some(m) => m,
        // Still instantiating (a start function writing): look it up.
        None => caller.get_export("memory")?.into_memory()?,
    };
    let (data, state) = memory.data_and_store_mut(caller);
    if !state.stdio.intact() {
        return None;
    }
    let buf = first_non_empty(data, iovs, len)?;
    // WASI charges the whole iovec array and the buffer to the host-call fuel (ENOMEM
    // past it); `len` is at most MAX_DIRECT_IOVECS here.
    let charged = usize::try_from(len).ok()?.checked_mul(IOVEC_BYTES)? + buf.len();
    if charged > fuel {
        return None;
    }
    let count = aligned_range(data, count_at, 4)?;
    let done = match op {
        Op::Read => state.stdio.read_stdin(&mut data[buf]),
        Op::Write => {
            let pipe = match fd {
                1 => state.stdio.stdout(),
                _ => state.stdio.stderr(),
            };
            if !pipe.append_whole(&data[buf.clone()]) {
                return None;
            }
            buf.len()
        }
    };
    // `done` is at most the buffer's length, which came from a u32.
    let done = u32::try_from(done).unwrap_or(u32::MAX);
    data[count].copy_from_slice(&done.to_le_bytes());
    #[cfg(test)]
    DIRECT_CALLS.with(|c| c.set(c.get() + 1));
    Some(ERRNO_SUCCESS)
}

/// The guest range of the first non-empty buffer in the iovec array `iovs[..len]`; `None`
/// when the array is long, misaligned or outside memory before one is found, when that
/// buffer is outside memory, or when every buffer is empty.
fn first_non_empty(data: &[u8], iovs: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_DIRECT_IOVECS)?;
    let start = usize::try_from(iovs).ok()?;
    for i in 0..len as usize {
        let at = i32::try_from(start.checked_add(i * IOVEC_BYTES)?).ok()?;
        let iov = &data[aligned_range(data, at, IOVEC_BYTES)?];
        let (ptr, size) = iov.split_at(4);
        let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
        if size == 0 {
            continue;
        }
        let ptr = u32::from_le_bytes(ptr.try_into().ok()?) as usize;
        let end = ptr.checked_add(size)?;
        return (end <= data.len()).then_some(ptr..end);
    }
    None
}

/// `at..at + len` when `at` is 4-byte aligned and the range is inside `data`.
fn aligned_range(data: &[u8], at: i32, len: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(at).ok().filter(|s| s % 4 == 0)?;
    let end = start.checked_add(len)?;
    (end <= data.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invocation, run_in, sandbox};
    use super::{DIRECT_CALLS, aligned_range, first_non_empty};

    /// Stdio calls in the plain case and around it, each call's errno and count stored
    /// and finally written, after the guest renumbered stdout onto descriptor 2, to
    /// stdout through 2. The expected values are WASI preview 1's own (recorded with
    /// `fdio::link` taken out of the linker).
    const EDGES: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "xey")
  (global $at (mut i32) (i32.const 500))
  (func $iov (param $at i32) (param $ptr i32) (param $len i32)
    (i32.store (local.get $at) (local.get $ptr))
    (i32.store offset=4 (local.get $at) (local.get $len)))
  ;; Stores an errno and the count the call stored at `count` as two bytes.
  (func $note (param $errno i32) (param $count i32)
    (i32.store8 (global.get $at) (local.get $errno))
    (i32.store8 offset=1 (global.get $at) (i32.load (local.get $count)))
    (global.set $at (i32.add (global.get $at) (i32.const 2))))
  (func (export "_start")
    (call $iov (i32.const 16) (i32.const 200) (i32.const 0))
    (call $iov (i32.const 24) (i32.const 200) (i32.const 5))
    (call $iov (i32.const 32) (i32.const 0) (i32.const 0))
    (call $iov (i32.const 40) (i32.const 300) (i32.const 1))
    (call $iov (i32.const 48) (i32.const 301) (i32.const 1))
    (call $iov (i32.const 56) (i32.const 302) (i32.const 1))
    (call $iov (i32.const 64) (i32.const 65530) (i32.const 100))
    (call $iov (i32.const 72) (i32.const 500) (i32.const 30))
    ;; plain: 5 bytes of stdin after an empty buffer
    (call $note (call $read (i32.const 0) (i32.const 16) (i32.const 2) (i32.const 600)) (i32.const 600))
    ;; only empty buffers
    (call $note (call $read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 604)) (i32.const 604))
    ;; no such descriptor; stdout read; stdin written
    (call $note (call $write (i32.const 3) (i32.const 40) (i32.const 1) (i32.const 608)) (i32.const 608))
    (call $note (call $read (i32.const 1) (i32.const 24) (i32.const 1) (i32.const 608)) (i32.const 608))
    (call $note (call $write (i32.const 0) (i32.const 40) (i32.const 1) (i32.const 608)) (i32.const 608))
    ;; plain: "e" to stderr, "x" to stdout
    (call $note (call $write (i32.const 2) (i32.const 48) (i32.const 1) (i32.const 612)) (i32.const 612))
    (call $note (call $write (i32.const 1) (i32.const 40) (i32.const 1) (i32.const 616)) (i32.const 616))
    ;; the rest of stdin (5 bytes, then 1), then its end
    (call $note (call $read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 624)) (i32.const 624))
    (call $note (call $read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 628)) (i32.const 628))
    (call $note (call $read (i32.const 0) (i32.const 24) (i32.const 1) (i32.const 644)) (i32.const 644))
    ;; stdout renumbered onto 2: "y" through 2 reaches stdout, 1 is gone
    (call $note (call $renumber (i32.const 1) (i32.const 2)) (i32.const 700))
    (call $note (call $write (i32.const 2) (i32.const 56) (i32.const 1) (i32.const 632)) (i32.const 632))
    (call $note (call $write (i32.const 1) (i32.const 56) (i32.const 1) (i32.const 636)) (i32.const 636))
    (call $iov (i32.const 72) (i32.const 500) (i32.sub (global.get $at) (i32.const 500)))
    (drop (call $write (i32.const 2) (i32.const 72) (i32.const 1) (i32.const 640)))))"#;

    /// One `fd_write` (or `fd_read`) of the byte at 300 with the iovec array at `iovs`
    /// (the iovec at 16, a second one after it) and the count stored at `count`.
    fn one_call(import: &str, fd: i32, iovs: i32, count: i32) -> String {
        format!(
            r#"(module
  (import "wasi_snapshot_preview1" "{import}" (func $call (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "x")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 300))
    (i32.store (i32.const 20) (i32.const 1))
    (i32.store (i32.const 24) (i32.const 65530))
    (i32.store (i32.const 28) (i32.const 100))
    (drop (call $call (i32.const {fd}) (i32.const {iovs}) (i32.const 1) (i32.const {count})))))"#
        )
    }

    /// The import, its descriptor, iovec and count pointers, WASI's trap and stdout.
    type Case<'a> = (&'a str, i32, i32, i32, Option<&'a str>, &'a [u8]);

    #[test]
    fn bad_pointers_trap_as_in_wasi_and_are_never_served_directly() {
        let s = sandbox();
        let unaligned = |at| format!("Pointer not aligned to 4: Region {{ start: {at}, len: 4 }}");
        let outside =
            |at, len| format!("Pointer out of bounds: Region {{ start: {at}, len: {len} }}");
        let (u17, u602) = (unaligned(17), unaligned(602));
        let (o70000, o65530, o65534) = (outside(70000, 4), outside(65530, 100), outside(65534, 4));
        // WASI's answers: the message of the trap, and what reached stdout first (a write
        // whose count cannot be stored has written; a read checks its buffer only as far
        // as it fills it, here 2 bytes of stdin).
        let cases: [Case<'_>; 8] = [
            ("fd_write", 1, 17, 600, Some(&u17), b""),
            ("fd_write", 1, 70000, 600, Some(&o70000), b""),
            ("fd_write", 1, 24, 600, Some(&o65530), b""),
            ("fd_write", 1, 16, 65534, Some(&o65534), b"x"),
            ("fd_write", 1, 16, 602, Some(&u602), b"x"),
            ("fd_read", 0, 17, 600, Some(&u17), b""),
            ("fd_read", 0, 24, 600, None, b""),
            ("fd_read", 0, 16, 65534, Some(&o65534), b""),
        ];
        for (import, fd, iovs, count, trap, out) in cases {
            let before = DIRECT_CALLS.with(std::cell::Cell::get);
            let e = run_in(&s, &one_call(import, fd, iovs, count), invocation(b"in"));
            let direct = DIRECT_CALLS.with(std::cell::Cell::get) - before;
            let case = format!("{import}({fd}, iovs at {iovs}, count at {count})");
            assert_eq!(
                e.failure.map(|f| f.message),
                trap.map(str::to_owned),
                "{case}"
            );
            assert_eq!(e.stdout, out, "{case}");
            assert_eq!(direct, 0, "{case}");
        }
    }

    #[test]
    fn stdio_calls_answer_as_wasi_does_and_only_the_plain_ones_are_served_directly() {
        let s = sandbox();
        let before = DIRECT_CALLS.with(std::cell::Cell::get);
        let e = run_in(&s, EDGES, invocation(b"hello world"));
        let direct = DIRECT_CALLS.with(std::cell::Cell::get) - before;
        assert_eq!(e.failure, None, "{:?}", String::from_utf8_lossy(&e.stderr));
        assert_eq!(e.stderr, b"e");
        let (written, notes) = e.stdout.split_at(e.stdout.len().min(2));
        assert_eq!(written, b"xy", "stdout before the notes");
        // (errno, count) per call, in the guest's order; 27 is EINTR, 8 EBADF.
        let expected: &[[u8; 2]] = &[
            [0, 5],  // 5 bytes of stdin
            [27, 0], // only empty buffers
            [8, 0],  // fd 3
            [8, 0],  // stdout read
            [8, 0],  // stdin written
            [0, 1],  // "e" to stderr
            [0, 1],  // "x" to stdout
            [0, 5],  // the rest of stdin...
            [0, 1],
            [0, 0], // ...and its end
            [0, 0], // renumbered
            [0, 1], // "y" through 2
            [8, 0], // 1 is gone
        ];
        assert_eq!(notes, expected.concat());
        assert_eq!(direct, 6, "the plain calls: 4 reads, 2 writes");
    }

    fn iovec(ptr: u32, len: u32) -> [u8; 8] {
        let mut b = [0; 8];
        b[..4].copy_from_slice(&ptr.to_le_bytes());
        b[4..].copy_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn the_first_non_empty_buffer_is_found_and_bounds_checked() {
        let mut mem = vec![0u8; 64];
        mem[0..8].copy_from_slice(&iovec(40, 0));
        mem[8..16].copy_from_slice(&iovec(40, 8));
        assert_eq!(first_non_empty(&mem, 0, 2), Some(40..48));
        // All empty, or the only buffer reaching past memory: left to WASI.
        assert_eq!(first_non_empty(&mem, 0, 1), None);
        mem[8..16].copy_from_slice(&iovec(60, 8));
        assert_eq!(first_non_empty(&mem, 0, 2), None);
        // Misaligned, negative, too long or outside memory: left to WASI.
        assert_eq!(first_non_empty(&mem, 2, 1), None);
        assert_eq!(first_non_empty(&mem, -8, 1), None);
        assert_eq!(first_non_empty(&mem, 0, 17), None);
        assert_eq!(first_non_empty(&mem, 60, 1), None);
        assert_eq!(aligned_range(&mem, 60, 4), Some(60..64));
        assert_eq!(aligned_range(&mem, 61, 4), None);
        assert_eq!(aligned_range(&mem, 64, 4), None);
    }
}
