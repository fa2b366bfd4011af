//! Opening source files safely, and the blocking adapter.

use std::path::Path;

use super::*;
use crate::error::ErrorKind;
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
