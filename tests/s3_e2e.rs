//! The real `skynet` binary against a real s3s-fs server (loopback only): a live backup with
//! complete-sync, multipart uploads surviving a server restart and a `kill -9`, setup errors
//! that exit 2 with one line, and secrets kept out of logs and `status`.
//!
//! Credentials reach the child only through `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_REGION`; the endpoint through `--s3-endpoint http://127.0.0.1:PORT --s3-path-style`.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use skynet_s3::testing::S3Server;
use skynet_s3::S3Connection;

type Digests = BTreeMap<String, [u8; 32]>;

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

use skynet_s3::testing::pseudo_random as content;

/// A private s3s-fs with one bucket, and an SDK client (through the harness) to inspect it.
struct S3 {
    server: S3Server,
    bucket: String,
    rt: tokio::runtime::Runtime,
    conn: S3Connection,
}

impl S3 {
    fn start(bucket: &str) -> S3 {
        let server = S3Server::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(server.create_bucket(bucket));
        let conn = rt
            .block_on(S3Connection::new(server.config(bucket, "")))
            .expect("inspection client");
        S3 {
            server,
            bucket: bucket.to_string(),
            rt,
            conn,
        }
    }

    /// `skynet ARGS` with this server's endpoint and keys (and nothing else from the AWS
    /// environment of the machine running the tests).
    fn cmd(&self, s: &Scratch, args: &[&str]) -> Command {
        let mut c = s.cmd(args);
        self.env(&mut c, self.server.secret_key());
        c
    }

