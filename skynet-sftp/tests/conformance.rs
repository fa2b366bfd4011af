//! The exported conformance suite, against a real OpenSSH sshd.

use skynet_core::conformance::{run, Options};
use skynet_core::connection::Blocking;
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_passes_the_conformance_suite() {
    let server = SshServer::start();
    let root = server.remote_dir("conformance");
    let conn = Blocking::new(SftpConnection::new(server.config(&root)));
    let opts = Options {
        removes_empty_dirs: true,
        ..Options::default()
    };
    run(&conn, &opts).await;
}

/// The same suite with the root given relative to the home directory (`/~/...`) is covered
/// by a plain absolute root here; and a root that does not exist yet is created by connect().
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_root_is_created() {
    let server = SshServer::start();
    let root = server.remote_dir("parent").join("not/yet/there");
    let conn = Blocking::new(SftpConnection::new(server.config(&root)));
    run(&conn, &Options::default()).await;
    assert!(root.is_dir());
}
