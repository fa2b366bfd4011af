//! A second S3 implementation for tests: moto's server (PyPI `moto[server]`, command
//! `moto_server`) on a free loopback port, killed and reaped when dropped.
//!
//! Why a second server: s3s-fs and moto answer differently where the S3 API leaves room (moto
//! answers a bare `404` to a PUT or DELETE whose key holds a newline), and skynet must read
//! every such answer as a failure, never as a delivery. moto keeps everything in memory and
//! accepts any credentials.
//!
//! The program is taken from `SKYNET_MOTO_SERVER`, then
//! `$HOME/.cache/skynet-tools/moto/bin/moto_server` (where `scripts/install-test-deps` puts
//! it), then `PATH`. When it is missing the harness panics (tests never skip silently).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{S3Config, StaticCredentials};

/// A running moto server.
pub struct MotoServer {
    /// Holds `server.log`.
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// Where `moto_server` is, or a panic saying how to install it.
pub fn moto_server_binary() -> PathBuf {
    super::find_tool("SKYNET_MOTO_SERVER", "moto/bin/moto_server", "moto_server")
}

impl MotoServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    pub fn start() -> MotoServer {
        let binary = moto_server_binary();
        let dir = tempfile::tempdir().expect("temp dir for moto");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let port = super::free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).expect("moto log");
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return MotoServer {
                        dir,
                        port,
                        child: Some(child),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (port taken meanwhile?): try another port
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto_server did not start listening on {addr}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server kept exiting: {}",
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                );
            }
        }
    }

    /// The server's output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto accepts any keys; these are the ones the tests pass.
    pub fn access_key(&self) -> &str {
        "moto-test-key"
    }

    pub fn secret_key(&self) -> &str {
        "moto-test-secret"
    }

    /// A config for `bucket`/`prefix` on this server, like [`super::S3Server::config`].
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        let credentials = StaticCredentials {
            access_key_id: self.access_key().to_string(),
            secret_access_key: self.secret_key().to_string(),
            session_token: None,
        };
        super::test_config(self.endpoint(), credentials, bucket, prefix)
    }

    /// Creates a bucket through the S3 API (names of 3 to 63 characters: moto checks).
    pub async fn create_bucket(&self, name: &str) {
        super::create_bucket(self.config(name, "")).await
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
