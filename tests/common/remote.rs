//! The same scenario on every destination: a local folder, a private sshd, a private s3s-fs.
//! [`Backend`] gives the URL and flags `skynet` needs, reads back what the destination holds,
//! and lists what a crash may leave behind there (temporary files, open multipart uploads).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skynet_s3::testing::S3Server;
use skynet_sftp::testing::SshServer;

use super::{is_temp_path, tree, Daemon, Scratch};

pub type Tree = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

pub enum Backend {
    Local(PathBuf),
    Sftp {
        server: SshServer,
        root: PathBuf,
    },
    S3 {
        server: S3Server,
        bucket: String,
        prefix: String,
        rt: tokio::runtime::Runtime,
        conn: skynet_s3::S3Connection,
    },
}

impl Backend {
    /// The scratch's `dst` folder.
    pub fn local(s: &Scratch) -> Backend {
        Backend::Local(s.dst.clone())
    }

    /// A fresh sshd (panics with a clear message when sshd is missing) and remote folder.
    pub fn sftp(name: &str) -> Backend {
        let server = SshServer::start();
        let root = server.remote_dir(name);
        Backend::Sftp { server, root }
    }

    /// A fresh s3s-fs (panics with a clear message when it is missing), one bucket, a prefix.
    pub fn s3(bucket: &str, prefix: &str) -> Backend {
        let server = S3Server::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(server.create_bucket(bucket));
        let conn = rt
            .block_on(skynet_s3::S3Connection::new(server.config(bucket, "")))
            .expect("inspection client");
        Backend::S3 {
            server,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            rt,
            conn,
        }
    }

    pub fn url(&self) -> String {
        match self {
            Backend::Local(dir) => dir.display().to_string(),
            Backend::Sftp { server, root } => format!(
                "sftp://{}@127.0.0.1:{}{}",
                server.user(),
                server.port(),
                root.display()
            ),
            Backend::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// `skynet SUBCOMMAND SRC URL EXTRA` with what this destination needs: key and
    /// known_hosts for SFTP; endpoint, path style and keys (environment) for S3.
    pub fn command(&self, s: &Scratch, subcommand: &str, extra: &[&str]) -> Command {
        let url = self.url();
        let mut args = vec![subcommand, s.src_str(), url.as_str()];
        args.extend_from_slice(extra);
        self.command_args(s, &args)
    }

    /// Runs `skynet sync SRC URL EXTRA` to completion.
    pub fn sync(&self, s: &Scratch, extra: &[&str]) -> Output {
        self.command(s, "sync", extra)
            .output()
            .expect("run skynet sync")
    }

    /// `skynet ARGS…` with what reaching this backend takes (keys, endpoint, credentials).
    pub fn command_args(&self, s: &Scratch, args: &[&str]) -> Command {
        let mut cmd = s.cmd(args);
        match self {
            Backend::Local(_) => {}
            Backend::Sftp { server, .. } => {
                cmd.arg("--identity")
                    .arg(server.client_key_path())
                    .arg("--known-hosts")
                    .arg(server.known_hosts_path());
            }
            Backend::S3 { server, .. } => {
                cmd.args(["--s3-endpoint", &server.endpoint(), "--s3-path-style"])
                    .env("AWS_ACCESS_KEY_ID", server.access_key())
                    .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
                    .env("AWS_REGION", "us-east-1")
                    .env_remove("AWS_ENDPOINT_URL")
                    .env_remove("AWS_PROFILE")
                    .env_remove("AWS_SESSION_TOKEN");
            }
        }
        cmd
    }

    /// Starts `skynet SUBCOMMAND SRC URL EXTRA` in the background.
    pub fn spawn(&self, s: &Scratch, subcommand: &str, extra: &[&str]) -> Daemon {
        s.spawn_cmd(self.command(s, subcommand, extra))
    }

    /// Every file (object) under the destination root, by path relative to it, temporary
    /// files included, so that comparing with the source also proves none was left.
    pub fn contents(&self) -> Result<Tree, String> {
        match self {
            Backend::Local(dir) | Backend::Sftp { root: dir, .. } => Ok(tree(dir)),
            Backend::S3 {
                bucket,
                prefix,
                rt,
                conn,
                ..
            } => {
                let list_prefix = format!("{prefix}/");
                let all = rt.block_on(skynet_s3::testing::objects(
                    conn.client(),
                    bucket,
                    &list_prefix,
                ))?;
                Ok(all
                    .into_iter()
                    .map(|(key, bytes)| {
                        let rel = key.strip_prefix(&list_prefix).unwrap_or(&key);
                        (rel.as_bytes().to_vec(), bytes)
                    })
                    .collect())
            }
        }
    }

    /// About how many files arrived so far (cheap: no download), temporary files left out.
    pub fn arrived(&self) -> usize {
        match self {
            Backend::Local(dir) | Backend::Sftp { root: dir, .. } => super::count_files(dir),
            Backend::S3 {
                server,
                bucket,
                prefix,
                ..
            } => super::count_files(&server.data_dir().join(bucket).join(prefix)),
        }
    }

    /// What a crash may leave behind: temporary files, multipart uploads still open.
    pub fn leftovers(&self) -> Vec<String> {
        let temps = |dir: &Path| -> Vec<String> {
            tree(dir)
                .keys()
                .filter(|k| is_temp_path(k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        match self {
            Backend::Local(dir) | Backend::Sftp { root: dir, .. } => temps(dir),
            Backend::S3 { server, .. } => {
                // s3s-fs has no ListMultipartUploads; the harness reads its data directory.
                let mut left: Vec<String> = server
                    .in_progress_uploads()
                    .into_iter()
                    .map(|id| {
                        let key = server.upload_key(&id).unwrap_or_default();
                        format!("open multipart upload {id} of key={key}")
                    })
                    .collect();
                left.extend(temps(&server.data_dir()));
                left
            }
        }
    }

    /// Kills the server (SFTP, S3); nothing for a local folder.
    pub fn stop_server(&mut self) {
        match self {
            Backend::Local(_) => {}
            Backend::Sftp { server, .. } => server.stop(),
            Backend::S3 { server, .. } => server.stop(),
        }
    }

    /// Starts the server again on the same port, with the same keys and data.
    pub fn restart_server(&mut self) {
        match self {
            Backend::Local(_) => {}
            Backend::Sftp { server, .. } => server.restart(),
            Backend::S3 { server, .. } => server.restart(),
        }
    }

    /// The server's log, for failure messages.
    pub fn server_log(&self) -> String {
        match self {
            Backend::Local(_) => String::new(),
            Backend::Sftp { server, .. } => server.log(),
            Backend::S3 { server, .. } => server.log(),
        }
    }
}
