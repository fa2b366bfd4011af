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
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;

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

/// The local file a send reads, with what `lstat` said of it when the send was prepared.
///
/// Why the identity (device, inode): between the stat and the open the path may be swapped
/// for a symlink (to a private key, say), a FIFO (whose open would block a worker forever)
/// or another file. [`SourceFile::open`] reads only the very file that was stat'ed.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Absolute local path.
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
    /// Unix permission bits.
    pub mode: u32,
    /// Which file this is and when its inode last changed, as seen by the same `stat`: the
    /// hand-off removes a local file only while it is still this one (see `crate::handoff`).
    pub identity: FileIdentity,
}

/// A file's device, inode and ctime. A writer can set mtime back (`touch -d`), never ctime:
/// any write, truncation, rename onto it or chmod moves ctime forward, so equal identities
/// mean the same inode, unchanged since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    /// Nanoseconds since the epoch.
    pub ctime_ns: i64,
}

impl FileIdentity {
    pub fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

/// Why a local file cannot be read for a send. Converts into a classified [`ConnError`].
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing there any more, or a directory (not a file to send).
    #[error("{0}: gone")]
    Missing(PathBuf),
    /// A symbolic link: never followed, its target never read (design invariant 10).
    #[error("{0}: is a symbolic link; not followed (skipped)")]
    Symlink(PathBuf),
    /// A FIFO, device or socket: never opened for reading.
    #[error("{0}: not a regular file (FIFO, device or socket); skipped")]
    Special(PathBuf),
    /// The path no longer names the file that was stat'ed (swapped for a link, a FIFO or
    /// another file): it is not read now; the send is tried again.
    #[error("{0}: replaced since it was queued; will send again")]
    Replaced(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<SourceError> for ConnError {
    fn from(e: SourceError) -> Self {
        // No kind says "the local file is gone": the handler decides that by looking at the
        // local path (see `ErrorKind::RemoteMissing`). Links and special files are never
        // sent: retrying will not change that.
        match &e {
            SourceError::Symlink(_) | SourceError::Special(_) => {
                ConnError::permanent(e.to_string())
            }
            SourceError::Missing(_) | SourceError::Replaced(_) => {
                ConnError::transient(e.to_string())
            }
            SourceError::Io { path, source } => ConnError::from_io(path.display(), source),
        }
    }
}

/// Opens `path` for reading without following a final symlink and without blocking (a FIFO
/// with no writer would block the open forever), then checks with `fstat` that what was
/// opened is a regular file. The one way skynet opens a source file.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), SourceError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32,
        )
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                SourceError::Symlink(path.to_path_buf())
            }
            _ if e.kind() == std::io::ErrorKind::NotFound => {
                SourceError::Missing(path.to_path_buf())
            }
            _ => SourceError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    let meta = file.metadata().map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(SourceError::Missing(path.to_path_buf()));
    }
    if !meta.is_file() {
        return Err(SourceError::Special(path.to_path_buf()));
    }
    Ok((file, meta))
}

impl SourceFile {
    /// `lstat`s `path` now: the link itself, never its target. A missing path or a directory
    /// is [`SourceError::Missing`]; a symlink and a special file are refused by name.
    pub fn lstat(path: &Path) -> Result<Self, SourceError> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SourceError::Missing(path.to_path_buf())
            } else {
                SourceError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(SourceError::Symlink(path.to_path_buf()));
        }
        if kind.is_dir() {
            return Err(SourceError::Missing(path.to_path_buf()));
        }
        if !kind.is_file() {
            return Err(SourceError::Special(path.to_path_buf()));
        }
        Ok(Self::from_metadata(path.to_path_buf(), &meta))
    }

    /// [`SourceFile::lstat`], with the error classified for a [`Connection`]: a symlink or
    /// a special file is [`ErrorKind::Permanent`]; a missing file or a directory is an error
    /// the handler settles by looking at the local path itself.
    pub fn stat(path: &Path) -> Result<Self, ConnError> {
        Ok(Self::lstat(path)?)
    }

    pub fn from_metadata(path: PathBuf, meta: &Metadata) -> Self {
        use std::os::unix::fs::PermissionsExt;
        SourceFile {
            path,
            size: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            mode: meta.permissions().mode() & 0o7777,
            identity: FileIdentity::of(meta),
        }
    }

    /// Opens the file for reading: without following links, without blocking, and only when
    /// it is still the regular file that was stat'ed (same device and inode). Anything else
    /// is [`SourceError::Replaced`]: nothing is read, and the send is tried again later.
    pub fn open_checked(&self) -> Result<File, SourceError> {
        use std::os::unix::fs::MetadataExt;
        let replaced = || SourceError::Replaced(self.path.clone());
        let (file, meta) = match open_regular(&self.path) {
            Ok(opened) => opened,
            Err(SourceError::Symlink(_) | SourceError::Special(_)) => return Err(replaced()),
            Err(e) => return Err(e),
        };
        if (meta.dev(), meta.ino()) != (self.identity.dev, self.identity.ino) {
            return Err(replaced());
        }
        Ok(file)
    }

    /// [`SourceFile::open_checked`], with the error classified for a [`Connection`].
    pub fn open(&self) -> Result<File, ConnError> {
        Ok(self.open_checked()?)
    }

    /// SHA-256 of the file's content, read through [`SourceFile::open`].
    pub fn sha256(&self) -> Result<crate::digest::Sha256Digest, ConnError> {
        crate::digest::sha256_reader(self.open()?)
            .map_err(|e| ConnError::from_io(self.path.display(), &e))
    }

    /// Fails with a transient error when the file changed (size, mtime, or which file the
    /// path names) since it was stat'ed: call it after reading and before making the copy
    /// visible, so that a file rewritten during the upload never shows up half old, half new.
    pub fn check_unchanged(&self) -> Result<(), ConnError> {
        let now = Self::stat(&self.path)?;
        if now.size != self.size
            || now.mtime != self.mtime
            || (now.identity.dev, now.identity.ino) != (self.identity.dev, self.identity.ino)
        {
            return Err(ConnError::transient(format!(
                "{}: changed while being sent; will send again",
                self.path.display()
            )));
        }
        Ok(())
    }
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

