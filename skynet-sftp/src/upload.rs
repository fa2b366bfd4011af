//! Sending a file: write it under a temporary name, flush it if asked, rename it into place;
//! resume large files after a cut-off; keep track of, and sweep, the temporaries left behind.
//!
//! # Replacing a file
//! Content is written to a temporary name beside the target (prefix `TEMP_PREFIX`) and renamed
//! into place, replacing the old target: SFTP v3 makes that a remove then a rename, so the
//! target is briefly absent, never partial (see [`crate::remote_fs`]). A crash inside that
//! window leaves the complete temp file, which the next send of the same version finishes
//! without re-uploading (see resume). When uploads must be durable before they are
//! acknowledged (hand-off), the temp file is flushed before the rename and the target after
//! it: see [`crate::durable`].
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
//!
//! [`BlockingConnection::sweep_temps`]: skynet_core::connection::BlockingConnection::sweep_temps

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};
use skynet_core::connection::{is_temp_name, temp_name, SourceFile, TEMP_PREFIX};
use skynet_core::error::ConnError;
use skynet_core::relpath::RelPath;
use ssh2::{FileStat, OpenFlags, OpenType};

use crate::config::SftpConfig;
use crate::durable::Durability;
use crate::errors::{classify_io, is_lost, is_missing, local_io, Op};
use crate::pool::Link;
use crate::remote_fs::RemoteFs;

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

/// The temp name for a resumable upload of this version of the file to `to`:
/// [`resume_prefix`] of the target, then a hash of the version (size, mtime).
pub(crate) fn resume_name(to: &RelPath, file: &SourceFile) -> String {
    let mtime = file
        .mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(to.as_bytes());
    h.update(file.size.to_le_bytes());
    h.update(mtime.to_le_bytes());
    format!("{}-{}", resume_prefix(to), hex8(&h.finalize()))
}

