//! The destination's filesystem over one SFTP session ([`Link`]): stat, list, `mkdir -p`,
//! recursive removal, and a rename that replaces its target.
//!
//! Paths come in relative to the destination root ([`RelPath`]) and are resolved with
//! [`RemoteFs::remote`]; errors are classified here (through [`crate::errors`]) with the server
//! and the remote path named. Nothing here retries: the caller (the `connection` module) runs
//! these on a pooled session, and again on a fresh one if that session turned out dead.
//!
//! # Replacing by rename
//! OpenSSH speaks SFTP v3, whose RENAME fails when the target exists, and libssh2 (through
//! the ssh2 crate) offers no way to send the `posix-rename@openssh.com` extension. So when
//! the first rename fails because the target exists, the target is removed and the rename
//! repeated ([`RemoteFs::rename_replacing`]). **Window:** between those two requests the
//! target is briefly absent (never partial). What a crash inside the window leaves behind is
//! the uploader's business: see the `upload` module.
//!
//! # Links in the destination
//! The server resolves every component of a path, links included, and SFTP v3 has no
//! "beneath" (no `openat`, no `O_NOFOLLOW` for parents). A link planted in the destination
//! (`linked -> /home/user`) would lead a delete, a rename or a write elsewhere in the
//! account. So before an operation on a path whose parent is not known to be a real
//! directory of ours, the parent's `realpath` must lie under the root's
//! ([`RemoteFs::leads_outside`]): a delete or a rename through a link finds nothing there, a
//! read or a verify finds nothing, and a send replaces the link by a directory (a link in the
//! way is replaced like a file in the way; the link itself is removed, never its target).
//! What is planted while we write is a race SFTP cannot close; the engine's own operations
//! never create links.
//!
//! # Known directories
//! Every upload needs its parent directories. Those known to exist are remembered, so that a
//! send into an existing directory costs no `mkdir` round trips. The caller forgets those
//! within a path before deleting or moving it ([`RemoteFs::forget_dirs_within`]), and an
//! upload that finds its parent gone forgets it and creates it again.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use skynet_core::connection::{temp_name, RemoteEntry};
use skynet_core::error::ConnError;
use skynet_core::relpath::RelPath;

use crate::errors::{classify, is_lost, is_missing, Op};
use crate::pool::Link;

/// The destination root of one server, and the directories known to exist under it.
pub(crate) struct RemoteFs {
    /// `sftp://user@host:port`, to name the server in errors and logs.
    server: String,
    root: PathBuf,
    /// Directories known to exist under the root, to skip mkdir round trips.
    known_dirs: Mutex<HashSet<RelPath>>,
    /// The root as the server resolves it (its `realpath`), once asked.
    real_root: Mutex<Option<PathBuf>>,
}

impl RemoteFs {
    pub(crate) fn new(server: String, root: PathBuf) -> RemoteFs {
        RemoteFs {
            server,
            root,
            known_dirs: Mutex::new(HashSet::new()),
            real_root: Mutex::new(None),
        }
    }

    /// `sftp://user@host:port`, for errors and logs.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The remote path of `path`.
    pub(crate) fn remote(&self, path: &RelPath) -> PathBuf {
        path.under(&self.root)
    }

    /// Classifies a libssh2 error of `op` on the remote `path`.
    pub(crate) fn err(&self, e: &ssh2::Error, op: Op, path: &Path) -> ConnError {
        classify(e, op, &self.server, Some(path))
    }

    fn known_dirs(&self) -> MutexGuard<'_, HashSet<RelPath>> {
        // Only a cache of what exists: a panic while it was held leaves it usable; keep going.
        self.known_dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the known directories at or below `path`: it is about to be removed or moved,
    /// or was found missing.
    pub(crate) fn forget_dirs_within(&self, path: &RelPath) {
        self.known_dirs().retain(|d| !d.is_within(path));
    }

