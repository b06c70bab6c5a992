//! The `strata` host imports: shared state for functions with a resource group, and the
//! deprecated `log_v0` of the current runtime release.
//!
//! Owns the pointer/length ABI over the guest's exported `memory` and the negative return
//! codes (docs/guest-abi.md lists them). Every guest pointer and length is bounds-checked
//! before any read or write; a bad one is [`BAD_POINTER`], never a host panic or a trap.
//! Never stores state itself: calls go to the invocation's [`super::StateHandle`], whose
//! implementations block on disk or network I/O, so each call runs on tokio's blocking
//! pool while the guest's fiber waits suspended and its worker serves other tasks.

use super::runtime::Release;
use super::state::{self, MAX_LIST_KEYS, StateError};
use super::{ModuleError, StoreState};
use wasmtime::{Caller, Extern, Linker, Memory};

/// The host import module.
pub(super) const MODULE: &str = "strata";
/// The shared-state imports: only functions with a resource group may import them.
pub(super) const STATE_IMPORTS: [&str; 5] = ["get", "put", "delete", "cas", "list"];

/// `get`: the key is absent.
pub const NOT_FOUND: i32 = -1;
/// A pointer/length pair is negative or outside the guest's memory (or it has none).
pub const BAD_POINTER: i32 = -2;
/// The key is empty, longer than 256 bytes or not UTF-8.
pub const BAD_KEY: i32 = -3;
/// The value is over 64 KiB.
pub const VALUE_TOO_LARGE: i32 = -4;
/// The region's store failed; nothing is known to have been written. Retry.
pub const UNAVAILABLE: i32 = -5;
/// This invocation has no shared state (the function has no resource group, or it runs
/// where there is no store).
pub const NO_STATE: i32 = -6;
/// The output buffer cannot hold the result; nothing was written.
pub const BUFFER_TOO_SMALL: i32 = -7;
/// The write would take the namespace past its key or byte quota; nothing was written.
pub const QUOTA_EXCEEDED: i32 = -8;

impl super::CompiledModule {
    /// Whether the module imports any `strata` shared-state function.
    pub fn uses_shared_state(&self) -> bool {
        self.core().is_ok_and(|pre| {
            pre.module()
                .imports()
                .any(|i| i.module() == MODULE && STATE_IMPORTS.contains(&i.name()))
        })
    }

    /// Checks that the module imports the shared-state functions only if its function has
    /// a resource group (`has_group`): the imports are linked for those functions only.
    ///
    /// # Errors
    /// [`ModuleError::Link`] naming the first state import of a function without a group.
    pub fn check_shared_state(&self, has_group: bool) -> Result<(), ModuleError> {
        if has_group {
            return Ok(());
        }
        // A component cannot import `strata` (its linker does not offer it).
        let Ok(pre) = self.core() else {
            return Ok(());
        };
        let first = pre
            .module()
            .imports()
            .find(|i| i.module() == MODULE && STATE_IMPORTS.contains(&i.name()));
        match first {
            None => Ok(()),
            Some(i) => Err(ModuleError::Link(format!(
                "`strata::{}` is a shared-state import, linked only for functions with a \
                 `resource_group`; set one in the function's config",
                i.name()
            ))),
        }
    }
}

/// A host import's result as the guest sees it.
type Code = i32;

/// Links the `strata` imports `release` offers into `linker`.
///
/// # Errors
/// When wasmtime refuses a definition (a duplicate name).
pub(super) fn link(linker: &mut Linker<StoreState>, release: Release) -> wasmtime::Result<()> {
    if release.has_legacy_log() {
        linker.func_wrap(
            MODULE,
            "log_v0",
            |mut c: Caller<'_, StoreState>, p: i32, l: i32| Ok(log_v0(&mut c, p, l)),
        )?;
    }
    linker.func_wrap_async(
        MODULE,
        "get",
        |mut c: Caller<'_, StoreState>, (kp, kl, op, oc): (i32, i32, i32, i32)| {
            Box::new(async move { Ok(get(&mut c, kp, kl, op, oc).await.unwrap_or_else(|e| e)) })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "put",
        |mut c: Caller<'_, StoreState>, (kp, kl, vp, vl): (i32, i32, i32, i32)| {
            Box::new(async move { Ok(put(&mut c, kp, kl, vp, vl).await.unwrap_or_else(|e| e)) })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "delete",
        |mut c: Caller<'_, StoreState>, (kp, kl): (i32, i32)| {
            Box::new(async move { Ok(delete(&mut c, kp, kl).await.unwrap_or_else(|e| e)) })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "cas",
        |mut c: Caller<'_, StoreState>,
         (kp, kl, ep, el, np, nl): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let swapped = cas(&mut c, (kp, kl), (ep, el), (np, nl)).await;
                Ok(swapped.unwrap_or_else(|e| e))
            })
        },
    )?;
    linker.func_wrap_async(
        MODULE,
        "list",
        |mut c: Caller<'_, StoreState>, (pp, pl, op, oc): (i32, i32, i32, i32)| {
            Box::new(async move { Ok(list(&mut c, pp, pl, op, oc).await.unwrap_or_else(|e| e)) })
        },
    )?;
    Ok(())
}

/// Runs `op` on the invocation's namespace on the blocking pool (the store behind it may
/// wait on disk or the network); a task that failed to run is [`UNAVAILABLE`]. The future
/// does not borrow the caller, so the guest's fiber waits on it without holding its store.
fn on_state<R: Send + 'static>(
    c: &Caller<'_, StoreState>,
    op: impl FnOnce(&dyn super::SharedState) -> Result<R, StateError> + Send + 'static,
) -> impl Future<Output = Result<R, Code>> + Send + 'static {
    let handle = c.data().shared.clone();
    async move {
        let handle = handle.ok_or(NO_STATE)?;
        tokio::task::spawn_blocking(move || op(handle.as_ref()))
            .await
            .map_err(|_| UNAVAILABLE)?
            .map_err(code)
    }
}

