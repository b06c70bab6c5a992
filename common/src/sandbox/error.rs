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
         (guests may import WASI preview 1, `wasi_snapshot_preview1`, and the `strata` \
         host imports of this runtime release)"
    )]
    UnknownImport {
        /// The import's module name.
        module: String,
        /// The import's field name.
        name: String,
    },
    /// The module declares more imports than [`super::SandboxConfig::max_imports`].
    #[error("module declares {count} imports, over the limit of {limit}")]
    TooManyImports {
        /// How many imports the module declares.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The module does not have the exports its configured ABI needs (DESIGN §3).
    #[error("module does not fit the {abi} ABI: {reason}")]
    Abi {
        /// `command`, `reactor` or `http`.
        abi: &'static str,
        /// What is missing or of the wrong type.
        reason: String,
    },
    /// The bytes are not a precompiled artifact this engine can load (wrong engine,
    /// corrupted, or not an artifact at all).
    #[error("precompiled artifact refused: {0}")]
    Artifact(String),
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
    /// Every instance slot is in use (see [`super::SandboxConfig::max_instances`]): the
    /// node is at capacity, not broken. Retry later or elsewhere.
    #[error("no free instance slot: {0}")]
    Capacity(String),
    /// The module was compiled by a different [`super::Sandbox`] (another engine); it must
    /// be compiled again by this one.
    #[error("module was compiled by a different sandbox engine")]
    ForeignModule,
    /// The code is of another kind than the ABI run asked for (a component run as a
    /// command or reactor, a core module run as an `http` component): deployment checks
    /// the ABI ([`super::CompiledModule::check_abi`]), so this is a platform bug.
    #[error("code of the wrong kind for this ABI: {0}")]
    WrongKind(&'static str),
}
