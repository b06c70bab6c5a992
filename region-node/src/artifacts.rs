//! Precompiled artifacts at the region: compile (and check) a module when it is deployed,
//! keep its precompiled code, and answer POPs' `FetchArtifact` by (digest, engine
//! fingerprint).
//!
//! Owns the bounded cache of precompiled bytes (least recently used dropped first, by
//! total bytes) and the choice of what to send: precompiled code when the POP's engine
//! fingerprint equals ours, the original wasm otherwise (the POP compiles it). Never
//! stores anything durably: the wasm in the registry is the source of truth, and a missing
//! precompiled artifact is rebuilt from it on the next fetch.
//!
//! A fetch of a cached artifact is a read: the code is compressed for the wire
//! ([`common::artifact_encoding`], about sixfold) and checksummed (the SHA-256 the POP
//! checks, of the bytes as sent) once, when the module is deployed, and the reply shares
//! the cached bytes. Compiling on a fetch happens only when the artifact was evicted (or the
//! region restarted); [`Artifacts::compiles_on_fetch`] counts those.

use crate::registry::Registry;
use bytes::Bytes;
use common::artifact_encoding;
use common::exec::Executor;
use common::model::{ApiError, ArtifactDigest, FunctionConfig};
use common::wire::{ArtifactEncoding, ArtifactKind, EngineFingerprint, Message};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing::debug;

/// Precompiled code by source digest, at most `max_bytes` in total (as sent: encoded).
#[derive(Debug)]
pub struct Artifacts {
    executor: Executor,
    registry: Arc<Registry>,
    fingerprint: EngineFingerprint,
    max_bytes: usize,
    cache: Mutex<Lru>,
    /// How many `FetchArtifact` requests were answered (any kind), for operators and tests.
    fetches: AtomicU64,
    /// How many of them had to compile the module (the artifact was not cached).
    compiles_on_fetch: AtomicU64,
}

/// Precompiled code as sent (encoded) and its checksum (SHA-256 of those bytes, computed
/// once).
#[derive(Debug, Clone)]
struct Precompiled {
    encoding: ArtifactEncoding,
    bytes: Bytes,
    checksum: ArtifactDigest,
}

#[derive(Debug, Default)]
struct Lru {
    entries: HashMap<ArtifactDigest, (Precompiled, u64)>,
    order: BTreeMap<u64, ArtifactDigest>,
    clock: u64,
    bytes: usize,
}

impl Lru {
    fn get(&mut self, d: &ArtifactDigest) -> Option<Precompiled> {
        self.clock += 1;
        let stamp = self.clock;
        let (artifact, used) = self.entries.get_mut(d)?;
        let old = std::mem::replace(used, stamp);
        let artifact = artifact.clone();
        self.order.remove(&old);
        self.order.insert(stamp, *d);
        Some(artifact)
    }

    fn insert(&mut self, d: ArtifactDigest, artifact: Precompiled, max: usize) {
        if let Some((old, used)) = self.entries.remove(&d) {
            self.order.remove(&used);
            self.bytes -= old.bytes.len();
        }
        self.clock += 1;
        self.bytes += artifact.bytes.len();
        self.order.insert(self.clock, d);
        self.entries.insert(d, (artifact, self.clock));
        while self.bytes > max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((a, _)) = self.entries.remove(&oldest) {
                self.bytes -= a.bytes.len();
            }
        }
    }
}

