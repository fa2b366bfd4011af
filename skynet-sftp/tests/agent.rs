//! Authentication through ssh-agent. A separate test binary because it sets SSH_AUTH_SOCK
//! for the whole process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skynet_core::connection::BlockingConnection;
use skynet_core::error::ErrorKind;
use skynet_sftp::testing::SshServer;
use skynet_sftp::SftpConnection;

#[test]
fn agent_is_used_when_no_identity_is_given() {
    let server = SshServer::start();
    let root = server.remote_dir("d");
    let sock = server.scratch_dir().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let add = |args: &[&str], key: Option<&Path>| {
        let mut cmd = Command::new("ssh-add");
        cmd.args(args).env("SSH_AUTH_SOCK", &sock);
        if let Some(k) = key {
            cmd.arg(k);
        }
        assert!(
            cmd.output().expect("ssh-add").status.success(),
            "ssh-add {args:?}"
        );
    };
    add(&["-q"], Some(&server.client_key_path()));

    let mut cfg = server.config(&root);
    cfg.identity = None;
    cfg.use_agent = true;
    let result = SftpConnection::new(cfg.clone()).connect();

    add(&["-q", "-D"], None);
    let refused = SftpConnection::new(cfg).connect();
    let _ = agent.kill();
    let _ = agent.wait();

    result.expect("agent authentication");
    let err = refused.expect_err("empty agent accepted");
    assert_eq!(err.kind, ErrorKind::Setup, "{err}");
    assert!(
        err.message.contains("authentication failed (tried: agent)"),
        "{err}"
    );
}
