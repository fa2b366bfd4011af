//! The local-folder destination: the embedded default, needing no server.
//!
//! Writes go to a temporary name beside the target and are renamed into place, so a reader of
//! the destination never sees a half-written file. Durability is paid once per batch: `flush`
//! calls `syncfs` on the destination's filesystem before the handler acknowledges, instead of
//! one `fsync` per file (which would make small-file mirroring many times slower than rsync).
//!
//! Confinement: every create, rename, delete and read resolves beneath the root's open handle
//! without following any link ([`crate::beneath`]), so a directory of the destination swapped
//! for a link cannot redirect a write, delete or rename outside the root, whatever was done
//! before. A link or file standing where a directory is needed is replaced, as a send replaces
//! whatever is at its target; a delete or rename whose parent is not a real directory finds
//! nothing there. Only permission bits are copied (`0o777`): a setuid or setgid bit would
//! make a file owned by skynet's user (root, for a system daemon) that runs as that user.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::beneath;
use crate::connection::{
    is_temp_name, temp_name, verify_size, BlockingConnection, RemoteEntry, SourceFile, Verification,
};
use crate::digest;
use crate::error::ConnError;
use crate::relpath::RelPath;

/// The mode bits a copy may carry: read, write and execute for owner, group and others.
/// setuid, setgid and sticky are never copied.
pub const PERMISSION_BITS: u32 = 0o777;

/// A destination folder on this machine.
pub struct LocalConnection {
    root: PathBuf,
    /// The root, opened by `connect` (or the first operation); every path is resolved beneath
    /// it, so a directory under it swapped for a link is never followed. (A root folder
    /// moved away while in use receives the operations until the next flush notices; that
    /// batch is then replayed into the folder now at the path.) Lost when the folder turns out to have been removed or replaced: every operation
    /// then fails as a lost connection until `connect` opens the folder again.
    dir: RwLock<RootState>,
    /// Set when the root was found lost: the next `flush` fails, so whatever went to the old
    /// folder since the last acknowledgement is replayed into the new one.
    lost: AtomicBool,
    /// Something may have changed under the root since the last `flush` began: set after
    /// every send, delete and rename returns (never before its writes are done), cleared by
    /// `flush` before its `syncfs`, so a flush with nothing new to make durable costs nothing.
    dirty: AtomicBool,
}

#[derive(Clone)]
enum RootState {
    /// Neither `connect` nor an operation has opened it yet.
    Unopened,
    Open(Arc<OwnedFd>),
    /// Removed or replaced since it was opened; `connect` opens it again.
    Lost,
}

/// An open directory of the destination: the root itself, or one beneath it.
enum Held {
    Root(Arc<OwnedFd>),
    Sub(OwnedFd),
}

impl AsFd for Held {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Held::Root(fd) => fd.as_fd(),
            Held::Sub(fd) => fd.as_fd(),
        }
    }
}

impl LocalConnection {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalConnection {
            root: root.into(),
            dir: RwLock::new(RootState::Unopened),
            lost: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root's handle, opened now if `connect` has not run yet.
    fn root_dir(&self) -> Result<Arc<OwnedFd>, ConnError> {
        match self.state() {
            RootState::Open(fd) => Ok(fd),
            RootState::Lost => Err(self.lost_error("")),
            RootState::Unopened => {
                let fd = Arc::new(open_root(&self.root)?);
                self.set_state(RootState::Open(Arc::clone(&fd)));
                Ok(fd)
            }
        }
    }

