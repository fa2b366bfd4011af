//! Local faults, with a local-folder destination: files that vanish or cannot be read, a file
//! that keeps growing, and a state database that is deleted or becomes read-only under a
//! running `skynet run`. (The inotify limit is in `inotify_limit.rs`, alone in its binary.)

mod common;
use common::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Watcher path: files queued by events (not yet sent: the settle time holds them) and
/// deleted before the handler reads them end as nothing at all, not as failures.
#[test]
fn files_deleted_after_being_queued_are_dropped() {
    let s = Scratch::new();
    // A settle time long enough that a loaded machine still sees the sends queued (status
    // is polled through a process) before they become due.
    let mut daemon = s.run(&["--settle", "3s"]);
    assert!(
        wait_until(Duration::from_secs(10), || s.mapping()["running"] == true),
        "{}",
        daemon.log_text()
    );
    for i in 0..40 {
        write(&s.src, &format!("q/f{i:02}"), b"queued");
    }
    let queued = wait_until(Duration::from_secs(5), || {
        s.mapping()["pending"].as_u64().unwrap_or(0) >= 40
    });
    assert!(queued, "never saw 40 queued sends: {}", daemon.log_text());
    for i in (0..40).step_by(2) {
        std::fs::remove_file(s.src.join(format!("q/f{i:02}"))).unwrap();
    }
    // Without --complete-sync nothing would remove a copy: an exact match proves the deleted
    // files were never sent.
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(15));
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    assert!(wait_until(Duration::from_secs(5), || s.mapping()
        ["pending"]
        == 0));
    let m = s.mapping();
    assert_eq!(m["failed"], 0, "{m}");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// Scan path: a sync of 3,000 files while a third of them are deleted: the ones gone before
/// being read are dropped, the sync exits 0 with nothing parked, the rest arrives intact.
#[test]
fn files_deleted_during_a_sync_are_dropped_not_parked() {
    let s = Scratch::new();
    populate(&s.src, 3000);
    let original = tree(&s.src);
    let mut sync = s.spawn(&["sync", s.src_str(), s.dst_str(), "--workers", "2"]);
    assert!(
        wait_until(Duration::from_secs(20), || count_files(&s.dst) >= 100),
        "no progress: {}",
        sync.log_text()
    );
    let mut deleted = Vec::new();
    for (i, rel) in original.keys().enumerate() {
        if i % 3 == 0 {
            let rel = String::from_utf8(rel.clone()).unwrap();
            std::fs::remove_file(s.src.join(&rel)).unwrap();
            deleted.push(rel);
        }
    }
    let code = sync.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", sync.log_text());
    let never_sent = deleted.iter().filter(|r| !s.dst.join(r).exists()).count();
    assert!(
        never_sent > 0,
        "every deleted file had already been sent; the test proves nothing"
    );
    let (src, dst) = (tree(&s.src), tree(&s.dst));
    for (k, v) in &src {
        assert_eq!(dst.get(k), Some(v), "{}", String::from_utf8_lossy(k));
    }
    for (k, v) in &dst {
        assert_eq!(original.get(k), Some(v), "{}", String::from_utf8_lossy(k));
    }
    assert!(no_temp_files(&s.dst));
    let m = s.mapping();
    assert_eq!(
        (m["pending"].as_u64(), m["failed"].as_u64()),
        (Some(0), Some(0)),
        "{m}"
    );
    eprintln!(
        "{never_sent} of {} deleted files were never sent",
        deleted.len()
    );
}

