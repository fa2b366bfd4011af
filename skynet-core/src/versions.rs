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
//! The version is filed in the state database before the rename (so that no later move takes
//! its name and replaces it) and confirmed after it. A send that fails after its target was
//! moved aside puts the version back.
//!
//! Pruning ([`Versioned::prune`]) removes versions older than the configured time, in bounded
//! batches, then the folders of the versions folder they leave empty (the destination's own
//! `rmdir`, which never removes anything but an empty folder).
//!
//! Renames are not versions (nothing is lost). The versions folder is excluded from the
//! source (a source file by that name is never mirrored into it) and from listings.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::now_ms;
use crate::connection::{Connection, RemoteEntry, SourceFile, Verification};
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;
use crate::state::{Queue, StateError};

/// The folder at the destination root that holds the versions, unless configured.
pub const VERSIONS_DIR: &str = ".skynet-versions";

/// The longest name a component may have on the filesystems and servers skynet writes to.
const NAME_MAX: usize = 255;

/// Where the versions are kept: a folder at the destination, relative to its root
/// (`.skynet-versions` unless configured with `--versions-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionsDir(RelPath);

impl Default for VersionsDir {
    fn default() -> Self {
        VersionsDir(
            RelPath::from_bytes(VERSIONS_DIR.as_bytes())
                .unwrap_or_else(|_| unreachable!("{VERSIONS_DIR} is a valid relative path")),
        )
    }
}

impl VersionsDir {
    /// A folder below the destination root: relative, without `..`, not the root itself.
    pub fn parse(text: &str) -> Result<VersionsDir, String> {
        let trimmed = text.trim_matches('/');
        if text.starts_with('/') || trimmed.is_empty() {
            return Err(format!(
                "versions folder {text:?}: give a folder relative to the destination root, e.g. .skynet-versions"
            ));
        }
        RelPath::from_bytes(trimmed.as_bytes())
            .map(VersionsDir)
            .map_err(|e| format!("versions folder {text:?}: {e}"))
    }

    pub fn path(&self) -> &RelPath {
        &self.0
    }

    /// The exclude glob that keeps the source's own folder of this name out of the mirror.
    pub fn exclude_glob(&self) -> String {
        format!("{}/**", self.0.display())
    }

    /// Whether `path` lies in the versions folder (or is it).
    pub fn holds(&self, path: &[u8]) -> bool {
        let dir = self.0.as_bytes();
        path == dir
            || path
                .strip_prefix(dir)
                .is_some_and(|rest| rest.first() == Some(&b'/'))
    }

    /// The name of the version of `path` kept at `kept_at` (ms since the epoch); `n` > 0
    /// tells apart versions of one path kept within the same second. A last component too
    /// long to carry the time is cut and given a short hash of the whole name, so that the
    /// version can be made at all (a name of 250 bytes plus `~YYYYmmdd-HHMMSS` exceeds 255).
    pub fn name(&self, path: &RelPath, kept_at: u64, n: u32) -> Option<RelPath> {
        use sha2::Digest;
        let stamp = chrono::DateTime::from_timestamp_millis(kept_at.min(i64::MAX as u64) as i64)?
            .format("%Y%m%d-%H%M%S");
        let mut suffix = format!("~{stamp}");
        if n > 0 {
            suffix.push_str(&format!("-{n}"));
        }
        let leaf = path.file_name();
        let mut last = leaf.to_vec();
        if leaf.len() + suffix.len() > NAME_MAX {
            let hash = sha2::Sha256::digest(leaf);
            let tag = format!(
                ".{:02x}{:02x}{:02x}{:02x}",
                hash[0], hash[1], hash[2], hash[3]
            );
            let mut cut = NAME_MAX - suffix.len() - tag.len();
            // At a character boundary, where the name is UTF-8 (S3 keys must be).
            let utf8 = std::str::from_utf8(leaf).is_ok();
            while utf8 && cut > 0 && std::str::from_utf8(&leaf[..cut]).is_err() {
                cut -= 1;
            }
            last = [&leaf[..cut], tag.as_bytes()].concat();
        }
        let mut name = self.0.as_bytes().to_vec();
        name.push(b'/');
        if let Some(parent) = path.parent() {
            name.extend_from_slice(parent.as_bytes());
            name.push(b'/');
        }
        name.extend_from_slice(&last);
        name.extend_from_slice(suffix.as_bytes());
        RelPath::from_bytes(&name).ok()
    }
}

