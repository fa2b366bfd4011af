//! The local-folder destination: the embedded default, needing no server.
//!
//! Writes go to a temporary name beside the target and are renamed into place, so a reader of
//! the destination never sees a half-written file. Durability is paid once per batch: `flush`
//! calls `syncfs` on the destination's filesystem before the handler acknowledges, instead of
//! one `fsync` per file (which would make small-file mirroring many times slower than rsync).
//!
//! Confinement: `RelPath` cannot contain `..`, and before writing under a directory this
//! backend checks that no component of the target's parents is a symbolic link, so a link
//! planted in the destination cannot redirect writes outside the root.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::connection::{
    is_temp_name, temp_name, verify_size, BlockingConnection, RemoteEntry, SourceFile, Verification,
};
use crate::digest;
use crate::error::ConnError;
use crate::relpath::RelPath;

/// A destination folder on this machine.
pub struct LocalConnection {
    root: PathBuf,
    /// Directories already known to exist as real directories (not links) under the root.
    known_dirs: Mutex<HashSet<RelPath>>,
    /// Something may have changed under the root since the last `flush` began: set after
    /// every send, delete and rename returns (never before its writes are done), cleared by
    /// `flush` before its `syncfs`, so a flush with nothing new to make durable costs nothing.
    dirty: AtomicBool,
}

impl LocalConnection {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalConnection {
            root: root.into(),
            known_dirs: Mutex::new(HashSet::new()),
            dirty: AtomicBool::new(true),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn forget_dirs(&self) {
        if let Ok(mut known) = self.known_dirs.lock() {
            known.clear();
        }
    }

    /// Creates the parents of `path` as real directories, refusing symbolic links on the way.
    fn ensure_parents(&self, path: &RelPath) -> Result<(), ConnError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if self
            .known_dirs
            .lock()
            .map(|k| k.contains(&parent))
            .unwrap_or(false)
        {
            return Ok(());
        }
        for dir in path.ancestors() {
            let abs = dir.under(&self.root);
            match fs::symlink_metadata(&abs) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ConnError::permanent(format!(
                        "{}: is a symbolic link in the destination; refusing to write through it",
                        abs.display()
                    )))
                }
                Ok(_) => {
                    // A file stands where a directory is needed: the source replaced it.
                    fs::remove_file(&abs).map_err(|e| ConnError::from_io(abs.display(), &e))?;
                    mkdir(&abs)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => mkdir(&abs)?,
                Err(e) => return Err(ConnError::from_io(abs.display(), &e)),
            }
        }
        if let Ok(mut known) = self.known_dirs.lock() {
            known.insert(parent);
        }
        Ok(())
    }

    /// Removes whatever is at `abs` (file, link or whole directory); missing is fine.
    fn remove_any(abs: &Path) -> Result<(), ConnError> {
        let result = match fs::symlink_metadata(abs) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(abs),
            Ok(_) => fs::remove_file(abs),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ConnError::from_io(abs.display(), &e)),
        }
    }

    /// Removes the temporaries under `dir`, recursively, and counts them into `removed`.
    /// Symbolic links are never followed (the entry's own type is used).
    fn sweep_dir(dir: &Path, removed: &mut u64) -> Result<(), ConnError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(remote_io(dir, &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| remote_io(dir, &e))?;
            let path = entry.path();
            if is_temp_path(&path) {
                tracing::debug!(path = %path.display(), "removing a temporary file left by a crash");
                Self::remove_any(&path)?;
                *removed += 1;
            } else if entry
                .file_type()
                .map_err(|e| remote_io(&path, &e))?
                .is_dir()
            {
                Self::sweep_dir(&path, removed)?;
            }
        }
        Ok(())
    }

    fn write_temp(&self, file: &SourceFile, temp: &Path) -> Result<u64, ConnError> {
        let mut input = file.open()?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(temp)
            .map_err(|e| remote_io(temp, &e))?;
        let copied =
            copy_known(&mut input, &mut out, file.size).map_err(|e| remote_io(temp, &e))?;
        out.set_permissions(fs::Permissions::from_mode(file.mode))
            .map_err(|e| remote_io(temp, &e))?;
        filetime::set_file_handle_times(
            &out,
            None,
            Some(filetime::FileTime::from_system_time(file.mtime)),
        )
        .map_err(|e| remote_io(temp, &e))?;
        Ok(copied)
    }
}