    /// The root as the server resolves it.
    fn real_root(&self, link: &Link) -> Result<PathBuf, ConnError> {
        let mut known = self.real_root.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(real) = &*known {
            return Ok(real.clone());
        }
        let real = link
            .sftp
            .realpath(&self.root)
            .map_err(|e| self.err(&e, Op::Other, &self.root))?;
        *known = Some(real.clone());
        Ok(real)
    }

    /// Whether the directory holding `path` resolves outside the root: a component of it is
    /// a link leading elsewhere (see the module docs). A parent that does not exist is judged
    /// by its nearest existing ancestor.
    pub(crate) fn leads_outside(&self, link: &Link, path: &RelPath) -> Result<bool, ConnError> {
        let mut dir = path.parent();
        while let Some(d) = dir {
            let abs = self.remote(&d);
            match link.sftp.realpath(&abs) {
                Ok(real) => return Ok(!real.starts_with(self.real_root(link)?)),
                Err(e) if is_missing(&e) => dir = d.parent(),
                Err(e) => return Err(self.err(&e, Op::Other, &abs)),
            }
        }
        Ok(false)
    }

    /// Creates the root (like `mkdir -p`) and checks it is a directory.
    pub(crate) fn ensure_root(&self, link: &Link) -> Result<(), ConnError> {
        let root = self.root.clone();
        if matches!(link.sftp.stat(&root), Ok(st) if st.is_dir()) {
            return Ok(());
        }
        let mut partial = PathBuf::new();
        for comp in root.components() {
            partial.push(comp);
            if matches!(comp, Component::RootDir | Component::CurDir) {
                continue;
            }
            if link.sftp.stat(&partial).is_err() {
                if let Err(e) = link.sftp.mkdir(&partial, 0o755) {
                    let err = self.err(&e, Op::Other, &partial);
                    return Err(if is_lost(&err) {
                        err
                    } else {
                        ConnError::setup(format!("cannot create the destination root: {err}"))
                    });
                }
            }
        }
        match link.sftp.stat(&root) {
            Ok(st) if st.is_dir() => Ok(()),
            Ok(_) => Err(ConnError::setup(format!(
                "{}: destination {} is not a directory",
                self.server,
                root.display()
            ))),
            Err(e) => {
                let err = self.err(&e, Op::Other, &root);
                Err(if is_lost(&err) {
                    err
                } else {
                    ConnError::setup(err.message)
                })
            }
        }
    }

