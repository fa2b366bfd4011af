//! A hand-off (`--remove-source`) removes only the bytes it delivered, end to end with the
//! real binary: never a file a process still has open for writing, never a file rewritten
//! since its delivery (even with its mtime set back), and, with several mappings of one
//! source, never before every mapping that takes the file holds it; the removal is never
//! propagated as the user's deletion by a complete-sync sibling.

mod common;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use skynet_s3::testing::pseudo_random;

/// A quoted word for a command template (`--on-delivered`).
#[test]
fn remove_source_waits_until_no_process_has_the_file_open_for_writing() {
    let s = Scratch::new();
    let path = s.src.join("growing.log");
    // A writer that appends a first part, keeps the file open (pausing far longer than the
    // settle time), and appends the rest when told to.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3>>"$1"; printf 'first part;' >&3; read go; printf 'second part' >&3"#)
        .arg("sh")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the writer");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read(&path)
            .is_ok_and(|c| c == b"first part;")),
        "the writer never wrote"
    );
    let hook = script(s.dir.path(), "hook.sh", RECORD_ARGS);
    let template = format!("{} {{remote}}", quoted(&hook));
    let mut daemon = s.run(&[
        "--remove-source",
        "--settle",
        "0.2",
        "--on-delivered",
        &template,
    ]);
    let remote = s.dst.join("growing.log");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read(&remote)
            .is_ok_and(|c| c == b"first part;")),
        "the first part never arrived: {}",
        daemon.log_text()
    );
    // Delivered and verified: the hand-off now either removes the file (the bug) or sees the
    // writer and waits.
    let decided = wait_until(Duration::from_secs(15), || {
        !path.exists() || daemon.log_text().contains("open for writing")
    });
    assert!(
        path.exists(),
        "the local file was removed while a process still had it open for writing: {}",
        daemon.log_text()
    );
    assert!(decided, "no word of the writer: {}", daemon.log_text());
    // `status` says why the hand-off waits.
    let m = &s.mapping();
    let why = m["handoff_waits"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("open for writing by sh (pid"), "{m}");

    let mut stdin = writer.stdin.take().expect("writer stdin");
    stdin.write_all(b"go\n").expect("tell the writer");
    drop(stdin);
    assert!(writer.wait().expect("writer").success());
    // Closed: the whole file is delivered, and only then removed.
    let whole = b"first part;second part";
    assert!(
        wait_until(Duration::from_secs(20), || !path.exists()
            && std::fs::read(&remote).is_ok_and(|c| c == whole)),
        "local exists: {}, remote: {:?}; {}",
        path.exists(),
        std::fs::read(&remote).map(|c| String::from_utf8_lossy(&c).into_owned()),
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
    // Announced once, for the version removed: a waiting hand-off is not announced again
    // each time it looks.
    assert_eq!(calls(s.dir.path()).len(), 1, "{:?}", calls(s.dir.path()));
}

