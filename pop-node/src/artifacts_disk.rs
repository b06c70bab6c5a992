//! The artifact cache's files: writing them atomically behind the fetch (see the parent
//! module's "Write-behind"), their bound on disk, and which digests have one.
//!
//! Never loads code: [`ArtifactCache`] does, from the files written here.

use super::{ArtifactCache, EXTENSION, MAGIC};
use bytes::Bytes;
use common::model::ArtifactDigest;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;
use tracing::{debug, warn};

/// Most bytes of fetched artifacts waiting to be written to disk (one artifact is always
/// taken when none waits); past it, a fetched artifact is not written.
pub const MAX_PENDING_WRITE_BYTES: usize = 64 << 20;

/// Precompiled code waiting to be written as `digest`'s file.
#[derive(Debug)]
pub(super) struct PendingWrite {
    pub(super) digest: ArtifactDigest,
    pub(super) code: Bytes,
    /// SHA-256 of `code` when already known (verified on receipt); else computed by the
    /// writer.
    pub(super) checksum: Option<ArtifactDigest>,
}

/// Files waiting to be written, and which digests have one.
#[derive(Debug, Default)]
pub(super) struct DiskState {
    pub(super) pending: VecDeque<PendingWrite>,
    pub(super) pending_bytes: usize,
    /// Digests with a file of this engine on disk (or waiting to be written).
    pub(super) on_disk: HashSet<ArtifactDigest>,
    pub(super) skipped: u64,
}

impl ArtifactCache {
    pub(super) fn disk(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetched artifacts waiting to be written to disk.
    pub fn pending_writes(&self) -> usize {
        self.disk().pending.len()
    }

    /// Fetched artifacts not written to disk because too many bytes were waiting.
    pub fn writes_skipped(&self) -> u64 {
        self.disk().skipped
    }

    /// Writes `bytes` (precompiled for this engine, whose SHA-256 is `checksum`) as
    /// `digest`'s file, atomically, then enforces the disk bound. Blocking.
    pub(super) fn write_to_disk(
        &self,
        digest: ArtifactDigest,
        bytes: &[u8],
        checksum: &ArtifactDigest,
    ) -> std::io::Result<()> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{n}-{digest}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(checksum.as_bytes())?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(&digest))
        })();
        if result.is_err() {
            let _ignored = std::fs::remove_file(&tmp);
        }
        result?;
        self.disk().on_disk.insert(digest);
        self.enforce_disk_bound()
    }

    /// Deletes the oldest cache files until the total fits `max_disk_bytes`.
    pub(super) fn enforce_disk_bound(&self) -> std::io::Result<()> {
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == EXTENSION) {
                let meta = entry.metadata()?;
                total += meta.len();
                files.push((meta.modified().unwrap_or(UNIX_EPOCH), meta.len(), path));
            }
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_disk_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            if let Some(digest) = self.digest_of(&path) {
                self.disk().on_disk.remove(&digest);
            }
            total -= len;
        }
        Ok(())
    }

    /// The digest a cache file of this engine is named after.
    pub(super) fn digest_of(&self, path: &Path) -> Option<ArtifactDigest> {
        let suffix = format!("-{}.{EXTENSION}", self.tag);
        path.file_name()?
            .to_str()?
            .strip_suffix(&suffix)?
            .parse()
            .ok()
    }

    /// Queues `write` for [`Self::write_behind`], unless too many bytes wait already.
    pub(super) fn queue_write(&self, write: PendingWrite) {
        let mut disk = self.disk();
        let len = write.code.len();
        if !disk.pending.is_empty() && disk.pending_bytes + len > self.max_pending_write_bytes {
            disk.skipped += 1;
            debug!(digest = %write.digest, "artifact not written to disk: too many writes waiting");
            return;
        }
        disk.on_disk.insert(write.digest);
        disk.pending_bytes += len;
        disk.pending.push_back(write);
        drop(disk);
        self.disk_changed.notify_one();
    }

    /// Writes every pending artifact file. Blocking.
    pub(super) fn write_pending(&self) {
        let _writing = self.disk_write.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Some(w) = self.disk().pending.pop_front() else {
                return;
            };
            let checksum = w.checksum.unwrap_or_else(|| ArtifactDigest::of(&w.code));
            let written = self.write_to_disk(w.digest, &w.code, &checksum);
            let mut disk = self.disk();
            disk.pending_bytes -= w.code.len();
            if let Err(e) = written {
                disk.on_disk.remove(&w.digest);
                warn!(digest = %w.digest, error = %e, "could not write the artifact cache file");
            }
        }
    }

    /// Writes fetched artifacts to disk as they come; runs until the node stops.
    pub async fn write_behind(self: Arc<Self>) {
        loop {
            self.disk_changed.notified().await;
            let this = Arc::clone(&self);
            if tokio::task::spawn_blocking(move || this.write_pending())
                .await
                .is_err()
            {
                warn!("the artifact writer task failed");
            }
        }
    }
}
