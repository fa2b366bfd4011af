//! End-to-end tests of the real `skynet` binary against a real OpenSSH sshd on 127.0.0.1
//! (harness `skynet_sftp::testing::SshServer`). The remote root is a local folder here, so the
//! destination is compared with the source directly, byte for byte.

mod common;
use common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skynet_sftp::testing::SshServer;

const CONVERGE: Duration = Duration::from_secs(20);

fn url(server: &SshServer, root: &Path) -> String {
    format!(
        "sftp://{}@127.0.0.1:{}{}",
        server.user(),
        server.port(),
        root.display()
    )
}

/// `--identity` and `--known-hosts` of the server's client key and known_hosts.
fn auth_args(server: &SshServer) -> Vec<String> {
    vec![
        "--identity".into(),
        server.client_key_path().display().to_string(),
        "--known-hosts".into(),
        server.known_hosts_path().display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

/// The one line of stderr that reports the fatal error; fails unless there is exactly one.
fn single_error_line(out: &Output) -> String {
    let text = stderr(out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected: {text}");
    errors[0].to_string()
}

fn converged(src: &Path, dst: &Path, exact: bool, what: &str, daemon: &Daemon) {
    if let Err(diff) = wait_converged(src, dst, exact, CONVERGE) {
        panic!("{what}: not converged: {diff}\nlog:\n{}", daemon.log_text());
    }
}

/// Creates, edits, renames (done remotely as renames: the remote inode survives) and
/// deletions, mirrored live with complete-sync.
#[test]
fn live_mirror_with_complete_sync() {
    let server = SshServer::start();
    let remote = server.remote_dir("live");
    let s = Scratch::new();
    let dest = url(&server, &remote);
    let mut args = vec![
        "run".to_string(),
        s.src_str().into(),
        dest,
        "--settle".into(),
        "100ms".into(),
        "--complete-sync".into(),
    ];
    args.extend(auth_args(&server));
    let mut daemon = s.spawn(&strs(&args));

    // Creates, nested directories, a name with a space, an empty file, a larger file.
    write(&s.src, "a.txt", b"alpha");
    write(&s.src, "d/b.txt", b"beta");
    write(&s.src, "d/e/big.bin", &vec![7u8; 300_000]);
    write(&s.src, "space dir/empty", b"");
    converged(&s.src, &remote, true, "creates", &daemon);

    // Edits: rewrite, append, truncate.
    write(&s.src, "a.txt", b"alpha, edited");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.src.join("d/b.txt"))
            .unwrap();
        f.write_all(b" and more").unwrap();
    }
    std::fs::write(s.src.join("space dir/empty"), b"now full").unwrap();
    converged(&s.src, &remote, true, "edits", &daemon);

    // File rename across directories: the remote file keeps its inode (a rename, no upload).
    let before = inode(&remote.join("a.txt"));
    std::fs::rename(s.src.join("a.txt"), s.src.join("d/e/a-moved.txt")).unwrap();
    converged(&s.src, &remote, true, "file rename", &daemon);
    assert_eq!(
        inode(&remote.join("d/e/a-moved.txt")),
        before,
        "file rename was re-uploaded instead of renamed"
    );

    // Directory rename: the big file under it keeps its inode, and so does the directory.
    let big_before = inode(&remote.join("d/e/big.bin"));
    let dir_before = inode(&remote.join("d"));
    std::fs::rename(s.src.join("d"), s.src.join("renamed")).unwrap();
    converged(&s.src, &remote, true, "directory rename", &daemon);
    assert_eq!(inode(&remote.join("renamed/e/big.bin")), big_before);
    assert_eq!(inode(&remote.join("renamed")), dir_before);
    assert!(!remote.join("d").exists(), "old directory left behind");

    // Deletions: a file and a whole directory.
    std::fs::remove_file(s.src.join("renamed/b.txt")).unwrap();
    std::fs::remove_dir_all(s.src.join("space dir")).unwrap();
    converged(&s.src, &remote, true, "deletions", &daemon);
    assert!(
        wait_until(Duration::from_secs(5), || !remote
            .join("space dir")
            .exists()),
        "deleted directory still on the server"
    );
    assert!(no_temp_files(&remote));

    // The daemon publishes its state once a second.
    let mut status = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(5), || {
        status = s.status();
        let m = &status["mappings"][0];
        m["connected"] == true && m["pending"] == 0 && m["bytes_sent"].as_u64() > Some(300_000)
    });
    assert!(ok, "status: {status}");
    assert_eq!(status["mappings"][0]["failed"], 0, "status: {status}");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// Without --complete-sync, local deletions leave the remote copies in place.
#[test]
fn live_mirror_without_complete_sync_keeps_deleted_files() {
    let server = SshServer::start();
    let remote = server.remote_dir("keep");
    let s = Scratch::new();
    let mut args = vec![
        "run".to_string(),
        s.src_str().into(),
        url(&server, &remote),
        "--settle".into(),
        "100ms".into(),
    ];
    args.extend(auth_args(&server));
    let mut daemon = s.spawn(&strs(&args));

    write(&s.src, "keep/one.txt", b"one");
    write(&s.src, "two.txt", b"two");
    converged(&s.src, &remote, true, "creates", &daemon);

    std::fs::remove_file(s.src.join("two.txt")).unwrap();
    std::fs::remove_dir_all(s.src.join("keep")).unwrap();
    // A later change proves the deletions were processed before we look.
    write(&s.src, "three.txt", b"three");
    converged(&s.src, &remote, false, "after deletions", &daemon);
    assert!(wait_until(Duration::from_secs(5), || s.status()
        ["mappings"][0]["pending"]
        == 0));
    assert_eq!(std::fs::read(remote.join("two.txt")).unwrap(), b"two");
    assert_eq!(std::fs::read(remote.join("keep/one.txt")).unwrap(), b"one");
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// sshd killed in the middle of a 2,000-file sync and restarted on the same port and host
/// key: everything arrives once, no temporary file remains.
#[test]
fn server_killed_mid_sync_then_restarted() {
    const FILES: usize = 2000;
    const WORKERS: usize = 4;
    let mut server = SshServer::start();
    let remote = server.remote_dir("outage");
    let s = Scratch::new();
    for i in 0..FILES {
        let body: Vec<u8> = (0..4096).map(|j| ((i * 7 + j) % 251) as u8).collect();
        write(&s.src, &format!("d{}/f{i:04}.bin", i % 20), &body);
    }
    let mut args = vec![
        "sync".to_string(),
        s.src_str().into(),
        url(&server, &remote),
        "--reconnect-max".into(),
        "1s".into(),
        "--workers".into(),
        WORKERS.to_string(),
    ];
    args.extend(auth_args(&server));
    let mut sync = s.spawn(&strs(&args));

    // Let part of it through, then cut the server.
    let count = |root: &Path| {
        tree(root)
            .keys()
            .filter(|k| {
                !k.rsplit(|b| *b == b'/')
                    .next()
                    .unwrap()
                    .starts_with(b".skynet-tmp.")
            })
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || count(&remote) >= FILES / 5),
        "no progress before the outage: {}",
        sync.log_text()
    );
    server.stop();
    assert!(
        sync.is_running(),
        "sync finished before the outage; the test proves nothing"
    );
    let arrived_before: Vec<(Vec<u8>, u64)> = tree(&remote)
        .keys()
        .filter(|k| {
            !k.rsplit(|b| *b == b'/')
                .next()
                .unwrap()
                .starts_with(b".skynet-tmp.")
        })
        .map(|k| {
            let p = remote.join(std::str::from_utf8(k).unwrap());
            (k.clone(), inode(&p))
        })
        .collect();
    assert!(
        arrived_before.len() < FILES,
        "everything arrived before the outage"
    );
    // Down long enough for at least one failed reconnection.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        sync.is_running(),
        "sync gave up during the outage: {}",
        sync.log_text()
    );
    server.restart();

    let code = sync.wait_exit(Duration::from_secs(40));
    assert_eq!(code, Some(0), "sync after the outage: {}", sync.log_text());
    let want = tree(&s.src);
    let got = tree(&remote);
    assert!(want == got, "not converged: {}", diff(&want, &got));
    assert!(no_temp_files(&remote), "temporary files left on the server");

    // Files complete before the outage were not uploaded again: same inode. Only the ones
    // renamed into place but not yet acknowledged when the link died may be redone.
    let resent: Vec<String> = arrived_before
        .iter()
        .filter(|(k, ino)| inode(&remote.join(std::str::from_utf8(k).unwrap())) != *ino)
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    eprintln!(
        "{} files before the outage, {} sent again",
        arrived_before.len(),
        resent.len()
    );
    assert!(
        resent.len() <= WORKERS,
        "{} of {} files sent again after reconnecting: {:?}",
        resent.len(),
        arrived_before.len(),
        &resent[..resent.len().min(10)]
    );
    assert!(
        sync.log_text().contains("connection lost") || sync.log_text().contains("reconnect"),
        "the outage was not noticed: {}",
        sync.log_text()
    );
}

