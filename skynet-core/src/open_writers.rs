//! Which processes have a file open for writing, read from `/proc` (Linux).
//!
//! The hand-off (`remove_source`) must not remove a file a writer still holds: the writer's
//! later writes would go into the unlinked inode and be lost. Settling (no change for the
//! settle time) cannot tell a finished file from a paused writer; an open write descriptor
//! can. For every process, each `/proc/PID/fd/N` is stat'ed (following the magic link gives
//! the open file's device and inode) and, for the files asked about, `/proc/PID/fdinfo/N`
//! says whether it was opened `O_WRONLY` or `O_RDWR`.
//!
//! # What a daemon can see
//! - As root: every process of its PID namespace.
//! - As another user: only its own user's processes. `/proc/PID/fd` of other users'
//!   processes is unreadable (and counted in [`OpenWriters::unreadable`]), so a file written
//!   by another account is not seen as open. Run the daemon as the account that writes the
//!   files, or as root, for this check to cover every writer.
//! - Never: writers in other PID namespaces (containers with their own `/proc`), writers on
//!   other machines (NFS, SMB), and a shared writable `mmap` whose descriptor was closed.
//!
//! A writer that opens the file between this scan and the removal is not seen either; the
//! scan is done right before removing, so that window is a few system calls wide.
//!
//! On other systems the scan finds nothing (no `/proc`), and the other checks (same inode,
//! size, mtime and ctime as delivered) are all that guard the removal.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A process holding a file open for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub pid: u32,
    /// The process's command name (`/proc/PID/comm`), for messages.
    pub command: String,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

/// The files asked about that some process has open for writing, from one walk of `/proc`.
#[derive(Debug, Default)]
pub struct OpenWriters {
    by_file: HashMap<(u64, u64), Writer>,
    /// Processes whose descriptors could not be read (other users' processes, when not root).
    pub unreadable: usize,
}

impl OpenWriters {
    /// Walks `/proc` once, looking for write descriptors on the files `wanted` (device,
    /// inode). Descriptors on other files cost one `stat` each and nothing more.
    pub fn scan(wanted: &HashSet<(u64, u64)>) -> OpenWriters {
        Self::scan_in(Path::new("/proc"), wanted)
    }

    fn scan_in(proc_root: &Path, wanted: &HashSet<(u64, u64)>) -> OpenWriters {
        use std::os::unix::fs::MetadataExt;
        let mut out = OpenWriters::default();
        if wanted.is_empty() {
            return out;
        }
        let Ok(procs) = std::fs::read_dir(proc_root) else {
            return out;
        };
        for proc_entry in procs.flatten() {
            let name = proc_entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let dir = proc_entry.path();
            let fds = match std::fs::read_dir(dir.join("fd")) {
                Ok(fds) => fds,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    out.unreadable += 1;
                    continue;
                }
                // The process exited meanwhile.
                Err(_) => continue,
            };
            for fd in fds.flatten() {
                let Ok(meta) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                let key = (meta.dev(), meta.ino());
                if !meta.is_file() || !wanted.contains(&key) || out.by_file.contains_key(&key) {
                    continue;
                }
                let info = dir.join("fdinfo").join(fd.file_name());
                if opened_for_writing(&info) {
                    let command = std::fs::read_to_string(dir.join("comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_else(|_| "?".to_string());
                    out.by_file.insert(key, Writer { pid, command });
                }
            }
        }
        out
    }

    /// A process that has the file (device, inode) open for writing, if any was seen.
    pub fn of(&self, dev: u64, ino: u64) -> Option<&Writer> {
        self.by_file.get(&(dev, ino))
    }
}

/// True when the `flags:` line of an fdinfo file says `O_WRONLY` or `O_RDWR`. An fdinfo that
/// cannot be read (the descriptor was closed meanwhile) is not a writer.
fn opened_for_writing(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        // O_ACCMODE: 0 read-only, 1 write-only, 2 read-write.
        .is_some_and(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn key(path: &Path) -> (u64, u64) {
        let m = std::fs::metadata(path).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn sees_our_own_write_descriptors_and_not_read_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = (dir.path().join("w"), dir.path().join("r"));
        std::fs::write(&r, b"x").unwrap();
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&w)
            .unwrap();
        let reader = std::fs::File::open(&r).unwrap();
        let wanted: HashSet<_> = [key(&w), key(&r)].into();
        let found = OpenWriters::scan(&wanted);
        let (wd, wi) = key(&w);
        let me = found.of(wd, wi).expect("our write descriptor");
        assert_eq!(me.pid, std::process::id());
        let (rd, ri) = key(&r);
        assert!(found.of(rd, ri).is_none(), "a read descriptor is no writer");
        drop((writer, reader));
        assert!(OpenWriters::scan(&wanted).of(wd, wi).is_none());
    }

    #[test]
    fn fdinfo_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("info");
        for (flags, writes) in [("0100000", false), ("02100001", true), ("0100002", true)] {
            std::fs::write(&f, format!("pos:\t0\nflags:\t{flags}\nmnt_id:\t1\n")).unwrap();
            assert_eq!(opened_for_writing(&f), writes, "{flags}");
        }
        assert!(!opened_for_writing(&dir.path().join("gone")));
    }
}
