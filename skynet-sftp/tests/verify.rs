//! `SftpConnection::verify` against a real OpenSSH sshd: the size always, and with
//! `verify_read_back` the SHA-256 of the file read back. Tampering is done on the server's
//! disk directly (the remote root is a local folder of the test's sshd).

use std::fs;

use skynet_core::conformance::{
    expect_mismatch as assert_mismatch, local_file as source, pseudo_random, rel,
};
use skynet_core::connection::{BlockingConnection, Verification};
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

#[test]
fn without_read_back_the_size_is_all_that_is_checked() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let conn = SftpConnection::new(server.config(&root));
    assert!(!conn.config().verify_read_back, "off by default");
    conn.connect().expect("connect");
    let local = tempfile::tempdir().expect("tmp");
    let file = source(local.path(), "a", b"0123456789");
    conn.send(&file, &rel("sub/a")).expect("send");

    let v = conn.verify(&file, &rel("sub/a")).expect("verify");
    assert_eq!(v, Verification::SizeOnly);
    assert!(v.holds());

    // Same size, other bytes: a size check cannot tell, and says only that much.
    fs::write(root.join("sub/a"), b"0123456780").expect("tamper");
    assert_eq!(
        conn.verify(&file, &rel("sub/a")).expect("verify"),
        Verification::SizeOnly
    );

    fs::write(root.join("sub/a"), b"01234").expect("truncate");
    assert_mismatch(
        &conn.verify(&file, &rel("sub/a")).expect("verify"),
        "destination holds 5 bytes, local file has 10",
    );
    assert_mismatch(
        &conn.verify(&file, &rel("sub/missing")).expect("verify"),
        "not at the destination",
    );
    assert_mismatch(
        &conn.verify(&file, &rel("sub")).expect("verify"),
        "not at the destination",
    );
}

#[test]
fn read_back_proves_the_content_and_catches_tampering() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let conn = SftpConnection::new(server.config(&root).with_verify_read_back(true));
    conn.connect().expect("connect");
    let local = tempfile::tempdir().expect("tmp");

    // Several read chunks' worth, past the resume threshold too.
    let big = pseudo_random(3 * 1024 * 1024 + 17, 5);
    let file = source(local.path(), "big", &big);
    conn.send(&file, &rel("x/big.bin")).expect("send");
    let v = conn.verify(&file, &rel("x/big.bin")).expect("verify");
    assert_eq!(
        v,
        Verification::Content {
            algorithm: "sha256"
        }
    );

    // One byte changed in the middle, size kept.
    let mut tampered = big.clone();
    tampered[big.len() / 2] ^= 0xff;
    fs::write(root.join("x/big.bin"), &tampered).expect("tamper");
    let v = conn.verify(&file, &rel("x/big.bin")).expect("verify");
    assert_mismatch(&v, "x/big.bin: destination content differs");
    assert!(!v.holds());

    let empty = source(local.path(), "empty", b"");
    conn.send(&empty, &rel("empty")).expect("send");
    assert_eq!(
        conn.verify(&empty, &rel("empty")).expect("verify"),
        Verification::Content {
            algorithm: "sha256"
        }
    );

    fs::write(root.join("x/big.bin"), b"short").expect("truncate");
    assert_mismatch(
        &conn.verify(&file, &rel("x/big.bin")).expect("verify"),
        "destination holds 5 bytes",
    );
    assert_mismatch(
        &conn.verify(&file, &rel("x/gone.bin")).expect("verify"),
        "not at the destination",
    );
}

#[test]
fn read_back_with_a_missing_source_is_an_error() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let conn = SftpConnection::new(server.config(&root).with_verify_read_back(true));
    conn.connect().expect("connect");
    let local = tempfile::tempdir().expect("tmp");
    let file = source(local.path(), "a", b"bytes");
    conn.send(&file, &rel("a")).expect("send");
    fs::remove_file(&file.path).expect("remove source");
    let err = conn.verify(&file, &rel("a")).expect_err("nothing to hash");
    assert_eq!(err.kind, skynet_core::error::ErrorKind::Transient, "{err}");
}
