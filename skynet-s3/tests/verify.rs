//! `S3Connection::verify` against a real s3s-fs server. What s3s-fs 0.14.1 does, as observed
//! here: HeadObject returns the CRC32C stored with a single PUT that sent one, none for an
//! object PUT without a checksum, and none for a completed multipart upload (except a stale
//! one kept from an earlier single PUT of the same key). It never returns composite
//! checksums, so that form is checked against an independent computation in the unit tests.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use skynet_core::conformance::{expect_mismatch as assert_mismatch, local_file as local, rel};
use skynet_core::{Connection, Verification};
use skynet_s3::testing::{pseudo_random, S3Server};
use skynet_s3::{S3Config, S3Connection, MIB};

async fn connect(cfg: S3Config) -> S3Connection {
    let conn = S3Connection::new(cfg).await.expect("build connection");
    conn.connect().await.expect("connect");
    conn
}

/// Replaces the object behind the connection's back, as another writer would, with its own
/// correct CRC32C or none. (The value is given, not just the algorithm: the harness client,
/// like skynet's, only adds checksums an operation requires.)
async fn overwrite(conn: &S3Connection, key: &str, bytes: &[u8], with_crc32c: bool) {
    let mut put = conn
        .client()
        .put_object()
        .bucket(&conn.config().bucket)
        .key(key)
        .body(ByteStream::from(bytes.to_vec()));
    if with_crc32c {
        use base64::Engine;
        let crc = crc_fast::crc32_iscsi(bytes).to_be_bytes();
        put = put
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .checksum_crc32_c(base64::engine::general_purpose::STANDARD.encode(crc));
    }
    put.send().await.expect("overwrite object");
}

/// A single PUT is proven by its CRC32C; the same bytes stored by another writer without a
/// checksum leave only the size (s3s-fs then reports none). What every backend's verify does
/// (tampering, other sizes, missing objects, "directories") is the conformance suite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_put_verifies_by_crc32c_and_an_object_without_one_by_size() {
    let server = S3Server::start();
    server.create_bucket("ver").await;
    let conn = connect(server.config("ver", "p")).await;
    let dir = tempfile::tempdir().expect("tmp");
    let bytes = pseudo_random(300 * 1024 + 3, 1);
    let file = local(dir.path(), "a", &bytes);
    conn.send(&file, &rel("d/a.bin")).await.expect("send");
    assert_eq!(
        conn.verify(&file, &rel("d/a.bin")).await.expect("verify"),
        Verification::Content {
            algorithm: "crc32c"
        }
    );

    // Same size, one byte different, stored with its own (correct) CRC32C.
    let mut other = bytes.clone();
    other[1000] ^= 1;
    overwrite(&conn, "p/d/a.bin", &other, true).await;
    assert_mismatch(
        &conn.verify(&file, &rel("d/a.bin")).await.expect("verify"),
        "d/a.bin: destination content differs (crc32c ",
    );

    // Stored without a checksum: only the size can be checked.
    overwrite(&conn, "p/d/a.bin", &other, false).await;
    assert_eq!(
        conn.verify(&file, &rel("d/a.bin")).await.expect("verify"),
        Verification::SizeOnly
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_verifies_by_size_on_s3s_fs() {
    let server = S3Server::start();
    server.create_bucket("ver").await;
    let mut cfg = server.config("ver", "");
    cfg.multipart_threshold = 5 * MIB;
    cfg.part_size = 5 * MIB;
    let conn = connect(cfg).await;
    let dir = tempfile::tempdir().expect("tmp");
    let bytes = pseudo_random(12 * MIB as usize + 5, 2);
    let file = local(dir.path(), "big", &bytes);
    conn.send(&file, &rel("big.bin")).await.expect("send");

    let head = conn
        .client()
        .head_object()
        .bucket("ver")
        .key("big.bin")
        .send()
        .await
        .expect("head");
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    assert!(etag.ends_with("-3"), "12 MiB in 5 MiB parts: ETag {etag}");

    // s3s-fs keeps no checksum for a completed multipart upload: size only.
    let v = conn.verify(&file, &rel("big.bin")).await.expect("verify");
    assert_eq!(v, Verification::SizeOnly);
    assert!(v.holds());

    let mut shorter = bytes.clone();
    shorter.truncate(bytes.len() - 1);
    overwrite(&conn, "big.bin", &shorter, true).await;
    assert_mismatch(
        &conn.verify(&file, &rel("big.bin")).await.expect("verify"),
        "destination holds",
    );
}

/// s3s-fs 0.14.1 keeps the CRC32C of an earlier single PUT of a key after a multipart upload
/// replaces it. A checksum that does not describe the object must never make it pass: the
/// verdict is a mismatch that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_whole_object_checksum_on_a_multipart_object_never_passes() {
    let server = S3Server::start();
    server.create_bucket("ver").await;
    let mut cfg = server.config("ver", "");
    cfg.multipart_threshold = 5 * MIB;
    cfg.part_size = 5 * MIB;
    let conn = connect(cfg).await;
    let dir = tempfile::tempdir().expect("tmp");
    let small = local(dir.path(), "s", b"small");
    conn.send(&small, &rel("k")).await.expect("send small");
    let big = local(dir.path(), "b", &pseudo_random(11 * MIB as usize, 3));
    conn.send(&big, &rel("k")).await.expect("send big");
    let v = conn.verify(&big, &rel("k")).await.expect("verify");
    assert_mismatch(
        &v,
        "whole-object checksum for a multipart object, which may be stale",
    );
}
