//! The sandbox's own errors: why a module was refused, and why the sandbox itself failed.
//!
//! A guest's failure while running (trap, exit code, timeout, out of memory, output over
//! its cap) is not an error here: it is a [`crate::model::FunctionError`] inside a
//! successful [`super::Execution`]. Owns no classification logic; that lives in `run`.

/// Why [`super::Sandbox::compile`] refused a module: always the uploader's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The bytes do not start with the WebAssembly binary magic (`\0asm`). Text WAT is
    /// refused too: tools convert it to a binary before upload.
    #[error(
        "not a WebAssembly binary module (no `\\0asm` magic); convert WAT text to a binary first"
    )]
    NotWasm,
    /// The module is bigger than [`super::SandboxConfig::max_module_bytes`].
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The module's size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// wasmtime refused the module: validation or compilation failed.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module imports something the host does not provide.
    #[error(
        "module imports `{module}::{name}`, which the host does not provide \
         (guests may import WASI preview 1, `wasi_snapshot_preview1`)"
    )]
    UnknownImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// Every import exists but linking failed (for example an import of the wrong type).
    #[error("module cannot be linked: {0}")]
    Link(String),
}

/// The sandbox itself failed: a platform bug or misconfiguration, never the guest's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// A [`super::SandboxConfig`] value is out of range.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// wasmtime refused the engine configuration, a store could not be created, or the
    /// epoch ticker thread could not be started.
    #[error("sandbox engine failure: {0}")]
    Engine(String),
    /// The module was compiled by a different [`super::Sandbox`] (another engine); it must
    /// be compiled again by this one.
    #[error("module was compiled by a different sandbox engine")]
    ForeignModule,
}
