//! The local-folder destination passes the conformance suite.

use skynet_core::conformance::{self, Proof};
use skynet_core::{Blocking, LocalConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_conforms() {
    let dest = tempfile::tempdir().expect("tempdir");
    let root = dest.path().join("root");
    let conn = Blocking::new(LocalConnection::new(&root));
    let opts = conformance::Options {
        local_root: Some(root),
        removes_empty_dirs: true,
        verify_proves: Proof::Content,
        writes_temps: true,
        ..Default::default()
    };
    conformance::run(&conn, &opts).await;
}

/// Verification (which approves removing the local file) hashes with SHA-256, and catches
/// bytes changed on disk behind the connection's back (the suite changes them by sending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_verifies_content_by_sha256() {
    use skynet_core::conformance::{expect_mismatch, local_file, rel};
    use skynet_core::{Connection, Verification};

    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Blocking::new(LocalConnection::new(dir.path().join("root")));
    conn.connect().await.unwrap();
    let file = local_file(dir.path(), "f.bin", b"the delivered bytes");
    conn.send(&file, &rel("sub/f.bin")).await.unwrap();
    let verdict = conn.verify(&file, &rel("sub/f.bin")).await.unwrap();
    assert_eq!(
        verdict,
        Verification::Content {
            algorithm: "sha256"
        }
    );
    std::fs::write(dir.path().join("root/sub/f.bin"), b"the delivered bytez").unwrap();
    let verdict = conn.verify(&file, &rel("sub/f.bin")).await.unwrap();
    expect_mismatch(&verdict, "sub/f.bin: destination content differs (sha256 ");
}
