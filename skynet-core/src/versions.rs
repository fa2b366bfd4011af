//! Versions (`--keep-versions`): what the destination would delete or overwrite is moved
//! aside first and kept for a while, so that a mistaken `rm`, a program truncating files or
//! ransomware encrypting the source is not faithfully mirrored into the only other copy.
//!
//! How: [`Versioned`] wraps any destination. Before a deletion, an overwrite by a send, or a
//! rename onto an existing target, it renames whatever stands at the path into the versions
//! folder at the destination root, `.skynet-versions/<path>~<YYYYmmdd-HHMMSS>` (UTC, `-N`
//! added when that name is taken), so that a person finds them without skynet; a directory
//! goes whole, keeping every file under it. A deletion *is* that rename: the destination
//! never removes a file itself.
//!
//! Why it can never leave a file in neither place: the move aside is the destination's own
//! rename (atomic on a filesystem and SFTP; on S3 every object is copied before its source is
//! deleted), and the new content is written after it, to a temporary name renamed into place.
//! A crash between the two leaves the old copy in the versions folder and the send queued.
//! The version is filed in the state database before the rename and confirmed after it, so a
//! crash never leaves a version nobody knows of.
//!
//! Pruning ([`Versioned::prune`]) removes versions older than the configured time, in bounded
//! batches, then the folders of the versions folder they leave empty (the destination's own
//! `rmdir`, which never removes anything but an empty folder).
//!
//! Renames are not versions (nothing is lost). The versions folder is excluded from the
//! source (a source file by that name is never mirrored into it) and from listings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::connection::{Connection, RemoteEntry, SourceFile, Verification};
use crate::error::{ConnError, ErrorKind};
use crate::queue::{now_ms, Queue, StateError};
use crate::relpath::RelPath;

/// The folder at the destination root that holds the versions.
pub const VERSIONS_DIR: &str = ".skynet-versions";

/// The name of the version of `path` kept at `kept_at` (ms since the epoch); `n` > 0 tells
/// apart versions of one path kept within the same second.
pub fn version_name(path: &RelPath, kept_at: u64, n: u32) -> Option<RelPath> {
    let stamp = chrono::DateTime::from_timestamp_millis(kept_at.min(i64::MAX as u64) as i64)?
        .format("%Y%m%d-%H%M%S");
    let mut name = format!("{VERSIONS_DIR}/").into_bytes();
    name.extend_from_slice(path.as_bytes());
    name.extend_from_slice(format!("~{stamp}").as_bytes());
    if n > 0 {
        name.extend_from_slice(format!("-{n}").as_bytes());
    }
    RelPath::from_bytes(&name).ok()
}

/// Whether `path` lies in the versions folder.
pub fn is_version_path(path: &[u8]) -> bool {
    path == VERSIONS_DIR.as_bytes()
        || path
            .strip_prefix(VERSIONS_DIR.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'/'))
}

/// A destination that keeps what it would delete or overwrite (see the module docs).
pub struct Versioned<C> {
    inner: C,
    queue: Arc<Queue>,
}

impl<C: Connection> Versioned<C> {
    pub fn new(inner: C, queue: Arc<Queue>) -> Self {
        Versioned { inner, queue }
    }