    fn state(&self) -> RootState {
        match self.dir.read() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_state(&self, new: RootState) {
        match self.dir.write() {
            Ok(mut state) => *state = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    fn lost_error(&self, cause: &str) -> ConnError {
        ConnError::connection_lost(format!(
            "destination {}: the folder was removed or replaced since it was opened; reopening it{cause}",
            self.root.display()
        ))
    }

    /// The directory holding `path`, which must exist as a real directory: `None` when it
    /// does not (missing, or a link or file on the way, which is never followed).
    fn parent_of(&self, path: &RelPath) -> Result<Option<Held>, ConnError> {
        let root = self.root_dir()?;
        let Some(parent) = path.parent() else {
            return Ok(Some(Held::Root(root)));
        };
        match beneath::open_dir(root.as_fd(), &parent) {
            Ok(fd) => Ok(Some(Held::Sub(fd))),
            Err(e) if beneath::absent(&e) => Ok(None),
            Err(e) => Err(remote_io(&parent.under(&self.root), &e)),
        }
    }

    /// The directory that will hold `path`, created (replacing what is in the way) as needed.
    fn make_parent_of(&self, path: &RelPath) -> Result<Held, ConnError> {
        let root = self.root_dir()?;
        let Some(parent) = path.parent() else {
            return Ok(Held::Root(root));
        };
        beneath::create_dirs(root.as_fd(), &parent)
            .map(Held::Sub)
            .map_err(|e| remote_io(&parent.under(&self.root), &e))
    }

    /// `send`: the temporary is made in the target's own directory handle, so the rename
    /// into place cannot be redirected between the two.
    fn send_now(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let shown = to.under(&self.root);
        let dir = self.make_parent_of(to)?;
        let temp = temp_name();
        let result = self
            .write_temp(file, dir.as_fd(), &temp, &shown)
            .and_then(|n| {
                file.check_unchanged()?;
                self.publish(dir.as_fd(), &temp, to.file_name(), &shown)?;
                Ok(n)
            });
        if result.is_err() {
            let _ = rustix::fs::unlinkat(dir.as_fd(), temp.as_str(), AtFlags::empty());
        }
        result
    }

    /// `delete`: the last component is removed from its parent's handle, the parent found
    /// without following links.
    fn delete_now(&self, path: &RelPath) -> Result<(), ConnError> {
        let Some(dir) = self.parent_of(path)? else {
            // Not a real directory on the way: nothing of ours is at this path.
            return Ok(());
        };
        beneath::remove(dir.as_fd(), path.file_name())
            .map_err(|e| remote_io(&path.under(&self.root), &e))
    }

    /// `remove_empty_dir`: one `rmdir` of the last component in its parent's handle, the
    /// parent found without following links.
    fn remove_empty_dir_now(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let Some(parent) = self.parent_of(dir)? else {
            // Not a real directory on the way: no directory of ours is at this path.
            return Ok(true);
        };
        beneath::remove_empty_dir(parent.as_fd(), dir.file_name())
            .map_err(|e| remote_io(&dir.under(&self.root), &e))
    }

    /// `rename`: a source not reachable without following a link is missing (the handler
    /// then sends the local target), and the target's parents are made as for a send.
    fn rename_now(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let (src, dst) = (from.under(&self.root), to.under(&self.root));
        let missing =
            || ConnError::remote_missing(format!("{}: not in the destination", src.display()));
        let Some(from_dir) = self.parent_of(from)? else {
            return Err(missing());
        };
        let Some(src_kind) =
            beneath::kind(from_dir.as_fd(), from.file_name()).map_err(|e| remote_io(&src, &e))?
        else {
            return Err(missing());
        };
        let to_dir = self.make_parent_of(to)?;
        let dst_kind =
            beneath::kind(to_dir.as_fd(), to.file_name()).map_err(|e| remote_io(&dst, &e))?;
        // rename(2) replaces a file by a file, but not a non-empty directory, nor a
        // directory by a file: clear the way so the move always replaces its target.
        if let Some(dst_kind) = dst_kind {
            if dst_kind == FileType::Directory || src_kind == FileType::Directory {
                beneath::remove(to_dir.as_fd(), to.file_name()).map_err(|e| remote_io(&dst, &e))?;
            }
        }
        rustix::fs::renameat(
            from_dir.as_fd(),
            from.file_name(),
            to_dir.as_fd(),
            to.file_name(),
        )
        .map_err(|e| remote_io(&dst, &e.into()))
    }

    /// Passes `result` through, except that a failure while the root handle no longer is the
    /// folder at the root's path (removed, or replaced) becomes a lost connection: `connect`
    /// then opens (or makes) the folder again, and the action is retried there.
    fn checked<T>(&self, result: Result<T, ConnError>) -> Result<T, ConnError> {
        let Err(e) = result else {
            return result;
        };
        match self.state() {
            RootState::Open(fd) if !still_the_root(&fd, &self.root) => {
                self.forget_root();
                Err(self.lost_error(&format!(" ({})", e.message)))
            }
            _ => Err(e),
        }
    }

    fn forget_root(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.set_state(RootState::Lost);
    }

    /// Removes the temporaries under `dir` (shown as `shown`), recursively, counting them into
    /// `removed`. Links are never followed (the entry's own type is used).
    fn sweep_dir(dir: BorrowedFd<'_>, shown: &Path, removed: &mut u64) -> Result<(), ConnError> {
        let entries = beneath::entries(dir).map_err(|e| remote_io(shown, &e))?;
        for (name, kind) in entries {
            let name = name.as_bytes();
            let path =
                shown.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name));
            if is_temp_name(name) {
                tracing::debug!(path = %path.display(), "removing a temporary file left by a crash");
                beneath::remove(dir, name).map_err(|e| remote_io(&path, &e))?;
                *removed += 1;
                continue;
            }
            if kind != Some(FileType::Directory) {
                continue;
            }
            match rustix::fs::openat(dir, name, beneath::DIR, Mode::empty()) {
                Ok(sub) => Self::sweep_dir(sub.as_fd(), &path, removed)?,
                // Gone or replaced since it was listed: nothing of ours to sweep there.
                Err(e) if beneath::absent(&e.into()) => {}
                Err(e) => return Err(remote_io(&path, &e.into())),
            }
        }
        Ok(())
    }

    /// Writes `file` to the new entry `temp` of `dir`, with its permission bits and mtime.
    fn write_temp(
        &self,
        file: &SourceFile,
        dir: BorrowedFd<'_>,
        temp: &str,
        shown: &Path,
    ) -> Result<u64, ConnError> {
        let mut input = file.open()?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut out = File::from(
            rustix::fs::openat(dir, temp, flags, Mode::from_bits_truncate(0o600))
                .map_err(|e| remote_io(shown, &e.into()))?,
        );
        let copied =
            copy_known(&mut input, &mut out, file.size).map_err(|e| remote_io(shown, &e))?;
        rustix::fs::fchmod(&out, Mode::from_bits_truncate(file.mode & PERMISSION_BITS))
            .map_err(|e| remote_io(shown, &e.into()))?;
        filetime::set_file_handle_times(
            &out,
            None,
            Some(filetime::FileTime::from_system_time(file.mtime)),
        )
        .map_err(|e| remote_io(shown, &e))?;
        Ok(copied)
    }

    /// Moves the finished `temp` onto `name` in `dir`, replacing a directory in the way.
    fn publish(
        &self,
        dir: BorrowedFd<'_>,
        temp: &str,
        name: &[u8],
        shown: &Path,
    ) -> Result<(), ConnError> {
        match rustix::fs::renameat(dir, temp, dir, name) {
            Ok(()) => Ok(()),
            // A directory stands where the file goes: the source replaced a dir by a file.
            Err(e) if beneath::kind(dir, name).ok().flatten() == Some(FileType::Directory) => {
                tracing::debug!(path = %shown.display(), error = %e, "replacing directory by file");
                beneath::remove(dir, name).map_err(|e| remote_io(shown, &e))?;
                rustix::fs::renameat(dir, temp, dir, name).map_err(|e| remote_io(shown, &e.into()))
            }
            Err(e) => Err(remote_io(shown, &e.into())),
        }
    }

    /// Opens `path` for reading without following a link anywhere on the way; `None` when
    /// nothing (or no regular file) is there.
    fn open_file(&self, path: &RelPath) -> Result<Option<File>, ConnError> {
        let shown = path.under(&self.root);
        let Some(dir) = self.parent_of(path)? else {
            return Ok(None);
        };
        // Non-blocking, so a FIFO planted in the destination cannot hang the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir.as_fd(), path.file_name(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if beneath::absent(&e.into()) => return Ok(None),
            Err(e) => return Err(remote_io(&shown, &e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| remote_io(&shown, &e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }
}

/// Opens the root folder itself (following a link the user gave as the root, once).
fn open_root(root: &Path) -> Result<OwnedFd, ConnError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::open(root, flags, Mode::empty()).map_err(|e| {
        let e = io::Error::from(e);
        if e.kind() == io::ErrorKind::NotFound {
            // Removed under us: `connect` makes it again.
            ConnError::connection_lost(format!("destination {}: {e}", root.display()))
        } else {
            ConnError::setup(format!("destination {}: {e}", root.display()))
        }
    })
}

/// True when `fd` is still the directory found at `root` (not removed, renamed or replaced).
fn still_the_root(fd: &OwnedFd, root: &Path) -> bool {
    match (rustix::fs::fstat(fd), rustix::fs::stat(root)) {
        (Ok(held), Ok(now)) => held.st_dev == now.st_dev && held.st_ino == now.st_ino,
        _ => false,
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

/// An I/O error on the destination side ("not found" there means a parent vanished under us,
/// which [`ConnError::from_io`] makes worth a retry).
fn remote_io(path: &Path, e: &io::Error) -> ConnError {
    ConnError::from_io(path.display(), e)
}

impl BlockingConnection for LocalConnection {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn connect(&self) -> Result<(), ConnError> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| ConnError::setup(format!("destination {}: {e}", self.root.display())))?;
        let fd = open_root(&self.root)?;
        self.set_state(RootState::Open(Arc::new(fd)));
        Ok(())
    }

    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        self.checked(self.send_now(file, to))
    }

    /// Local sends take tens of microseconds: batching them saves a hand-off to tokio's
    /// blocking pool and back per file.
    fn send_batch_size(&self) -> usize {
        32
    }

    fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        self.checked(self.delete_now(path))
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        self.checked(self.rename_now(from, to))
    }

    fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        let _dirty = MarkDirty(&self.dirty);
        self.checked(self.remove_empty_dir_now(dir))
    }

