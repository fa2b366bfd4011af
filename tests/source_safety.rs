//! Only the source is read (invariant 10 of `docs/contract.md`): symlinks are never followed (not by the
//! watcher, not by the scan, not when a queued file was swapped for a link), special files are
//! never opened for a blocking read, and polling mirrors edits as well as creations.

mod common;
use common::*;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

const SECRET: &[u8] = b"-----BEGIN PRIVATE KEY----- not for the mirror";

/// A 0600 file outside the source, like a private key skynet's user can read.
fn secret(s: &Scratch) -> std::path::PathBuf {
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    let key = outside.join("id_key");
    std::fs::write(&key, SECRET).expect("write secret");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    key
}

/// True when some file under `root` holds `needle`.
fn holds_bytes(root: &Path, needle: &[u8]) -> bool {
    tree(root)
        .values()
        .any(|v| v.windows(needle.len()).any(|w| w == needle))
}

/// A directory symlink inside the source pointing outside: `run` neither uploads what is
/// written through it nor, with `--remove-source`, removes anything outside the source.
#[test]
fn symlinked_directory_is_not_watched_and_nothing_outside_is_removed() {
    let s = Scratch::new();
    let outside = s.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("before.txt"), b"there before the start").unwrap();
    symlink(&outside, s.src.join("linked")).unwrap();

    let mut daemon = s.run(&["--settle", "50ms", "--remove-source"]);
    // A first file through the source proves the watcher is up and hand-offs run.
    write(&s.src, "first.txt", b"first");
    assert!(
        wait_until(Duration::from_secs(20), || !s
            .src
            .join("first.txt")
            .exists()),
        "first.txt was not handed off: {}",
        daemon.log_text()
    );
    // Written outside, in the directory the link points to.
    std::fs::write(outside.join("outside.txt"), b"not part of the source").unwrap();
    std::fs::write(outside.join("before.txt"), b"changed outside").unwrap();
    // Then a file in the source: once it is handed off, anything queued before it was too.
    write(&s.src, "later.txt", b"later");
    assert!(
        wait_until(Duration::from_secs(20), || !s
            .src
            .join("later.txt")
            .exists()),
        "later.txt was not handed off: {}",
        daemon.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = daemon.log_text();
    assert_eq!(daemon.signal("TERM"), Some(0), "{log}");

    assert!(
        outside.join("outside.txt").exists(),
        "a file outside the source was removed: {log}"
    );
    assert_eq!(
        std::fs::read(outside.join("before.txt")).unwrap(),
        b"changed outside",
        "{log}"
    );
    let got = tree(&s.dst);
    let names: Vec<String> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(names, vec!["first.txt", "later.txt"], "{log}");
    assert_eq!(s.mapping()["skipped_links"], 1, "{log}");
}

/// A symlink to a secret is not sent (by `sync`'s scan or `run`'s watcher), and `status`
/// counts it, once per path.
#[test]
fn link_to_a_file_is_skipped_and_counted() {
    let s = Scratch::new();
    let key = secret(&s);
    symlink(&key, s.src.join("key")).unwrap();
    write(&s.src, "plain.txt", b"plain");

    let out = s.sync(&[]);
    assert_exit(&out, 0);
    assert!(!s.dst.join("key").exists(), "the link's target was sent");
    assert!(!holds_bytes(&s.dst, SECRET));
    assert_eq!(std::fs::read(s.dst.join("plain.txt")).unwrap(), b"plain");
    let st = s.mapping();
    assert_eq!(st["skipped_links"], 1, "{st}");

    // The same with the watcher: a link made while running, then touched.
    let mut daemon = s.run(&["--settle", "50ms"]);
    symlink(&key, s.src.join("key2")).unwrap();
    write(&s.src, "after.txt", b"after");
    assert!(wait_until(Duration::from_secs(20), || s
        .dst
        .join("after.txt")
        .exists()));
    assert!(
        wait_until(Duration::from_secs(20), || s.mapping()["skipped_links"]
            == 2),
        "{}",
        s.mapping()
    );
    let log = daemon.log_text();
    assert_eq!(daemon.signal("TERM"), Some(0), "{log}");
    assert!(!holds_bytes(&s.dst, SECRET), "{log}");
    // One notice per path (key from the scan, key2 from the watcher), not per event.
    assert_eq!(log.matches("symbolic link").count(), 2, "{log}");
}

