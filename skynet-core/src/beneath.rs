//! Directory operations confined beneath an open root directory, never following a link.
//!
//! Why: a destination folder can be changed by others while skynet writes to it. A path string
//! is resolved again by every system call, so a directory swapped for a symbolic link between
//! two calls (or a link planted in a parent, where only the last component was checked)
//! redirects the second call wherever the link points. Here a path is resolved once, relative
//! to an open directory, and no link is ever followed: `openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS` (one system call, Linux 5.6+), or where the kernel lacks it one
//! `openat(O_NOFOLLOW)` per component. The final create, rename or unlink then names a single
//! entry of that open directory. A link met on the way is an error for the caller
//! ([`in_the_way`]), never a way out; no directory handle is cached between operations, so a
//! directory moved out of the root is never written through either.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::relpath::RelPath;

/// Set once `openat2` turned out to be missing (kernel before 5.6, or a seccomp filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How a directory on the way is opened: never through a link, never left open on `exec`.
pub const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How many times an entry that keeps changing under us is retried before giving up.
const RACE_RETRIES: usize = 8;

/// True when `e` means something that is not a real directory (a link, a file) stands on the
/// way: the path does not exist as far as the destination's own tree is concerned.
pub fn in_the_way(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::LOOP.raw_os_error() || code == Errno::NOTDIR.raw_os_error()
    )
}

/// True when `e` says the path is not there: missing, or not a real directory on the way.
pub fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || in_the_way(e)
}

