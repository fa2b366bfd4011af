//! Behaviour against a real OpenSSH sshd: host keys, authentication, permissions, timeouts,
//! resume and reconnection. Every test starts its own server on a free 127.0.0.1 port.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skynet_core::connection::{BlockingConnection, SourceFile};
use skynet_core::error::ErrorKind;
use skynet_core::relpath::RelPath;
use skynet_sftp::testing::SshServer;
use skynet_sftp::{HostKeyPolicy, SftpConfig, SftpConnection};

use skynet_core::conformance::{local_file as source, rel};

fn ssh_keygen_fingerprint(pub_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_key)
        .output()
        .expect("ssh-keygen -lf");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_string()
}

#[test]
fn unknown_host_key_is_refused_under_strict_with_its_fingerprint() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let empty = server.scratch_dir().join("empty_known_hosts");
    fs::write(&empty, "").expect("write");
    let conn = SftpConnection::new(server.config(&root).with_known_hosts(&empty));
    let err = conn.connect().expect_err("unknown key accepted");
    assert_eq!(err.kind, ErrorKind::Setup, "{err}");
    let expected = ssh_keygen_fingerprint(&server.scratch_dir().join("host_key.pub"));
    assert!(err.message.contains(&expected), "{err} lacks {expected}");
    assert!(err.message.contains("unknown"), "{err}");
    assert!(!err.message.contains('\n'));
    assert_eq!(
        fs::read_to_string(&empty).expect("read"),
        "",
        "strict must not record"
    );
}

#[test]
fn accept_new_records_the_key_and_strict_then_accepts_it() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    // A known_hosts in a directory that does not exist yet.
    let kh = server.scratch_dir().join("new/.ssh/known_hosts");
    let accept = SftpConnection::new(
        server
            .config(&root)
            .with_known_hosts(&kh)
            .with_host_key_policy(HostKeyPolicy::AcceptNew),
    );
    accept.connect().expect("accept-new connects");
    let recorded = fs::read_to_string(&kh).expect("known_hosts written");
    let key = server.host_public_key();
    let key_b64 = key.split_whitespace().nth(1).expect("key");
    assert_eq!(
        recorded,
        format!("[127.0.0.1]:{} ssh-ed25519 {key_b64}\n", server.port())
    );
    let strict = SftpConnection::new(server.config(&root).with_known_hosts(&kh));
    strict.connect().expect("strict accepts the recorded key");
    // OpenSSH agrees with what was written.
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", server.port()))
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen -F");
    assert!(out.status.success(), "ssh-keygen cannot find the entry");
}

#[test]
fn hashed_known_hosts_entries_match() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let kh = server.scratch_dir().join("hashed_known_hosts");
    fs::copy(server.known_hosts_path(), &kh).expect("copy");
    let status = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen -H");
    assert!(status.status.success());
    assert!(fs::read_to_string(&kh).expect("read").starts_with("|1|"));
    let conn = SftpConnection::new(server.config(&root).with_known_hosts(&kh));
    conn.connect().expect("hashed entry matches");
}

#[test]
fn changed_host_key_is_refused_under_both_policies() {
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    SftpConnection::new(server.config(&root))
        .connect()
        .expect("original key accepted");
    server.replace_host_key();
    let new_fp = ssh_keygen_fingerprint(&server.scratch_dir().join("host_key.pub"));
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let before = fs::read_to_string(server.known_hosts_path()).expect("read");
        let conn = SftpConnection::new(server.config(&root).with_host_key_policy(policy));
        let err = conn.connect().expect_err("changed key accepted");
        assert_eq!(err.kind, ErrorKind::Setup, "{policy:?}: {err}");
        assert!(err.message.contains("CHANGED"), "{err}");
        assert!(err.message.contains(&new_fp), "{err} lacks {new_fp}");
        let after = fs::read_to_string(server.known_hosts_path()).expect("read");
        assert_eq!(before, after, "{policy:?} modified known_hosts");
    }
}

// Host keys and ports, against two servers on two loopback ports with different host keys.
// known_hosts names a server as OpenSSH does: `host` for port 22, `[host]:port` otherwise.

