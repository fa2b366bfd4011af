//! The `Connection` trait: what a destination must do, and the contract every implementation
//! keeps (checked by the exported conformance suite, `skynet_core::conformance`).
//!
//! # Contract
//! - **Replace on send.** `send` makes `to` hold exactly the bytes of the local file, replacing
//!   whatever was there (a file, or a directory in the way). Parent directories are created.
//!   The new content becomes visible atomically: write to a temporary name beside the target
//!   (see [`temp_name`]) and rename it into place, or use an API that is atomic (S3 PUT).
//! - **Idempotence.** Every operation can be replayed after a crash: sending again overwrites,
//!   deleting a missing path succeeds, renaming onto an existing target replaces it.
//! - **Delete** removes a file, or a whole directory tree. A missing path is success.
//! - **Empty directories.** [`Connection::remove_empty_dir`] removes a directory only while it
//!   is empty (the server's own rmdir, which refuses a directory holding anything; never a
//!   listing followed by a recursive removal), never a file or a link standing there. A
//!   missing path is success. The engine decides which directories to try (complete-sync:
//!   those the source no longer has, once their files are gone); the root is never one.
//! - **Rename** moves a file or a whole directory, creating the target's parents and replacing
//!   the target. When `from` does not exist it returns [`ErrorKind::RemoteMissing`] and the
//!   handler falls back to sending the local target.
//! - **Confinement.** Nothing is ever read or written outside the destination root;
//!   [`RelPath`] cannot name such a place, and a backend that can see links in the destination
//!   never follows one below the root (a directory swapped for a link must not redirect a
//!   send, delete or rename; the local folder resolves every path from the root's handle).
//! - **Modes.** A backend that keeps file modes applies the permission bits only
//!   (`mode & 0o777`): setuid, setgid and sticky are never copied.
//! - **Errors** are classified ([`ErrorKind`]); messages are one line and carry no secrets.
//! - **Durability.** An operation that returned `Ok` is acknowledged after the next successful
//!   [`Connection::flush`]; a backend that is durable per operation keeps the default no-op.
//!
//! Backends written with blocking code implement [`BlockingConnection`] and wrap it in
//! [`Blocking`], which runs each call on tokio's blocking pool.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ConnError;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::relpath::RelPath;

mod blocking;
mod source_file;
#[cfg(test)]
mod tests;

use blocking::{lost_connection, write_all};
pub use blocking::{Blocking, BlockingConnection};
pub use source_file::{open_regular, FileIdentity, SourceError, SourceFile};

/// Prefix of temporary files written beside their target. The watcher and the scan ignore
/// names with this prefix, and the conformance suite checks that none is left behind.
pub const TEMP_PREFIX: &str = ".skynet-tmp.";

/// A fresh temporary file name (not a path) for a file being written beside its target.
/// Independent of the target's name, so it stays short even for 255-byte names.
pub fn temp_name() -> String {
    format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())
}

/// True for names made by [`temp_name`].
pub fn is_temp_name(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// What [`Connection::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The size and a content hash match; `algorithm` names the hash (for logs).
    Content { algorithm: &'static str },
    /// The size matches; this destination (as configured) offers no content hash.
    SizeOnly,
    /// The destination does not hold these bytes: why, in one line.
    Mismatch(String),
}

impl Verification {
    /// True when the destination holds the bytes, as far as it can tell.
    pub fn holds(&self) -> bool {
        !matches!(self, Verification::Mismatch(_))
    }
}

/// The default [`Connection::verify`]: compares sizes through `stat`.
pub fn verify_size(file: &SourceFile, path: &RelPath, remote: Option<u64>) -> Verification {
    match remote {
        Some(size) if size == file.size => Verification::SizeOnly,
        Some(size) => Verification::Mismatch(format!(
            "{path}: destination holds {size} bytes, local file has {}",
            file.size
        )),
        None => Verification::Mismatch(format!("{path}: not at the destination")),
    }
}

/// A file held by the destination, as listed by [`Connection::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    pub path: RelPath,
    pub size: u64,
}

