//! The POP's artifact cache: compiled modules in memory (the executor's LRU, bounded by
//! bytes) and their precompiled code on disk under `<state_dir>/artifacts`, so that a
//! restarted POP is warm again without asking a region.
//!
//! Owns the disk format and its bound, getting an artifact (memory, then disk, then a
//! region) and loading it into the executor, and the small "known functions" file a
//! restarted POP needs to run a cached function before it has heard from a region.
//!
//! Disk format: one file per (digest, engine fingerprint), `<digest>-<fingerprint>.cwasm`,
//! holding a magic line, the SHA-256 of the body, then the body (precompiled code for this
//! node's engine). Files are written to a temporary name in the same directory and renamed
//! into place, so a reader never sees a partial file; a file whose checksum does not match
//! is deleted and ignored. Bound: at most `artifact_disk_bytes`; after each write the
//! oldest files (by modification time) are deleted until the total fits.
//!
//! Write-behind: a fetched artifact is usable as soon as it is loaded into memory; its
//! file is written afterwards by [`ArtifactCache::write_behind`] (a cold start never waits
//! on the disk's `fsync`), with the checksum [`RegionLink::fetch`] already verified (the
//! bytes are hashed once). At most [`MAX_PENDING_WRITE_BYTES`] wait to be written; past
//! it an artifact is not written (it stays in memory, and a restarted POP fetches it
//! again), counted by [`ArtifactCache::writes_skipped`]. [`ArtifactCache::flush`] (at
//! shutdown) writes what is still waiting. Which digests have a file is kept in memory, so
//! getting an artifact that is on no disk goes to the region without a blocking-pool hop.
//!
//! Known functions: `<state_dir>/artifacts/known.json` (mode 0600) maps each token's
//! SHA-256 hash (never the token itself) to the `$LATEST` resolution last learned with it
//! and when, at
//! most `max_known` entries (oldest dropped). On start, entries younger than the metadata
//! TTL are replayed into [`Known`] with their remaining TTL, never more, so a restarted POP
//! serves cached functions before its push stream is back (or while its region is down).
//! [`ArtifactCache::remember`] only changes the in-memory table and never waits on the
//! disk: [`ArtifactCache::persist`] writes it in the background (one write at a time, at
//! most one per [`KNOWN_WRITE_INTERVAL`], coalescing the changes in between), and
//! [`ArtifactCache::flush`] at shutdown. A crash loses at most the last interval's
//! learning, which the next forwards relearn; a request never waits on an fsync.

use crate::known::Known;
use crate::upstream::{Fetched, RegionLink};
use common::artifact_encoding;
use common::exec::Executor;
use common::model::{ApiError, ArtifactDigest, FunctionKey, ResolvedFunction, TokenHash};
use common::sandbox::CompiledModule;
use common::wire::{ArtifactEncoding, ArtifactKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// First bytes of every cache file; the version changes with the format.
const MAGIC: &[u8] = b"STRATA-ARTIFACT-1\n";
const CHECKSUM_LEN: usize = 32;
const EXTENSION: &str = "cwasm";
const KNOWN_FILE: &str = "known.json";
/// Least time between two writes of the known-functions file.
pub const KNOWN_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// One remembered token and the `$LATEST` resolution learned with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    token: TokenHash,
    function: ResolvedFunction,
    learned_unix_ms: u64,
}

/// Memory and disk cache of artifacts, and the known-functions file.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    executor: Executor,
    /// The engine fingerprint as it appears in file names.
    tag: String,
    max_disk_bytes: u64,
    max_memory_bytes: usize,
    max_known: usize,
    ttl: Duration,
    known: Mutex<HashMap<(TokenHash, FunctionKey), Remembered>>,
    /// `known` changed since it was last written.
    known_dirty: AtomicBool,
    /// Wakes [`ArtifactCache::persist`].
    known_changed: tokio::sync::Notify,
    /// Held while the known-functions file is written: the snapshot is taken under it, so
    /// the last rename is always of the newest snapshot.
    known_write: Mutex<()>,
    /// Distinguishes concurrent temporary files of this process.
    tmp_counter: AtomicU64,
    /// Files waiting to be written and which digests have one.
    disk: Mutex<DiskState>,
    /// [`MAX_PENDING_WRITE_BYTES`] (smaller in tests).
    max_pending_write_bytes: usize,
    /// Wakes [`ArtifactCache::write_behind`].
    disk_changed: tokio::sync::Notify,
    /// Held while pending files are written, so [`ArtifactCache::flush`] returns only
    /// after a write in progress has finished too.
    disk_write: Mutex<()>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn io_error(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("artifact cache: {what}: {e}"))
}