/// The same contract as [`Connection`], for backends written with blocking I/O.
pub trait BlockingConnection: Send + Sync + 'static {
    fn describe(&self) -> String;
    fn connect(&self) -> Result<(), ConnError>;
    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError>;
    /// See [`Connection::send_batch_size`].
    fn send_batch_size(&self) -> usize {
        1
    }
    /// See [`Connection::send_batch`]; [`Blocking`] runs a whole batch in one blocking task.
    fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let mut out = Vec::with_capacity(items.len());
        for (file, to) in items {
            if let Some(lost) = lost_connection(&out) {
                out.push(Err(lost));
                continue;
            }
            out.push(self.send(file, to));
        }
        out
    }
    fn delete(&self, path: &RelPath) -> Result<(), ConnError>;
    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError>;
    /// See [`Connection::remove_empty_dir`].
    fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let _ = dir;
        Ok(false)
    }
    fn flush(&self) -> Result<(), ConnError> {
        Ok(())
    }
    fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let _ = near;
        Ok(())
    }
    /// See [`Connection::sweep_temps`].
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let _ = queued;
        Ok(0)
    }
    /// See [`Connection::stranded_temps`].
    fn stranded_temps(&self) -> bool {
        false
    }
    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError>;
    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError>;
    /// See [`Connection::download`].
    fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let bytes = self.read(path)?;
        write_all(out, &bytes)
    }
    fn list(&self) -> Result<Vec<RemoteEntry>, ConnError>;
    /// See [`Connection::verify`].
    fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        Ok(verify_size(file, path, self.stat(path)?))
    }
}

/// Writes `bytes` into the local copy (the default [`Connection::download`]).
fn write_all(out: &mut File, bytes: &[u8]) -> Result<u64, ConnError> {
    use std::io::Write;
    out.write_all(bytes)
        .map_err(|e| ConnError::from_io("the local copy", &e))?;
    Ok(bytes.len() as u64)
}

/// The error of the last result when it was a lost connection: the rest of a batch is not
/// worth trying.
fn lost_connection(done: &[Result<u64, ConnError>]) -> Option<ConnError> {
    match done.last() {
        Some(Err(e)) if e.kind == ErrorKind::ConnectionLost => {
            Some(ConnError::new(e.kind, e.message.clone()))
        }
        _ => None,
    }
}

/// Adapts a [`BlockingConnection`] to the async [`Connection`] by running each call on
/// tokio's blocking thread pool, so blocking backends never stall the runtime's workers.
pub struct Blocking<C>(pub Arc<C>);

impl<C> Blocking<C> {
    pub fn new(inner: C) -> Self {
        Blocking(Arc::new(inner))
    }
    pub fn inner(&self) -> &C {
        &self.0
    }
}

impl<C: BlockingConnection> Blocking<C> {
    async fn run<T, F>(&self, f: F) -> Result<T, ConnError>
    where
        T: Send + 'static,
        F: FnOnce(&C) -> Result<T, ConnError> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) => Err(ConnError::new(
                ErrorKind::Transient,
                format!("{}: worker task failed: {e}", self.0.describe()),
            )),
        }
    }
}