fn memory(c: &mut Caller<'_, StoreState>) -> Result<Memory, Code> {
    c.get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or(BAD_POINTER)
}

/// The guest range `ptr..ptr+len`, checked against `data`.
fn range(data: &[u8], ptr: i32, len: i32) -> Result<std::ops::Range<usize>, Code> {
    let (Ok(start), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return Err(BAD_POINTER);
    };
    let end = start.checked_add(len).ok_or(BAD_POINTER)?;
    if end > data.len() {
        return Err(BAD_POINTER);
    }
    Ok(start..end)
}

fn read_bytes(c: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> Result<Vec<u8>, Code> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    Ok(data[range(data, ptr, len)?].to_vec())
}

fn read_key(c: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> Result<String, Code> {
    // Checked before reading so a huge length never copies guest memory.
    if usize::try_from(len).is_ok_and(|l| l > state::MAX_KEY_BYTES) {
        return Err(BAD_KEY);
    }
    let bytes = read_bytes(c, ptr, len)?;
    let key = String::from_utf8(bytes).map_err(|_| BAD_KEY)?;
    state::check_key(&key).map_err(code)?;
    Ok(key)
}

fn read_value(c: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> Result<Vec<u8>, Code> {
    if usize::try_from(len).is_ok_and(|l| l > state::MAX_VALUE_BYTES) {
        return Err(VALUE_TOO_LARGE);
    }
    read_bytes(c, ptr, len)
}

fn write_bytes(c: &mut Caller<'_, StoreState>, ptr: i32, cap: i32, out: &[u8]) -> Result<(), Code> {
    let mem = memory(c)?;
    let data = mem.data_mut(&mut *c);
    let r = range(data, ptr, cap)?;
    if out.len() > r.len() {
        return Err(BUFFER_TOO_SMALL);
    }
    data[r.start..r.start + out.len()].copy_from_slice(out);
    Ok(())
}

fn code(e: StateError) -> Code {
    match e {
        StateError::BadKey(_) => BAD_KEY,
        StateError::ValueTooLarge(_) => VALUE_TOO_LARGE,
        StateError::Unavailable(_) => UNAVAILABLE,
        StateError::QuotaExceeded(_) => QUOTA_EXCEEDED,
    }
}

fn len_code(n: usize) -> Code {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn log_v0(c: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> Code {
    let Ok(mem) = memory(c) else {
        return BAD_POINTER;
    };
    let stderr = c.data().stdio.stderr().clone();
    let data = mem.data(&*c);
    let Ok(r) = range(data, ptr, len) else {
        return BAD_POINTER;
    };
    // Only what still fits the stderr pipe is copied, never a guest-chosen length. What
    // does not fit is dropped, and the pipe is then over its cap, so the invocation fails
    // with stderr over its cap, as with WASI's stderr.
    let n = r.len().min(stderr.room());
    let mut line = Vec::with_capacity(n.saturating_add(1));
    line.extend_from_slice(&data[r.start..r.start + n]);
    line.push(b'\n');
    stderr.append(&line);
    0
}

async fn get(
    c: &mut Caller<'_, StoreState>,
    kp: i32,
    kl: i32,
    op: i32,
    oc: i32,
) -> Result<Code, Code> {
    let key = read_key(c, kp, kl)?;
    let value = on_state(c, move |s| s.get(&key)).await?.ok_or(NOT_FOUND)?;
    match write_bytes(c, op, oc, &value) {
        // The guest learns the length it needs and asks again with a bigger buffer.
        Ok(()) | Err(BUFFER_TOO_SMALL) => Ok(len_code(value.len())),
        Err(e) => Err(e),
    }
}

async fn put(
    c: &mut Caller<'_, StoreState>,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<Code, Code> {
    let key = read_key(c, kp, kl)?;
    let value = read_value(c, vp, vl)?;
    on_state(c, move |s| s.put(&key, &value)).await?;
    Ok(0)
}

async fn delete(c: &mut Caller<'_, StoreState>, kp: i32, kl: i32) -> Result<Code, Code> {
    let key = read_key(c, kp, kl)?;
    Ok(i32::from(on_state(c, move |s| s.delete(&key)).await?))
}

async fn cas(
    c: &mut Caller<'_, StoreState>,
    (kp, kl): (i32, i32),
    (ep, el): (i32, i32),
    (np, nl): (i32, i32),
) -> Result<Code, Code> {
    let key = read_key(c, kp, kl)?;
    // A length of -1 expects the key to be absent.
    let expected = if el == -1 {
        None
    } else {
        Some(read_value(c, ep, el)?)
    };
    let new = read_value(c, np, nl)?;
    let swapped = on_state(c, move |s| s.cas(&key, expected.as_deref(), &new)).await?;
    Ok(i32::from(swapped))
}

async fn list(
    c: &mut Caller<'_, StoreState>,
    pp: i32,
    pl: i32,
    op: i32,
    oc: i32,
) -> Result<Code, Code> {
    // Checked before reading so a huge length never copies guest memory. An empty
    // prefix lists every key, so it is read without the key check.
    if usize::try_from(pl).is_ok_and(|l| l > state::MAX_KEY_BYTES) {
        return Err(BAD_KEY);
    }
    let prefix = String::from_utf8(read_bytes(c, pp, pl)?).map_err(|_| BAD_KEY)?;
    let keys = on_state(c, move |s| s.list(&prefix, MAX_LIST_KEYS)).await?;
    let mut out = Vec::new();
    for key in &keys {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    write_bytes(c, op, oc, &out)?;
    Ok(len_code(keys.len()))
}