/// `[127.0.0.1]:port`, the known_hosts name of a test server.
fn bracketed(server: &SshServer) -> String {
    format!("[127.0.0.1]:{}", server.port())
}

fn server_fingerprint(server: &SshServer) -> String {
    ssh_keygen_fingerprint(&server.scratch_dir().join("host_key.pub"))
}

#[test]
fn an_entry_for_another_port_or_the_plain_host_does_not_vouch_for_a_server() {
    let a = SshServer::start();
    let b = SshServer::start();
    let root = b.remote_dir("d");
    let kh = b.scratch_dir().join("other_port_known_hosts");
    let cases = [
        // A plain entry vouches for port 22 only, even with B's own key. (OpenSSH itself
        // falls back to it when the keys are identical; skynet stays on the strict side.)
        (
            "a plain entry with B's key",
            b.known_hosts_line("127.0.0.1"),
        ),
        // The plain name is the port-22 server's: a different key there is not "changed"
        // for B, B is simply unknown.
        (
            "a plain entry with A's key",
            a.known_hosts_line("127.0.0.1"),
        ),
        ("A's [host]:port entry", a.known_hosts_line(&bracketed(&a))),
    ];
    for (what, content) in cases {
        fs::write(&kh, &content).expect("write");
        let err = SftpConnection::new(b.config(&root).with_known_hosts(&kh))
            .connect()
            .expect_err(&format!("{what} vouched for B"));
        assert_eq!(err.kind, ErrorKind::Setup, "{what}: {err}");
        assert!(err.message.contains("unknown"), "{what}: {err}");
        assert!(!err.message.contains("CHANGED"), "{what}: {err}");
        assert!(err.message.contains(&bracketed(&b)), "{what}: {err}");
        assert!(
            err.message.contains(&server_fingerprint(&b)),
            "{what}: {err}"
        );
        assert!(!err.message.contains('\n'), "{what}: {err}");
        assert_eq!(fs::read_to_string(&kh).expect("read"), content, "{what}");
    }
}

#[test]
fn accept_new_records_a_server_on_another_port_under_its_bracketed_name() {
    let a = SshServer::start();
    let b = SshServer::start();
    let (root_a, root_b) = (a.remote_dir("d"), b.remote_dir("d"));
    let kh = b.scratch_dir().join("two_servers_known_hosts");
    // A known both as the port-22 server (plain name) and under its own port.
    let before = a.known_hosts_line("127.0.0.1") + &a.known_hosts_line(&bracketed(&a));
    fs::write(&kh, &before).expect("write");
    let accept = |server: &SshServer, root: &Path| {
        SftpConnection::new(
            server
                .config(root)
                .with_known_hosts(&kh)
                .with_host_key_policy(HostKeyPolicy::AcceptNew),
        )
        .connect()
    };
    accept(&b, &root_b).expect("accept-new records B");
    let recorded = fs::read_to_string(&kh).expect("read");
    assert_eq!(
        recorded,
        before.clone() + &b.known_hosts_line(&bracketed(&b))
    );
    // OpenSSH finds it under that name.
    let out = Command::new("ssh-keygen")
        .arg("-F")
        .arg(bracketed(&b))
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen -F");
    assert!(out.status.success(), "ssh-keygen cannot find B's entry");
    // Found again next time, strict or not, without a second line.
    for (server, root) in [(&b, &root_b), (&a, &root_a)] {
        SftpConnection::new(server.config(root).with_known_hosts(&kh))
            .connect()
            .unwrap_or_else(|e| panic!("strict, port {}: {e}", server.port()));
        accept(server, root).unwrap_or_else(|e| panic!("accept-new, {}: {e}", server.port()));
    }
    assert_eq!(fs::read_to_string(&kh).expect("read"), recorded);
}

