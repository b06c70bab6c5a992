//! Compiled code: [`CompiledModule`], a core module or a `wasi:http/proxy` component,
//! pre-linked and ready to instantiate, and the check that it fits its function's ABI.
//!
//! Owns which kind of code each ABI runs; never instantiates or runs anything.

use super::{ModuleError, SandboxError, StoreState, component};
use crate::model::{Abi, ArtifactDigest};
use std::fmt;
use std::sync::Arc;
use wasmtime::{Engine, ExternType, InstancePre, ModuleExport, ValType};

/// A validated, compiled and pre-linked module, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct CompiledModule {
    pub(super) inner: Arc<ModuleInner>,
}

pub(super) struct ModuleInner {
    pub(super) digest: ArtifactDigest,
    pub(super) code: Code,
    pub(super) size_bytes: usize,
    /// Whether the guest can read environment variables (see
    /// [`CompiledModule::reads_environment`]).
    pub(super) reads_env: bool,
    /// A core module's exports every run looks up, resolved once (a run then finds them
    /// by index, not by name).
    pub(super) exports: CoreExports,
    /// Set once an instantiation of the module was seen running guest code (a `start`
    /// function): its instances are then never made ahead ([`super::prepared`]).
    pub(super) runs_at_instantiation: std::sync::atomic::AtomicBool,
}

/// Where a core module's `memory` and `_start` exports are, when it has them.
#[derive(Clone, Copy, Default)]
pub(super) struct CoreExports {
    pub(super) memory: Option<ModuleExport>,
    pub(super) start: Option<ModuleExport>,
}

impl CoreExports {
    /// The exports of `module`.
    pub(super) fn of(module: &wasmtime::Module) -> Self {
        Self {
            memory: module.get_export_index("memory"),
            start: module.get_export_index("_start"),
        }
    }
}

/// Compiled, pre-linked code of one of the two kinds the ABIs run.
pub(super) enum Code {
    /// A core module (`command`, `reactor`).
    Core(InstancePre<StoreState>),
    /// A `wasi:http/proxy` component (`http`).
    Http(component::Proxy),
}

impl CompiledModule {
    /// The SHA-256 of the module's wasm bytes.
    pub fn digest(&self) -> ArtifactDigest {
        self.inner.digest
    }

    /// The size of the module's wasm bytes.
    pub fn size_bytes(&self) -> usize {
        self.inner.size_bytes
    }

    /// The pre-linked core module.
    ///
    /// # Errors
    /// [`SandboxError::WrongKind`] for a component.
    pub(super) fn core(&self) -> Result<&InstancePre<StoreState>, SandboxError> {
        match &self.inner.code {
            Code::Core(pre) => Ok(pre),
            Code::Http(_) => Err(SandboxError::WrongKind(
                "a component cannot run as a core module",
            )),
        }
    }

    /// The engine that compiled this code.
    pub(super) fn engine(&self) -> &Engine {
        match &self.inner.code {
            Code::Core(pre) => pre.module().engine(),
            Code::Http(proxy) => proxy.engine(),
        }
    }

    /// Whether the guest can read its environment variables: a core module that imports
    /// WASI's `environ_get` or `environ_sizes_get`, and every component (its context is
    /// built with them). An invocation of any other guest needs none built.
    pub fn reads_environment(&self) -> bool {
        self.inner.reads_env
    }

    /// Whether this is a component (the `http` ABI) rather than a core module.
    pub fn is_component(&self) -> bool {
        matches!(self.inner.code, Code::Http(_))
    }

    /// Checks that the module has what `abi` needs (DESIGN §3): `_start: () -> ()` for a
    /// command; `strata_handle: () -> i32` (and, if exported, `_initialize: () -> ()`)
    /// for a reactor.
    ///
    /// # Errors
    /// [`ModuleError::Abi`] naming the missing or mistyped export.
    pub fn check_abi(&self, abi: Abi) -> Result<(), ModuleError> {
        let module = match (&self.inner.code, abi) {
            (Code::Http(_), Abi::Http) => return Ok(()),
            (Code::Core(_), Abi::Http) => {
                return Err(ModuleError::Abi {
                    abi: "http",
                    reason: "a core module, not a component exporting \
                             `wasi:http/incoming-handler` (deploy it with abi = command or \
                             reactor)"
                        .to_owned(),
                });
            }
            (Code::Http(_), _) => {
                return Err(ModuleError::Abi {
                    abi: if abi == Abi::Reactor {
                        "reactor"
                    } else {
                        "command"
                    },
                    reason: "a `wasi:http/proxy` component (deploy it with abi = http)".to_owned(),
                });
            }
            (Code::Core(pre), _) => pre.module(),
        };
        let func = |name: &str| match module.get_export(name) {
            Some(ExternType::Func(f)) => Some(Some(f)),
            Some(_) => Some(None),
            None => None,
        };
        let unit = |f: &wasmtime::FuncType| f.params().len() == 0 && f.results().len() == 0;
        let (abi_name, problem) = match abi {
            Abi::Command => (
                "command",
                match func("_start") {
                    Some(Some(f)) if unit(&f) => None,
                    Some(_) => Some("`_start` must be a function taking and returning nothing"),
                    None => Some("no `_start` export (a reactor? deploy with abi = reactor)"),
                },
            ),
            Abi::Http | Abi::Reactor => {
                let handle = match func("strata_handle") {
                    Some(Some(f))
                        if f.params().len() == 0
                            && f.results().len() == 1
                            && f.results().all(|r| matches!(r, ValType::I32)) =>
                    {
                        None
                    }
                    Some(_) => Some("`strata_handle` must be a function `() -> i32`"),
                    None => Some("no `strata_handle` export"),
                };
                let init = match func("_initialize") {
                    Some(Some(f)) if !unit(&f) => {
                        Some("`_initialize` must be a function taking and returning nothing")
                    }
                    Some(None) => Some("`_initialize` must be a function"),
                    _ => None,
                };
                ("reactor", handle.or(init))
            }
        };
        match problem {
            None => Ok(()),
            Some(reason) => Err(ModuleError::Abi {
                abi: abi_name,
                reason: reason.to_owned(),
            }),
        }
    }
}

impl fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledModule")
            .field("digest", &self.inner.digest)
            .field("size_bytes", &self.inner.size_bytes)
            .finish_non_exhaustive()
    }
}
