//! Rename cycles with the real binary and real inotify (issue 12): a swap through a temporary
//! name, a 3-cycle and a directory swap, made while `skynet run --complete-sync` mirrors the
//! folder, end with the destination equal to the source. Before the fix, the file swap left
//! only `a = AAA`: the queue merged the renames into `move a b` then `move b a`.
//!
//! The swapped files have one size, so nothing but the renames tells them apart.

mod common;
use common::*;

use std::time::Duration;

/// Mirrors `files` (all with one mtime, so that the catch-up and reconciling scans cannot tell
/// swapped files of one size apart) with a running daemon, applies `renames` in a burst, and
/// checks that the destination converges to the source and the daemon stops cleanly.
fn converges_after(files: &[(String, Vec<u8>)], renames: &[(String, String)]) {
    let s = Scratch::new();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for (path, content) in files {
        write(&s.src, path, content);
        std::fs::File::options()
            .write(true)
            .open(s.src.join(path))
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
    }
    let mut daemon = s.run(&[
        "--complete-sync",
        "--settle",
        "50ms",
        "--retry-delay",
        "100ms",
    ]);
    if let Err(e) = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20)) {
        panic!("initial mirror: {e}\nlog:\n{}", daemon.log_text());
    }
    // Let the watcher settle in: renames seen while it is still setting up its watches come
    // as plain sends, which would not exercise the queue's move merging.
    std::thread::sleep(Duration::from_secs(1));
    for (from, to) in renames {
        std::fs::rename(s.src.join(from), s.src.join(to)).expect("rename");
    }
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(20));
    let code = daemon.signal("INT");
    assert!(
        converged.is_ok(),
        "not converged after {renames:?}: {converged:?}\nlog:\n{}",
        daemon.log_text()
    );
    assert_eq!(code, Some(0), "clean exit on SIGINT");
    assert!(
        no_temp_files(&s.dst),
        "temporary files left in the destination"
    );
}

/// Files to create (path, content) and renames to make (from, to), relative to the source.
type Files = Vec<(String, Vec<u8>)>;
type Renames = Vec<(String, String)>;

/// `n` independent rotations of `len` names each (`r{i}/{j}`, one byte of content apart), each
/// through the temporary name `r{i}/t`: `mv 0 t; mv 1 0; …; mv t len-1`. Several in one burst,
/// so that the watcher files some of them together with their first rename still queued.
fn rotations(n: usize, len: usize, dirs: bool) -> (Files, Renames) {
    let mut files = Vec::new();
    let mut renames = Vec::new();
    for i in 0..n {
        for j in 0..len {
            let content = format!("{i}{j}").into_bytes();
            if dirs {
                files.push((format!("r{i}/{j}/x"), content.clone()));
                files.push((format!("r{i}/{j}/sub/y"), content));
            } else {
                files.push((format!("r{i}/{j}"), content));
            }
        }
        let name = |j: usize| format!("r{i}/{j}");
        renames.push((name(0), format!("r{i}/t")));
        for j in 1..len {
            renames.push((name(j), name(j - 1)));
        }
        renames.push((format!("r{i}/t"), name(len - 1)));
    }
    (files, renames)
}

#[test]
fn file_swap_converges() {
    let (files, renames) = rotations(8, 2, false);
    converges_after(&files, &renames);
}

#[test]
fn three_cycle_converges() {
    let (files, renames) = rotations(8, 3, false);
    converges_after(&files, &renames);
}

#[test]
fn directory_swap_converges() {
    let (files, renames) = rotations(8, 2, true);
    converges_after(&files, &renames);
}