impl ArtifactCache {
    /// A cache under `dir` (created if missing) loading into `executor`, whose memory
    /// cache holds `max_memory_bytes`; at most `max_disk_bytes` on disk and `max_known`
    /// remembered functions, trusted for `ttl`.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(
        dir: &Path,
        executor: Executor,
        max_memory_bytes: usize,
        max_disk_bytes: u64,
        max_known: usize,
        ttl: Duration,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let fingerprint = executor.sandbox().fingerprint().0;
        let tag = fingerprint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Ok(Self {
            dir: dir.to_owned(),
            executor,
            tag,
            max_disk_bytes,
            max_memory_bytes,
            max_known: max_known.max(1),
            ttl,
            known: Mutex::new(HashMap::new()),
            known_dirty: AtomicBool::new(false),
            known_changed: tokio::sync::Notify::new(),
            known_write: Mutex::new(()),
            tmp_counter: AtomicU64::new(0),
            disk: Mutex::new(DiskState::default()),
            max_pending_write_bytes: MAX_PENDING_WRITE_BYTES,
            disk_changed: tokio::sync::Notify::new(),
            disk_write: Mutex::new(()),
        })
    }

    /// The executor artifacts are loaded into.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    fn path(&self, digest: &ArtifactDigest) -> PathBuf {
        self.dir.join(format!("{digest}-{}.{EXTENSION}", self.tag))
    }

    /// Loads `digest`'s precompiled code from disk, if there and intact. Blocking.
    fn load_from_disk(&self, digest: ArtifactDigest) -> Option<CompiledModule> {
        let path = self.path(&digest);
        let data = std::fs::read(&path).ok()?;
        let body = data
            .strip_prefix(MAGIC)
            .filter(|rest| rest.len() >= CHECKSUM_LEN)
            .and_then(|rest| {
                let (sum, body) = rest.split_at(CHECKSUM_LEN);
                (ArtifactDigest::of(body).as_bytes() == sum).then_some(body)
            });
        let Some(body) = body else {
            warn!(path = %path.display(), "corrupt artifact cache file; deleting it");
            let _ignored = std::fs::remove_file(&path);
            self.disk().on_disk.remove(&digest);
            return None;
        };
        // SAFETY (of `load_precompiled`): `body` is a file this node wrote itself (only
        // `write_to_disk` creates files here, atomically, from code this engine produced
        // or a region sent over mutually authenticated TLS for exactly this digest and
        // fingerprint), in its own state directory, named by digest and this engine's
        // fingerprint, and its SHA-256 matched the checksum written with it.
        #[allow(unsafe_code)]
        let loaded = unsafe { self.executor.sandbox().load_precompiled(digest, body) };
        match loaded {
            Ok(module) => Some(module),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "unusable artifact cache file; deleting it");
                let _ignored = std::fs::remove_file(&path);
                self.disk().on_disk.remove(&digest);
                None
            }
        }
    }

    /// Loads every intact artifact of this engine from disk into memory, until the memory
    /// cache's bound, and notes which digests have a file (a digest without one is then
    /// fetched without looking on disk). Blocking; called once at start, before
    /// [`Self::obtain`]. Returns how many were loaded.
    pub fn warm_up(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let digests: Vec<ArtifactDigest> = entries
            .flatten()
            .filter_map(|entry| self.digest_of(&entry.path()))
            .collect();
        self.disk().on_disk.extend(digests.iter().copied());
        let (mut loaded, mut bytes) = (0, 0usize);
        for digest in digests {
            if let Some(module) = self.load_from_disk(digest) {
                bytes += module.size_bytes();
                if bytes > self.max_memory_bytes {
                    break;
                }
                self.executor.insert(module);
                loaded += 1;
            }
        }
        info!(loaded, "artifact cache warmed up from disk");
        loaded
    }

    /// The compiled module for `digest`: from memory, else from disk, else fetched from a
    /// region through `link` (precompiled when the fingerprints match, else compiled
    /// here), then kept in memory and, once [`Self::write_behind`] has written it, on disk.
    ///
    /// # Errors
    /// The fetch's errors; 400 `invalid_module` when the region's wasm does not compile;
    /// 500 when a precompiled artifact is refused.
    pub async fn obtain(
        self: &Arc<Self>,
        link: &RegionLink,
        digest: ArtifactDigest,
    ) -> Result<CompiledModule, ApiError> {
        if let Some(m) = self.executor.cached(&digest) {
            return Ok(m);
        }
        if self.disk().on_disk.contains(&digest) {
            let this = Arc::clone(self);
            let from_disk = tokio::task::spawn_blocking(move || this.load_from_disk(digest))
                .await
                .map_err(|e| io_error("disk task failed", e))?;
            if let Some(m) = from_disk {
                self.executor.insert(m.clone());
                return Ok(m);
            }
        }
        let engine = self.executor.sandbox().fingerprint();
        let fetched = link.fetch(digest, engine).await?;
        let kind = fetched.kind;
        let this = Arc::clone(self);
        let module = tokio::task::spawn_blocking(move || this.admit(digest, fetched))
            .await
            .map_err(|e| io_error("load task failed", e))??;
        debug!(%digest, ?kind, "artifact ready");
        Ok(module)
    }

    /// Turns a fetched artifact into a module kept in memory and queues its precompiled
    /// code for the disk. Blocking.
    ///
    /// # Errors
    /// As [`Self::obtain`].
    fn admit(&self, digest: ArtifactDigest, fetched: Fetched) -> Result<CompiledModule, ApiError> {
        let sandbox = self.executor.sandbox();
        let Fetched {
            kind,
            encoding,
            bytes,
            checksum,
        } = fetched;
        let bytes = artifact_encoding::decode(encoding, bytes)
            .map_err(|e| ApiError::internal(format!("artifact {digest}: {e}")))?;
        // The checksum verified on receipt is of the bytes as sent; a compressed
        // artifact's file checksum is computed by the writer, off the request's path.
        let checksum = (encoding == ArtifactEncoding::Identity).then_some(checksum);
        let (module, write) = match kind {
            ArtifactKind::Precompiled => {
                // SAFETY (of `load_precompiled`): `bytes` came from a region authenticated
                // by mutual TLS (its certificate chains to our deployment CA), as the reply
                // to our request for exactly `digest` and this engine's fingerprint; the
                // reply named `digest` as its source and the bytes as sent matched its
                // checksum (`RegionLink::fetch`), then decoded within the frame bound;
                // wasmtime checks the engine header itself.
                #[allow(unsafe_code)]
                let module = unsafe { sandbox.load_precompiled(digest, &bytes) }
                    .map_err(|e| ApiError::internal(format!("artifact {digest}: {e}")))?;
                let write = PendingWrite {
                    digest,
                    code: bytes,
                    checksum,
                };
                (module, write)
            }
            ArtifactKind::Wasm => {
                let module = sandbox.compile(&bytes)?;
                let code = sandbox
                    .precompile(&module)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let write = PendingWrite {
                    digest,
                    code: code.into(),
                    checksum: None,
                };
                (module, write)
            }
        };
        self.executor.insert(module.clone());
        self.queue_write(write);
        Ok(module)
    }

    fn known_path(&self) -> PathBuf {
        self.dir.join(KNOWN_FILE)
    }

    /// Remembers that `token` resolved `function` (a `$LATEST` resolution), when that is
    /// news: a new entry, a new revision, or a timestamp older than half the TTL. Changes
    /// the table in memory only; [`Self::persist`] writes it.
    pub fn remember(&self, token: &str, function: &ResolvedFunction) {
        if function.version != "$LATEST" {
            return;
        }
        let now = unix_ms(SystemTime::now());
        {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            let token = TokenHash::of(token);
            let key = (token.clone(), function.key.clone());
            let half_ttl = u64::try_from(self.ttl.as_millis() / 2).unwrap_or(u64::MAX);
            let fresh = known.get(&key).is_some_and(|r| {
                r.function.revision == function.revision
                    && r.function.digest == function.digest
                    && now.saturating_sub(r.learned_unix_ms) < half_ttl
            });
            if fresh {
                return;
            }
            known.insert(
                key,
                Remembered {
                    token,
                    function: function.clone(),
                    learned_unix_ms: now,
                },
            );
            if known.len() > self.max_known {
                // Full: drop the oldest sixteenth in one pass, not one full scan per entry.
                let excess = known.len() - self.max_known;
                let drop = excess.max(self.max_known / 16).min(known.len());
                let mut ages: Vec<_> = known
                    .iter()
                    .map(|(k, r)| (r.learned_unix_ms, k.clone()))
                    .collect();
                ages.select_nth_unstable_by_key(drop.saturating_sub(1), |(t, _)| *t);
                for (_, k) in ages.into_iter().take(drop) {
                    known.remove(&k);
                }
            }
        }
        self.known_dirty.store(true, Ordering::Release);
        self.known_changed.notify_one();
    }

    /// Writes the known-functions file whenever it changed, at most once per
    /// [`KNOWN_WRITE_INTERVAL`]; runs until the node stops.
    pub async fn persist(self: Arc<Self>) {
        loop {
            self.known_changed.notified().await;
            self.flush().await;
            tokio::time::sleep(KNOWN_WRITE_INTERVAL).await;
        }
    }

    /// Writes the artifacts waiting for the disk, and the known-functions file if it
    /// changed since the last write, now (after a write in progress has finished).
    pub async fn flush(self: &Arc<Self>) {
        let this = Arc::clone(self);
        if tokio::task::spawn_blocking(move || {
            this.write_pending();
            this.write_known();
        })
        .await
        .is_err()
        {
            warn!("could not write the artifact cache or the known-functions file");
        }
    }

    /// Blocking: writes the table if it is dirty (a failed write leaves it dirty).
    fn write_known(&self) {
        let _writing = self.known_write.lock().unwrap_or_else(|p| p.into_inner());
        if !self.known_dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let snapshot: Vec<Remembered> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{n}-known", std::process::id()));
        if let Err(e) = write_private(&tmp, &self.known_path(), &snapshot) {
            self.known_dirty.store(true, Ordering::Release);
            warn!(error = %e, "could not write the known-functions file");
        }
    }

    /// Replays remembered functions younger than the TTL into `known`, each with the TTL
    /// it had left. Blocking; called once at start. Returns how many were replayed.
    pub fn restore(&self, known: &Known) -> usize {
        let Ok(data) = std::fs::read(self.known_path()) else {
            return 0;
        };
        let Ok(entries) = serde_json::from_slice::<Vec<Remembered>>(&data) else {
            warn!("unreadable known-functions file; ignoring it");
            return 0;
        };
        let (now, now_ms) = (Instant::now(), unix_ms(SystemTime::now()));
        let mut restored = 0;
        let mut mirror = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for r in entries {
            let age = Duration::from_millis(now_ms.saturating_sub(r.learned_unix_ms));
            let Some(learned_at) = now.checked_sub(age).filter(|_| age < self.ttl) else {
                continue;
            };
            known.learn_hashed(r.token.clone(), r.function.clone(), learned_at);
            mirror.insert((r.token.clone(), r.function.key.clone()), r);
            restored += 1;
        }
        restored
    }
}

/// Writes `entries` as JSON to `tmp` (mode 0600), then renames it to `path`.
fn write_private(tmp: &Path, path: &Path, entries: &[Remembered]) -> std::io::Result<()> {
    let json = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ignored = std::fs::remove_file(tmp);
    }
    result
}

#[path = "artifacts_disk.rs"]
mod disk;
pub use disk::MAX_PENDING_WRITE_BYTES;
use disk::{DiskState, PendingWrite};

#[cfg(test)]
#[path = "artifacts_tests.rs"]
mod tests;