#[test]
fn sync_leaves_a_file_open_for_writing_for_a_later_run() {
    let s = Scratch::new();
    let path = s.src.join("open.log");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3>>"$1"; printf 'written' >&3; read go"#)
        .arg("sh")
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start the writer");
    assert!(wait_until(Duration::from_secs(10), || std::fs::read(&path)
        .is_ok_and(|c| c == b"written")));
    // `sync` delivers it, does not remove it while it is open, and does not wait for it.
    let out = s.sync(&["--remove-source", "--settle", "0"]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(path.exists(), "removed while open for writing: {stderr}");
    assert!(stderr.contains("open for writing"), "{stderr}");
    assert_eq!(std::fs::read(s.dst.join("open.log")).unwrap(), b"written");
    // Closed: the next sync finishes the hand-off.
    let mut stdin = writer.stdin.take().expect("writer stdin");
    stdin.write_all(b"go\n").expect("tell the writer");
    drop(stdin);
    assert!(writer.wait().expect("writer").success());
    let out = s.sync(&["--remove-source", "--settle", "0"]);
    assert_exit(&out, 0);
    assert!(!path.exists(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_same_size_rewrite_with_mtime_set_back_during_on_delivered_is_not_removed_unsent() {
    let s = Scratch::new();
    let path = s.src.join("f.txt");
    write(&s.src, "f.txt", b"version one");
    // The hook says it started, then waits until the test lets it finish.
    let hook = script(
        s.dir.path(),
        "hook.sh",
        r#"d="$(dirname "$0")"
touch "$d/hook-started"
while [ ! -e "$d/hook-go" ]; do sleep 0.05; done"#,
    );
    let template = format!("{} {{path}}", quoted(&hook));
    let mut daemon = s.run(&[
        "--remove-source",
        "--settle",
        "0.2",
        "--on-delivered",
        &template,
    ]);
    let started = s.dir.path().join("hook-started");
    assert!(
        wait_until(Duration::from_secs(15), || started.exists()),
        "the hook never ran: {}",
        daemon.log_text()
    );
    assert_eq!(std::fs::read(s.dst.join("f.txt")).unwrap(), b"version one");
    // While the hook runs: the same number of bytes, other content, mtime set back.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, b"version two").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    std::fs::write(s.dir.path().join("hook-go"), b"").unwrap();

    // The new bytes are not lost: they reach the destination before the local file goes.
    let remote = s.dst.join("f.txt");
    let ok = wait_until(Duration::from_secs(20), || {
        !path.exists() && std::fs::read(&remote).is_ok_and(|c| c == b"version two")
    });
    assert!(
        ok,
        "local: {:?}, remote: {:?}; {}",
        std::fs::read(&path).map(|c| String::from_utf8_lossy(&c).into_owned()),
        std::fs::read(&remote).map(|c| String::from_utf8_lossy(&c).into_owned()),
        daemon.log_text()
    );
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// Writes `n` files of 40 KB each into the source; returns the tree.
fn videos(s: &Scratch, n: usize) -> Tree {
    for i in 0..n {
        write(
            &s.src,
            &format!("videos/v{i:02}.mp4"),
            &pseudo_random(40_000, i as u64),
        );
    }
    tree(&s.src)
}

type Tree = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// A config with two mappings of the scratch source: `a` removes delivered files, `b` sends
/// only files at least 2 s old (so that `a` is always ahead) and has `b_options`.
fn two_mappings(s: &Scratch, b_options: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = (s.dir.path().join("dest-a"), s.dir.path().join("dest-b"));
    let cfg = s.dir.path().join("two.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"settle = "0"
[[mapping]]
source = {src:?}
destination = {a:?}
remove_source = true
[[mapping]]
source = {src:?}
destination = {b:?}
min_age = "2s"
{b_options}
"#,
            src = s.src_str(),
            a = a.to_str().unwrap(),
            b = b.to_str().unwrap(),
        ),
    )
    .unwrap();
    (cfg, a, b)
}

/// Runs the two mappings until the source is empty, checking all along that every file gone
/// from the source is already at `b`, byte for byte.
fn run_until_handed_off(s: &Scratch, cfg: &Path, b: &Path, want: &Tree) -> Daemon {
    let daemon = s.spawn(&["run", "--config", cfg.to_str().unwrap()]);
    let mut early = Vec::new();
    let done = wait_until(Duration::from_secs(60), || {
        let local = tree(&s.src);
        let at_b = tree(b);
        for (path, content) in want {
            if !local.contains_key(path) && at_b.get(path) != Some(content) {
                let name = String::from_utf8_lossy(path).into_owned();
                if !early.contains(&name) {
                    early.push(name);
                }
            }
        }
        local.is_empty()
    });
    assert!(
        early.is_empty(),
        "removed from the source before mapping b held them: {early:?}\n{}",
        daemon.log_text()
    );
    assert!(
        done,
        "the source was never emptied: {:?}\n{}",
        tree(&s.src).len(),
        daemon.log_text()
    );
    daemon
}

#[test]
fn a_hand_off_waits_for_a_complete_sync_sibling_which_keeps_every_file() {
    let s = Scratch::new();
    let want = videos(&s, 20);
    let (cfg, a, b) = two_mappings(&s, "complete_sync = true");
    let mut daemon = run_until_handed_off(&s, &cfg, &b, &want);
    // The folder the hand-offs emptied goes too; b sees it go and deletes nothing for it.
    assert!(
        wait_until(Duration::from_secs(20), || !s.src.join("videos").exists()),
        "the emptied folder was not removed: {}",
        daemon.log_text()
    );
    // Both queues drained: b's destination still holds every file (skynet's own removals are
    // not the user's deletions).
    assert!(
        wait_until(Duration::from_secs(20), || {
            s.status()["mappings"].as_array().is_some_and(|m| {
                m.iter()
                    .all(|m| m["pending"] == 0 && m["in_flight"] == 0 && m["retrying"] == 0)
            })
        }),
        "{}",
        s.status()
    );
    assert_eq!(tree(&a), want, "{}", diff(&want, &tree(&a)));
    assert_eq!(tree(&b), want, "{}", diff(&want, &tree(&b)));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());

    // A later catch-up of b (a restart, a sync) does not delete them either.
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            b.to_str().unwrap(),
            "--complete-sync",
            "--settle",
            "0",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(tree(&b), want, "{}", diff(&want, &tree(&b)));
    // A file the user creates and then deletes is still mirrored as deleted.
    write(&s.src, "videos/mine.txt", b"the user's");
    assert_exit(
        &s.cmd(&["sync", s.src_str(), b.to_str().unwrap(), "--complete-sync"])
            .output()
            .unwrap(),
        0,
    );
    assert!(b.join("videos/mine.txt").exists());
    std::fs::remove_file(s.src.join("videos/mine.txt")).unwrap();
    assert_exit(
        &s.cmd(&["sync", s.src_str(), b.to_str().unwrap(), "--complete-sync"])
            .output()
            .unwrap(),
        0,
    );
    assert!(!b.join("videos/mine.txt").exists());
    assert_eq!(tree(&b), want, "{}", diff(&want, &tree(&b)));
}

#[test]
fn a_hand_off_waits_for_a_sibling_so_it_receives_every_file() {
    let s = Scratch::new();
    let want = videos(&s, 20);
    let (cfg, a, b) = two_mappings(&s, "");
    let mut daemon = run_until_handed_off(&s, &cfg, &b, &want);
    assert_eq!(
        tree(&b).len(),
        20,
        "mapping b got {} of 20: {}",
        tree(&b).len(),
        diff(&want, &tree(&b))
    );
    assert_eq!(tree(&b), want);
    assert_eq!(tree(&a), want, "{}", diff(&want, &tree(&a)));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// `skynet sync SRC sftp://… EXTRA` against `server`, with its key and known_hosts.
fn sync_sftp(
    s: &Scratch,
    server: &skynet_sftp::testing::SshServer,
    root: &Path,
    extra: &[&str],
) -> std::process::Output {
    let url = format!(
        "sftp://{}@127.0.0.1:{}{}",
        server.user(),
        server.port(),
        root.display()
    );
    let key = server.client_key_path();
    let known = server.known_hosts_path();
    let mut args = vec![
        "sync",
        s.src_str(),
        &url,
        "--identity",
        key.to_str().unwrap(),
        "--known-hosts",
        known.to_str().unwrap(),
        "--settle",
        "0",
    ];
    args.extend_from_slice(extra);
    s.cmd(&args).output().expect("run skynet sync")
}

/// The files the SFTP server was asked to flush (`fsync@openssh.com`), from its log.
fn fsynced(server: &skynet_sftp::testing::SshServer) -> Vec<String> {
    server
        .sftp_log()
        .lines()
        .filter_map(|l| l.split_once("fsync \"").map(|(_, rest)| rest))
        .map(|rest| rest.trim_end_matches('"').to_string())
        .collect()
}

#[test]
fn sftp_hand_off_flushes_each_file_to_the_servers_disk_before_removing_it() {
    let server = skynet_sftp::testing::SshServer::start_logging_sftp(&[]);
    let root = server.remote_dir("d");
    let s = Scratch::new();
    let files = ["a.txt", "sub/b.bin", "sub/deeper/c"];
    for (i, f) in files.iter().enumerate() {
        write(&s.src, f, &pseudo_random(1000 + i, i as u64));
    }
    let want = tree(&s.src);
    // Without a hand-off, nothing is flushed: the cost is paid only when it protects the
    // only copy.
    assert_exit(&sync_sftp(&s, &server, &root, &[]), 0);
    assert!(
        server.sftp_log().contains("open \""),
        "the server logs no requests: {}",
        server.sftp_log()
    );
    assert_eq!(
        fsynced(&server),
        Vec::<String>::new(),
        "{}",
        server.sftp_log()
    );
    assert_eq!(tree(&root), want, "{}", diff(&want, &tree(&root)));
    // Only what is delivered with a hand-off is handed off: the edited file.
    write(&s.src, "a.txt", b"edited before the hand-off");
    let out = sync_sftp(&s, &server, &root, &["--remove-source"]);
    assert_exit(&out, 0);
    assert!(
        !s.src.join("a.txt").exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(root.join("a.txt")).unwrap(),
        b"edited before the hand-off"
    );
    // The file delivered in this run was flushed under its final name (the data before the
    // rename too, under its temporary name).
    let flushed = fsynced(&server);
    let final_name = root.join("a.txt").display().to_string();
    assert!(
        flushed.contains(&final_name),
        "{final_name} never flushed: {flushed:?}"
    );
    assert!(
        flushed.iter().any(|f| f.contains(".skynet-tmp.")),
        "no temporary file flushed: {flushed:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("fsync@openssh.com"), "{stderr}");
}

#[test]
fn sftp_server_without_fsync_is_warned_about_once() {
    let server = skynet_sftp::testing::SshServer::start_logging_sftp(&["fsync"]);
    let root = server.remote_dir("d");
    let s = Scratch::new();
    for i in 0..3 {
        write(&s.src, &format!("f{i}"), format!("file {i}").as_bytes());
    }
    let out = sync_sftp(&s, &server, &root, &["--remove-source"]);
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fsync@openssh.com"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning expected: {stderr}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("--verify-read-back"),
        "{stderr}"
    );
    assert_eq!(tree(&root).len(), 3, "{stderr}");
    // With read-back verification, the server's missing fsync is noted, not warned about.
    write(&s.src, "g", b"another");
    let out = sync_sftp(
        &s,
        &server,
        &root,
        &["--remove-source", "--verify-read-back"],
    );
    assert_exit(&out, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("fsync")),
        "{stderr}"
    );
}

#[test]
fn killed_at_any_moment_a_hand_off_never_leaves_a_file_in_neither_place() {
    let s = Scratch::new();
    let want = videos(&s, 40);
    let (cfg, a, b) = two_mappings(&s, "complete_sync = true");
    let mut rng = Rng::new(seed(11));
    let check = |round: &str| {
        let (local, at_a, at_b) = (tree(&s.src), tree(&a), tree(&b));
        for (path, content) in &want {
            if !local.contains_key(path) {
                let name = String::from_utf8_lossy(path);
                assert_eq!(at_a.get(path), Some(content), "{round}: {name} lost at a");
                assert_eq!(at_b.get(path), Some(content), "{round}: {name} lost at b");
            }
        }
    };
    let mut round = 0;
    kill_repeatedly(12, &mut rng, || {
        check(&format!("before start {round}"));
        round += 1;
        s.spawn(&["run", "--config", cfg.to_str().unwrap()])
    });
    check("after the last kill");
    let mut daemon = run_until_handed_off(&s, &cfg, &b, &want);
    assert!(
        wait_until(Duration::from_secs(20), || {
            s.status()["mappings"].as_array().is_some_and(|m| {
                // Running: the stop below must find the daemon started, not starting.
                m.iter().all(|m| {
                    m["running"] == true
                        && m["pending"] == 0
                        && m["in_flight"] == 0
                        && m["retrying"] == 0
                })
            })
        }),
        "{}",
        s.status()
    );
    assert_eq!(tree(&a), want, "{}", diff(&want, &tree(&a)));
    assert_eq!(tree(&b), want, "{}", diff(&want, &tree(&b)));
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}
