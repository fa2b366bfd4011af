//! Folders, end to end with the real binary (issue 14, item 7):
//!
//! - `--complete-sync` removes at the destination the folders the source no longer has, after
//!   their files: deleted or renamed while skynet was stopped (the catch-up scan), emptied
//!   while it watched and removed while it was stopped. Never a folder that still holds
//!   something the source does not have (the destination's own files), never one the source
//!   still has (even empty), never the destination root. On a local folder, over SFTP (a
//!   real sshd) and on S3 (s3s-fs, which stores keys as paths: no empty folder may be left
//!   in its data directory either).
//! - `--remove-source` removes the source folders its hand-offs emptied (rclone's
//!   `--delete-empty-src-dirs`), never the source root, never a folder it did not empty
//!   (one already empty, one still holding a file it did not deliver), and never turns that
//!   into a deletion at the destination.

mod common;
use common::remote::Backend;
use common::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(30);

/// The folders under `root`, as relative paths.
fn dirs(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(root).ok()?;
            Some(rel.to_string_lossy().into_owned())
        })
        .collect()
}

/// The files under `root`, as relative paths.
fn files(root: &Path) -> BTreeSet<String> {
    tree(root)
        .into_keys()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Where the destination's files are on this machine: the folder itself, the SFTP server's
/// remote folder, or s3s-fs's data directory for the bucket and prefix (objects as files).
fn on_disk(backend: &Backend) -> PathBuf {
    match backend {
        Backend::Local(dir) | Backend::Sftp { root: dir, .. } => dir.clone(),
        Backend::S3 {
            server,
            bucket,
            prefix,
            ..
        } => server.data_dir().join(bucket).join(prefix),
    }
}

/// Puts a file of the destination's own (not from the source) at `rel`.
fn put_foreign(backend: &Backend, rel: &str, content: &[u8]) {
    match backend {
        Backend::Local(dir) | Backend::Sftp { root: dir, .. } => write(dir, rel, content),
        Backend::S3 {
            bucket,
            prefix,
            rt,
            conn,
            ..
        } => {
            rt.block_on(
                conn.client()
                    .put_object()
                    .bucket(bucket)
                    .key(format!("{prefix}/{rel}"))
                    .body(content.to_vec().into())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {rel}: {e:?}"));
        }
    }
}

/// Asserts the folders and files at the destination, naming what differs.
fn expect_dest(backend: &Backend, want_dirs: &[&str], want_files: &[&str], when: &str) {
    let root = on_disk(backend);
    assert!(root.is_dir(), "{when}: the destination root was removed");
    let (got_dirs, got_files) = (dirs(&root), files(&root));
    assert_eq!(
        got_dirs,
        set(want_dirs),
        "{when}: folders at the destination (left behind: {:?})",
        got_dirs.difference(&set(want_dirs)).collect::<Vec<_>>()
    );
    assert_eq!(
        got_files,
        set(want_files),
        "{when}: files at the destination"
    );
}

/// The catch-up scan of `sync --complete-sync`: folders deleted, renamed, emptied and removed
/// while nothing watched go at the destination; a folder holding the destination's own file,
/// a folder the source still has (empty) and the root stay.
fn folders_the_source_lost_go(s: &Scratch, backend: Backend) {
    for (rel, content) in [
        ("gone/deep/f1", &b"one"[..]),
        ("gone/f2", b"two"),
        ("old/g", b"gee"),
        ("kept/h", b"aitch"),
        ("emptied/x/y", b"why"),
        ("top.txt", b"top"),
    ] {
        write(&s.src, rel, content);
    }
    let flags = ["--complete-sync", "--settle", "0", "--max-delete", "100%"];
    let out = backend.sync(s, &flags);
    assert_exit(&out, 0);
    put_foreign(&backend, "kept/foreign.txt", b"the destination's own");

    // While nothing watches: a folder deleted with its files, one renamed, one whose only
    // file goes (the folder holds the destination's own file), one emptied (the source keeps
    // the empty folder).
    std::fs::remove_dir_all(s.src.join("gone")).unwrap();
    std::fs::rename(s.src.join("old"), s.src.join("new")).unwrap();
    std::fs::remove_file(s.src.join("kept/h")).unwrap();
    std::fs::remove_file(s.src.join("emptied/x/y")).unwrap();
    let out = backend.sync(s, &flags);
    assert_exit(&out, 0);
    expect_dest(
        &backend,
        &["emptied", "emptied/x", "kept", "new"],
        &["kept/foreign.txt", "new/g", "top.txt"],
        "after a folder was deleted, one renamed, two emptied",
    );

    // The emptied folders go from the source too, while nothing watches.
    std::fs::remove_dir(s.src.join("emptied/x")).unwrap();
    std::fs::remove_dir(s.src.join("emptied")).unwrap();
    let out = backend.sync(s, &flags);
    assert_exit(&out, 0);
    expect_dest(
        &backend,
        &["kept", "new"],
        &["kept/foreign.txt", "new/g", "top.txt"],
        "after the emptied folders went",
    );

    // Everything goes, `kept` too: the root stays, and so does the folder holding the
    // destination's own file, though the source no longer has it.
    std::fs::remove_dir_all(s.src.join("new")).unwrap();
    std::fs::remove_file(s.src.join("top.txt")).unwrap();
    std::fs::remove_dir(s.src.join("kept")).unwrap();
    let out = backend.sync(s, &flags);
    assert_exit(&out, 0);
    expect_dest(
        &backend,
        &["kept"],
        &["kept/foreign.txt"],
        "after everything went",
    );
    assert!(s.src.is_dir(), "{}", stderr(&out));
}

#[test]
fn complete_sync_removes_folders_the_source_lost_local() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    folders_the_source_lost_go(&s, backend);
}

#[test]
fn complete_sync_removes_folders_the_source_lost_sftp() {
    let s = Scratch::new();
    folders_the_source_lost_go(&s, Backend::sftp("dirs"));
}

#[test]
fn complete_sync_removes_folders_the_source_lost_s3() {
    let s = Scratch::new();
    folders_the_source_lost_go(&s, Backend::s3("dirs", "mirror"));
}

/// `run --complete-sync`: live, a deleted and a renamed folder go (renamed remotely); a folder
/// emptied file by file stays while the source has it; removed while the daemon was stopped,
/// it goes at the next start.
fn live_then_restarted(s: &Scratch, backend: Backend) {
    let flags = ["--complete-sync", "--settle", "0"];
    let mut daemon = backend.spawn(s, "run", &flags);
    let dest = on_disk(&backend);
    write(&s.src, "a/b/f", b"f");
    write(&s.src, "c/g", b"g");
    write(&s.src, "e/x/h", b"h");
    write(&s.src, "e/k", b"k");
    if let Err(diff) = wait_converged(&s.src, &dest, true, CONVERGE) {
        panic!("creates: {diff}\n{}", daemon.log_text());
    }

    std::fs::remove_dir_all(s.src.join("a")).unwrap();
    std::fs::rename(s.src.join("c"), s.src.join("d")).unwrap();
    std::fs::remove_file(s.src.join("e/x/h")).unwrap();
    let live = wait_until(CONVERGE, || {
        dirs(&dest) == set(&["d", "e", "e/x"]) && files(&dest) == set(&["d/g", "e/k"])
    });
    assert!(
        live,
        "live: folders {:?}, files {:?}\n{}",
        dirs(&dest),
        files(&dest),
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());

    // Removed while stopped: the next start's catch-up finds the kept folder gone.
    std::fs::remove_dir(s.src.join("e/x")).unwrap();
    let mut daemon = backend.spawn(s, "run", &flags);
    let caught_up = wait_until(CONVERGE, || dirs(&dest) == set(&["d", "e"]));
    assert!(
        caught_up,
        "after a restart: folders at the destination {:?} (the source has {:?})\n{}",
        dirs(&dest),
        dirs(&s.src),
        daemon.log_text()
    );
    assert_eq!(files(&dest), set(&["d/g", "e/k"]));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

#[test]
fn run_removes_folders_live_and_after_a_restart_local() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    live_then_restarted(&s, backend);
}

#[test]
fn run_removes_folders_live_and_after_a_restart_sftp() {
    let s = Scratch::new();
    live_then_restarted(&s, Backend::sftp("live-dirs"));
}

/// `--remove-source` removes the folders its hand-offs emptied, up to the source root; a
/// folder that was empty before, and one still holding a file it did not deliver (excluded),
/// stay, with every folder above them. The destination keeps every delivered file.
fn hand_off_removes_emptied_folders(s: &Scratch, backend: Backend) {
    for (rel, content) in [
        ("day/a/x.mp4", &b"x"[..]),
        ("day/b/c/y.mp4", b"y"),
        ("day/busy/z.mp4", b"z"),
        ("day/busy/still.part", b"being written"),
        ("top.mp4", b"top"),
    ] {
        write(&s.src, rel, content);
    }
    std::fs::create_dir_all(s.src.join("day/was-empty")).unwrap();
    std::fs::create_dir_all(s.src.join("other/was-empty")).unwrap();
    let out = backend.sync(
        s,
        &["--remove-source", "--settle", "0", "--exclude", "*.part"],
    );
    assert_exit(&out, 0);
    assert!(s.src.is_dir(), "the source root was removed");
    assert_eq!(
        files(&s.src),
        set(&["day/busy/still.part"]),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        dirs(&s.src),
        set(&[
            "day",
            "day/busy",
            "day/was-empty",
            "other",
            "other/was-empty"
        ]),
        "source folders after the hand-off\n{}",
        stderr(&out)
    );
    let dest = on_disk(&backend);
    assert_eq!(
        files(&dest),
        set(&["day/a/x.mp4", "day/b/c/y.mp4", "day/busy/z.mp4", "top.mp4"]),
        "the destination keeps every delivered file"
    );
}

#[test]
fn remove_source_removes_the_folders_it_emptied_local() {
    let s = Scratch::new();
    let backend = Backend::local(&s);
    hand_off_removes_emptied_folders(&s, backend);
}

#[test]
fn remove_source_removes_the_folders_it_emptied_sftp() {
    let s = Scratch::new();
    hand_off_removes_emptied_folders(&s, Backend::sftp("handoff-dirs"));
}

/// A running hand-off with send-once (whose watcher files deletions, to forget them): the
/// folder the hand-off removes is seen going, and nothing is deleted at the destination.
#[test]
fn a_running_hand_off_removes_emptied_folders_and_deletes_nothing_remotely() {
    let s = Scratch::new();
    let mut daemon = s.run(&["--remove-source", "--send-once", "--settle", "0"]);
    write(&s.src, "batch/one/a.bin", b"a");
    write(&s.src, "batch/one/b.bin", b"b");
    write(&s.src, "batch/two/c.bin", b"c");
    let handed_off = wait_until(CONVERGE, || dirs(&s.src).is_empty());
    assert!(
        handed_off,
        "source folders left: {:?}, files {:?}\n{}",
        dirs(&s.src),
        files(&s.src),
        daemon.log_text()
    );
    let want = set(&["batch/one/a.bin", "batch/one/b.bin", "batch/two/c.bin"]);
    let settled = wait_until(CONVERGE, || {
        let m = &s.mapping();
        m["pending"] == 0 && m["in_flight"] == 0 && m["retrying"] == 0
    });
    assert!(settled, "{}", s.status());
    assert_eq!(files(&s.dst), want, "{}", daemon.log_text());
    assert_eq!(s.mapping()["failed"], 0);
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}
