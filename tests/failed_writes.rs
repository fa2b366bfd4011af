//! A failed write is never a delivery, and a vanished file is never a delivery either
//! (issue 11, case 12).
//!
//! - Against a second S3 implementation (moto's server, loopback only), a key the server
//!   refuses with a bare `404` is retried, then parked as failed: `sync` exits 1, `status`
//!   shows it failed and not delivered, and the object is not claimed to exist.
//! - A send whose local file is gone by the time it runs is counted `vanished` in `status`,
//!   never as done or delivered.

mod common;
use common::*;

use std::process::Command;

use skynet_s3::testing::MotoServer;

/// A quoted word for a command template.
/// `skynet sync SRC s3://BUCKET/PREFIX` against `server`, with fast retries.
fn sync_to_moto(s: &Scratch, server: &MotoServer, bucket: &str, prefix: &str) -> Command {
    let url = format!("s3://{bucket}/{prefix}");
    let mut cmd = s.cmd(&[
        "sync",
        s.src_str(),
        &url,
        "--s3-endpoint",
        &server.endpoint(),
        "--s3-path-style",
        "--settle",
        "0",
        "--max-attempts",
        "3",
        "--retry-delay",
        "10ms",
    ]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

/// The only mapping in `status --json`.
fn only_mapping(s: &Scratch) -> serde_json::Value {
    let status = s.status();
    let mappings = status["mappings"].as_array().expect("mappings array");
    assert_eq!(mappings.len(), 1, "{status}");
    mappings[0].clone()
}

/// moto answers `404 Not Found` (code "404", no S3 error code) to a PUT whose key holds a
/// newline. skynet used to read any 404 as "the local file vanished" and record the send as
/// done: the file was counted delivered, `sync` exited 0, and the object did not exist.
#[test]
fn a_put_refused_with_404_is_retried_then_parked_never_delivered() {
    let server = MotoServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bucket = "skynet-moto";
    rt.block_on(server.create_bucket(bucket));

    let s = Scratch::new();
    write(&s.src, "ok.txt", b"delivered");
    write(&s.src, "new\nline", b"refused by the server");

    let out = sync_to_moto(&s, &server, bucket, "m")
        .output()
        .expect("run skynet sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused upload fails the sync; stderr: {stderr}\nserver log: {}",
        server.log()
    );
    assert!(
        stderr.contains("will retry"),
        "retried before parking: {stderr}"
    );

    let m = only_mapping(&s);
    assert_eq!(m["failed"], 1, "{m}");
    assert_eq!(m["delivered_today"], 1, "only ok.txt was delivered: {m}");
    assert_eq!(m["vanished"], 0, "the local file is still there: {m}");
    let failures = m["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{m}");
    let path = failures[0]["path"].as_str().unwrap_or_default();
    assert!(path.starts_with("new") && path.ends_with("line"), "{m}");
    assert_eq!(failures[0]["attempts"], 3, "retried, then parked: {m}");
    let error = failures[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("404"), "the server's answer is shown: {m}");
    assert!(s.src.join("new\nline").exists(), "the local file is kept");

    // What the server holds: ok.txt only.
    let conn = rt
        .block_on(skynet_s3::S3Connection::new(server.config(bucket, "")))
        .expect("inspection client");
    let objects = rt
        .block_on(skynet_s3::testing::objects(conn.client(), bucket, ""))
        .expect("list objects");
    let keys: Vec<&String> = objects.keys().collect();
    assert_eq!(keys, vec!["m/ok.txt"], "server log: {}", server.log());

    // Human status names the failure too.
    let human = s.cmd(&["status"]).output().expect("status");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("failed 1"), "{text}");
}

/// A command destination whose program removes the local file and fails: the send found
/// its file gone, which is neither a delivery nor a failure. It is counted `vanished`.
#[test]
fn a_send_whose_file_vanished_is_counted_vanished_not_done() {
    let s = Scratch::new();
    write(&s.src, "kept.txt", b"stays");
    write(&s.src, "gone.txt", b"removed during its send");
    let program = script(
        s.dir.path(),
        "remove-gone.sh",
        "case \"$2\" in gone.txt) rm -- \"$1\"; exit 1;; esac\nexit 0",
    );
    let template = format!("{} {{path}} {{remote}}", quoted(&program));
    let out = s
        .cmd(&[
            "sync",
            s.src_str(),
            "--exec",
            &template,
            "--settle",
            "0",
            "--max-attempts",
            "3",
            "--retry-delay",
            "10ms",
        ])
        .output()
        .expect("run skynet sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 0);
    assert!(
        !s.src.join("gone.txt").exists(),
        "the program removed it: {stderr}"
    );
    assert!(
        stderr.contains("vanished") && stderr.contains("gone.txt"),
        "logged at INFO as vanished: {stderr}"
    );

    let m = only_mapping(&s);
    assert_eq!(m["vanished"], 1, "{m}");
    assert_eq!(m["failed"], 0, "{m}");
    assert_eq!(m["delivered_today"], 1, "kept.txt only: {m}");
    let human = s.cmd(&["status"]).output().expect("status");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("vanished 1"), "{text}");
}
