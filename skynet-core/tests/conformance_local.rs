//! The local-folder destination passes the conformance suite.

use skynet_core::{conformance, Blocking, LocalConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_folder_conforms() {
    let dest = tempfile::tempdir().expect("tempdir");
    let conn = Blocking::new(LocalConnection::new(dest.path().join("root")));
    conformance::run(&conn, &conformance::Options::default()).await;
}
