//! The guest's environment variables, per invocation: the sandbox's own `environ_get` and
//! `environ_sizes_get`, reading the current invocation's variables from the store state.
//!
//! wasmtime-wasi fixes a context's environment when the context is built, but a warm
//! reactor instance keeps one context across invocations while every invocation has its
//! own variables (`STRATA_REQUEST_ID` at least). These two imports replace WASI preview 1's
//! so that each invocation sees exactly its own variables, never an earlier one's. Same
//! layout as WASI's: `environ` is an array of pointers into `environ_buf`, which holds
//! `NAME=value\0` strings. Every guest pointer is bounds-checked; a bad one is `EFAULT`,
//! never a host panic or a trap. Never touches guest memory outside the two arrays.

use super::StoreState;
use wasmtime::{Caller, Extern, Linker, Memory};

/// WASI preview 1's import module.
const WASI_MODULE: &str = "wasi_snapshot_preview1";
/// `errno` values returned to the guest.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_OVERFLOW: i32 = 61;

/// Replaces `environ_get` and `environ_sizes_get` in `linker` (which already holds WASI
/// preview 1) with versions reading `StoreState::env`.
///
/// # Errors
/// wasmtime refused a definition (a platform bug).
pub(super) fn link(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        WASI_MODULE,
        "environ_sizes_get",
        |mut caller: Caller<'_, StoreState>, count: i32, size: i32| {
            Ok(
                sizes_get(&mut caller, count.cast_unsigned(), size.cast_unsigned())
                    .unwrap_or_else(|errno| errno),
            )
        },
    )?;
    linker.func_wrap(
        WASI_MODULE,
        "environ_get",
        |mut caller: Caller<'_, StoreState>, environ: i32, buf: i32| {
            Ok(
                get(&mut caller, environ.cast_unsigned(), buf.cast_unsigned())
                    .unwrap_or_else(|errno| errno),
            )
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn memory(caller: &mut Caller<'_, StoreState>) -> Result<Memory, i32> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or(ERRNO_FAULT)
}

/// The guest bytes `at..at + len`, or `EFAULT`.
fn slice_mut(data: &mut [u8], at: u32, len: usize) -> Result<&mut [u8], i32> {
    let start = usize::try_from(at).map_err(|_| ERRNO_FAULT)?;
    let end = start.checked_add(len).ok_or(ERRNO_FAULT)?;
    data.get_mut(start..end).ok_or(ERRNO_FAULT)
}

/// The number of variables and the bytes their `NAME=value\0` strings take, as the guest
/// sees them (32-bit), or `EOVERFLOW`.
fn sizes(env: &[(String, String)]) -> Result<(u32, u32), i32> {
    let count = u32::try_from(env.len()).map_err(|_| ERRNO_OVERFLOW)?;
    let bytes = env
        .iter()
        .try_fold(0usize, |sum, (k, v)| {
            sum.checked_add(k.len())?
                .checked_add(v.len())?
                .checked_add(2)
        })
        .and_then(|b| u32::try_from(b).ok())
        .ok_or(ERRNO_OVERFLOW)?;
    Ok((count, bytes))
}

/// `environ_sizes_get(count_out, size_out) -> errno`.
fn sizes_get(caller: &mut Caller<'_, StoreState>, count: u32, size: u32) -> Result<i32, i32> {
    let (n, bytes) = sizes(&caller.data().env)?;
    let memory = memory(caller)?;
    let data = memory.data_mut(&mut *caller);
    slice_mut(data, count, 4)?.copy_from_slice(&n.to_le_bytes());
    slice_mut(data, size, 4)?.copy_from_slice(&bytes.to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// `environ_get(environ, environ_buf) -> errno`.
fn get(caller: &mut Caller<'_, StoreState>, environ: u32, buf: u32) -> Result<i32, i32> {
    let (n, bytes) = sizes(&caller.data().env)?;
    let memory = memory(caller)?;
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    // Both arrays are checked whole before anything is written, so a bad pointer leaves
    // guest memory untouched.
    let pointers = usize::try_from(n)
        .map_err(|_| ERRNO_FAULT)?
        .saturating_mul(4);
    slice_mut(data, environ, pointers)?;
    let strings_len = usize::try_from(bytes).map_err(|_| ERRNO_FAULT)?;
    slice_mut(data, buf, strings_len)?;
    let mut at = buf;
    for (i, (k, v)) in state.env.iter().enumerate() {
        let slot = environ
            .checked_add(u32::try_from(i * 4).map_err(|_| ERRNO_FAULT)?)
            .ok_or(ERRNO_FAULT)?;
        slice_mut(data, slot, 4)?.copy_from_slice(&at.to_le_bytes());
        let len = k.len() + v.len() + 2;
        let out = slice_mut(data, at, len)?;
        let (name, rest) = out.split_at_mut(k.len());
        name.copy_from_slice(k.as_bytes());
        rest[0] = b'=';
        rest[1..=v.len()].copy_from_slice(v.as_bytes());
        rest[v.len() + 1] = 0;
        at = at
            .checked_add(u32::try_from(len).map_err(|_| ERRNO_FAULT)?)
            .ok_or(ERRNO_FAULT)?;
    }
    Ok(ERRNO_SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::sizes;

    #[test]
    fn sizes_count_name_equals_value_and_nul() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("BC".into(), String::new()),
        ];
        assert_eq!(sizes(&env), Ok((2, 4 + 4)));
        assert_eq!(sizes(&[]), Ok((0, 0)));
    }
}