    /// Also checks that the root handle is still the folder at the root's path: when the
    /// folder was removed or replaced (now, or found so by an operation since the last
    /// flush), what was written since went to the old one, so the batch is not acknowledged
    /// and is replayed after `connect` opens the new root.
    fn flush(&self) -> Result<(), ConnError> {
        // Cleared before the sync: whatever finishes during it marks the next flush dirty.
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self.root_dir().and_then(|fd| {
            rustix::fs::syncfs(&*fd).map_err(|e| remote_io(&self.root, &e.into()))?;
            if !still_the_root(&fd, &self.root) {
                self.forget_root();
            }
            if self.lost.swap(false, Ordering::SeqCst) {
                return Err(self.lost_error(""));
            }
            Ok(())
        });
        if result.is_err() {
            self.dirty.store(true, Ordering::SeqCst);
        }
        result
    }

    fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let parents: HashSet<Option<RelPath>> = near.iter().map(RelPath::parent).collect();
        let root = self.root_dir()?;
        for parent in parents {
            let dir = match &parent {
                None => Held::Root(Arc::clone(&root)),
                Some(p) => match beneath::open_dir(root.as_fd(), p) {
                    Ok(fd) => Held::Sub(fd),
                    Err(_) => continue,
                },
            };
            let Ok(names) = beneath::entries(dir.as_fd()) else {
                continue;
            };
            for (name, _) in names.iter().filter(|(n, _)| is_temp_name(n.as_bytes())) {
                tracing::debug!(dir = ?parent.as_ref().map(RelPath::display), name = ?name, "removing a temporary file left by a crash");
                let _ = beneath::remove(dir.as_fd(), name.as_bytes());
            }
        }
        Ok(())
    }