/// Opens the directory `rel` beneath `root`. Missing gives `NotFound`; a link or a file on the
/// way gives an error for which [`in_the_way`] is true.
pub fn open_dir(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        match rustix::fs::openat2(root, rel.as_bytes(), DIR, Mode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // Refused by a sandbox, or a concurrent rename the kernel would not vouch for:
            // the walk below gives the real answer.
            Err(Errno::PERM | Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    walk(root, rel)
}

/// [`open_dir`] without `openat2`: one `openat(O_NOFOLLOW)` per component.
pub fn walk(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<OwnedFd> {
    let mut dir: Option<OwnedFd> = None;
    for part in components(rel) {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        dir = Some(rustix::fs::openat(at, part, DIR, Mode::empty())?);
    }
    dir.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens the directory `rel` beneath `root`, creating what is missing. Whatever stands where a
/// directory goes (a file, a symbolic link) is removed, never followed: the destination
/// belongs to the mapping and a send replaces what is in its way, so the next send converges
/// instead of failing forever; the link's target is left untouched.
pub fn create_dirs(root: BorrowedFd<'_>, rel: &RelPath) -> io::Result<OwnedFd> {
    match open_dir(root, rel) {
        Ok(fd) => return Ok(fd),
        Err(e) if absent(&e) => {}
        Err(e) => return Err(e),
    }
    let mut dir: Option<OwnedFd> = None;
    for (depth, part) in components(rel).enumerate() {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        dir = Some(open_or_make(at, part, || prefix(rel, depth))?);
    }
    dir.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens directory `name` of `at`, making it or replacing a non-directory there.
fn open_or_make(
    at: BorrowedFd<'_>,
    name: &[u8],
    shown: impl Fn() -> String,
) -> io::Result<OwnedFd> {
    for _ in 0..RACE_RETRIES {
        match rustix::fs::openat(at, name, DIR, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(at, name, Mode::from_bits_truncate(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Errno::LOOP | Errno::NOTDIR) => {
                match rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        tracing::warn!(path = %shown(), "a symbolic link stood where the destination needs a directory: replaced it by a directory (its target was not touched)");
                    }
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        continue;
                    }
                    Ok(_) => {
                        tracing::debug!(path = %shown(), "replacing a file by a directory");
                    }
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(e.into()),
                }
                match rustix::fs::unlinkat(at, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "{}: kept changing while a directory was being made there; will try again",
        shown()
    )))
}

/// Removes entry `name` of `dir` whatever it is: a file or a link (the link itself), or a
/// whole directory tree, walked through handles so that no link inside it is followed.
/// Missing is success.
pub fn remove(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    for _ in 0..RACE_RETRIES {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            // Linux answers EISDIR for a directory (POSIX allows EPERM).
            Err(Errno::ISDIR | Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
        let sub = match rustix::fs::openat(dir, name, DIR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            // Replaced by a file or link since: unlink that on the next round.
            Err(Errno::LOOP | Errno::NOTDIR) => continue,
            Err(e) => return Err(e.into()),
        };
        for (entry, _) in entries(sub.as_fd())? {
            remove(sub.as_fd(), entry.as_bytes())?;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            // Something was added meanwhile, or it became a file: go round again.
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "kept changing while being removed; will try again",
    ))
}

/// Removes entry `name` of `dir` only if it is an empty directory: one `rmdir`, which the
/// kernel refuses for a directory that holds anything, for a file and for a link (never
/// followed). `Ok(true)` when nothing stands there any more (removed now, or missing);
/// `Ok(false)` when something is kept: a directory that is not empty, a file, a link, a
/// mount point, or a directory this process may not remove. Why no listing first: a file
/// created between the listing and the removal would be lost; `rmdir` decides atomically.
pub fn remove_empty_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(
            Errno::NOTEMPTY
            | Errno::EXIST
            | Errno::NOTDIR
            | Errno::BUSY
            | Errno::ACCESS
            | Errno::PERM
            | Errno::ROFS
            | Errno::INVAL,
        ) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The entries of directory `dir` (without `.` and `..`) with their own type (a link is a
/// link), taken from the listing where the filesystem gives it.
pub fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(CString, Option<FileType>)>> {
    let mut out = Vec::new();
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => kind(dir, name.to_bytes())?,
            known => Some(known),
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// The type of entry `name` of `dir`, without following a link; `None` when missing.
pub fn kind(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn components(rel: &RelPath) -> impl Iterator<Item = &[u8]> {
    rel.as_bytes().split(|b| *b == b'/')
}

/// The first `depth + 1` components of `rel`, for messages.
fn prefix(rel: &RelPath, depth: usize) -> String {
    let parts: Vec<&[u8]> = components(rel).take(depth + 1).collect();
    String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel;
    use std::os::unix::fs::symlink;

    fn root(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(dir, DIR, Mode::empty()).expect("open root")
    }

    #[test]
    fn a_link_on_the_way_is_never_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let (dest, outside) = (scratch.path().join("dest"), scratch.path().join("outside"));
        std::fs::create_dir_all(dest.join("real/deeper")).unwrap();
        std::fs::create_dir_all(outside.join("deeper")).unwrap();
        symlink(&outside, dest.join("link")).unwrap();
        symlink(dest.join("real"), dest.join("inner")).unwrap();
        std::fs::write(dest.join("file"), b"f").unwrap();
        let fd = root(&dest);
        for open in [open_dir, walk] {
            assert!(open(fd.as_fd(), &rel("real/deeper")).is_ok());
            for through in ["link", "link/deeper", "inner/deeper", "file/x"] {
                let e = open(fd.as_fd(), &rel(through)).expect_err(through);
                assert!(in_the_way(&e), "{through}: {e}");
            }
            let e = open(fd.as_fd(), &rel("missing/x")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
    }

    #[test]
    fn create_dirs_replaces_links_and_files_on_the_way() {
        let scratch = tempfile::tempdir().unwrap();
        let (dest, outside) = (scratch.path().join("dest"), scratch.path().join("outside"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(outside.join("b")).unwrap();
        symlink(&outside, dest.join("a")).unwrap();
        std::fs::write(dest.join("f"), b"f").unwrap();
        let fd = root(&dest);
        create_dirs(fd.as_fd(), &rel("a/b/c")).unwrap();
        create_dirs(fd.as_fd(), &rel("f/g")).unwrap();
        assert!(dest.join("a/b/c").symlink_metadata().unwrap().is_dir());
        assert!(dest.join("a").symlink_metadata().unwrap().is_dir());
        assert!(dest.join("f/g").is_dir());
        assert!(!outside.join("b/c").exists(), "created through the link");
    }

    #[test]
    fn remove_takes_links_not_their_targets() {
        let scratch = tempfile::tempdir().unwrap();
        let (dest, outside) = (scratch.path().join("dest"), scratch.path().join("outside"));
        std::fs::create_dir_all(dest.join("tree/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"p").unwrap();
        std::fs::write(dest.join("tree/sub/x"), b"x").unwrap();
        symlink(&outside, dest.join("tree/sub/link")).unwrap();
        symlink(&outside, dest.join("top-link")).unwrap();
        let fd = root(&dest);
        remove(fd.as_fd(), b"tree").unwrap();
        remove(fd.as_fd(), b"top-link").unwrap();
        remove(fd.as_fd(), b"never-was").unwrap();
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"p");
    }
}
