//! The exported conformance suite, against a real OpenSSH sshd: once as configured by
//! default (verify checks sizes), once with `verify_read_back` (verify proves the content).

use skynet_core::conformance::{run, Options, Proof};
use skynet_core::connection::Blocking;
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

fn options(verify_proves: Proof) -> Options {
    Options {
        removes_empty_dirs: true,
        writes_temps: true,
        verify_proves,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_passes_the_conformance_suite() {
    let server = SshServer::start();
    let root = server.remote_dir("conformance");
    let config = server.config(&root);
    assert!(!config.verify_read_back, "off by default");
    let conn = Blocking::new(SftpConnection::new(config));
    // The server's files are this machine's: the suite can plant links in the destination
    // and read modes (confinement).
    let opts = Options {
        local_root: Some(root.clone()),
        ..options(Proof::Size)
    };
    run(&conn, &opts).await;
}

/// With `verify_read_back`, and a root that does not exist yet (created by connect()). The
/// root relative to the home directory (`/~/...`) is covered in `server.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_back_and_a_missing_root() {
    let server = SshServer::start();
    let root = server.remote_dir("parent").join("not/yet/there");
    let conn = Blocking::new(SftpConnection::new(
        server.config(&root).with_verify_read_back(true),
    ));
    run(&conn, &options(Proof::Content)).await;
    assert!(root.is_dir());
}
