//! The local-folder destination passes the conformance suite.

use skynet_core::{conformance, Blocking, LocalConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_conforms() {
    let dest = tempfile::tempdir().expect("tempdir");
    let root = dest.path().join("root");
    let conn = Blocking::new(LocalConnection::new(&root));
    let opts = conformance::Options {
        local_root: Some(root),
        removes_empty_dirs: true,
        ..Default::default()
    };
    conformance::run(&conn, &opts).await;
}

/// Verification (which approves removing the local file) compares content, not only size:
/// a destination copy of the same size with other bytes is a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_verifies_content() {
    use skynet_core::connection::{SourceFile, Verification};
    use skynet_core::{Connection, RelPath};

    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("f.bin");
    std::fs::write(&local, b"the delivered bytes").unwrap();
    let conn = Blocking::new(LocalConnection::new(dir.path().join("root")));
    conn.connect().await.unwrap();
    let file = SourceFile::stat(&local).unwrap();
    let rel = RelPath::from_bytes(b"sub/f.bin").unwrap();
    conn.send(&file, &rel).await.unwrap();
    let verdict = conn.verify(&file, &rel).await.unwrap();
    assert!(
        matches!(verdict, Verification::Content { .. }),
        "{verdict:?}"
    );

    let remote = dir.path().join("root/sub/f.bin");
    std::fs::write(&remote, b"the delivered bytez").unwrap();
    let verdict = conn.verify(&file, &rel).await.unwrap();
    assert!(
        matches!(&verdict, Verification::Mismatch(why) if why.contains("sha256")),
        "{verdict:?}"
    );
    std::fs::write(&remote, b"short").unwrap();
    assert!(!conn.verify(&file, &rel).await.unwrap().holds());
    std::fs::remove_file(&remote).unwrap();
    assert!(!conn.verify(&file, &rel).await.unwrap().holds());
}