/// A file queued by an event and replaced by a symlink to a secret before its settle time
/// ends: the destination never receives the secret.
#[test]
fn queued_file_replaced_by_a_link_is_not_sent() {
    let s = Scratch::new();
    let key = secret(&s);
    let mut daemon = s.run(&["--settle", "1s"]);
    write(&s.src, "ready.txt", b"ready");
    assert!(wait_until(Duration::from_secs(20), || s
        .dst
        .join("ready.txt")
        .exists()));
    write(&s.src, "doc.txt", b"an ordinary document");
    std::fs::remove_file(s.src.join("doc.txt")).unwrap();
    symlink(&key, s.src.join("doc.txt")).unwrap();
    let settled = wait_until(Duration::from_secs(20), || {
        let st = s.mapping();
        s.dst.join("doc.txt").exists()
            || (st["skipped_links"] == 1 && st["pending"] == 0 && st["in_flight"] == 0)
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = daemon.log_text();
    assert_eq!(daemon.signal("TERM"), Some(0), "{log}");
    assert!(settled, "neither sent nor skipped: {log}");
    assert!(
        !holds_bytes(&s.dst, SECRET),
        "the secret reached the destination: {log}"
    );
    assert!(!s.dst.join("doc.txt").exists(), "{log}");
    assert_eq!(s.mapping()["skipped_links"], 1, "{log}");
}

/// Files stat'ed for a batch of sends and replaced by FIFOs while the batch waits for its
/// bandwidth budget: no worker blocks on a FIFO, `sync` ends, the FIFOs are not sent.
#[test]
fn fifo_swapped_in_for_a_queued_file_does_not_block() {
    let s = Scratch::new();
    // One directory: every file goes into one batch, stat'ed up front. At 1000 bytes per
    // second, each 1000-byte file waits about a second for its turn.
    for i in 0..12 {
        write(&s.src, &format!("d/f{i:02}"), &[b'x'; 1000]);
    }
    let mut sync = s.spawn(&["sync", s.src_str(), s.dst_str(), "--bwlimit", "1000"]);
    assert!(
        wait_until(Duration::from_secs(30), || count_files(&s.dst) > 0),
        "nothing arrived: {}",
        sync.log_text()
    );
    let mut swapped = Vec::new();
    for i in 0..12 {
        let name = format!("d/f{i:02}");
        if !s.dst.join(&name).exists() {
            let p = s.src.join(&name);
            std::fs::remove_file(&p).unwrap();
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo on a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            swapped.push(name);
        }
    }
    assert!(swapped.len() > 5, "too few files left to swap: {swapped:?}");
    // Generous: a hung worker never ends; the harness kills it after this.
    let code = sync.wait_exit(Duration::from_secs(120));
    let log = sync.log_text();
    assert_eq!(
        code,
        Some(0),
        "sync did not end (blocked on a FIFO?): {log}"
    );
    for name in &swapped {
        assert!(!s.dst.join(name).exists(), "{name} sent: {log}");
    }
}

/// `--poll`: an edited file reaches the destination with its new content (not only
/// creations).
#[test]
fn poll_mode_mirrors_modifications() {
    let s = Scratch::new();
    let mut daemon = s.run(&["--poll", "--settle", "50ms"]);
    write(&s.src, "notes.txt", b"first version");
    let first = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    assert!(first.is_ok(), "{first:?}\n{}", daemon.log_text());
    // Same size, different bytes; then a longer one.
    std::fs::write(s.src.join("notes.txt"), b"other version").unwrap();
    let edited = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    assert!(edited.is_ok(), "{edited:?}\n{}", daemon.log_text());
    std::fs::write(s.src.join("notes.txt"), b"a third, longer version").unwrap();
    let longer = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    assert!(longer.is_ok(), "{longer:?}\n{}", daemon.log_text());
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}