    fn env(&self, c: &mut Command, secret: &str) {
        c.args(["--s3-endpoint", &self.server.endpoint(), "--s3-path-style"])
            .env("AWS_ACCESS_KEY_ID", self.server.access_key())
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    fn put(&self, key: &str, body: &[u8]) {
        let client = self.conn.client();
        self.rt
            .block_on(
                client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(body.to_vec().into())
                    .send(),
            )
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    /// Every object under `prefix` (listed with pagination, each one downloaded) by hash.
    fn objects(&self, prefix: &str) -> Result<Digests, String> {
        let all = self.rt.block_on(skynet_s3::testing::objects(
            self.conn.client(),
            &self.bucket,
            prefix,
        ))?;
        Ok(all
            .into_iter()
            .map(|(key, bytes)| (key, sha(&bytes)))
            .collect())
    }

    /// The ETag of `key`, without quotes.
    fn etag(&self, key: &str) -> Result<String, String> {
        let client = self.conn.client();
        let head = self
            .rt
            .block_on(client.head_object().bucket(&self.bucket).key(key).send())
            .map_err(|e| format!("head {key}: {e:?}"))?;
        Ok(head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string())
    }
}

/// The source's files by hash, keyed as objects under `prefix`.
fn expected(src: &Path, prefix: &str) -> Digests {
    tree(src)
        .into_iter()
        .map(|(k, v)| {
            (
                format!("{prefix}{}", String::from_utf8(k).unwrap()),
                sha(&v),
            )
        })
        .collect()
}

fn describe(want: &Digests, got: &Digests) -> String {
    let mut lines = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => lines.push(format!("missing {k}")),
            Some(g) if g != v => lines.push(format!("differs {k}")),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        lines.push(format!("extra {k}"));
    }
    lines.join("; ")
}

/// Waits until the objects under `prefix` are exactly the source's files, byte for byte.
fn wait_mirrored(s3: &S3, src: &Path, prefix: &str, daemon: &Daemon, what: &str) {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let want = expected(src, prefix);
        match s3.objects(prefix) {
            Ok(got) if got == want => true,
            Ok(got) => {
                last = describe(&want, &got);
                false
            }
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(
        ok,
        "{what}: bucket never matched the source: {last}\nlog:\n{}",
        daemon.log_text()
    );
}

/// Waits until the server holds at least `n` stored parts of some multipart upload.
fn wait_for_parts(s3: &S3, n: usize, daemon: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for id in s3.server.in_progress_uploads() {
            if s3.server.stored_parts(&id).len() >= n {
                return id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no multipart upload reached {n} parts; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pending(s: &Scratch) -> i64 {
    s.mapping()["pending"].as_i64().unwrap_or(-1)
}

fn rename(src: &Path, from: &str, to: &str) {
    std::fs::rename(src.join(from), src.join(to)).expect("rename");
}

/// Invariants 1, 4 and complete-sync deletions, live, against S3.
#[test]
fn live_backup_with_complete_sync() {
    let s3 = S3::start("live");
    // Neighbours of the mapping's prefix that skynet must never touch.
    s3.put("backupx/keep.txt", b"outside the prefix");
    s3.put("other/keep.txt", b"another prefix");
    let s = Scratch::new();
    let src = &s.src;
    // Files present before the start reach the bucket through the catch-up scan.
    write(src, "early.txt", b"there before skynet started");

    let url = s3.url("backup");
    let mut cmd = s3.cmd(
        &s,
        &[
            "run",
            s.src_str(),
            &url,
            "--complete-sync",
            "--settle",
            "100ms",
        ],
    );
    cmd.args(["--retry-delay", "200ms"]);
    let mut daemon = s.spawn_cmd(cmd);
    let p = "backup/";

    // Creates, including names that are prefixes of one another and an empty file.
    write(src, "a.jpg", b"jpeg");
    write(src, "a.jpg.bak", b"backup of the jpeg");
    write(src, "a/x.txt", &content(3000, 1));
    write(src, "a/sub/y.txt", b"y");
    write(src, "ab/z.txt", b"z");
    write(src, "c/one.txt", b"one");
    write(src, "c/deep/two.txt", &content(70_000, 2));
    write(src, "sp ace/ü n.txt", b"unicode and spaces");
    write(src, "empty", b"");
    wait_mirrored(&s3, src, p, &daemon, "after creates");

    // Edits: overwrite with a different length, append, truncate.
    write(src, "a/x.txt", &content(1234, 3));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(src.join("ab/z.txt"))
            .unwrap();
        f.write_all(b" appended").unwrap();
    }
    std::fs::File::create(src.join("early.txt")).unwrap(); // truncate
    wait_mirrored(&s3, src, p, &daemon, "after edits");

    // Renames: a file within its folder, a file across folders, a whole directory tree.
    rename(src, "ab/z.txt", "ab/z2.txt");
    rename(src, "a/sub/y.txt", "c/y-moved.txt");
    rename(src, "c", "c2");
    wait_mirrored(&s3, src, p, &daemon, "after renames");

    // Deletions are prefix-exact: a.jpg goes, a.jpg.bak stays; directory a goes, ab/ stays.
    std::fs::remove_file(src.join("a.jpg")).unwrap();
    std::fs::remove_dir_all(src.join("a")).unwrap();
    wait_mirrored(&s3, src, p, &daemon, "after deletes");
    let got = s3.objects(p).unwrap();
    assert!(got.contains_key("backup/a.jpg.bak"), "{got:?}");
    assert!(got.contains_key("backup/ab/z2.txt"), "{got:?}");
    assert!(!got.contains_key("backup/a.jpg"), "{got:?}");
    assert!(!got.keys().any(|k| k.starts_with("backup/a/")), "{got:?}");

    // A directory deleted in one go, then a file created again at a deleted path.
    std::fs::remove_dir_all(src.join("c2")).unwrap();
    write(src, "a.jpg", b"a new jpeg");
    wait_mirrored(&s3, src, p, &daemon, "after recreate");

    // Nothing outside the prefix was touched.
    let outside = s3.objects("").unwrap();
    assert_eq!(
        outside.get("backupx/keep.txt"),
        Some(&sha(b"outside the prefix"))
    );
    assert_eq!(outside.get("other/keep.txt"), Some(&sha(b"another prefix")));
    assert!(wait_until(Duration::from_secs(5), || pending(&s) == 0));
    assert_eq!(s.mapping()["failed"], 0);
    assert_eq!(
        daemon.signal("TERM"),
        Some(0),
        "clean stop: {}",
        daemon.log_text()
    );
}

/// Writes the 64 MiB file and returns its hash.
fn big_file(s: &Scratch) -> [u8; 32] {
    let bytes = content(64 << 20, 64);
    write(&s.src, "big/video.bin", &bytes);
    sha(&bytes)
}

/// Waits for the big object to be complete, then checks its ETag, content and that no
/// multipart upload is left on the server.
fn check_big(s3: &S3, key: &str, want: [u8; 32], log: &dyn Fn() -> String) {
    let ok = wait_until(Duration::from_secs(30), || {
        s3.etag(key).is_ok() && s3.server.in_progress_uploads().is_empty()
    });
    assert!(
        ok,
        "object {key} never completed (uploads left: {:?}); log:\n{}",
        s3.server.in_progress_uploads(),
        log()
    );
    let etag = s3.etag(key).unwrap();
    let parts = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u32>().ok());
    assert!(
        parts.is_some_and(|n| n > 1),
        "a 64 MiB file goes multipart: ETag {etag}"
    );
    let objects = s3.objects("").unwrap();
    assert_eq!(
        objects.get(key),
        Some(&want),
        "content of {key}: {objects:?}"
    );
    assert_eq!(objects.len(), 1, "only the one object: {objects:?}");
    assert!(s3.server.in_progress_uploads().is_empty());
}

/// Invariant 8 with a real server: killed and restarted while parts are being uploaded.
#[test]
fn multipart_survives_server_restart() {
    let mut s3 = S3::start("restart");
    let s = Scratch::new();
    let want = big_file(&s);
    let url = s3.url("m");
    let cmd = s3.cmd(
        &s,
        &[
            "run",
            s.src_str(),
            &url,
            "--settle",
            "0",
            "--reconnect-max",
            "1s",
            "--retry-delay",
            "200ms",
            "--timeout",
            "5s",
        ],
    );
    let mut daemon = s.spawn_cmd(cmd);
    let id = wait_for_parts(&s3, 1, &daemon);
    s3.server.stop();
    let parts_at_stop = s3.server.stored_parts(&id);
    std::thread::sleep(Duration::from_millis(500));
    s3.server.restart();
    check_big(&s3, "m/big/video.bin", want, &|| {
        format!("{}\nserver:\n{}", daemon.log_text(), s3.server.log())
    });
    assert!(!parts_at_stop.is_empty());
    assert!(wait_until(Duration::from_secs(10), || pending(&s) == 0));
    assert_eq!(s.mapping()["failed"], 0);
    assert_eq!(daemon.signal("TERM"), Some(0), "{}", daemon.log_text());
}

/// Invariant 2 with a real server: `kill -9` mid-upload, then a restart completes the object
/// and leaves no multipart upload behind.
#[test]
fn multipart_survives_sigkill() {
    let s3 = S3::start("crash");
    let s = Scratch::new();
    let want = big_file(&s);
    let url = s3.url("k");
    let cmd = s3.cmd(&s, &["run", s.src_str(), &url, "--settle", "0"]);
    let mut daemon = s.spawn_cmd(cmd);
    wait_for_parts(&s3, 1, &daemon);
    daemon.kill9();
    let first_log = daemon.log_text();
    assert!(
        !s3.server.in_progress_uploads().is_empty(),
        "the kill left an upload in progress"
    );
    assert!(
        s3.etag("k/big/video.bin").is_err(),
        "no object before the restart"
    );

    let out = s3.cmd(&s, &["sync", s.src_str(), &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "sync after kill -9: {stderr}");
    check_big(&s3, "k/big/video.bin", want, &|| {
        format!("first run:\n{first_log}\nrestart:\n{stderr}")
    });
}

#[test]
fn wrong_secret_and_missing_bucket_exit_2() {
    let s3 = S3::start("present");
    let s = Scratch::new();
    write(&s.src, "f.txt", b"data");
    let wrong = "WrongSecretKeyThatMustNotLeak0123456789";

    let mut cmd = s.cmd(&["sync", s.src_str(), &s3.url("p")]);
    s3.env(&mut cmd, wrong);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let line = expect_setup_error(
        &out,
        &["present", "secret"],
        &[wrong, s3.server.secret_key()],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refused key is not retried for long: {line}"
    );

    let out = s3
        .cmd(&s, &["sync", s.src_str(), "s3://no-such-bucket/p"])
        .output()
        .unwrap();
    expect_setup_error(
        &out,
        &["no-such-bucket", "does not exist"],
        &[s3.server.secret_key()],
    );
    assert!(s3.objects("").unwrap().is_empty(), "nothing was written");
}

/// Secrets stay out of -vv logs (uploads, multipart, renames, deletes, a reconnect) and out of
/// `status --json`.
#[test]
fn secrets_stay_out_of_logs_and_status() {
    let mut s3 = S3::start("secret");
    let s = Scratch::new();
    write(&s.src, "small.txt", b"small");
    write(&s.src, "dir/mid.bin", &content(20 << 20, 5)); // multipart
    let url = s3.url("s");
    let mut cmd = s3.cmd(
        &s,
        &[
            "-vv",
            "run",
            s.src_str(),
            &url,
            "--complete-sync",
            "--settle",
            "0",
            "--reconnect-max",
            "1s",
        ],
    );
    cmd.env_remove("RUST_LOG");
    let mut daemon = s.spawn_cmd(cmd);
    wait_mirrored(&s3, &s.src, "s/", &daemon, "first sync");
    rename(&s.src, "dir", "dir2");
    std::fs::remove_file(s.src.join("small.txt")).unwrap();
    wait_mirrored(&s3, &s.src, "s/", &daemon, "rename and delete");
    // A connection loss and reconnect, with a send waiting for it.
    s3.server.stop();
    write(&s.src, "later.txt", b"written while the server was down");
    std::thread::sleep(Duration::from_millis(500));
    let status_down = s.cmd(&["status", "--json"]).output().unwrap();
    s3.server.restart();
    wait_mirrored(&s3, &s.src, "s/", &daemon, "after reconnect");
    let status_up = s.cmd(&["status", "--json"]).output().unwrap();
    assert_eq!(daemon.signal("TERM"), Some(0));
    let status_after = s.cmd(&["status", "--json"]).output().unwrap();

    let secret = s3.server.secret_key();
    let log = daemon.log_text();
    assert!(
        log.lines().count() > 20,
        "-vv logs something worth checking:\n{log}"
    );
    assert!(!log.contains(secret), "the secret key is in the -vv log");
    for out in [&status_down, &status_up, &status_after] {
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value = serde_json::from_str(&text).expect("status json");
        // Normalised, with the endpoint: two servers may hold the same bucket name.
        let shown = format!("{url} at {}", s3.server.endpoint());
        assert_eq!(json["mappings"][0]["destination"], shown.as_str(), "{text}");
        assert!(
            !text.contains(secret),
            "the secret key is in status: {text}"
        );
    }
    // The state directory (queue, ledger, upload records) holds no secret either.
    for entry in walkdir::WalkDir::new(&s.state).into_iter().flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret key is stored in {}",
                entry.path().display()
            );
        }
    }
}