/// A destination. See the module documentation for the contract.
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// Where this connection points, for logs and `status` (never includes secrets).
    fn describe(&self) -> String;

    /// Establishes (or re-establishes) the link and checks that the destination is usable.
    /// Called before the first action and after every [`ErrorKind::ConnectionLost`].
    async fn connect(&self) -> Result<(), ConnError>;

    /// Makes `to` hold the bytes of `file`. Returns the number of bytes transferred (less than
    /// the file's size when an interrupted upload was resumed).
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError>;

    /// How many sends the handler may hand to one [`Connection::send_batch`] call. The
    /// default, 1, keeps one call per send; a backend whose sends are cheap next to the cost of
    /// dispatching them (the local folder) raises it.
    fn send_batch_size(&self) -> usize {
        1
    }

    /// Performs several independent sends (unrelated paths) in order, one result per item. The
    /// same contract as [`Connection::send`] for each item. The default calls `send` for each
    /// and, after a [`ErrorKind::ConnectionLost`], fails the rest with the same error without
    /// trying them.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut out = Vec::with_capacity(items.len());
        for (file, to) in items {
            if let Some(lost) = lost_connection(&out) {
                out.push(Err(lost));
                continue;
            }
            out.push(self.send(file, to).await);
        }
        out
    }

    /// Removes a file or a whole directory; a missing path is success.
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError>;

    /// Renames a file or directory, replacing `to`.
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError>;

    /// Removes the directory `dir` if it is empty, and nothing else. Returns `true` when no
    /// directory stands at `dir` any more (removed now, or missing), `false` when something
    /// is kept there: a directory that holds anything, a file, a link, or a directory the
    /// server refuses to remove (a mount point, no permission). `Err` only for failures
    /// worth trying again (a lost connection above all).
    ///
    /// Why a method of its own rather than [`Connection::delete`]: `delete` removes whole
    /// trees, and the engine calls this one on its own judgement (complete-sync removing the
    /// directories the source no longer has, see `crate::empty_dirs`), where the worst a
    /// mistake may cost is an empty directory. A backend must make that true by asking the
    /// server to remove only an empty directory (`rmdir`), never by listing it and deleting
    /// what it saw: a file written meanwhile would go with it.
    ///
    /// The default keeps everything: a destination with no directories of its own (a command,
    /// an object store without folder markers) has none to remove.
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let _ = dir;
        Ok(false)
    }

    /// Makes every operation that returned `Ok` so far durable. The handler calls it before
    /// acknowledging a batch, so a backend can pay for durability once per batch.
    async fn flush(&self) -> Result<(), ConnError> {
        Ok(())
    }

    /// Called once after a restart with the targets of the actions that were in flight when
    /// the previous run died: remove temporary files they may have left beside those paths.
    /// A backend that resumes interrupted uploads may keep the temporaries it will resume.
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let _ = near;
        Ok(())
    }

    /// Removes every temporary file (and directory moved aside, see [`temp_name`]) under the
    /// whole destination root, except the temporaries of resumable uploads whose target is in
    /// `queued` (a pending action will resume them). Returns how many were removed.
    ///
    /// Why it exists: [`Connection::cleanup`] only looks beside the paths that were in flight,
    /// but a temp left by a killed run may since have been carried elsewhere by a directory
    /// rename, or stranded by a run that itself died before cleaning up. Only a walk finds
    /// those. A walk costs one listing per remote directory, so the handler calls it only
    /// after a run that did not end cleanly (see `queue::meta::SWEEP_TEMPS`), before any
    /// send of its own starts; the default (a backend that writes no temporaries) does nothing.
    async fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let _ = queued;
        Ok(0)
    }

    /// True when this connection knows of temporaries it left behind that nothing is certain
    /// to remove (a send cut off by a lost connection, for instance). The engine then keeps a
    /// sweep due for the next start even after a clean stop.
    fn stranded_temps(&self) -> bool {
        false
    }

    /// The size of the file at `path`, or `None` when there is none (directories are `None`).
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError>;

    /// The whole content of the file at `path`: for verification and tests, not transfers.
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError>;

    /// Copies the file at `path` into the local file `out`, empty and at its start (`skynet
    /// versions restore`), returning its size. Backends stream it; the default holds it in
    /// memory ([`read`]).
    ///
    /// [`read`]: Connection::read
    async fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let bytes = self.read(path).await?;
        write_all(out, &bytes)
    }

    /// Every file under the destination root, recursively, temporary files included.
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError>;

    /// Checks that the file at `path` holds exactly the bytes of the local `file`, before the
    /// local copy is removed (`remove_source`). Compare the size, and a content hash where the
    /// backend can get one without a full download (or with one, when configured to). The
    /// default compares sizes only. Never modifies anything.
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        Ok(verify_size(file, path, self.stat(path).await?))
    }
}

#[async_trait]
impl<T: Connection + ?Sized> Connection for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        (**self).connect().await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        (**self).send(file, to).await
    }
    fn send_batch_size(&self) -> usize {
        (**self).send_batch_size()
    }
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        (**self).send_batch(items).await
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        (**self).delete(path).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        (**self).rename(from, to).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        (**self).remove_empty_dir(dir).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        (**self).flush().await
    }
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        (**self).cleanup(near).await
    }
    async fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        (**self).sweep_temps(queued).await
    }
    fn stranded_temps(&self) -> bool {
        (**self).stranded_temps()
    }
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        (**self).stat(path).await
    }
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        (**self).read(path).await
    }
    async fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        (**self).download(path, out).await
    }
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        (**self).list().await
    }
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        (**self).verify(file, path).await
    }
}
