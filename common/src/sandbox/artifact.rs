//! Precompiled artifacts: compiled code as bytes, exchanged between engines with equal
//! fingerprints so that a POP runs a module without compiling it.
//!
//! Owns the one `unsafe` operation of the sandbox, loading precompiled code
//! ([`Sandbox::load_precompiled`]), and the checks done before it. Never decides where
//! bytes come from: callers state and uphold the provenance (see the function's safety
//! section), and never reads or writes files.

#![allow(unsafe_code)]

use super::{Code, CompiledModule, ModuleError, Sandbox, SandboxError};
use crate::model::ArtifactDigest;
use wasmtime::component::Component;
use wasmtime::{Engine, Module, Precompiled};

impl Sandbox {
    /// The compiled code of `module`, as bytes another engine with the same
    /// [`Sandbox::fingerprint`] can load with [`Sandbox::load_precompiled`]. About the size
    /// of the machine code plus metadata; no compilation happens here.
    ///
    /// # Errors
    /// [`SandboxError::Engine`] when wasmtime cannot serialize the module.
    pub fn precompile(&self, module: &CompiledModule) -> Result<Vec<u8>, SandboxError> {
        match &module.inner.code {
            Code::Core(pre) => pre.module().serialize(),
            Code::Http(proxy) => proxy.instance_pre().component().serialize(),
        }
        .map_err(|e| SandboxError::Engine(format!("serializing a module: {e:#}")))
    }

    /// Loads precompiled code for the wasm module with `digest`, then checks its imports
    /// and pre-links it exactly like [`Sandbox::compile`]. Costs a copy of `bytes` into
    /// executable memory, no compilation.
    ///
    /// # Safety
    /// wasmtime trusts precompiled bytes: code in them runs natively, outside the
    /// sandbox. wasmtime itself checks the format's header (wasmtime version, target and
    /// every code-affecting engine setting) and refuses a mismatch, but not the code. The
    /// caller must guarantee that `bytes` were produced by [`Sandbox::precompile`] of a
    /// trusted Strata node for the wasm whose SHA-256 is `digest`, and have not been
    /// altered since: for example bytes received over mutually authenticated TLS from a
    /// region in reply to a request for `digest` and this engine's fingerprint, or a
    /// cache file this node wrote itself, in a directory only it writes, whose checksum
    /// was verified on load.
    ///
    /// # Errors
    /// [`ModuleError::Artifact`] when the bytes are not a precompiled module for this
    /// engine; the import and link errors of [`Sandbox::compile`].
    pub unsafe fn load_precompiled(
        &self,
        digest: ArtifactDigest,
        bytes: &[u8],
    ) -> Result<CompiledModule, ModuleError> {
        let refused = |e: wasmtime::Error| ModuleError::Artifact(format!("{e:#}"));
        match Engine::detect_precompiled(bytes) {
            Some(Precompiled::Module) => {
                // SAFETY: upheld by this function's caller, as its contract above states.
                let module =
                    unsafe { Module::deserialize(&self.inner.engine, bytes) }.map_err(refused)?;
                self.prelink(module, digest, bytes.len())
            }
            Some(Precompiled::Component) => {
                // SAFETY: upheld by this function's caller, as its contract above states.
                let component = unsafe { Component::deserialize(&self.inner.engine, bytes) }
                    .map_err(refused)?;
                super::component::prelink(self, component, digest, bytes.len())
            }
            None => Err(ModuleError::Artifact(
                "not a precompiled wasmtime module or component".into(),
            )),
        }
    }
}