    /// Moves whatever stands at `path` into the versions folder. Nothing there is success.
    async fn keep(&self, path: &RelPath) -> Result<(), ConnError> {
        let kept_at = now_ms();
        let version = self
            .queue
            .version_reserve(path, kept_at, |n| version_name(path, kept_at, n))
            .map_err(state)?;
        match self.inner.rename(path, &version).await {
            Ok(()) => {
                self.queue.version_confirm(&version).map_err(state)?;
                tracing::info!(path = %path, version = %version, "kept the destination's copy as a version");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::RemoteMissing => {
                self.queue.version_forget(&version).map_err(state)?;
                Ok(())
            }
            // Whether the rename happened is not known: the row stays, unconfirmed.
            Err(e) => Err(e),
        }
    }

    /// Keeps what a write at `path` would destroy: whatever stands at `path`, and a *file*
    /// standing where one of its parent folders goes (a destination clears it to make the
    /// folder; without complete-sync nothing else would keep it). The ledger says which
    /// parents may be files, sparing a call per parent per send; the destination confirms it,
    /// since the ledger may be stale (a folder there now holds live files, which must stay:
    /// found by the simulation, seed 2144, where a stale row moved a live folder aside).
    async fn keep_in_the_way(&self, path: &RelPath) -> Result<(), ConnError> {
        for above in path.ancestors() {
            if self.queue.ledger_entry(&above).map_err(state)?.is_some()
                && self.inner.stat(&above).await?.is_some()
            {
                self.keep(&above).await?;
            }
        }
        self.keep(path).await
    }

    /// Removes up to `limit` versions kept longer than `keep`, then the folders they leave
    /// empty in the versions folder. Returns how many went. A version already gone counts.
    pub async fn prune(&self, keep: Duration, limit: usize) -> Result<u64, ConnError> {
        let before = now_ms().saturating_sub(keep.as_millis() as u64);
        let expired = self.queue.versions_expired(before, limit).map_err(state)?;
        let mut removed = 0;
        for row in &expired {
            self.inner.delete(&row.version).await?;
            self.queue.version_forget(&row.version).map_err(state)?;
            removed += 1;
            let mut dir = row.version.parent();
            while let Some(d) = dir {
                if !is_version_path(d.as_bytes()) || !self.inner.remove_empty_dir(&d).await? {
                    break;
                }
                dir = d.parent();
            }
        }
        if removed > 0 {
            tracing::info!(removed, "pruned expired versions");
        }
        Ok(removed)
    }
}

fn state(e: StateError) -> ConnError {
    ConnError::transient(format!("recording a version: {e}"))
}

#[async_trait]
impl<C: Connection> Connection for Versioned<C> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.inner.connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.keep_in_the_way(to).await?;
        self.inner.send(file, to).await
    }
    fn send_batch_size(&self) -> usize {
        self.inner.send_batch_size()
    }
    /// Keeps each target first; an item whose old copy could not be moved aside is not sent.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut kept: Vec<Option<ConnError>> = Vec::with_capacity(items.len());
        for (_, to) in items {
            kept.push(self.keep_in_the_way(to).await.err());
        }
        let ready: Vec<(SourceFile, RelPath)> = items
            .iter()
            .zip(&kept)
            .filter(|(_, k)| k.is_none())
            .map(|(item, _)| item.clone())
            .collect();
        let mut sent = self.inner.send_batch(&ready).await.into_iter();
        kept.into_iter()
            .map(|k| match k {
                Some(e) => Err(e),
                None => sent
                    .next()
                    .unwrap_or_else(|| Err(ConnError::transient("no result from send_batch"))),
            })
            .collect()
    }
    /// The deletion is the move aside: the destination never removes the file itself.
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.keep(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        if from != to {
            self.keep_in_the_way(to).await?;
        }
        self.inner.rename(from, to).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.inner.remove_empty_dir(dir).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        self.inner.flush().await
    }
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        self.inner.cleanup(near).await
    }
    async fn sweep_temps(
        &self,
        queued: &std::collections::HashSet<RelPath>,
    ) -> Result<u64, ConnError> {
        self.inner.sweep_temps(queued).await
    }
    fn stranded_temps(&self) -> bool {
        self.inner.stranded_temps()
    }
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        self.inner.stat(path).await
    }
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        self.inner.read(path).await
    }
    /// The mirror, without the versions folder.
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        let mut all = self.inner.list().await?;
        all.retain(|e| !is_version_path(e.path.as_bytes()));
        Ok(all)
    }
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        self.inner.verify(file, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_keep_the_path_and_carry_the_time() {
        let p = RelPath::from_bytes(b"path/to/file").expect("valid");
        // 2026-12-02 01:30:00 UTC.
        let at = 1_796_175_000_000;
        let name = version_name(&p, at, 0).expect("name");
        assert_eq!(
            name.as_bytes(),
            b".skynet-versions/path/to/file~20261202-013000"
        );
        let second = version_name(&p, at, 2).expect("name");
        assert!(second.as_bytes().ends_with(b"~20261202-013000-2"));
        assert!(is_version_path(name.as_bytes()));
        assert!(is_version_path(b".skynet-versions"));
        assert!(!is_version_path(b".skynet-versions-not"));
        assert!(!is_version_path(b"a/.skynet-versions/x"));
    }
}