/// Unknown host keys are refused by default with the key's fingerprint; accept-new records
/// them; a changed key is refused under both policies.
#[test]
fn host_key_policies() {
    let mut server = SshServer::start();
    let remote = server.remote_dir("hk");
    let s = Scratch::new();
    write(&s.src, "f.txt", b"hello");
    let known = s.dir.path().join("known_hosts");
    std::fs::write(&known, b"").unwrap();
    let dest = url(&server, &remote);
    let key = server.client_key_path().display().to_string();
    let known_s = known.display().to_string();
    let base = [
        "--identity",
        key.as_str(),
        "--known-hosts",
        known_s.as_str(),
    ];

    // Unknown key, default (strict) policy.
    let out = s.sync_to(&dest, &base);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = single_error_line(&out);
    assert!(line.contains("SHA256:"), "fingerprint expected: {line}");
    assert!(tree(&remote).is_empty(), "sent despite an unknown host key");
    assert_eq!(
        std::fs::read(&known).unwrap(),
        b"",
        "strict policy wrote known_hosts"
    );

    // accept-new: recorded and synced.
    let mut accept = base.to_vec();
    accept.extend(["--host-key-policy", "accept-new"]);
    let out = s.sync_to(&dest, &accept);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(remote.join("f.txt")).unwrap(), b"hello");
    let host_key = server.host_public_key();
    let key_b64 = host_key.split_whitespace().nth(1).unwrap();
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(key_b64),
        "host key not recorded: {recorded}"
    );

    // Now known: the default policy accepts it.
    write(&s.src, "g.txt", b"second");
    let out = s.sync_to(&dest, &base);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(remote.join("g.txt")).unwrap(), b"second");

    // Changed key: refused under both policies, nothing sent, known_hosts untouched.
    server.replace_host_key();
    write(&s.src, "h.txt", b"third");
    for args in [&base[..], &accept[..]] {
        let out = s.sync_to(&dest, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let line = single_error_line(&out);
        assert!(line.contains("SHA256:"), "fingerprint expected: {line}");
        assert!(
            line.to_lowercase().contains("changed") || line.to_lowercase().contains("mismatch"),
            "should say the key changed: {line}"
        );
        assert!(!remote.join("h.txt").exists(), "sent to a changed host key");
        assert_eq!(std::fs::read_to_string(&known).unwrap(), recorded);
    }
}