/// A destination that keeps what it would delete or overwrite (see the module docs).
pub struct Versioned<C> {
    inner: C,
    queue: Arc<Queue>,
    dir: VersionsDir,
    /// Paths known to be folders at the destination (a send put a file under them): no
    /// file can stand there in the way of a send, so they are not looked at again. Forgotten
    /// at and under any path this wrapper moves or deletes.
    known_dirs: Mutex<HashSet<RelPath>>,
    /// Moves aside take it shared; pruning takes it alone while it removes emptied folders
    /// of the versions folder, so that it never removes one a move aside is writing into (a
    /// rename into a vanished folder reads, over SFTP, as "nothing to keep").
    folders: tokio::sync::RwLock<()>,
}

impl<C: Connection> Versioned<C> {
    /// Keeps the versions in `dir` at the destination.
    pub fn new(inner: C, queue: Arc<Queue>, dir: VersionsDir) -> Self {
        Versioned {
            inner,
            queue,
            dir,
            known_dirs: Mutex::default(),
            folders: tokio::sync::RwLock::new(()),
        }
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, HashSet<RelPath>> {
        self.known_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what is known of `path` and below: it is being moved or deleted.
    fn forget_dirs(&self, path: &RelPath) {
        self.dirs().retain(|d| !d.is_within(path));
    }

    /// After a write at `path`, its parents are folders.
    fn learn_dirs(&self, path: &RelPath) {
        self.dirs().extend(path.ancestors());
    }

    /// Moves whatever stands at `path` into the versions folder: filed first, confirmed once
    /// moved, forgotten when nothing was there; any other failure leaves the row (the move
    /// may have happened). Returns where it went; `None`: nothing there.
    async fn keep(&self, path: &RelPath) -> Result<Option<RelPath>, ConnError> {
        let kept_at = now_ms();
        let version = self
            .queue
            .version_reserve(path, kept_at, |n| self.dir.name(path, kept_at, n))
            .map_err(state)?;
        self.forget_dirs(path);
        let moved = {
            let _shared = self.folders.read().await;
            self.inner.rename(path, &version).await
        };
        match moved {
            Ok(()) => {
                self.queue.version_confirm(&version).map_err(state)?;
                tracing::info!(path = %path, version = %version, "kept the destination's copy as a version");
                Ok(Some(version))
            }
            Err(e) if e.kind == ErrorKind::RemoteMissing => {
                self.queue.version_forget(&version).map_err(state)?;
                Ok(None)
            }
            // Any other failure may have come after the move (a reply lost): the row stays,
            // unconfirmed, holding the name (found by the simulation, seed 4310, where a
            // forgotten row let the next move take the name of a version that existed).
            Err(e) => Err(e),
        }
    }

    /// Keeps what a write at `path` would destroy: whatever stands at `path`, and a *file*
    /// standing where one of its parent folders goes (a destination clears it to make the
    /// folder). The destination is asked about each parent not yet known to be a folder; the
    /// ledger is not enough (it may be stale, or not know a file that was there before
    /// skynet: found by the simulation, seed 2144, and by review).
    async fn keep_in_the_way(&self, path: &RelPath) -> Result<Option<RelPath>, ConnError> {
        for above in path.ancestors() {
            if self.dirs().contains(&above) {
                continue;
            }
            if self.inner.stat(&above).await?.is_some() {
                self.keep(&above).await?;
            }
        }
        self.keep(path).await
    }

    /// A send after its target was moved aside failed: the version goes back, so that the
    /// live copy is not missing (and later pruned) because the new one could not be written.
    /// Only while nothing stands at the target; a failure here leaves the version kept.
    async fn put_back(&self, version: &RelPath, to: &RelPath) {
        if !matches!(self.inner.stat(to).await, Ok(None)) {
            return;
        }
        let back = {
            let _shared = self.folders.read().await;
            self.inner.rename(version, to).await
        };
        match back {
            Ok(()) => {
                if let Err(e) = self.queue.version_forget(version) {
                    tracing::warn!(version = %version, error = %e, "cannot forget a version put back");
                }
                tracing::info!(path = %to, "the send failed; the kept copy is back in place");
            }
            Err(e) => {
                tracing::warn!(path = %to, version = %version, error = %e.message, "the send failed and the kept copy could not be put back; it stays a version")
            }
        }
    }

    /// Removes up to `limit` versions kept longer than `keep`, then the folders they leave
    /// empty in the versions folder. Returns how many went. A version already gone counts.
    pub async fn prune(&self, keep: Duration, limit: usize) -> Result<u64, ConnError> {
        let before = now_ms().saturating_sub(keep.as_millis() as u64);
        let expired = self.queue.versions_expired(before, limit).map_err(state)?;
        let mut removed = 0;
        for row in &expired {
            // Never anything outside the versions folder, whatever the row says.
            if self.dir.holds(row.version.as_bytes()) && row.version != *self.dir.path() {
                self.inner.delete(&row.version).await?;
            }
            self.queue.version_forget(&row.version).map_err(state)?;
            removed += 1;
            let _alone = self.folders.write().await;
            let mut dir = row.version.parent();
            while let Some(d) = dir {
                if !self.dir.holds(d.as_bytes()) || !self.inner.remove_empty_dir(&d).await? {
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
        let kept = self.keep_in_the_way(to).await?;
        let sent = self.inner.send(file, to).await;
        match (&sent, kept) {
            (Ok(_), _) => self.learn_dirs(to),
            (Err(_), Some(version)) => self.put_back(&version, to).await,
            (Err(_), None) => {}
        }
        sent
    }
    fn send_batch_size(&self) -> usize {
        self.inner.send_batch_size()
    }
    /// Keeps each target first; an item whose old copy could not be moved aside is not sent.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut kept: Vec<Result<Option<RelPath>, ConnError>> = Vec::with_capacity(items.len());
        for (_, to) in items {
            kept.push(self.keep_in_the_way(to).await);
        }
        let ready: Vec<(SourceFile, RelPath)> = items
            .iter()
            .zip(&kept)
            .filter(|(_, k)| k.is_ok())
            .map(|(item, _)| item.clone())
            .collect();
        let mut sent = self.inner.send_batch(&ready).await.into_iter();
        let mut out = Vec::with_capacity(items.len());
        for ((_, to), k) in items.iter().zip(kept) {
            let result = match k {
                Err(e) => Err(e),
                Ok(version) => {
                    let result = sent
                        .next()
                        .unwrap_or_else(|| Err(ConnError::transient("no result from send_batch")));
                    match (&result, version) {
                        (Ok(_), _) => self.learn_dirs(to),
                        (Err(_), Some(version)) => self.put_back(&version, to).await,
                        (Err(_), None) => {}
                    }
                    result
                }
            };
            out.push(result);
        }
        out
    }
    /// The deletion is the move aside: the destination never removes the file itself.
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.keep(path).await.map(|_| ())
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        if from != to {
            self.keep_in_the_way(to).await?;
        }
        self.forget_dirs(from);
        self.forget_dirs(to);
        let moved = self.inner.rename(from, to).await;
        if moved.is_ok() {
            self.learn_dirs(to);
        }
        moved
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
        all.retain(|e| !self.dir.holds(e.path.as_bytes()));
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
        let dir = VersionsDir::default();
        let name = dir.name(&p, at, 0).expect("name");
        assert_eq!(
            name.as_bytes(),
            b".skynet-versions/path/to/file~20261202-013000"
        );
        let second = dir.name(&p, at, 2).expect("name");
        assert!(second.as_bytes().ends_with(b"~20261202-013000-2"));
        assert!(dir.holds(name.as_bytes()));
        assert!(dir.holds(b".skynet-versions"));
        assert!(!dir.holds(b".skynet-versions-not"));
        assert!(!dir.holds(b"a/.skynet-versions/x"));
        let other = VersionsDir::parse("old/kept/").expect("valid");
        assert_eq!(
            other.name(&p, at, 0).expect("name").as_bytes(),
            b"old/kept/path/to/file~20261202-013000"
        );
        assert_eq!(other.exclude_glob(), "old/kept/**");
        for bad in ["/abs", "", "/", "a/../b"] {
            assert!(VersionsDir::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A name too long to carry the time is cut, at a character boundary, and tagged with a
    /// hash of the whole name: the version can be made, and two long names stay apart.
    #[test]
    fn a_long_name_is_cut_to_fit() {
        let long = format!("dir/{}", "é".repeat(124));
        let p = RelPath::from_bytes(long.as_bytes()).expect("valid");
        let dir = VersionsDir::default();
        let v = dir.name(&p, 1_796_175_000_000, 3).expect("name");
        let leaf = v.file_name();
        assert!(leaf.len() <= NAME_MAX, "{} bytes", leaf.len());
        assert!(std::str::from_utf8(leaf).is_ok());
        assert!(leaf.ends_with(b"~20261202-013000-3"));
        assert!(v.as_bytes().starts_with(b".skynet-versions/dir/"));
        let other = format!("dir/{}x", "é".repeat(124));
        let q = RelPath::from_bytes(other.as_bytes()).expect("valid");
        assert_ne!(dir.name(&q, 1_796_175_000_000, 3), Some(v));
    }
}
