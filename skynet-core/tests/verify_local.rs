//! `LocalConnection::verify` on a real destination folder: a delivered file is proven by
//! SHA-256; tampered bytes, another size, a missing file or a directory in its place are not.

use std::fs;

use skynet_core::conformance::{expect_mismatch as assert_mismatch, local_file as source, rel};
use skynet_core::{
    Blocking, BlockingConnection, Connection, ErrorKind, LocalConnection, Verification,
};

fn setup() -> (tempfile::TempDir, LocalConnection) {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("src")).expect("mkdir src");
    let conn = LocalConnection::new(dir.path().join("dest"));
    conn.connect().expect("connect");
    (dir, conn)
}

#[test]
fn delivered_file_verifies_by_sha256() {
    let (dir, conn) = setup();
    let file = source(&dir.path().join("src"), "a", b"hello, destination");
    conn.send(&file, &rel("d/a.txt")).expect("send");
    let v = conn.verify(&file, &rel("d/a.txt")).expect("verify");
    assert_eq!(
        v,
        Verification::Content {
            algorithm: "sha256"
        }
    );
    assert!(v.holds());

    // An empty file too.
    let empty = source(&dir.path().join("src"), "e", b"");
    conn.send(&empty, &rel("e")).expect("send");
    assert_eq!(
        conn.verify(&empty, &rel("e")).expect("verify"),
        Verification::Content {
            algorithm: "sha256"
        }
    );
}

#[test]
fn same_size_other_bytes_is_a_mismatch() {
    let (dir, conn) = setup();
    let file = source(&dir.path().join("src"), "a", b"0123456789");
    conn.send(&file, &rel("a")).expect("send");
    fs::write(dir.path().join("dest/a"), b"0123456780").expect("tamper");
    let v = conn.verify(&file, &rel("a")).expect("verify");
    assert_mismatch(&v, "a: destination content differs");
    assert!(!v.holds());
}

#[test]
fn other_size_missing_and_directory_are_mismatches() {
    let (dir, conn) = setup();
    let file = source(&dir.path().join("src"), "a", b"0123456789");
    conn.send(&file, &rel("a")).expect("send");
    fs::write(dir.path().join("dest/a"), b"01234").expect("truncate");
    assert_mismatch(
        &conn.verify(&file, &rel("a")).expect("verify"),
        "destination holds 5 bytes, local file has 10",
    );
    assert_mismatch(
        &conn.verify(&file, &rel("nowhere/b")).expect("verify"),
        "not at the destination",
    );
    fs::create_dir(dir.path().join("dest/dir")).expect("mkdir");
    assert_mismatch(
        &conn.verify(&file, &rel("dir")).expect("verify"),
        "not at the destination",
    );
}

#[test]
fn source_rewritten_after_delivery_is_a_mismatch() {
    let (dir, conn) = setup();
    let file = source(&dir.path().join("src"), "a", b"version one");
    conn.send(&file, &rel("a")).expect("send");
    // Same size, new bytes, after the send: the destination no longer holds the source.
    fs::write(&file.path, b"version two").expect("rewrite");
    assert_mismatch(
        &conn.verify(&file, &rel("a")).expect("verify"),
        "destination content differs",
    );
}

#[test]
fn missing_source_is_an_error_not_a_verdict() {
    let (dir, conn) = setup();
    let file = source(&dir.path().join("src"), "a", b"bytes");
    conn.send(&file, &rel("a")).expect("send");
    fs::remove_file(&file.path).expect("remove source");
    let err = conn.verify(&file, &rel("a")).expect_err("nothing to hash");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_async_adapter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Blocking::new(LocalConnection::new(dir.path().join("dest")));
    Connection::connect(&conn).await.expect("connect");
    let file = source(dir.path(), "a", b"async");
    Connection::send(&conn, &file, &rel("x/a"))
        .await
        .expect("send");
    assert_eq!(
        Connection::verify(&conn, &file, &rel("x/a"))
            .await
            .expect("verify"),
        Verification::Content {
            algorithm: "sha256"
        }
    );
}