/// The start of every resumable temp name for `to`, whatever the version: lets a sweep
/// recognise the temp of a queued send from the target alone. Random temp names are hex
/// digits only, so the `r` can never start one of them.
pub(crate) fn resume_prefix(to: &RelPath) -> String {
    format!("{TEMP_PREFIX}r{}", hex8(&Sha256::digest(to.as_bytes())))
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

/// The uploads of one destination: whether they are flushed, and the temporaries that sends
/// cut off by a lost connection left behind.
pub(crate) struct Uploads {
    /// Temp files left by sends cut off by a lost connection, by target.
    leftovers: Mutex<HashMap<RelPath, PathBuf>>,
    /// Flushing uploads before acknowledging them (hand-off), see [`crate::durable`].
    durable: Durability,
}

impl Uploads {
    pub(crate) fn new(config: &SftpConfig) -> Uploads {
        Uploads {
            leftovers: Mutex::new(HashMap::new()),
            durable: Durability::new(config.fsync, config.verify_read_back),
        }
    }

    fn leftovers(&self) -> MutexGuard<'_, HashMap<RelPath, PathBuf>> {
        // A panic while it was held leaves the map usable; keep going.
        self.leftovers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the server flushed uploads (`fsync@openssh.com`), once one was tried.
    pub(crate) fn fsync_offered(&self) -> Option<bool> {
        self.durable.server_offers()
    }

    /// True while temps of sends cut off by a lost connection are remembered: they are
    /// removed when their target is sent again, but a target deleted or renamed meanwhile
    /// never is, so only a sweep would remove them.
    pub(crate) fn stranded(&self) -> bool {
        !self.leftovers().is_empty()
    }

    /// Sends `file` to `to`: creates its parents, uploads it to its temp name (resuming a
    /// cut-off attempt at the same version), checks the local file did not change meanwhile,
    /// renames the temp into place and flushes it. Returns the bytes transferred.
    pub(crate) fn send(
        &self,
        fs: &RemoteFs,
        link: &Link,
        file: &SourceFile,
        to: &RelPath,
    ) -> Result<u64, ConnError> {
        let target = fs.remote(to);
        let dir = target.parent().unwrap_or(fs.root()).to_path_buf();
        fs.ensure_parents(link, to)?;
        let name = if file.size >= RESUME_MIN {
            resume_name(to, file)
        } else {
            temp_name()
        };
        let temp = dir.join(name);
        let leftover = self.leftovers().remove(to);
        if let Some(old) = leftover.filter(|old| *old != temp) {
            // A cut-off attempt at an older version: its temp can never be resumed.
            let _ = link.sftp.unlink(&old);
        }
        let result = self.upload(fs, link, file, to, &temp).and_then(|n| {
            file.check_unchanged()?;
            fs.rename_replacing(link, &temp, &target, Op::Other)?;
            self.flush_name(fs, link, &target)?;
            Ok(n)
        });
        match &result {
            Ok(_) => {}
            Err(e) if is_lost(e) => {
                self.leftovers().insert(to.clone(), temp);
            }
            Err(_) => {
                let _ = link.sftp.unlink(&temp);
            }
        }
        result
    }

    /// Writes the temp file: content from the start offset, then mode and mtime.
    fn upload(
        &self,
        fs: &RemoteFs,
        link: &Link,
        file: &SourceFile,
        to: &RelPath,
        temp: &Path,
    ) -> Result<u64, ConnError> {
        let local = file.open()?;
        let resumable = file.size >= RESUME_MIN;
        let (mut remote, offset) = match Self::open_temp(fs, link, temp, file, &local, resumable) {
            Ok(r) => r,
            Err(e) if is_missing(&e) => {
                // A parent vanished (deleted by someone else) since we cached it: recreate.
                fs.forget_dirs_within(&to.parent().unwrap_or_else(|| to.clone()));
                fs.ensure_parents(link, to)?;
                Self::open_temp(fs, link, temp, file, &local, resumable)
                    .map_err(|e| fs.err(&e, Op::Write, temp))?
            }
            Err(e) => return Err(fs.err(&e, Op::Write, temp)),
        };
        let mut local = local;
        if offset > 0 {
            local
                .seek(SeekFrom::Start(offset))
                .map_err(|e| local_io(&file.path, &e))?;
            remote
                .seek(SeekFrom::Start(offset))
                .map_err(|e| classify_io(&e, Op::Write, fs.server(), temp))?;
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
                .map_err(|e| classify_io(&e, Op::Write, fs.server(), temp))?;
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
            .map_err(|e| fs.err(&e, Op::Other, temp))?;
        self.durable.flush(&mut remote, fs.server(), temp)?;
        remote.close().map_err(|e| fs.err(&e, Op::Write, temp))?;
        Ok(sent)
    }

    /// Opens the temp file for writing and decides where to start: 0, or the length of a
    /// previous attempt whose tail matches the local file.
    fn open_temp(
        fs: &RemoteFs,
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
            tracing::info!(server = %fs.server(), temp = %temp.display(), offset = have, "resuming upload");
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

    /// At the first connection of a connection that flushes uploads: finds out whether the
    /// server offers `fsync@openssh.com` on an empty temporary file in the root, so that a
    /// server without it is warned about at start, not at the first upload.
    pub(crate) fn probe_fsync(&self, fs: &RemoteFs, link: &Link) -> Result<(), ConnError> {
        if !self.durable.wanted() || self.durable.server_offers().is_some() {
            return Ok(());
        }
        let probe = fs.root().join(temp_name());
        let mut f = link
            .sftp
            .open_mode(
                &probe,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o600,
                OpenType::File,
            )
            .map_err(|e| fs.err(&e, Op::Write, &probe))?;
        let flushed = self.durable.flush(&mut f, fs.server(), &probe);
        drop(f);
        let _ = link.sftp.unlink(&probe);
        flushed
    }

    /// Flushes the file just renamed to `target`, when uploads are flushed: see
    /// [`crate::durable`] (the rename is what a power loss must not undo).
    fn flush_name(&self, fs: &RemoteFs, link: &Link, target: &Path) -> Result<(), ConnError> {
        if self.durable.server_offers() != Some(true) {
            return Ok(());
        }
        let mut f = link
            .sftp
            .open(target)
            .map_err(|e| fs.err(&e, Op::Write, target))?;
        self.durable.flush(&mut f, fs.server(), target)
    }

    /// After reconnecting: removes the random-named temps of sends cut off by the lost
    /// connection. No send can ever resume them (the next attempt picks a new name), so
    /// waiting for their target to be sent again only risks stranding them. Best effort: a
    /// failure keeps them remembered.
    pub(crate) fn drop_random_leftovers(&self, fs: &RemoteFs, link: &Link) {
        let resumable = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{TEMP_PREFIX}r")))
        };
        let random: Vec<(RelPath, PathBuf)> = self
            .leftovers()
            .iter()
            .filter(|(_, temp)| !resumable(temp))
            .map(|(to, temp)| (to.clone(), temp.clone()))
            .collect();
        for (to, temp) in random {
            if fs.unlink(link, &temp).is_ok() {
                let mut leftovers = self.leftovers();
                if leftovers.get(&to) == Some(&temp) {
                    leftovers.remove(&to);
                }
            }
        }
    }

    /// After a restart: removes the temporaries beside `near`, the targets of the sends that
    /// were in flight (one `readdir` per parent directory), except resumable ones, which the
    /// next send of their target resumes (and a sweep removes when none is queued). A lost
    /// connection stops it; any other failure skips that directory.
    pub(crate) fn cleanup(
        &self,
        fs: &RemoteFs,
        link: &Link,
        near: &[RelPath],
    ) -> Result<(), ConnError> {
        let dirs: std::collections::BTreeSet<PathBuf> = near
            .iter()
            .map(|to| fs.remote(to).parent().unwrap_or(fs.root()).to_path_buf())
            .collect();
        let resumable = format!("{TEMP_PREFIX}r");
        for dir in dirs {
            let entries = match fs.readdir(link, &dir) {
                Ok(entries) => entries,
                Err(e) if is_lost(&e) => return Err(e),
                Err(_) => continue,
            };
            for (path, st) in entries {
                let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                if !is_temp_name(name) || name.starts_with(resumable.as_bytes()) {
                    continue;
                }
                tracing::debug!(server = %fs.server(), temp = %path.display(), "removing a temporary file left by a crash");
                // OpenSSH's readdir attributes come from lstat: a link is removed, not followed.
                let removed = if st.is_dir() {
                    fs.remove_tree(link, &path)
                } else {
                    fs.unlink(link, &path)
                };
                match removed {
                    Err(e) if is_lost(&e) => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Removes the temporaries under the root, recursively, except resumable ones named in
    /// `keep` (resume prefix → target) that still sit beside their target; those are
    /// remembered as leftovers. Returns how many were removed.
    pub(crate) fn sweep(
        &self,
        fs: &RemoteFs,
        link: &Link,
        keep: &HashMap<String, RelPath>,
    ) -> Result<u64, ConnError> {
        let mut removed = 0;
        self.sweep_dir(fs, link, fs.root(), keep, &mut removed)?;
        Ok(removed)
    }

    /// [`Self::sweep`] of `dir`, counting removals into `removed`.
    fn sweep_dir(
        &self,
        fs: &RemoteFs,
        link: &Link,
        dir: &Path,
        keep: &HashMap<String, RelPath>,
        removed: &mut u64,
    ) -> Result<(), ConnError> {
        for (path, st) in fs.readdir(link, dir)? {
            let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            if !is_temp_name(name) {
                if st.is_dir() {
                    self.sweep_dir(fs, link, &path, keep, removed)?;
                }
                continue;
            }
            if st.is_file() {
                let kept = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.rsplit_once('-'))
                    .and_then(|(prefix, _)| keep.get(prefix))
                    .filter(|to| fs.remote(to).parent() == Some(dir));
                if let Some(to) = kept {
                    tracing::debug!(server = %fs.server(), temp = %path.display(), "keeping a partial upload a queued send will resume");
                    self.leftovers().insert(to.clone(), path);
                    continue;
                }
            }
            tracing::debug!(server = %fs.server(), temp = %path.display(), "removing a temporary file left by a crash");
            // OpenSSH's readdir attributes come from lstat: a link is removed, not followed.
            if st.is_dir() {
                fs.remove_tree(link, &path)?;
            } else {
                fs.unlink(link, &path)?;
            }
            *removed += 1;
        }
        Ok(())
    }
}