#[test]
fn keys_swapped_between_ports_are_refused_as_changed_naming_file_and_line() {
    let a = SshServer::start();
    let b = SshServer::start();
    let (root_a, root_b) = (a.remote_dir("d"), b.remote_dir("d"));
    let kh = b.scratch_dir().join("swapped_known_hosts");
    fs::write(
        &kh,
        b.known_hosts_line(&bracketed(&a)) + &a.known_hosts_line(&bracketed(&b)),
    )
    .expect("write");
    let check = |hashed: bool| {
        for (server, root, line) in [(&a, &root_a, 1), (&b, &root_b, 2)] {
            for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
                let before = fs::read_to_string(&kh).expect("read");
                let err = SftpConnection::new(
                    server
                        .config(root)
                        .with_known_hosts(&kh)
                        .with_host_key_policy(policy),
                )
                .connect()
                .expect_err("swapped key accepted");
                let ctx = format!("port {}, {policy:?}, hashed {hashed}: {err}", server.port());
                assert_eq!(err.kind, ErrorKind::Setup, "{ctx}");
                assert!(err.message.contains("CHANGED"), "{ctx}");
                assert!(err.message.contains(&server_fingerprint(server)), "{ctx}");
                let at = format!("{}:{line}", kh.display());
                assert!(err.message.contains(&at), "{ctx} lacks {at}");
                assert!(err.message.contains("ssh-keygen"), "{ctx}: no next step");
                assert!(err.message.contains(&bracketed(server)), "{ctx}");
                assert!(!err.message.contains('\n'), "{ctx}");
                let after = fs::read_to_string(&kh).expect("read");
                assert_eq!(before, after, "{ctx}: known_hosts modified");
            }
        }
    };
    check(false);
    // Hashed names (ssh-keygen -H keeps the lines in order).
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("ssh-keygen -H");
    assert!(out.status.success());
    assert!(fs::read_to_string(&kh).expect("read").starts_with("|1|"));
    check(true);
}

#[test]
fn wrong_client_key_is_a_setup_error() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let other = server.scratch_dir().join("other_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let conn = SftpConnection::new(server.config(&root).with_identity(&other));
    let err = conn.connect().expect_err("wrong key accepted");
    assert_eq!(err.kind, ErrorKind::Setup, "{err}");
    let expected = format!(
        "sftp://{}@127.0.0.1:{}: authentication failed (tried: key {}",
        server.user(),
        server.port(),
        other.display()
    );
    assert!(err.message.starts_with(&expected), "{err}");
    assert!(!err.message.contains('\n'));
}

#[test]
fn permission_denied_is_permanent_for_that_file_only() {
    // Root bypasses permission checks, so log in as an ordinary account.
    let server = SshServer::start_as("skynet-sftp-test");
    let root = server.remote_dir("d");
    let ro = root.join("readonly");
    fs::create_dir(&ro).expect("mkdir");
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&root).expect("stat");
        (m.uid(), m.gid())
    };
    std::os::unix::fs::chown(&ro, Some(uid), Some(gid)).expect("chown");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    let scratch = tempfile::tempdir().expect("tmp");
    let file = source(scratch.path(), "f", b"data");
    let conn = SftpConnection::new(server.config(&root));
    conn.connect().expect("connect");
    let err = conn
        .send(&file, &rel("readonly/file.txt"))
        .expect_err("write into a 555 directory succeeded");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("readonly"), "{err}");
    assert!(err.message.contains("permission denied"), "{err}");
    // The others continue, on the same connection.
    conn.send(&file, &rel("writable/file.txt"))
        .expect("send elsewhere");
    assert_eq!(
        fs::read(root.join("writable/file.txt")).expect("read"),
        b"data"
    );
    // A subdirectory that cannot be created is permanent too.
    let err = conn
        .send(&file, &rel("readonly/sub/x"))
        .expect_err("mkdir in a 555 directory succeeded");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
}

#[test]
fn silent_peer_is_a_lost_connection_within_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        // Accept and hold connections without ever writing a byte.
        let mut held = Vec::new();
        for stream in listener.incoming().take(2) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(6));
        drop(held);
    });
    let cfg = SftpConfig::from_url(&format!("sftp://nobody@127.0.0.1:{port}/x"))
        .expect("url")
        .with_identity("/nonexistent")
        .with_timeout(Duration::from_secs(2));
    let conn = SftpConnection::new(cfg);
    let started = Instant::now();
    let err = conn.connect().expect_err("silent peer accepted");
    let took = started.elapsed();
    assert_eq!(err.kind, ErrorKind::ConnectionLost, "{err}");
    assert!(
        took >= Duration::from_millis(1500),
        "gave up too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(holder);
}

