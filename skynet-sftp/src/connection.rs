//! `SftpConnection`: the `BlockingConnection` over SFTP.
//!
//! Only SFTP protocol requests are used — never a remote command — so it works on chrooted
//! `internal-sftp` servers and no file name can be interpreted by a shell.
//!
//! # Replacing a file
//! Content is written to a temporary name beside the target (prefix `TEMP_PREFIX`) and renamed
//! into place. OpenSSH speaks SFTP v3, whose RENAME fails when the target exists, and libssh2
//! (through the ssh2 crate) offers no way to send the `posix-rename@openssh.com` extension.
//! So when the first rename fails because the target exists, the target is removed and the
//! rename repeated. **Window:** between those two requests the target is briefly absent
//! (never partial). A crash inside the window leaves the complete temp file, which the next
//! send of the same version finishes without re-uploading (see resume).
//!
//! # Resume
//! Files of at least [`RESUME_MIN`] bytes are written to a temp name derived from (target,
//! size, mtime). If an earlier attempt was cut off, the next send of the same version finds
//! that temp file, checks that its last bytes match the local file, and appends from there;
//! `send` returns only the bytes actually transferred. A temp left by a failed attempt is
//! remembered and removed when the same target is sent again with another version.
//!
//! # Temporaries left by a crash
//! A process killed mid-send leaves its temp file; small files use random names, and a
//! directory rename may since have carried the temp anywhere. After such a crash the handler
//! calls [`BlockingConnection::sweep_temps`], which walks the whole tree and removes every temp
//! except the resumable ones of queued sends. Resumable names say whose they are
//! (`.skynet-tmp.r<hash of target>-<hash of version>`), so the sweep can tell them apart
//! without knowing the local file; a kept one is remembered like a cut-off attempt, so that
//! sending another version of its target removes it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use skynet_core::connection::{
    is_temp_name, temp_name, verify_size, BlockingConnection, RemoteEntry, SourceFile,
    Verification, TEMP_PREFIX,
};
use skynet_core::digest;
use skynet_core::error::ConnError;
use skynet_core::relpath::RelPath;
use ssh2::{FileStat, OpenFlags, OpenType};

use crate::config::SftpConfig;
use crate::durable::Durability;
use crate::errors::{classify, classify_io, is_lost, is_missing, local_io, Op};
use crate::pool::{Link, Pool};

/// Files at least this large get a deterministic temp name, so an interrupted upload resumes.
/// Smaller ones are cheaper to resend than to check.
pub const RESUME_MIN: u64 = 1024 * 1024;

/// Bytes handed to libssh2 per write call. libssh2 splits a write into ~30 KB SFTP packets and
/// keeps them all in flight, so a large buffer is what makes uploads pipeline instead of
/// waiting one round trip per packet. Measured on loopback (512 MiB file): 256 KiB gave
/// 107 MiB/s, 1 MiB 129 MiB/s, 4 MiB no better; OpenSSH's `sftp put` did 147 MiB/s on the
/// same (noisy) machine. See `examples/bench.rs`.
const CHUNK: usize = 1024 * 1024;

/// Bytes at the end of a partial temp file compared with the local file before resuming.
const TAIL_CHECK: u64 = 64 * 1024;