/// A file the daemon's user cannot read (mode 000; skynet runs as an unprivileged account,
/// since root reads anything) is retried, then parked as failed with a reason naming it; the
/// other files arrive and `sync` exits 1.
#[test]
fn unreadable_file_is_parked_and_named_while_the_others_arrive() {
    let s = Scratch::for_user("skynet-faults");
    let (uid, gid) = s.user.unwrap();
    write(&s.src, "ok/a.txt", b"a");
    write(&s.src, "b.txt", b"b");
    write(&s.src, "secret/locked.txt", b"nobody may read this");
    for entry in walkdir::WalkDir::new(&s.src) {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
    }
    let locked = s.src.join("secret/locked.txt");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // The read must genuinely fail for that account, or the test proves nothing.
    use std::os::unix::process::CommandExt;
    let probe = Command::new("cat")
        .arg(&locked)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(!probe.status.success(), "the account can read a 000 file");

    let out = s.sync(&["--max-attempts", "2", "--retry-delay", "50ms"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(s.dst.join("ok/a.txt")).unwrap(), b"a");
    assert_eq!(std::fs::read(s.dst.join("b.txt")).unwrap(), b"b");
    assert!(!s.dst.join("secret/locked.txt").exists());
    let m = s.mapping();
    assert_eq!(m["failed"], 1, "{m}");
    assert_eq!(m["pending"], 0, "{m}");
    let failures = m["failures"].as_array().cloned().unwrap_or_default();
    assert_eq!(failures.len(), 1, "{m}");
    assert_eq!(failures[0]["path"], "secret/locked.txt", "{m}");
    let reason = failures[0]["last_error"].as_str().unwrap_or("");
    assert!(
        reason.contains("locked.txt") && reason.to_lowercase().contains("permission"),
        "the reason should name the file and say why: {m}"
    );
}

/// A file appended to every 100 ms for 3 s (longer than the 500 ms settle time) is sent only
/// once it stops changing: a thread sampling the destination never sees a partial version.
#[test]
fn growing_file_is_sent_only_once_complete() {
    const CHUNK: usize = 8192;
    const APPENDS: usize = 30;
    let s = Scratch::new();
    let mut daemon = s.run(&["--settle", "500ms"]);
    assert!(
        wait_until(Duration::from_secs(10), || s.mapping()["running"] == true),
        "{}",
        daemon.log_text()
    );
    let target = s.dst.join("grow.bin");
    let seen: Arc<Mutex<BTreeSet<Vec<u8>>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (seen, done, target) = (Arc::clone(&seen), Arc::clone(&done), target.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&target) {
                    seen.lock().unwrap().insert(bytes);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let path = s.src.join("grow.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut steady_arrived_while_growing = false;
    for i in 0..APPENDS {
        use std::io::Write;
        file.write_all(&vec![(i % 251) as u8; CHUNK]).unwrap();
        file.flush().unwrap();
        if i == 2 {
            // Another file, written once, is sent meanwhile: the daemon is not stalled.
            write(&s.src, "steady.txt", b"steady");
        }
        std::thread::sleep(Duration::from_millis(100));
        steady_arrived_while_growing |= s.dst.join("steady.txt").exists();
    }
    drop(file);
    let want = std::fs::read(&path).unwrap();
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    assert!(
        steady_arrived_while_growing,
        "steady.txt did not arrive while grow.bin was growing: {}",
        daemon.log_text()
    );
    let seen = seen.lock().unwrap();
    let partial: Vec<usize> = seen.iter().filter(|v| **v != want).map(Vec::len).collect();
    assert!(
        partial.is_empty(),
        "partial versions visible at the destination (sizes {partial:?} of {})",
        want.len()
    );
    assert!(!seen.is_empty(), "the sampler never saw the file");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// The mapping's database file under the state dir.
fn database(state: &Path) -> PathBuf {
    walkdir::WalkDir::new(state)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name() == "queue.sqlite")
        .map(|e| e.into_path())
        .expect("a state database")
}

/// Exactly one line of stderr saying `needle` (case-insensitive), and no panic.
fn one_line_saying(log: &str, needle: &str) -> String {
    assert!(!log.contains("panicked"), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("skynet:") && l.contains("error"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line expected: {log}");
    assert!(
        lines[0].to_lowercase().contains(needle),
        "the error line should say {needle:?}: {log}"
    );
    lines[0].to_string()
}

/// The state database deleted under a running daemon: it stops with one line saying so
/// (it would otherwise go on recording into a file nobody can see), and a restart rebuilds
/// the state from a catch-up scan with nothing lost.
#[test]
fn state_database_deleted_while_running() {
    let s = Scratch::new();
    let mut daemon = s.run(&["--settle", "50ms"]);
    write(&s.src, "a.txt", b"before");
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(10));
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    let db = database(&s.state);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    write(&s.src, "b.txt", b"after the deletion");
    let code = daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.log_text();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the daemon went on without its database (exit {code:?}): {log}"
    );
    let line = one_line_saying(&log, "state database");
    eprintln!("{line}");

    write(&s.src, "c.txt", b"while stopped");
    let mut daemon = s.run(&["--settle", "50ms"]);
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(15));
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// A tmpfs mounted at a path for the test's duration (unmounted on drop): a state dir that
/// can really be made read-only, even for root.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "skynet-test"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the test needs root with CAP_SYS_ADMIN): {}",
            stderr(&out)
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, read_only: bool) {
        let opt = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let out = Command::new("mount")
            .args(["-o", opt])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount -o {opt}: {}", stderr(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A read-only state directory (a tmpfs remounted read-only: read-only even for root):
/// `sync` and `run` exit 2 at once with one line, nothing sent, no retry loop; once it is
/// writable again, a run converges with nothing lost. (Remounting read-only under a running
/// daemon is refused by the kernel while SQLite holds the files open for writing; a state
/// lost under a running daemon is `state_database_deleted_while_running`.)
#[test]
fn state_dir_read_only() {
    let s = Scratch::new();
    let mount = Tmpfs::mount(&s.state);
    write(&s.src, "a.txt", b"first");
    let out = s.sync(&[]);
    assert_synced(&s, &out);

    mount.remount(true);
    write(&s.src, "b.txt", b"while read-only");
    for sub in ["sync", "run"] {
        let started = Instant::now();
        let mut daemon = s.spawn(&[sub, s.src_str(), s.dst_str(), "--settle", "50ms"]);
        let code = daemon.wait_exit(Duration::from_secs(10));
        let log = daemon.log_text();
        assert_eq!(code, Some(2), "{sub}: {log}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let line = one_line_saying(&log, "read-only");
        assert!(line.contains("state"), "{line}");
        assert_eq!(log.lines().count(), 1, "{sub}: {log}");
    }
    assert!(!s.dst.join("b.txt").exists());

    mount.remount(false);
    let mut daemon = s.run(&["--settle", "50ms"]);
    let converged = wait_converged(&s.src, &s.dst, true, Duration::from_secs(15));
    assert!(converged.is_ok(), "{converged:?}\n{}", daemon.log_text());
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}
