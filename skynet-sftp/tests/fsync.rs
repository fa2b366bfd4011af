//! Flushing uploads (`fsync@openssh.com`) against a real OpenSSH server whose SFTP server
//! logs every request: asked for, each upload is flushed under its temporary name and again
//! under its final one; a server that refuses the extension is detected and sends go on.

use skynet_core::conformance::{local_file as source, rel};
use skynet_core::connection::BlockingConnection;
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

fn flushed(server: &SshServer) -> Vec<String> {
    server
        .sftp_log()
        .lines()
        .filter_map(|l| {
            l.split_once("fsync \"")
                .map(|(_, r)| r.trim_end_matches('"').to_string())
        })
        .collect()
}

#[test]
fn uploads_are_flushed_only_when_asked_and_offered() {
    let server = SshServer::start_logging_sftp(&[]);
    let root = server.remote_dir("d");
    let local = tempfile::tempdir().expect("tmp");
    let file = source(local.path(), "a", b"0123456789");

    let plain = SftpConnection::new(server.config(&root));
    plain.connect().expect("connect");
    plain.send(&file, &rel("plain")).expect("send");
    assert_eq!(plain.fsync_offered(), None);
    assert!(flushed(&server).is_empty(), "{}", server.sftp_log());

    let durable = SftpConnection::new(server.config(&root).with_fsync(true));
    durable.connect().expect("connect");
    // Found out at connection time, on a temporary file in the root, removed since.
    assert_eq!(durable.fsync_offered(), Some(true));
    let got = flushed(&server);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(&format!("{}/.skynet-tmp.", root.display())),
        "{got:?}"
    );
    assert!(std::fs::read_dir(&root).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".skynet-tmp.")));
    durable.send(&file, &rel("sub/durable")).expect("send");
    let got = flushed(&server);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[1].contains("/sub/.skynet-tmp."), "{got:?}");
    assert_eq!(got[2], root.join("sub/durable").display().to_string());
}

#[test]
fn a_server_refusing_fsync_is_detected_and_sends_go_on() {
    let server = SshServer::start_logging_sftp(&["fsync"]);
    let root = server.remote_dir("d");
    let local = tempfile::tempdir().expect("tmp");
    let conn = SftpConnection::new(server.config(&root).with_fsync(true));
    conn.connect().expect("connect");
    assert_eq!(
        conn.fsync_offered(),
        Some(false),
        "known at connection time"
    );
    for name in ["a", "b"] {
        let file = source(local.path(), name, name.as_bytes());
        conn.send(&file, &rel(name)).expect("send");
        assert_eq!(std::fs::read(root.join(name)).unwrap(), name.as_bytes());
    }
    assert_eq!(conn.fsync_offered(), Some(false));
    // Asked once, then no more.
    let refusals = server
        .sftp_log()
        .matches("sent status Permission denied")
        .count();
    assert_eq!(refusals, 1, "{}", server.sftp_log());
}