    /// Walks the whole root. Local uploads never resume, so `queued` keeps nothing.
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let _ = queued;
        let _dirty = MarkDirty(&self.dirty);
        let mut removed = 0;
        let root = self.root_dir()?;
        Self::sweep_dir(root.as_fd(), &self.root, &mut removed)?;
        Ok(removed)
    }

    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        let Some(dir) = self.parent_of(path)? else {
            return Ok(None);
        };
        match rustix::fs::statat(dir.as_fd(), path.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                Ok(Some(st.st_size as u64))
            }
            Ok(_) => Ok(None),
            Err(e) if beneath::absent(&e.into()) => Ok(None),
            Err(e) => Err(remote_io(&path.under(&self.root), &e.into())),
        }
    }

    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let abs = path.under(&self.root);
        let Some(mut file) = self.open_file(path)? else {
            // Not found on the destination: a failure worth a retry (see `ErrorKind`), never
            // read as a vanished local file.
            return Err(ConnError::transient(format!(
                "{}: no such file in the destination",
                abs.display()
            )));
        };
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .map_err(|e| ConnError::from_io(abs.display(), &e))?;
        Ok(out)
    }

    /// Streamed from a descriptor opened beneath the root, never through a link.
    fn download(&self, path: &RelPath, out: &mut File) -> Result<u64, ConnError> {
        let abs = path.under(&self.root);
        let Some(mut file) = self.open_file(path)? else {
            return Err(ConnError::remote_missing(format!(
                "{}: no such file in the destination",
                abs.display()
            )));
        };
        io::copy(&mut file, out).map_err(|e| ConnError::from_io(abs.display(), &e))
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
        // Removed or replaced (by a directory, a link) since the stat: it does not hold the bytes.
        let Some(remote_file) = self.open_file(path)? else {
            return Ok(Verification::Mismatch(format!(
                "{path}: not at the destination"
            )));
        };
        let remote = digest::sha256_reader(remote_file).map_err(|e| remote_io(&abs, &e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{local_file, rel};
    use crate::error::ErrorKind;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Setup {
        _scratch: tempfile::TempDir,
        src: PathBuf,
        dest: PathBuf,
        outside: PathBuf,
        conn: LocalConnection,
    }

    fn setup() -> Setup {
        let scratch = tempfile::tempdir().unwrap();
        let [src, dest, outside] = ["src", "dest", "outside"].map(|d| scratch.path().join(d));
        for d in [&src, &dest, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        let conn = LocalConnection::new(&dest);
        conn.connect().unwrap();
        Setup {
            _scratch: scratch,
            src,
            dest,
            outside,
            conn,
        }
    }

    /// A directory swapped for a link after sends went through it (the old parent cache was
    /// warm then): no send, delete or rename reaches the link's target.
    #[test]
    fn a_directory_swapped_for_a_link_is_never_written_through() {
        let s = setup();
        let one = local_file(&s.src, "one", b"1");
        for p in ["d/a", "d/b", "d/sub/c"] {
            s.conn.send(&one, &rel(p)).unwrap();
        }
        for p in ["a", "b", "sub/c"] {
            let path = s.outside.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"outside").unwrap();
        }
        std::fs::remove_dir_all(s.dest.join("d")).unwrap();
        symlink(&s.outside, s.dest.join("d")).unwrap();

        s.conn.delete(&rel("d/a")).unwrap();
        s.conn.delete(&rel("d/sub")).unwrap();
        let moved = s.conn.rename(&rel("d/b"), &rel("elsewhere/b")).unwrap_err();
        assert_eq!(moved.kind, ErrorKind::RemoteMissing, "{moved}");
        assert_eq!(s.conn.stat(&rel("d/b")).unwrap(), None);
        assert!(s.conn.read(&rel("d/b")).is_err());
        assert!(s.conn.verify(&one, &rel("d/b")).is_ok_and(|v| !v.holds()));
        for p in ["a", "b", "sub/c"] {
            assert_eq!(std::fs::read(s.outside.join(p)).unwrap(), b"outside", "{p}");
        }
        s.conn.send(&one, &rel("d/new")).unwrap();
        assert!(!s.outside.join("new").exists(), "sent through the link");
        assert!(s.dest.join("d").symlink_metadata().unwrap().is_dir());
        assert_eq!(std::fs::read(s.dest.join("d/new")).unwrap(), b"1");
    }

    #[test]
    fn only_permission_bits_are_copied() {
        let s = setup();
        let mut file = local_file(&s.src, "suid", b"s");
        file.mode = 0o6755;
        s.conn.send(&file, &rel("suid")).unwrap();
        let mode = std::fs::metadata(s.dest.join("suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    /// The destination folder removed while connected: the failed send reports a lost
    /// connection, and so does every operation and the next flush (whatever went to the old
    /// folder is replayed) until `connect` makes the folder again.
    #[test]
    fn a_removed_root_is_made_again_by_reconnecting() {
        let s = setup();
        let one = local_file(&s.src, "one", b"1");
        s.conn.send(&one, &rel("a/b")).unwrap();
        s.conn.flush().unwrap();
        std::fs::remove_dir_all(&s.dest).unwrap();
        let e = s.conn.send(&one, &rel("a/b")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        let e = s.conn.delete(&rel("a/b")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        s.conn.connect().unwrap();
        s.conn.send(&one, &rel("a/b")).unwrap();
        let e = s.conn.flush().unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        s.conn.send(&one, &rel("a/b")).unwrap();
        s.conn.flush().unwrap();
        assert_eq!(std::fs::read(s.dest.join("a/b")).unwrap(), b"1");

        // Replaced by another folder: a delete that found nothing in the old one is not
        // acknowledged.
        std::fs::rename(&s.dest, s.outside.join("moved")).unwrap();
        std::fs::create_dir(&s.dest).unwrap();
        s.conn.delete(&rel("a/b")).unwrap();
        let e = s.conn.flush().unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
    }
}