/// A key the server does not accept: `sync` exits 2 with one line; `run` keeps retrying and
/// shows the problem in `status`.
#[test]
fn wrong_key() {
    let server = SshServer::start();
    let remote = server.remote_dir("wk");
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let other = s.dir.path().join("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let other_s = other.display().to_string();
    let known = server.known_hosts_path().display().to_string();
    let dest = url(&server, &remote);
    let args = [
        "--identity",
        other_s.as_str(),
        "--known-hosts",
        known.as_str(),
    ];

    let started = Instant::now();
    let out = s.sync_to(&dest, &args);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = single_error_line(&out);
    assert!(
        line.to_lowercase().contains("auth"),
        "should name authentication: {line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "sync took too long to give up"
    );
    assert!(tree(&remote).is_empty());

    let mut run_args = vec!["run", s.src_str(), dest.as_str(), "--reconnect-max", "1s"];
    run_args.extend(args);
    let mut daemon = s.spawn(&run_args);
    let mut last = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(15), || {
        last = s.status();
        let m = &last["mappings"][0];
        m["running"] == true
            && m["connected"] == false
            && m["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("auth"))
    });
    assert!(seen, "status: {last}\nlog:\n{}", daemon.log_text());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(daemon.is_running(), "run gave up: {}", daemon.log_text());
    let m = &s.mapping();
    assert_eq!(m["connected"], false);
    assert!(m["pending"].as_u64().unwrap_or(0) >= 1, "status: {m}");
    assert!(tree(&remote).is_empty());
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// A remote directory the login user cannot write: those files are parked as failed,
/// the others arrive, `sync` exits 1.
#[test]
fn unwritable_remote_directory() {
    let server = SshServer::start_as("skynet-e2e");
    let remote = server.remote_dir("perm");
    let locked = remote.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let owner = std::fs::metadata(&remote).unwrap();
    std::os::unix::fs::chown(&locked, Some(owner.uid()), Some(owner.gid())).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();

    let s = Scratch::new();
    write(&s.src, "locked/x.txt", b"x");
    write(&s.src, "locked/y.txt", b"y");
    write(&s.src, "ok/a.txt", b"a");
    write(&s.src, "b.txt", b"b");
    let mut args = auth_args(&server);
    args.extend(["--max-attempts".into(), "1".into()]);
    let out = s.sync_to(&url(&server, &remote), &strs(&args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(remote.join("ok/a.txt")).unwrap(), b"a");
    assert_eq!(std::fs::read(remote.join("b.txt")).unwrap(), b"b");
    assert_eq!(std::fs::read_dir(&locked).unwrap().count(), 0);

    let list = s
        .cmd(&["queue", "list", "--json"])
        .output()
        .expect("queue list");
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let actions = list["mappings"][0]["actions"].as_array().unwrap().clone();
    let mut failed: Vec<String> = actions
        .iter()
        .filter(|a| a["state"] == "failed")
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect();
    failed.sort();
    assert_eq!(failed, ["locked/x.txt", "locked/y.txt"], "queue: {list}");
    for a in &actions {
        let err = a["last_error"].as_str().unwrap_or("").to_lowercase();
        assert!(err.contains("permission"), "error should say why: {a}");
    }

    let status = s.status();
    let m = &status["mappings"][0];
    assert_eq!(m["failed"], 2, "status: {status}");
    assert_eq!(
        m["failures"].as_array().map(Vec::len),
        Some(2),
        "status: {status}"
    );
}

/// The password from SKYNET_SFTP_PASSWORD never shows in logs (even -vv) or status.
#[test]
fn password_never_logged() {
    const SECRET: &str = "s3cret-Pa55-do-not-print";
    let server = SshServer::start();
    let remote = server.remote_dir("secret");
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let dest = url(&server, &remote);
    let known = server.known_hosts_path().display().to_string();

    // A key the server refuses, so the password is tried too (and refused).
    let other = s.dir.path().join("other_key");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap()
        .success());
    let other_s = other.display().to_string();
    let out = s
        .cmd(&[
            "-vv",
            "sync",
            s.src_str(),
            &dest,
            "--identity",
            &other_s,
            "--known-hosts",
            &known,
        ])
        .env("SKYNET_SFTP_PASSWORD", SECRET)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        all.contains("password"),
        "password auth not attempted: {all}"
    );
    assert!(!all.contains(SECRET), "secret leaked:\n{all}");

    // A good key with the password also set: a working run, at trace level.
    let key = server.client_key_path().display().to_string();
    let mut daemon = s.spawn_with_env(
        &[
            "-vv",
            "run",
            s.src_str(),
            &dest,
            "--identity",
            &key,
            "--known-hosts",
            &known,
            "--settle",
            "0",
        ],
        &[("SKYNET_SFTP_PASSWORD", SECRET), ("RUST_LOG", "trace")],
    );
    converged(&s.src, &remote, true, "with password set", &daemon);
    let status = s.cmd(&["status", "--json"]).output().unwrap();
    let queue = s.cmd(&["queue", "list", "--json"]).output().unwrap();
    assert_eq!(daemon.signal("TERM"), Some(0));
    let log = daemon.log_text();
    assert!(log.contains("TRACE"), "expected a trace log: {log}");
    for (what, text) in [
        ("run log", log),
        (
            "status",
            String::from_utf8_lossy(&status.stdout).into_owned(),
        ),
        ("queue", String::from_utf8_lossy(&queue.stdout).into_owned()),
    ] {
        assert!(!text.contains(SECRET), "secret leaked in {what}:\n{text}");
    }
}