/// An SFTP destination. Cheap to construct: sessions are opened on first use.
pub struct SftpConnection {
    pool: Pool,
    server: String,
    /// Directories known to exist under the root, to skip mkdir round trips.
    known_dirs: Mutex<HashSet<RelPath>>,
    /// Temp files left by sends cut off by a lost connection, by target.
    leftovers: Mutex<HashMap<RelPath, PathBuf>>,
    /// Flushing uploads before acknowledging them (hand-off), see [`crate::durable`].
    durable: Durability,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SftpConnection {
    pub fn new(config: SftpConfig) -> SftpConnection {
        SftpConnection {
            server: config.server(),
            durable: Durability::new(config.fsync, config.verify_read_back),
            pool: Pool::new(config),
            known_dirs: Mutex::new(HashSet::new()),
            leftovers: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &SftpConfig {
        self.pool.config()
    }

    /// With [`SftpConfig::fsync`]: whether the server flushed uploads (`fsync@openssh.com`),
    /// once one was tried.
    pub fn fsync_offered(&self) -> Option<bool> {
        self.durable.server_offers()
    }

    fn root(&self) -> &Path {
        &self.pool.config().root
    }

    fn remote(&self, path: &RelPath) -> PathBuf {
        path.under(self.root())
    }

    fn err(&self, e: &ssh2::Error, op: Op, path: &Path) -> ConnError {
        classify(e, op, &self.server, Some(path))
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
                tracing::debug!(server = %self.server, error = %e, "pooled session was dead; retrying on a new one");
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

    fn forget_dirs_within(&self, path: &RelPath) {
        locked(&self.known_dirs).retain(|d| !d.is_within(path));
    }

    /// Creates the parents of `path` under the root (one `lstat` when they already exist).
    fn ensure_parents(&self, link: &Link, path: &RelPath) -> Result<(), ConnError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        if locked(&self.known_dirs).contains(&parent) {
            return Ok(());
        }
        let abs = self.remote(&parent);
        if matches!(link.sftp.lstat(&abs), Ok(st) if st.is_dir()) {
            locked(&self.known_dirs).extend(path.ancestors());
            return Ok(());
        }
        for dir in path.ancestors() {
            if locked(&self.known_dirs).contains(&dir) {
                continue;
            }
            self.mkdir(link, &self.remote(&dir))?;
            locked(&self.known_dirs).insert(dir);
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
            Ok(st) if st.file_type().is_symlink() => Err(ConnError::permanent(format!(
                "{}: {}: is a symbolic link in the destination; refusing to write through it",
                self.server,
                abs.display()
            ))),
            Ok(_) => {
                // A file stands where a directory is needed: the source replaced it.
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

    /// Removes a file, link or whole directory tree; missing is fine.
    fn remove_any(&self, link: &Link, abs: &Path) -> Result<(), ConnError> {
        match link.sftp.lstat(abs) {
            Ok(st) if st.is_dir() => self.remove_tree(link, abs),
            Ok(_) => self.unlink(link, abs),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&e, Op::Other, abs)),
        }
    }

    fn unlink(&self, link: &Link, abs: &Path) -> Result<(), ConnError> {
        match link.sftp.unlink(abs) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.err(&e, Op::Other, abs)),
        }
    }

    /// The entries of a remote directory; a missing directory has none.
    /// Opens the remote file at `abs` for reading; "no such file" is [`ConnError::remote_missing`].
    fn open_for_reading(&self, link: &Link, abs: &Path) -> Result<ssh2::File, ConnError> {
        match link.sftp.open(abs) {
            Ok(f) => Ok(f),
            Err(e) if is_missing(&e) => Err(ConnError::remote_missing(format!(
                "{}: {}: no such file",
                self.server,
                abs.display()
            ))),
            Err(e) => Err(self.err(&e, Op::Read, abs)),
        }
    }

    fn readdir(
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

    fn remove_tree(&self, link: &Link, dir: &Path) -> Result<(), ConnError> {
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

    /// Renames `from` onto `to`, replacing whatever is at `to` (see the module docs for the
    /// window this leaves, forced by SFTP v3).
    fn rename_replacing(
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

    /// The temp name for a resumable upload of this version of the file to `to`:
    /// [`Self::resume_prefix`] of the target, then a hash of the version (size, mtime).
    pub fn resume_name(to: &RelPath, file: &SourceFile) -> String {
        let mtime = file
            .mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(to.as_bytes());
        h.update(file.size.to_le_bytes());
        h.update(mtime.to_le_bytes());
        format!("{}-{}", Self::resume_prefix(to), hex8(&h.finalize()))
    }

    /// The start of every resumable temp name for `to`, whatever the version: lets a sweep
    /// recognise the temp of a queued send from the target alone. Random temp names are hex
    /// digits only, so the `r` can never start one of them.
    pub fn resume_prefix(to: &RelPath) -> String {
        format!("{TEMP_PREFIX}r{}", hex8(&Sha256::digest(to.as_bytes())))
    }

    /// Removes the temporaries under `dir`, recursively, except resumable ones named in
    /// `keep` (resume prefix → target) that still sit beside their target; those are
    /// remembered as leftovers. Counts removals into `removed`.
    fn sweep_dir(
        &self,
        link: &Link,
        dir: &Path,
        keep: &HashMap<String, RelPath>,
        removed: &mut u64,
    ) -> Result<(), ConnError> {
        for (path, st) in self.readdir(link, dir)? {
            let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            if !is_temp_name(name) {
                if st.is_dir() {
                    self.sweep_dir(link, &path, keep, removed)?;
                }
                continue;
            }
            if st.is_file() {
                let kept = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.rsplit_once('-'))
                    .and_then(|(prefix, _)| keep.get(prefix))
                    .filter(|to| self.remote(to).parent() == Some(dir));
                if let Some(to) = kept {
                    tracing::debug!(server = %self.server, temp = %path.display(), "keeping a partial upload a queued send will resume");
                    locked(&self.leftovers).insert(to.clone(), path);
                    continue;
                }
            }
            tracing::debug!(server = %self.server, temp = %path.display(), "removing a temporary file left by a crash");
            // OpenSSH's readdir attributes come from lstat: a link is removed, not followed.
            if st.is_dir() {
                self.remove_tree(link, &path)?;
            } else {
                self.unlink(link, &path)?;
            }
            *removed += 1;
        }
        Ok(())
    }

    /// Opens the temp file for writing and decides where to start: 0, or the length of a
    /// previous attempt whose tail matches the local file.
    fn open_temp(
        &self,
        link: &Link,
        temp: &Path,
        file: &SourceFile,
        local: &std::fs::File,
        resumable: bool,
    ) -> Result<(ssh2::File, u64), ssh2::Error> {
        if !resumable {
            let f = link.sftp.open_mode(
                temp,
                OpenFlags::WRITE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            )?;
            return Ok((f, 0));
        }
        let mut f = link.sftp.open_mode(
            temp,
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
            0o600,
            OpenType::File,
        )?;
        let have = f.stat()?.size.unwrap_or(0);
        if have == 0 {
            return Ok((f, 0));
        }
        if have <= file.size && tail_matches(&mut f, local, have) {
            tracing::info!(server = %self.server, temp = %temp.display(), offset = have, "resuming upload");
            return Ok((f, have));
        }
        f.setstat(FileStat {
            size: Some(0),
            uid: None,
            gid: None,
            perm: None,
            atime: None,
            mtime: None,
        })?;
        Ok((f, 0))
    }

    /// Writes the temp file: content from the start offset, then mode and mtime.
    fn upload(
        &self,
        link: &Link,
        file: &SourceFile,
        to: &RelPath,
        temp: &Path,
    ) -> Result<u64, ConnError> {
        let local = file.open()?;
        let resumable = file.size >= RESUME_MIN;
        let (mut remote, offset) = match self.open_temp(link, temp, file, &local, resumable) {
            Ok(r) => r,
            Err(e) if is_missing(&e) => {
                // A parent vanished (deleted by someone else) since we cached it: recreate.
                self.forget_dirs_within(&to.parent().unwrap_or_else(|| to.clone()));
                self.ensure_parents(link, to)?;
                self.open_temp(link, temp, file, &local, resumable)
                    .map_err(|e| self.err(&e, Op::Write, temp))?
            }
            Err(e) => return Err(self.err(&e, Op::Write, temp)),
        };
        let mut local = local;
        if offset > 0 {
            local
                .seek(SeekFrom::Start(offset))
                .map_err(|e| local_io(&file.path, &e))?;
            remote
                .seek(SeekFrom::Start(offset))
                .map_err(|e| classify_io(&e, Op::Write, &self.server, temp))?;
        }
        // Small files get a small buffer: zeroing 1 MiB per 4 KiB file costs more than the send.
        let want = file.size.saturating_sub(offset).saturating_add(1);
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(CHUNK).clamp(1, CHUNK)];
        let mut sent: u64 = 0;
        loop {
            let n = match local.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(local_io(&file.path, &e)),
            };
            remote
                .write_all(&buf[..n])
                .map_err(|e| classify_io(&e, Op::Write, &self.server, temp))?;
            sent += n as u64;
        }
        let mtime = file
            .mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        remote
            .setstat(FileStat {
                size: None,
                uid: None,
                gid: None,
                // Permission bits only: a copied setuid or setgid bit would make a file owned by
                // the server account that runs as that account.
                perm: Some(file.mode & 0o777),
                atime: Some(mtime),
                mtime: Some(mtime),
            })
            .map_err(|e| self.err(&e, Op::Other, temp))?;
        self.durable.flush(&mut remote, &self.server, temp)?;
        remote.close().map_err(|e| self.err(&e, Op::Write, temp))?;
        Ok(sent)
    }

    fn send_on(&self, link: &Link, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let target = self.remote(to);
        let dir = target.parent().unwrap_or(self.root()).to_path_buf();
        self.ensure_parents(link, to)?;
        let name = if file.size >= RESUME_MIN {
            Self::resume_name(to, file)
        } else {
            temp_name()
        };
        let temp = dir.join(name);
        let leftover = locked(&self.leftovers).remove(to);
        if let Some(old) = leftover.filter(|old| *old != temp) {
            // A cut-off attempt at an older version: its temp can never be resumed.
            let _ = link.sftp.unlink(&old);
        }
        let result = self.upload(link, file, to, &temp).and_then(|n| {
            file.check_unchanged()?;
            self.rename_replacing(link, &temp, &target, Op::Other)?;
            self.flush_name(link, &target)?;
            Ok(n)
        });
        match &result {
            Ok(_) => {}
            Err(e) if is_lost(e) => {
                locked(&self.leftovers).insert(to.clone(), temp);
            }
            Err(_) => {
                let _ = link.sftp.unlink(&temp);
            }
        }
        result
    }

    /// At the first connection of a connection that flushes uploads: finds out whether the
    /// server offers `fsync@openssh.com` on an empty temporary file in the root, so that a
    /// server without it is warned about at start, not at the first upload.
    fn probe_fsync(&self, link: &Link) -> Result<(), ConnError> {
        if !self.durable.wanted() || self.durable.server_offers().is_some() {
            return Ok(());
        }
        let probe = self.root().join(temp_name());
        let mut f = link
            .sftp
            .open_mode(
                &probe,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            )
            .map_err(|e| self.err(&e, Op::Write, &probe))?;
        let flushed = self.durable.flush(&mut f, &self.server, &probe);
        drop(f);
        let _ = link.sftp.unlink(&probe);
        flushed
    }

    /// Flushes the file just renamed to `target`, when uploads are flushed: see
    /// [`crate::durable`] (the rename is what a power loss must not undo).
    fn flush_name(&self, link: &Link, target: &Path) -> Result<(), ConnError> {
        if self.durable.server_offers() != Some(true) {
            return Ok(());
        }
        let mut f = link
            .sftp
            .open(target)
            .map_err(|e| self.err(&e, Op::Write, target))?;
        self.durable.flush(&mut f, &self.server, target)
    }

    /// After reconnecting: removes the random-named temps of sends cut off by the lost
    /// connection. No send can ever resume them (the next attempt picks a new name), so
    /// waiting for their target to be sent again only risks stranding them. Best effort: a
    /// failure keeps them remembered.
    fn drop_random_leftovers(&self, link: &Link) {
        let resumable = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{TEMP_PREFIX}r")))
        };
        let random: Vec<(RelPath, PathBuf)> = locked(&self.leftovers)
            .iter()
            .filter(|(_, temp)| !resumable(temp))
            .map(|(to, temp)| (to.clone(), temp.clone()))
            .collect();
        for (to, temp) in random {
            if self.unlink(link, &temp).is_ok() {
                let mut leftovers = locked(&self.leftovers);
                if leftovers.get(&to) == Some(&temp) {
                    leftovers.remove(&to);
                }
            }
        }
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
                    .strip_prefix(self.root())
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

    /// Creates the root (like `mkdir -p`) and checks it is a directory.
    fn ensure_root(&self, link: &Link) -> Result<(), ConnError> {
        let root = self.root().to_path_buf();
        if matches!(link.sftp.stat(&root), Ok(st) if st.is_dir()) {
            return Ok(());
        }
        let mut partial = PathBuf::new();
        for comp in root.components() {
            partial.push(comp);
            if matches!(
                comp,
                std::path::Component::RootDir | std::path::Component::CurDir
            ) {
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
}

/// The first 8 bytes of a digest in lowercase hex (16 characters).
fn hex8(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// True when the last bytes of the remote partial file equal the local file's bytes there.
fn tail_matches(remote: &mut ssh2::File, local: &std::fs::File, have: u64) -> bool {
    let n = have.min(TAIL_CHECK);
    let start = have - n;
    let mut theirs = vec![0u8; n as usize];
    let mut ours = vec![0u8; n as usize];
    remote.seek(SeekFrom::Start(start)).is_ok()
        && remote.read_exact(&mut theirs).is_ok()
        && local.read_exact_at(&mut ours, start).is_ok()
        && theirs == ours
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
            .ensure_root(lease.link())
            .and_then(|()| self.probe_fsync(lease.link()));
        match &result {
            Ok(()) => self.drop_random_leftovers(lease.link()),
            Err(e) if is_lost(e) => lease.discard(),
            Err(_) => {}
        }
        result
    }

    /// Walks the whole tree (one `readdir` per directory): see the module docs.
    fn sweep_temps(&self, queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let keep: HashMap<String, RelPath> = queued
            .iter()
            .map(|to| (Self::resume_prefix(to), to.clone()))
            .collect();
        let root = self.root().to_path_buf();
        self.with_link(|link| {
            let mut removed = 0;
            self.sweep_dir(link, &root, &keep, &mut removed)?;
            Ok(removed)
        })
    }

    /// Temps of sends cut off by a lost connection are removed when their target is sent
    /// again, but a target deleted or renamed meanwhile never is: the next start must sweep.
    fn stranded_temps(&self) -> bool {
        !locked(&self.leftovers).is_empty()
    }

    fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.with_link(|link| self.send_on(link, file, to))
    }

    fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.forget_dirs_within(path);
        let abs = self.remote(path);
        self.with_link(|link| self.remove_any(link, &abs))
    }

    /// One `rmdir`, which the server refuses for a directory that holds anything, for a file
    /// and for a link. SFTP v3 cannot say why: a non-empty directory is a bare "failure",
    /// and OpenSSH answers "no such file" for a file or a link (`ENOTDIR`). So any refusal
    /// but a lost connection is followed by an `lstat`, which tells whether something is
    /// there (kept) or not (gone).
    fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.forget_dirs_within(dir);
        let abs = self.remote(dir);
        self.with_link(|link| {
            let refused = match link.sftp.rmdir(&abs) {
                Ok(()) => return Ok(true),
                Err(e) => self.err(&e, Op::Other, &abs),
            };
            if is_lost(&refused) {
                return Err(refused);
            }
            match link.sftp.lstat(&abs) {
                Ok(_) => {
                    tracing::debug!(server = %self.server, path = %abs.display(), reason = %refused.message, "directory kept");
                    Ok(false)
                }
                Err(e) if is_missing(&e) => Ok(true),
                Err(e) => {
                    let e = self.err(&e, Op::Other, &abs);
                    if is_lost(&e) {
                        Err(e)
                    } else {
                        Ok(false)
                    }
                }
            }
        })
    }

    fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        if from == to {
            return Ok(());
        }
        if to.is_strictly_within(from) {
            return Err(ConnError::permanent(format!(
                "{}: cannot move {from} into itself ({to})",
                self.server
            )));
        }
        let (src, dst) = (self.remote(from), self.remote(to));
        self.forget_dirs_within(from);
        self.forget_dirs_within(to);
        self.with_link(|link| {
            match link.sftp.lstat(&src) {
                Ok(_) => {}
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
                let dir = dst.parent().unwrap_or(self.root()).to_path_buf();
                let aside = dir.join(temp_name());
                link.sftp
                    .rename(&src, &aside, None)
                    .map_err(|e| self.err(&e, Op::Rename, &src))?;
                return self.rename_replacing(link, &aside, &dst, Op::Other);
            }
            self.rename_replacing(link, &src, &dst, Op::Rename)
        })
    }

    fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        let abs = self.remote(path);
        self.with_link(|link| match link.sftp.lstat(&abs) {
            Ok(st) if st.is_file() => Ok(Some(st.size.unwrap_or(0))),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.err(&e, Op::Other, &abs)),
        })
    }

    fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        let abs = self.remote(path);
        self.with_link(|link| {
            let mut f = self.open_for_reading(link, &abs)?;
            let mut out = Vec::new();
            f.read_to_end(&mut out)
                .map_err(|e| classify_io(&e, Op::Read, &self.server, &abs))?;
            Ok(out)
        })
    }

    /// Streamed into `out`; a retry on a fresh session starts the copy over.
    fn download(&self, path: &RelPath, out: &mut std::fs::File) -> Result<u64, ConnError> {
        let abs = self.remote(path);
        let out: &std::fs::File = out;
        let local = |e: std::io::Error| ConnError::from_io("the local copy", &e);
        self.with_link(|link| {
            let mut f = self.open_for_reading(link, &abs)?;
            out.set_len(0).map_err(local)?;
            let mut w = out;
            w.seek(SeekFrom::Start(0)).map_err(local)?;
            std::io::copy(&mut f, &mut w).map_err(|e| classify_io(&e, Op::Read, &self.server, &abs))
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
        let abs = self.remote(path);
        let remote = self.with_link(|link| {
            let handle = match link.sftp.open(&abs) {
                Ok(f) => f,
                // Removed since the stat: it does not hold the bytes (a verdict, not an error).
                Err(e) if is_missing(&e) => return Ok(None),
                Err(e) => return Err(self.err(&e, Op::Read, &abs)),
            };
            digest::sha256_reader(handle)
                .map(Some)
                .map_err(|e| classify_io(&e, Op::Read, &self.server, &abs))
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
        let root = self.root().to_path_buf();
        self.with_link(|link| {
            let mut out = Vec::new();
            self.list_dir(link, &root, &mut out)?;
            Ok(out)
        })
    }
}
