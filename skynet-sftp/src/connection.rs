//! `SftpConnection`: the `BlockingConnection` over SFTP.
//!
//! It composes the other modules: each operation takes a session from the [`crate::pool`]
//! and runs the filesystem operations of [`crate::remote_fs`] or a send of
//! [`crate::upload`] on it. What is decided here is what to do when the session turns out to
//! be dead: an operation that failed with a lost connection on a session that had been idle
//! in the pool is retried once on a fresh one (every operation is idempotent), and
//! `connect` starts over with new sessions.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};

use skynet_core::connection::{
    verify_size, BlockingConnection, RemoteEntry, SourceFile, Verification,
};
use skynet_core::digest;
use skynet_core::error::ConnError;
use skynet_core::relpath::RelPath;

use crate::config::SftpConfig;
use crate::errors::{classify_io, is_lost, Op};
use crate::pool::{Link, Pool};
use crate::remote_fs::RemoteFs;
use crate::upload::{self, Uploads};

/// An SFTP destination. Cheap to construct: sessions are opened on first use.
pub struct SftpConnection {
    pool: Pool,
    /// The destination root and the directories known under it.
    fs: RemoteFs,
    /// Temporaries of cut-off sends, and whether uploads are flushed.
    uploads: Uploads,
}

impl SftpConnection {
    pub fn new(config: SftpConfig) -> SftpConnection {
        SftpConnection {
            fs: RemoteFs::new(config.server(), config.root.clone()),
            uploads: Uploads::new(&config),
            pool: Pool::new(config),
        }
    }

    pub fn config(&self) -> &SftpConfig {
        self.pool.config()
    }

    /// With [`SftpConfig::fsync`]: whether the server flushed uploads (`fsync@openssh.com`),
    /// once one was tried.
    pub fn fsync_offered(&self) -> Option<bool> {
        self.uploads.fsync_offered()
    }

    /// The temp name for a resumable upload of this version of the file to `to`:
    /// [`Self::resume_prefix`] of the target, then a hash of the version (size, mtime).
    pub fn resume_name(to: &RelPath, file: &SourceFile) -> String {
        upload::resume_name(to, file)
    }

    /// The start of every resumable temp name for `to`, whatever the version: lets a sweep
    /// recognise the temp of a queued send from the target alone. Random temp names are hex
    /// digits only, so the `r` can never start one of them.
    pub fn resume_prefix(to: &RelPath) -> String {
        upload::resume_prefix(to)
    }

    /// Runs `f` on a pooled session. A lost connection drops that session; if it had been
    /// idle in the pool (it may have died there, e.g. the server restarted), `f` is retried
    /// once on a fresh session — every operation is idempotent, so this is safe.
    fn with_link<T>(&self, f: impl Fn(&Link) -> Result<T, ConnError>) -> Result<T, ConnError> {
        let lease = self.pool.checkout()?;
        match f(lease.link()) {
            Err(e) if is_lost(&e) => {
                let reused = lease.reused;
                lease.discard();
                if !reused {
                    return Err(e);
                }
                tracing::debug!(server = %self.fs.server(), error = %e, "pooled session was dead; retrying on a new one");
                self.pool.reset();
                let lease = self.pool.checkout()?;
                let result = f(lease.link());
                if matches!(&result, Err(e) if is_lost(e)) {
                    lease.discard();
                }
                result
            }
            other => other,
        }
    }
}

impl BlockingConnection for SftpConnection {
    fn describe(&self) -> String {
        self.pool.config().describe()
    }

    /// Drops every pooled session (after a lost connection they are presumed dead), opens a
    /// fresh one, and creates the root directory if needed.
    fn connect(&self) -> Result<(), ConnError> {
        self.pool.reset();
        let lease = self.pool.checkout()?;
        let result = self
            .fs
            .ensure_root(lease.link())
            .and_then(|()| self.uploads.probe_fsync(&self.fs, lease.link()));
        match &result {
            Ok(()) => self.uploads.drop_random_leftovers(&self.fs, lease.link()),
            Err(e) if is_lost(e) => lease.discard(),
            Err(_) => {}
        }
        result
    }

