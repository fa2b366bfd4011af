//! The clauses about reading the destination back: `stat`, `read`, `download`, `list`, and
//! `verify`, which approves removing a local file (`remove_source`).

use super::{expect_error, pseudo_random, rel, Check, Options, Proof};
use crate::connection::{Connection, RemoteEntry, Verification};
use crate::error::ErrorKind;

/// **Reading back**: `stat` gives a file's size and `None` for a directory or a missing path;
/// `read` and `download` give a file's bytes and fail for a missing one; `list` gives every
/// file under the root with its size, temporary files included. A backend that cannot read
/// back ([`Options::reads_back`] off) answers each with a permanent error instead.
pub async fn read_back(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "read_back").await;
    let f = c.file("f", b"some bytes");
    c.send(&f, "r/f").await;
    c.send(&f, "r/sub/g").await;
    let mut out = tempfile::tempfile().expect("temp file");
    if !opts.reads_back {
        let (path, permanent) = (rel("r/f"), ErrorKind::Permanent);
        expect_error(conn.stat(&path).await, permanent, "read_back: stat");
        expect_error(conn.read(&path).await, permanent, "read_back: read");
        expect_error(conn.list().await, permanent, "read_back: list");
        let download = conn.download(&path, &mut out).await;
        expect_error(download, permanent, "read_back: download");
        expect_error(conn.verify(&f, &path).await, permanent, "read_back: verify");
        return c.finish(&["r"]).await;
    }
    let stat = |p: &'static str| async move {
        conn.stat(&rel(p))
            .await
            .unwrap_or_else(|e| panic!("read_back: stat {p}: {e}"))
    };
    assert_eq!(stat("r/f").await, Some(10), "read_back: stat of a file");
    assert_eq!(stat("r/sub").await, None, "read_back: stat of a directory");
    assert_eq!(
        stat("r/none").await,
        None,
        "read_back: stat of a missing path"
    );
    assert_eq!(
        stat("none/at/all").await,
        None,
        "read_back: stat under nothing"
    );
    // `content` reads, downloads and stats, and compares the three.
    c.expect_content("r/f", b"some bytes", "read").await;
    assert!(
        conn.read(&rel("r/none")).await.is_err(),
        "read_back: read of a missing file succeeded"
    );
    assert!(
        conn.download(&rel("r/none"), &mut out).await.is_err(),
        "read_back: download of a missing file succeeded"
    );

    // Temporary files are listed like any other.
    let temp = format!("r/{}0123456789abcdef", crate::connection::TEMP_PREFIX);
    c.send(&f, &temp).await;
    let mut listed = conn.list().await.expect("read_back: list");
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    let entry = |p: &str| RemoteEntry {
        path: rel(p),
        size: 10,
    };
    let mut want = vec![entry("r/f"), entry("r/sub/g"), entry(&temp)];
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(listed, want, "read_back: list");
    c.finish(&["r"]).await;
}

/// **Verify** approves removing a local file only when the destination holds its bytes, as
/// far as the backend can tell ([`Options::verify_proves`]), and never modifies anything: a
/// delivered file holds (an empty one and one of several MiB too); another size, a missing
/// file and a directory are mismatches, each a one-line reason naming the path. With a
/// content hash, the same size with other bytes and a source rewritten since are mismatches,
/// and a vanished source is a transient error (nothing to hash), not a verdict. A backend
/// that cannot read back refuses with a permanent error, so no hand-off is ever approved.
pub async fn verify(conn: &dyn Connection, opts: &Options) {
    let c = Check::start(conn, opts, "verify").await;
    let file = c.file("a", b"0123456789");
    c.send(&file, "v/a").await;
    let verify = |file, p: &'static str| async move {
        conn.verify(file, &rel(p))
            .await
            .unwrap_or_else(|e| panic!("verify: verify {p}: {e}"))
    };
    if !opts.reads_back {
        let refused = conn.verify(&file, &rel("v/a")).await;
        expect_error(refused, ErrorKind::Permanent, "verify");
        return c.finish(&["v"]).await;
    }
    let delivered = |v: Verification, what: &str| match (opts.verify_proves, &v) {
        (Proof::Content, Verification::Content { .. }) | (Proof::Size, Verification::SizeOnly) => {}
        _ => panic!("verify: {what}: {v:?} for {:?}", opts.verify_proves),
    };
    let mismatch = |v: Verification, path: &str, what: &str| match &v {
        Verification::Mismatch(why) => {
            assert!(
                why.contains(path),
                "verify: {what}: {why:?} names no {path}"
            );
            assert!(!why.contains('\n'), "verify: {what}: {why:?}");
        }
        other => panic!("verify: {what}: expected a mismatch, got {other:?}"),
    };
    delivered(verify(&file, "v/a").await, "a delivered file");
    let empty = c.file("empty", b"");
    c.send(&empty, "v/empty").await;
    delivered(verify(&empty, "v/empty").await, "an empty file");
    // Several read chunks' worth (past SFTP's resume threshold, below S3's multipart one).
    let big = pseudo_random(3 * 1024 * 1024 + 17, 5);
    let big_file = c.file("big", &big);
    c.send(&big_file, "v/big.bin").await;
    delivered(verify(&big_file, "v/big.bin").await, "a large file");

    // The same size, one byte changed in the middle, written by another sender.
    let mut tampered = big.clone();
    tampered[big.len() / 2] ^= 0xff;
    c.send(&c.file("tampered", &tampered), "v/big.bin").await;
    let v = verify(&big_file, "v/big.bin").await;
    match opts.verify_proves {
        Proof::Content => mismatch(v, "v/big.bin", "same size, other bytes"),
        Proof::Size => assert_eq!(v, Verification::SizeOnly, "verify: same size"),
    }
    c.send(&c.file("short", b"01234"), "v/a").await;
    mismatch(verify(&file, "v/a").await, "v/a", "another size");
    mismatch(
        verify(&file, "v/missing").await,
        "v/missing",
        "a missing file",
    );
    mismatch(verify(&file, "v").await, "v", "a directory");

    if opts.verify_proves == Proof::Content {
        let later = c.file("later", b"version one");
        c.send(&later, "v/later").await;
        // Same size, new bytes, after the send: the destination no longer holds the source.
        std::fs::write(&later.path, b"version two").expect("rewrite source");
        mismatch(
            verify(&later, "v/later").await,
            "v/later",
            "source rewritten",
        );
        std::fs::remove_file(&later.path).expect("remove source");
        let vanished = conn.verify(&later, &rel("v/later")).await;
        expect_error(vanished, ErrorKind::Transient, "verify: a vanished source");
    }
    // Verification never modified anything.
    c.expect_content("v/a", b"01234", "after verify").await;
    c.expect_content("v/big.bin", &tampered, "after verify")
        .await;
    c.expect_content("v/empty", b"", "after verify").await;
    c.finish(&["v"]).await;
}