impl Artifacts {
    /// Artifacts compiled by `executor`'s sandbox from modules in `registry`, keeping at
    /// most `max_bytes` of precompiled code in memory.
    pub fn new(executor: Executor, registry: Arc<Registry>, max_bytes: usize) -> Self {
        let fingerprint = executor.sandbox().fingerprint();
        Self {
            executor,
            registry,
            fingerprint,
            max_bytes,
            cache: Mutex::new(Lru::default()),
            fetches: AtomicU64::new(0),
            compiles_on_fetch: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Each update completes before the guard drops; a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many `FetchArtifact` requests this region has answered.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many `FetchArtifact` requests had to compile their module because its
    /// precompiled code was not cached (evicted, or deployed before this region started).
    pub fn compiles_on_fetch(&self) -> u64 {
        self.compiles_on_fetch.load(Ordering::Relaxed)
    }

    /// Validates a module being deployed with `config`: compiles it (so it is cached for
    /// the first invocation), checks it fits `config.abi`, and precompiles it for POPs.
    ///
    /// # Errors
    /// 400 `invalid_module` naming what is wrong (not wasm, too large, an import the host
    /// does not provide, a missing ABI export, a shared-state import without a resource
    /// group); 400 `bad_request` for a `runtime` this node does not host; nothing is kept
    /// then.
    pub async fn prepare_deploy(
        &self,
        wasm: Bytes,
        config: &FunctionConfig,
    ) -> Result<(), ApiError> {
        if let Some(name) = &config.runtime
            && common::sandbox::Release::from_name(name).is_none()
        {
            return Err(ApiError::bad_request(format!(
                "runtime `{name}` is not hosted here: use {} (current) or {} (next)",
                common::sandbox::Release::Current,
                common::sandbox::Release::Next
            )));
        }
        let module = self.executor.prepare(wasm).await?;
        module.check_abi(config.abi)?;
        module.check_shared_state(config.resource_group.is_some())?;
        self.precompile(module).await.map(drop)
    }

    /// Precompiles `module`, encodes the code for the wire, checksums what will be sent
    /// and caches both (unless the code alone exceeds the bound).
    async fn precompile(
        &self,
        module: common::sandbox::CompiledModule,
    ) -> Result<Precompiled, ApiError> {
        let sandbox = self.executor.sandbox().clone();
        let digest = module.digest();
        let artifact = tokio::task::spawn_blocking(move || {
            let code = sandbox
                .precompile(&module)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let code_len = code.len();
            let (encoding, bytes) = artifact_encoding::encode(code)
                .map_err(|e| ApiError::internal(format!("compressing {digest}: {e}")))?;
            Ok::<_, ApiError>((
                code_len,
                Precompiled {
                    encoding,
                    checksum: ArtifactDigest::of(&bytes),
                    bytes,
                },
            ))
        })
        .await
        .map_err(|e| ApiError::internal(format!("precompile task failed: {e}")))?;
        let (code_len, artifact) = artifact?;
        debug!(%digest, code_len, sent = artifact.bytes.len(), encoding = ?artifact.encoding, "precompiled");
        self.lock().insert(digest, artifact.clone(), self.max_bytes);
        Ok(artifact)
    }

    /// The answer to `FetchArtifact { digest, engine }`: precompiled code when `engine` is
    /// ours (rebuilt from the registry's wasm when not cached), the wasm otherwise.
    /// A cached artifact is sent as cached: no compilation, no hashing, no copy.
    pub async fn fetch(&self, digest: ArtifactDigest, engine: &EngineFingerprint) -> Message {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.answer(digest, engine).await {
            Ok((kind, artifact)) => Message::Artifact {
                digest,
                kind,
                encoding: artifact.encoding,
                checksum: artifact.checksum,
                bytes: artifact.bytes,
            },
            Err(e) => Message::Error(e),
        }
    }

    async fn answer(
        &self,
        digest: ArtifactDigest,
        engine: &EngineFingerprint,
    ) -> Result<(ArtifactKind, Precompiled), ApiError> {
        let cached = (*engine == self.fingerprint)
            .then(|| self.lock().get(&digest))
            .flatten();
        if let Some(artifact) = cached {
            return Ok((ArtifactKind::Precompiled, artifact));
        }
        let registry = Arc::clone(&self.registry);
        let wasm: Bytes = tokio::task::spawn_blocking(move || registry.module(&digest))
            .await
            .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
            .map_err(ApiError::from)?
            .into();
        if *engine != self.fingerprint {
            // Wasm's checksum is its digest by definition; the POP hashes the bytes it
            // receives and compares them with the digest it asked for.
            let wasm = Precompiled {
                encoding: ArtifactEncoding::Identity,
                bytes: wasm,
                checksum: digest,
            };
            return Ok((ArtifactKind::Wasm, wasm));
        }
        self.compiles_on_fetch.fetch_add(1, Ordering::Relaxed);
        let module = match self.executor.cached(&digest) {
            Some(m) => m,
            None => self.executor.prepare(wasm).await?,
        };
        Ok((ArtifactKind::Precompiled, self.precompile(module).await?))
    }
}

#[cfg(test)]
#[path = "artifacts_tests.rs"]
mod tests;
