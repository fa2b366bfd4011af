//! Invariant 8 (connection loss) with real servers misbehaving: sshd and s3s-fs killed and
//! restarted three times during a sync of 1,500 small files (the sync waits, reconnects and
//! converges, no temporary file left); and a peer that accepts TCP connections but never
//! answers, given as the SFTP and as the S3 endpoint: `skynet sync --timeout 2s` ends, non-zero,
//! with one line naming the server, instead of hanging. (The SFTP crate's own test covers a
//! silent peer at the connection level, `skynet-sftp/tests/server.rs`; these cover the binary.)

mod common;
use common::remote::Backend;
use common::*;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 1500;
const OUTAGES: usize = 3;

fn outages(mut backend: Backend, s: &Scratch) {
    let started = Instant::now();
    populate(&s.src, FILES);
    let mut sync = backend.spawn(
        s,
        "sync",
        &[
            "--reconnect-max",
            "500ms",
            "--retry-delay",
            "100ms",
            "--timeout",
            "2s",
        ],
    );
    for outage in 1..=OUTAGES {
        let target = FILES * outage / (OUTAGES + 2);
        assert!(
            wait_until(Duration::from_secs(30), || backend.arrived() >= target),
            "outage {outage}: fewer than {target} files arrived: {}",
            sync.log_text()
        );
        backend.stop_server();
        let arrived = backend.arrived();
        assert!(
            sync.is_running() && arrived < FILES,
            "outage {outage}: the sync was over ({arrived} files) before the server went down; \
             the test proves nothing: {}",
            sync.log_text()
        );
        // Down long enough for failed reconnections.
        std::thread::sleep(Duration::from_millis(1200));
        assert!(
            sync.is_running(),
            "outage {outage}: sync gave up while the server was down: {}",
            sync.log_text()
        );
        backend.restart_server();
    }
    let code = sync.wait_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "sync after {OUTAGES} outages: {}\nserver:\n{}",
        sync.log_text(),
        backend.server_log()
    );
    let want = tree(&s.src);
    let got = backend.contents().expect("read the destination");
    assert!(want == got, "not converged: {}", diff(&want, &got));
    let left = backend.leftovers();
    assert!(left.is_empty(), "left behind by the outages: {left:?}");
    let log = sync.log_text();
    assert!(
        log.matches("connection lost").count() + log.matches("cannot connect").count() >= OUTAGES,
        "the outages were not all noticed: {log}"
    );
    eprintln!("{OUTAGES} outages, converged in {:?}", started.elapsed());
}

#[test]
fn sshd_killed_three_times_during_a_sync() {
    outages(Backend::sftp("outages"), &Scratch::new());
}

#[test]
fn s3_server_killed_three_times_during_a_sync() {
    outages(Backend::s3("outages", "p"), &Scratch::new());
}

/// A TCP listener on 127.0.0.1 that accepts connections and holds them without ever sending
/// a byte; it lives as long as the test process.
fn silent_peer() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

/// Runs `cmd` (stderr captured) for at most `limit`; None if it had to be killed.
fn output_within(mut cmd: Command, limit: Duration) -> (Option<Output>, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skynet");
    let exited = wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return (None, started.elapsed());
    }
    let out = child.wait_with_output().expect("skynet output");
    (Some(out), started.elapsed())
}

/// Exit non-zero within the limit, exactly one error line, naming `server`.
fn check_gave_up(out: Option<Output>, took: Duration, server: &str) {
    let out = out.unwrap_or_else(|| {
        panic!("skynet sync against a silent {server} was still running after {took:?}")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "sync against a silent peer succeeded: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line expected: {stderr}");
    assert!(
        errors[0].contains(server),
        "the error line should name {server}: {stderr}"
    );
    eprintln!("gave up after {took:?}: {}", errors[0]);
}

#[test]
fn silent_sftp_server_ends_the_sync() {
    let port = silent_peer();
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let key = s.dir.path().join("no-such-key");
    let mut cmd = s.cmd(&[
        "sync",
        s.src_str(),
        &format!("sftp://nobody@127.0.0.1:{port}/x"),
        "--timeout",
        "2s",
        "--reconnect-max",
        "1s",
    ]);
    cmd.arg("--identity").arg(&key);
    let (out, took) = output_within(cmd, Duration::from_secs(30));
    check_gave_up(out, took, &format!("127.0.0.1:{port}"));
}

#[test]
fn silent_s3_server_ends_the_sync() {
    let port = silent_peer();
    let s = Scratch::new();
    write(&s.src, "f.txt", b"x");
    let mut cmd = s.cmd(&[
        "sync",
        s.src_str(),
        "s3://bucket/p",
        "--s3-endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--s3-path-style",
        "--timeout",
        "2s",
        "--reconnect-max",
        "1s",
    ]);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret-never-used")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    let (out, took) = output_within(cmd, Duration::from_secs(30));
    check_gave_up(out, took, &format!("127.0.0.1:{port}"));
}
