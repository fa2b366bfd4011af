//! The exported conformance suite against two S3 implementations: a real s3s-fs server,
//! under a prefix and at the bucket root (empty prefix), and moto's server, which answers
//! differently where the S3 API leaves room.
//!
//! Known server limit: s3s-fs 0.14.1 stores each object's metadata in a sidecar file named
//! after the base64 of the whole key, so any key over about 160 bytes fails there with
//! `InternalError (HTTP 500)` (ENAMETOOLONG), whatever the client does; real S3 takes 1024-byte
//! keys. The suite is told so with `max_name_len`.

use skynet_core::conformance::{run, Options, Proof};
use skynet_s3::testing::moto::MotoServer;
use skynet_s3::testing::S3Server;
use skynet_s3::S3Connection;

/// What both servers hold: text keys only; atomic PUTs (no temporaries, so cleanup and sweep
/// keep the defaults); a single PUT's CRC32C kept, so verify proves content (see `verify.rs`).
fn options() -> Options {
    Options {
        non_utf8_names: false,
        max_name_len: 100,
        removes_empty_dirs: true,
        verify_proves: Proof::Content,
        writes_temps: false,
        ..Options::default()
    }
}

async fn run_suite(bucket: &str, prefix: &str) {
    let server = S3Server::start();
    server.create_bucket(bucket).await;
    let conn = S3Connection::new(server.config(bucket, prefix))
        .await
        .expect("connection");
    run(&conn, &options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_under_a_prefix() {
    run_suite("conformance", "some/prefix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_at_the_bucket_root() {
    run_suite("conformance-root", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_on_moto() {
    let server = MotoServer::start();
    server.create_bucket("conformance-moto").await;
    let conn = S3Connection::new(server.config("conformance-moto", "moto/prefix"))
        .await
        .expect("connection");
    // moto answers a bare 404 to a key holding a newline: the suite checks it fails.
    let opts = Options {
        newline_names: false,
        ..options()
    };
    run(&conn, &opts).await;
}