    /// Removes the random-named temps beside the sends that were in flight; partial uploads
    /// that can resume are kept for their next send.
    fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        self.with_link(|link| self.uploads.cleanup(&self.fs, link, near))
    }

    /// Walks the whole tree (one `readdir` per directory), keeping the partial uploads of the
    /// queued sends, which can resume.
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let keep: HashMap<String, RelPath> = queued
            .iter()
            .map(|to| (upload::resume_prefix(to), to.clone()))
            .collect();
        self.with_link(|link| self.uploads.sweep(&self.fs, link, &keep))
    }

    /// Temps of sends cut off by a lost connection are removed when their target is sent
    /// again, but a target deleted or renamed meanwhile never is: the next start must sweep.
    fn stranded_temps(&self) -> bool {
        self.uploads.stranded()
    }

    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.with_link(|link| self.uploads.send(&self.fs, link, file, to))
    }

    fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.fs.forget_dirs_within(path);
        let abs = self.fs.remote(path);
        self.with_link(|link| {
            // Through a link leading elsewhere, nothing of the destination is there.
            if self.fs.leads_outside(link, path)? {
                return Ok(());
            }
            self.fs.remove_any(link, &abs)
        })
    }

    /// One `rmdir`, which the server refuses for a directory that holds anything, for a file
    /// and for a link. SFTP v3 cannot say why, so any refusal but a lost connection is
    /// followed by an `lstat`, which tells whether something is there (kept) or not (gone).
    fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.fs.forget_dirs_within(dir);
        let abs = self.fs.remote(dir);
        self.with_link(|link| {
            if self.fs.leads_outside(link, dir)? {
                return Ok(true);
            }
            self.fs.remove_empty_dir(link, &abs)
        })
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        if from == to {
            return Ok(());
        }
        if to.is_strictly_within(from) {
            return Err(ConnError::permanent(format!(
                "{}: cannot move {from} into itself ({to})",
                self.fs.server()
            )));
        }
        self.fs.forget_dirs_within(from);
        self.fs.forget_dirs_within(to);
        self.with_link(|link| self.fs.rename(link, from, to))
    }

    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        self.with_link(|link| self.fs.file_size(link, path))
    }

    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let abs = self.fs.remote(path);
        self.with_link(|link| {
            let mut f = self.fs.open_for_reading(link, path)?;
            let mut out = Vec::new();
            f.read_to_end(&mut out)
                .map_err(|e| classify_io(&e, Op::Read, self.fs.server(), &abs))?;
            Ok(out)
        })
    }

    /// Streamed into `out`; a retry on a fresh session starts the copy over.
    fn download(&self, path: &RelPath, out: &mut std::fs::File) -> Result<u64, ConnError> {
        let abs = self.fs.remote(path);
        let out: &std::fs::File = out;
        let local = |e: std::io::Error| ConnError::from_io("the local copy", &e);
        self.with_link(|link| {
            let mut f = self.fs.open_for_reading(link, path)?;
            out.set_len(0).map_err(local)?;
            let mut w = out;
            w.seek(SeekFrom::Start(0)).map_err(local)?;
            std::io::copy(&mut f, &mut w)
                .map_err(|e| classify_io(&e, Op::Read, self.fs.server(), &abs))
        })
    }

    /// The size through `lstat`, always. With [`SftpConfig::verify_read_back`], also the
    /// SHA-256 of the remote file, read back in pieces (memory stays flat for any size),
    /// against the local file's: SFTP v3 has no hash request and skynet runs no remote
    /// commands, so a download is the only way to prove the bytes.
    fn verify(&self, file: &SourceFile, path: &RelPath) -> Result<Verification, ConnError> {
        let by_size = verify_size(file, path, self.stat(path)?);
        if !by_size.holds() || !self.config().verify_read_back {
            return Ok(by_size);
        }
        // Hashed before a session is taken from the pool, so none is held idle meanwhile.
        let local = file.sha256()?;
        let abs = self.fs.remote(path);
        let remote = self.with_link(|link| {
            let handle = match self.fs.open_for_reading(link, path) {
                Ok(f) => f,
                // Removed since the stat: it does not hold the bytes (a verdict, not an error).
                Err(e) if e.kind == skynet_core::error::ErrorKind::RemoteMissing => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            digest::sha256_reader(handle)
                .map(Some)
                .map_err(|e| classify_io(&e, Op::Read, self.fs.server(), &abs))
        })?;
        Ok(match remote {
            None => Verification::Mismatch(format!("{path}: not at the destination")),
            Some(remote) if remote == local => Verification::Content {
                algorithm: "sha256",
            },
            Some(remote) => Verification::Mismatch(format!(
                "{path}: destination content differs (sha256 {} here, {} there)",
                digest::hex(&local),
                digest::hex(&remote)
            )),
        })
    }

    fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        self.with_link(|link| self.fs.list(link))
    }
}