/// Copies `size` bytes (the size the send was dispatched with) from `input` to `out` with
/// `copy_file_range`: one system call for a small file, where `io::copy` first probes both
/// files with `fstat` and then calls it until it returns 0. A file that shrank or grew since
/// its stat is caught by `check_unchanged`. Falls back to `io::copy` where the kernel cannot
/// copy between these two files.
fn copy_known(input: &mut File, out: &mut File, size: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let mut copied = 0u64;
    while copied < size {
        let want = (size - copied).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(&*input, None, &*out, None, want) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM)
                if copied == 0 =>
            {
                return io::copy(input, out);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(copied)
}

fn mkdir(abs: &Path) -> Result<(), ConnError> {
    match fs::create_dir(abs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(remote_io(abs, &e)),
    }
}

/// An I/O error on the destination side: "not found" there means a parent vanished under us,
/// which is worth a retry, not the "source missing" a local read error would mean.
fn remote_io(path: &Path, e: &io::Error) -> ConnError {
    let err = ConnError::from_io(path.display(), e);
    if err.kind == crate::error::ErrorKind::SourceMissing {
        ConnError::transient(err.message)
    } else {
        err
    }
}

impl BlockingConnection for LocalConnection {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn connect(&self) -> Result<(), ConnError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| ConnError::setup(format!("destination {}: {e}", self.root.display())))?;
        let meta = fs::metadata(&self.root)
            .map_err(|e| ConnError::setup(format!("destination {}: {e}", self.root.display())))?;
        if !meta.is_dir() {
            return Err(ConnError::setup(format!(
                "destination {} is not a directory",
                self.root.display()
            )));
        }
        Ok(())
    }

    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        let target = to.under(&self.root);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_parents(to)?;
        let temp = parent.join(temp_name());
        let result = self.write_temp(file, &temp).and_then(|n| {
            file.check_unchanged()?;
            match fs::rename(&temp, &target) {
                Ok(()) => Ok(n),
                // A directory stands where the file goes: the source replaced a dir by a file.
                Err(e) if target.is_dir() => {
                    tracing::debug!(path = %target.display(), error = %e, "replacing directory by file");
                    Self::remove_any(&target)?;
                    fs::rename(&temp, &target).map_err(|e| remote_io(&target, &e))?;
                    Ok(n)
                }
                Err(e) => Err(remote_io(&target, &e)),
            }
        });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Local sends take tens of microseconds: batching them saves a hand-off to tokio's
    /// blocking pool and back per file.
    fn send_batch_size(&self) -> usize {
        32
    }

    fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        self.forget_dirs();
        Self::remove_any(&path.under(&self.root))
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        let src = from.under(&self.root);
        let dst = to.under(&self.root);
        let src_meta = match fs::symlink_metadata(&src) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConnError::source_missing(format!(
                    "{}: not in the destination",
                    src.display()
                )))
            }
            Err(e) => return Err(remote_io(&src, &e)),
        };
        self.forget_dirs();
        self.ensure_parents(to)?;
        if let Ok(dst_meta) = fs::symlink_metadata(&dst) {
            // rename(2) replaces a file by a file, but not a non-empty directory, nor a
            // directory by a file: clear the way so the move always replaces its target.
            if dst_meta.is_dir() || src_meta.is_dir() {
                Self::remove_any(&dst)?;
            }
        }
        fs::rename(&src, &dst).map_err(|e| remote_io(&dst, &e))
    }

    fn flush(&self) -> Result<(), ConnError> {
        // Cleared before the sync: whatever finishes during it marks the next flush dirty.
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = File::open(&self.root)
            .map_err(|e| remote_io(&self.root, &e))
            .and_then(|dir| {
                rustix::fs::syncfs(&dir).map_err(|e| remote_io(&self.root, &io::Error::from(e)))
            });
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        result
    }

    fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let dirs: HashSet<PathBuf> = near
            .iter()
            .map(|p| {
                p.under(&self.root)
                    .parent()
                    .unwrap_or(&self.root)
                    .to_path_buf()
            })
            .collect();
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if is_temp_path(&entry.path()) {
                    tracing::debug!(path = %entry.path().display(), "removing a temporary file left by a crash");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Walks the whole root. Local uploads never resume, so `queued` keeps nothing.
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let _ = queued;
        let _dirty = MarkDirty(&self.dirty);
        let mut removed = 0;
        Self::sweep_dir(&self.root, &mut removed)?;
        Ok(removed)
    }

    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        match fs::symlink_metadata(path.under(&self.root)) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(remote_io(&path.under(&self.root), &e)),
        }
    }

    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let abs = path.under(&self.root);
        fs::read(&abs).map_err(|e| ConnError::from_io(abs.display(), &e))
    }

    /// Size first (free), then SHA-256 of both copies, both streamed: the destination is on
    /// this machine, so reading it back costs no more than reading the source, and a hash is
    /// the only proof that the bytes (not just the length) arrived before the source goes.
    fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let by_size = verify_size(file, path, self.stat(path)?);
        if !by_size.holds() {
            return Ok(by_size);
        }
        let local = file.sha256()?;
        let abs = path.under(&self.root);
        let remote = match File::open(&abs).and_then(digest::sha256_reader) {
            Ok(d) => d,
            // Removed or replaced by a directory since the stat: it does not hold the bytes.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::IsADirectory
                ) =>
            {
                return Ok(Verification::Mismatch(format!(
                    "{path}: not at the destination"
                )))
            }
            Err(e) => return Err(remote_io(&abs, &e)),
        };
        if local == remote {
            Ok(Verification::Content {
                algorithm: "sha256",
            })
        } else {
            Ok(Verification::Mismatch(format!(
                "{path}: destination content differs (sha256 {} here, {} there)",
                digest::hex(&local),
                digest::hex(&remote)
            )))
        }
    }

    fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(&self.root).min_depth(1) {
            let entry = entry.map_err(|e| {
                ConnError::transient(format!("listing {}: {e}", self.root.display()))
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = RelPath::from_abs(&self.root, entry.path())
                .map_err(|e| ConnError::permanent(e.to_string()))?;
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(RemoteEntry { path, size });
        }
        Ok(out)
    }
}

/// Marks the connection dirty when dropped, i.e. once an operation has returned, whatever
/// it returned (a failed one may have changed things too).
struct MarkDirty<'a>(&'a AtomicBool);

impl Drop for MarkDirty<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// True when `path`'s file name marks a temporary file of ours.
pub fn is_temp_path(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.file_name()
        .map(|n| is_temp_name(n.as_bytes()))
        .unwrap_or(false)
}