    /// Creates the parents of `path` under the root (one `lstat` when they already exist).
    pub(crate) fn ensure_parents(&self, link: &Link, path: &RelPath) -> Result<(), ConnError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if self.known_dirs().contains(&parent) {
            return Ok(());
        }
        let abs = self.remote(&parent);
        if matches!(link.sftp.lstat(&abs), Ok(st) if st.is_dir()) {
            if !self.leads_outside(link, path)? {
                self.known_dirs().extend(path.ancestors());
                return Ok(());
            }
            // A link on the way: what was known may have been replaced by it; look again,
            // from the root down, replacing the link by a directory.
            self.known_dirs().clear();
        }
        for dir in path.ancestors() {
            if self.known_dirs().contains(&dir) {
                continue;
            }
            self.mkdir(link, &self.remote(&dir))?;
            self.known_dirs().insert(dir);
        }
        Ok(())
    }

    /// Makes `abs` a directory: creates it, accepts an existing one, replaces a file.
    fn mkdir(&self, link: &Link, abs: &Path) -> Result<(), ConnError> {
        let mkdir_err = match link.sftp.mkdir(abs, 0o755) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match link.sftp.lstat(abs) {
            Ok(st) if st.is_dir() => Ok(()),
            Ok(_) => {
                // A file stands where a directory is needed (the source replaced it), or a
                // link (never written through): the file or the link itself is replaced.
                link.sftp
                    .unlink(abs)
                    .map_err(|e| self.err(&e, Op::Other, abs))?;
                link.sftp
                    .mkdir(abs, 0o755)
                    .map_err(|e| self.err(&e, Op::Other, abs))
            }
            Err(_) => Err(self.err(&mkdir_err, Op::Other, abs)),
        }
    }

    /// The size of the regular file at `abs`; `None` when nothing or something else is there
    /// (a link is not followed).
    pub(crate) fn file_size(&self, link: &Link, path: &RelPath) -> Result<Option<u64>, ConnError> {
        if self.leads_outside(link, path)? {
            return Ok(None);
        }
        let abs = &self.remote(path);
        match link.sftp.lstat(abs) {
            Ok(st) if st.is_file() => Ok(Some(st.size.unwrap_or(0))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.err(&e, Op::Other, abs)),
        }
    }

    /// Opens the remote file at `abs` for reading; "no such file" is [`ConnError::remote_missing`].
    pub(crate) fn open_for_reading(
        &self,
        link: &Link,
        path: &RelPath,
    ) -> Result<ssh2::File, ConnError> {
        let abs = &self.remote(path);
        let missing = || {
            ConnError::remote_missing(format!("{}: {}: no such file", self.server, abs.display()))
        };
        if self.leads_outside(link, path)? {
            return Err(missing());
        }
        match link.sftp.open(abs) {
            Ok(f) => Ok(f),
            Err(e) if is_missing(&e) => Err(missing()),
            Err(e) => Err(self.err(&e, Op::Read, abs)),
        }
    }

    /// The entries of a remote directory; a missing directory has none.
    pub(crate) fn readdir(
        &self,
        link: &Link,
        dir: &Path,
    ) -> Result<Vec<(PathBuf, ssh2::FileStat)>, ConnError> {
        match link.sftp.readdir(dir) {
            Ok(entries) => Ok(entries),
            Err(e) if is_missing(&e) => Ok(Vec::new()),
            Err(e) => Err(self.err(&e, Op::Other, dir)),
        }
    }

    /// Every regular file under the root, with its size (one `readdir` per directory).
    pub(crate) fn list(&self, link: &Link) -> Result<Vec<RemoteEntry>, ConnError> {
        let mut out = Vec::new();
        self.list_dir(link, &self.root, &mut out)?;
        Ok(out)
    }

    fn list_dir(
        &self,
        link: &Link,
        dir: &Path,
        out: &mut Vec<RemoteEntry>,
    ) -> Result<(), ConnError> {
        let entries = self.readdir(link, dir)?;
        for (path, st) in entries {
            if st.is_dir() {
                self.list_dir(link, &path, out)?;
            } else if st.is_file() {
                let rel = path
                    .strip_prefix(&self.root)
                    .ok()
                    .and_then(|p| RelPath::from_path(p).ok())
                    .ok_or_else(|| {
                        ConnError::permanent(format!(
                            "{}: {}: listed outside the root",
                            self.server,
                            path.display()
                        ))
                    })?;
                out.push(RemoteEntry {
                    path: rel,
                    size: st.size.unwrap_or(0),
                });
            }
        }
        Ok(())
    }

    /// Removes a file, link or whole directory tree; missing is fine.
    pub(crate) fn remove_any(&self, link: &Link, abs: &Path) -> Result<(), ConnError> {
        match link.sftp.lstat(abs) {
            Ok(st) if st.is_dir() => self.remove_tree(link, abs),
            Ok(_) => self.unlink(link, abs),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&e, Op::Other, abs)),
        }
    }

    /// Removes a file or link; missing is fine.
    pub(crate) fn unlink(&self, link: &Link, abs: &Path) -> Result<(), ConnError> {
        match link.sftp.unlink(abs) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&e, Op::Other, abs)),
        }
    }

    /// Removes the directory `dir` and everything in it; missing is fine.
    pub(crate) fn remove_tree(&self, link: &Link, dir: &Path) -> Result<(), ConnError> {
        let entries = self.readdir(link, dir)?;
        // OpenSSH's readdir attributes come from lstat: links are removed, never followed.
        for (path, st) in entries {
            if st.is_dir() {
                self.remove_tree(link, &path)?;
            } else {
                self.unlink(link, &path)?;
            }
        }
        match link.sftp.rmdir(dir) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&e, Op::Other, dir)),
        }
    }

    /// Removes the directory at `abs` if it is empty; true when nothing is there any more.
    ///
    /// One `rmdir`, which the server refuses for a directory that holds anything, for a file
    /// and for a link. SFTP v3 cannot say why: a non-empty directory is a bare "failure",
    /// and OpenSSH answers "no such file" for a file or a link (`ENOTDIR`). So any refusal
    /// but a lost connection is followed by an `lstat`, which tells whether something is
    /// there (kept) or not (gone).
    pub(crate) fn remove_empty_dir(&self, link: &Link, abs: &Path) -> Result<bool, ConnError> {
        let refused = match link.sftp.rmdir(abs) {
            Ok(()) => return Ok(true),
            Err(e) => self.err(&e, Op::Other, abs),
        };
        if is_lost(&refused) {
            return Err(refused);
        }
        match link.sftp.lstat(abs) {
            Ok(_) => {
                tracing::debug!(server = %self.server, path = %abs.display(), reason = %refused.message, "directory kept");
                Ok(false)
            }
            Err(e) if is_missing(&e) => Ok(true),
            Err(e) => {
                let e = self.err(&e, Op::Other, abs);
                if is_lost(&e) {
                    Err(e)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Moves `from` to `to` (both under the root), replacing whatever is at `to` and creating
    /// its parents. The caller has checked that `to` is not inside `from`, and forgotten the
    /// known directories of both.
    pub(crate) fn rename(
        &self,
        link: &Link,
        from: &RelPath,
        to: &RelPath,
    ) -> Result<(), ConnError> {
        let (src, dst) = (self.remote(from), self.remote(to));
        let outside = self.leads_outside(link, from)?;
        match link.sftp.lstat(&src) {
            Ok(_) if !outside => {}
            Ok(_) => {
                return Err(ConnError::remote_missing(format!(
                    "{}: {}: not in the destination (a symbolic link on the way leads outside it)",
                    self.server,
                    src.display()
                )))
            }
            Err(e) if is_missing(&e) => {
                return Err(ConnError::remote_missing(format!(
                    "{}: {}: not in the destination",
                    self.server,
                    src.display()
                )))
            }
            Err(e) => return Err(self.err(&e, Op::Other, &src)),
        }
        self.ensure_parents(link, to)?;
        if from.is_strictly_within(to) {
            // Replacing `to` would delete `from` with it: move `from` out of the way first.
            let dir = dst.parent().unwrap_or(&self.root).to_path_buf();
            let aside = dir.join(temp_name());
            link.sftp
                .rename(&src, &aside, None)
                .map_err(|e| self.err(&e, Op::Rename, &src))?;
            return self.rename_replacing(link, &aside, &dst, Op::Other);
        }
        self.rename_replacing(link, &src, &dst, Op::Rename)
    }

    /// Renames `from` onto `to`, replacing whatever is at `to` (see the module docs for the
    /// window this leaves, forced by SFTP v3). `op` names the request in errors about `from`.
    pub(crate) fn rename_replacing(
        &self,
        link: &Link,
        from: &Path,
        to: &Path,
        op: Op,
    ) -> Result<(), ConnError> {
        let first = match link.sftp.rename(from, to, None) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match link.sftp.lstat(to) {
            Ok(_) => {
                self.remove_any(link, to)?;
                link.sftp
                    .rename(from, to, None)
                    .map_err(|e| self.err(&e, op, from))
            }
            Err(e) if is_missing(&e) => Err(self.err(&first, op, from)),
            Err(e) => Err(self.err(&e, Op::Other, to)),
        }
    }
}
