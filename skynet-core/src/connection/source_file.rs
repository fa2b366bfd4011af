//! The local file a send reads: opened as it was stat'ed (no link followed, no FIFO or
//! device read, not another file swapped in), and checked unchanged after the send.

use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::ConnError;

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
    /// A symbolic link: never followed, its target never read (invariant 10 of `docs/contract.md`).
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

    /// [`SourceFile::lstat`], with the error classified for a [`Connection`](super::Connection): a symlink or
    /// a special file is [`ErrorKind::Permanent`](crate::error::ErrorKind::Permanent); a missing file or a directory is an error
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

    /// [`SourceFile::open_checked`], with the error classified for a [`Connection`](super::Connection).
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