#[async_trait]
impl<C: BlockingConnection> Connection for Blocking<C> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn connect(&self) -> Result<(), ConnError> {
        self.run(|c| c.connect()).await
    }
    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let (file, to) = (file.clone(), to.clone());
        self.run(move |c| c.send(&file, &to)).await
    }
    fn send_batch_size(&self) -> usize {
        self.0.send_batch_size()
    }
    /// The whole batch in one blocking task: one hand-off to the pool and back per batch
    /// instead of per file.
    async fn send_batch(&self, items: &[(SourceFile, RelPath)]) -> Vec<Result<u64, ConnError>> {
        let owned = items.to_vec();
        let n = items.len();
        match self.run(move |c| Ok(c.send_batch(&owned))).await {
            Ok(results) => results,
            Err(e) => (0..n)
                .map(|_| Err(ConnError::new(e.kind, e.message.clone())))
                .collect(),
        }
    }
    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let path = path.clone();
        self.run(move |c| c.delete(&path)).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |c| c.rename(&from, &to)).await
    }
    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let dir = dir.clone();
        self.run(move |c| c.remove_empty_dir(&dir)).await
    }
    async fn flush(&self) -> Result<(), ConnError> {
        self.run(|c| c.flush()).await
    }
    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let near = near.to_vec();
        self.run(move |c| c.cleanup(&near)).await
    }
    async fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let queued = queued.clone();
        self.run(move |c| c.sweep_temps(&queued)).await
    }
    fn stranded_temps(&self) -> bool {
        self.0.stranded_temps()
    }
    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        let path = path.clone();
        self.run(move |c| c.stat(&path)).await
    }
    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let path = path.clone();
        self.run(move |c| c.read(&path)).await
    }
    async fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let path = path.clone();
        let mut file = out
            .try_clone()
            .map_err(|e| ConnError::from_io("the local copy", &e))?;
        self.run(move |c| c.download(&path, &mut file)).await
    }
    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        self.run(|c| c.list()).await
    }
    async fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let (file, path) = (file.clone(), path.clone());
        self.run(move |c| c.verify(&file, &path)).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn mkfifo(path: &Path) {
        use rustix::fs::{mknodat, FileType, Mode, CWD};
        mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    }

    /// Runs `f` on its own thread: a hang (a blocking open of a FIFO) fails the test instead
    /// of stalling the suite. The bound is generous; it only guards against blocking forever.
    fn without_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("blocked on a special file")
    }

    /// The default verdict, which every backend's `verify` starts from: one line naming the
    /// path and, for another size, both sizes.
    #[test]
    fn verify_size_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        let file = SourceFile::stat(&f).unwrap();
        let path = RelPath::from_bytes(b"d/f").unwrap();
        assert_eq!(verify_size(&file, &path, Some(10)), Verification::SizeOnly);
        let short = verify_size(&file, &path, Some(5));
        crate::conformance::expect_mismatch(
            &short,
            "d/f: destination holds 5 bytes, local file has 10",
        );
        let missing = verify_size(&file, &path, None);
        crate::conformance::expect_mismatch(&missing, "d/f: not at the destination");
        assert!(!missing.holds());
    }

    #[test]
    fn open_reads_the_file_that_was_stated() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"content").unwrap();
        let file = SourceFile::stat(&f).unwrap();
        let mut got = Vec::new();
        file.open().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"content");
        file.check_unchanged().unwrap();
    }

    #[test]
    fn a_link_is_refused_at_stat_and_when_swapped_in_before_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"private key").unwrap();
        let f = dir.path().join("f");
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        assert!(matches!(
            SourceFile::lstat(&f),
            Err(SourceError::Symlink(_))
        ));
        assert_eq!(SourceFile::stat(&f).unwrap_err().kind, ErrorKind::Permanent);

        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"ordinary").unwrap();
        let file = SourceFile::stat(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        assert!(matches!(file.open_checked(), Err(SourceError::Replaced(_))));
        let err = file.open().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert!(file.sha256().is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        mkfifo(&f);
        assert!(matches!(
            SourceFile::lstat(&f),
            Err(SourceError::Special(_))
        ));

        // Stat'ed as a file, then swapped for a FIFO with no writer: the open must not wait
        // for one.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"ordinary").unwrap();
        let file = SourceFile::stat(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        mkfifo(&f);
        let opened = without_blocking(move || file.open_checked());
        assert!(
            matches!(opened, Err(SourceError::Replaced(_))),
            "{opened:?}"
        );
    }

    #[test]
    fn another_file_renamed_over_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"first").unwrap();
        let file = SourceFile::stat(&f).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"first").unwrap();
        std::fs::rename(&other, &f).unwrap();
        assert!(matches!(file.open_checked(), Err(SourceError::Replaced(_))));
        assert_eq!(
            file.check_unchanged().unwrap_err().kind,
            ErrorKind::Transient
        );
    }
}