#[test]
fn frozen_server_mid_session_is_a_lost_connection_within_the_timeout() {
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    let scratch = tempfile::tempdir().expect("tmp");
    let file = source(scratch.path(), "f", b"data");
    let conn = SftpConnection::new(server.config(&root).with_timeout(Duration::from_secs(2)));
    conn.connect().expect("connect");
    conn.send(&file, &rel("a")).expect("send");
    server.freeze();
    let started = Instant::now();
    let err = conn
        .send(&file, &rel("b"))
        .expect_err("frozen server answered");
    let took = started.elapsed();
    assert_eq!(err.kind, ErrorKind::ConnectionLost, "{err}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    server.thaw();
    conn.connect().expect("reconnect after thaw");
    conn.send(&file, &rel("b")).expect("send after reconnect");
    server.stop();
}

/// Waits until some temp file under `dir` holds at least `min` bytes; returns its size.
fn wait_for_partial(dir: &Path, min: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with(".skynet-tmp.") {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    if len >= min {
                        return len;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "no partial upload of {min} bytes appeared in {}",
        dir.display()
    );
}

#[test]
fn interrupted_large_send_resumes_after_restart() {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    let scratch = tempfile::tempdir().expect("tmp");
    let content: Vec<u8> = (0..SIZE)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect();
    let file = source(scratch.path(), "big", &content);
    let conn = Arc::new(SftpConnection::new(server.config(&root)));
    conn.connect().expect("connect");
    let sender = {
        let (conn, file) = (Arc::clone(&conn), file.clone());
        std::thread::spawn(move || conn.send(&file, &rel("dir/big.bin")))
    };
    let partial = wait_for_partial(&root.join("dir"), 4 * 1024 * 1024, Duration::from_secs(30));
    server.stop();
    let err = sender
        .join()
        .expect("sender thread")
        .expect_err("send finished despite the server being killed");
    assert_eq!(err.kind, ErrorKind::ConnectionLost, "{err}");
    assert!(!root.join("dir/big.bin").exists(), "partial file visible");
    server.restart();
    conn.connect().expect("reconnect");
    let sent = conn.send(&file, &rel("dir/big.bin")).expect("resumed send");
    assert!(
        sent < SIZE as u64,
        "resend transferred {sent} bytes: nothing resumed (server held {partial})"
    );
    assert!(
        sent <= (SIZE as u64) - partial,
        "sent {sent}, server held {partial}"
    );
    let got = fs::read(root.join("dir/big.bin")).expect("read result");
    eprintln!("resume: server held {partial}, resend sent {sent}");
    assert!(got == content, "resumed file differs");
    let leftovers: Vec<_> = fs::read_dir(root.join("dir"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temp files left: {leftovers:?}");
}

#[test]
fn a_stale_partial_of_another_version_is_not_resumed() {
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    let scratch = tempfile::tempdir().expect("tmp");
    let size = 16 * 1024 * 1024;
    let v1: Vec<u8> = (0..size).map(|i| (i % 13) as u8).collect();
    let file = source(scratch.path(), "f", &v1);
    let conn = Arc::new(SftpConnection::new(server.config(&root)));
    conn.connect().expect("connect");
    let sender = {
        let (conn, file) = (Arc::clone(&conn), file.clone());
        std::thread::spawn(move || conn.send(&file, &rel("f.bin")))
    };
    wait_for_partial(&root, 1024 * 1024, Duration::from_secs(30));
    server.stop();
    let _ = sender.join().expect("sender");
    server.restart();
    conn.connect().expect("reconnect");
    // The local file changes (same size, new content and mtime): a full send, no mixing.
    let v2: Vec<u8> = (0..size).map(|i| (i % 7) as u8).collect();
    std::thread::sleep(Duration::from_millis(20));
    let file2 = source(scratch.path(), "f", &v2);
    let sent = conn.send(&file2, &rel("f.bin")).expect("send v2");
    assert_eq!(sent, size as u64);
    assert!(fs::read(root.join("f.bin")).expect("read") == v2);
    let names: Vec<_> = fs::read_dir(&root)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "stale temp left: {names:?}");
}

#[test]
fn sends_during_a_server_outage_are_connection_lost_and_succeed_after_reconnect() {
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    let scratch = tempfile::tempdir().expect("tmp");
    let conn = Arc::new(SftpConnection::new(
        server
            .config(&root)
            .with_pool_size(3)
            .with_timeout(Duration::from_secs(3)),
    ));
    conn.connect().expect("connect");
    let files: Vec<(SourceFile, RelPath, Vec<u8>)> = (0..30)
        .map(|i| {
            let content = format!("file number {i}").repeat(1000).into_bytes();
            let f = source(scratch.path(), &format!("f{i}"), &content);
            (f, rel(&format!("batch/{}/f{i}.txt", i % 4)), content)
        })
        .collect();
    let files = Arc::new(files);
    // Three workers send the first half; the server dies in the middle of it.
    let mut failed = Vec::new();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (conn, files) = (Arc::clone(&conn), Arc::clone(&files));
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for i in (w..15).step_by(3) {
                    let (f, to, _) = &files[i];
                    results.push((i, conn.send(f, to)));
                    std::thread::sleep(Duration::from_millis(15));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    server.stop();
    for w in workers {
        for (i, result) in w.join().expect("worker") {
            if let Err(e) = result {
                assert_eq!(e.kind, ErrorKind::ConnectionLost, "file {i}: {e}");
                failed.push(i);
            }
        }
    }
    assert!(
        !failed.is_empty(),
        "no send failed: the outage came too late"
    );
    // While down, connect() itself reports the lost connection.
    let err = conn.connect().expect_err("connected to a stopped server");
    assert_eq!(err.kind, ErrorKind::ConnectionLost, "{err}");
    server.restart();
    conn.connect().expect("reconnect");
    for i in failed.into_iter().chain(15..30) {
        let (f, to, _) = &files[i];
        conn.send(f, to)
            .unwrap_or_else(|e| panic!("file {i} after restart: {e}"));
    }
    for (_, to, content) in files.iter() {
        let got = fs::read(to.under(&root)).unwrap_or_else(|e| panic!("{to}: {e}"));
        assert!(&got == content, "{to} differs");
    }
}

#[test]
fn home_relative_root() {
    let server = SshServer::start();
    let out = Command::new("getent")
        .args(["passwd", server.user()])
        .output()
        .expect("getent");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let home = line.split(':').nth(5).expect("home field").to_string();
    let name = format!(".skynet-sftp-test-{}", std::process::id());
    let url = format!(
        "sftp://{}@127.0.0.1:{}/~/{name}/sub",
        server.user(),
        server.port()
    );
    let base = server.config(Path::new("/unused"));
    let mut cfg = SftpConfig::from_url(&url).expect("url");
    cfg.identity = base.identity.clone();
    cfg.known_hosts = base.known_hosts.clone();
    cfg.use_agent = false;
    let conn = SftpConnection::new(cfg);
    assert!(conn.describe().ends_with(&format!("/~/{name}/sub")));
    let scratch = tempfile::tempdir().expect("tmp");
    let result = conn
        .connect()
        .and_then(|()| conn.send(&source(scratch.path(), "f", b"home"), &rel("x/y")));
    let landed = fs::read(Path::new(&home).join(&name).join("sub/x/y"));
    let _ = fs::remove_dir_all(Path::new(&home).join(&name));
    result.expect("send under the home directory");
    assert_eq!(landed.expect("file in home"), b"home");
}

#[test]
fn a_server_known_by_another_key_type_is_not_taken_for_changed() {
    let mut server = SshServer::start();
    let root = server.remote_dir("d");
    let rsa = server.add_rsa_host_key();
    let mut parts = rsa.split_whitespace();
    let (algo, key) = (parts.next().expect("algo"), parts.next().expect("key"));
    let kh = server.scratch_dir().join("rsa_known_hosts");
    fs::write(&kh, format!("[127.0.0.1]:{} {algo} {key}\n", server.port())).expect("write");
    // The server prefers ed25519, but known_hosts only knows its RSA key.
    SftpConnection::new(server.config(&root).with_known_hosts(&kh))
        .connect()
        .expect("connect with the RSA key known");
    // And the default file (ed25519) still works.
    SftpConnection::new(server.config(&root))
        .connect()
        .expect("connect with the ed25519 key known");
}
