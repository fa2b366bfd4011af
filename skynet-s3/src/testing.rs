//! Test harness (feature `testing`): a private s3s-fs server on a free loopback port, with a
//! temporary data directory and random keys, killed and reaped when dropped.
//!
//! ```text
//! let server = S3Server::start();
//! server.create_bucket("bkt").await;
//! let conn = S3Connection::new(server.config("bkt", "prefix")).await.unwrap();
//! ```
//!
//! The binary is taken from `SKYNET_S3S_FS`, then `$HOME/.cache/skynet-tools/bin/s3s-fs`, then
//! `PATH`. When it is missing the harness panics (tests never skip silently).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};

use crate::config::{S3Config, StaticCredentials};

pub mod moto;
pub use moto::MotoServer;

/// A running (or stopped, between `stop` and `restart`) s3s-fs server.
pub struct S3Server {
    binary: PathBuf,
    /// Holds `data/` (the server's root: one folder per bucket) and `server.log`.
    dir: tempfile::TempDir,
    port: u16,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
}

/// Where the s3s-fs binary is, or a panic saying how to install it.
pub fn s3s_fs_binary() -> PathBuf {
    find_tool("SKYNET_S3S_FS", "bin/s3s-fs", "s3s-fs")
}

/// A test server's program: the path in `var`, else `$HOME/.cache/skynet-tools/{in_tools}`
/// (where `scripts/install-test-deps` puts it), else `name` on `PATH`; a panic naming the
/// install script when none exists (tests never skip silently).
pub(crate) fn find_tool(var: &str, in_tools: &str, name: &str) -> PathBuf {
    let candidates = std::env::var_os(var)
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(".cache/skynet-tools").join(in_tools)),
        )
        .chain(
            std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for p in candidates {
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/install-test-deps");
}

/// The client settings of every test server (s3s-fs, moto): `endpoint`, path style, region
/// and keys set explicitly (no process environment involved), short timeouts, one attempt per
/// request (so a dead server shows at once).
pub(crate) fn test_config(
    endpoint: String,
    credentials: StaticCredentials,
    bucket: &str,
    prefix: &str,
) -> S3Config {
    let mut cfg = S3Config::new(bucket, prefix).expect("valid test bucket and prefix");
    cfg.endpoint = Some(endpoint);
    cfg.path_style = true;
    cfg.region = Some("us-east-1".to_string());
    cfg.credentials = Some(credentials);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.read_timeout = Duration::from_secs(20);
    cfg.attempt_timeout = Duration::from_secs(60);
    cfg.max_attempts = 1;
    cfg
}

/// Creates the bucket `cfg` names through the S3 API.
pub(crate) async fn create_bucket(cfg: S3Config) {
    let name = cfg.bucket.clone();
    let conn = crate::S3Connection::new(cfg)
        .await
        .expect("client for create_bucket");
    conn.client()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

impl S3Server {
    /// Starts a server on a free port with a fresh data directory and random keys.
    pub fn start() -> S3Server {
        let binary = s3s_fs_binary();
        let dir = tempfile::tempdir().expect("temp dir for s3s-fs");
        std::fs::create_dir(dir.path().join("data")).expect("s3s-fs data dir");
        let mut rng = rand::thread_rng();
        let mut server = S3Server {
            binary,
            dir,
            port: free_port(),
            access_key: format!("AK{}", Alphanumeric.sample_string(&mut rng, 18)),
            secret_key: Alphanumeric.sample_string(&mut rng, 40),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("s3s-fs log file");
        let log2 = log.try_clone().expect("s3s-fs log file");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        // The port may still be held for a moment after a stop: try a few times.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut child = Command::new(&self.binary)
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--access-key",
                    &self.access_key,
                    "--secret-key",
                    &self.secret_key,
                ])
                .arg(self.dir.path().join("data"))
                .env_remove("AWS_CA_BUNDLE")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log2.try_clone().expect("log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited (port busy?): start again
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("s3s-fs did not start listening on {addr}: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if Instant::now() > deadline {
                panic!("s3s-fs kept exiting on {addr}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
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

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server's root: one folder per bucket, objects stored as files.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn credentials(&self) -> StaticCredentials {
        StaticCredentials {
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
        }
    }

    /// A config for `bucket`/`prefix` on this server: endpoint, path style, region and the
    /// keys set explicitly (no process environment involved), short timeouts, one attempt per
    /// request (so a dead server shows at once); sizes stay at the defaults (multipart from
    /// 16 MiB, 8 MiB parts).
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        test_config(self.endpoint(), self.credentials(), bucket, prefix)
    }

    /// Creates a bucket through the S3 API.
    pub async fn create_bucket(&self, name: &str) {
        create_bucket(self.config(name, "")).await
    }

    /// Ids of multipart uploads in progress (neither completed nor aborted). s3s-fs does not
    /// implement ListMultipartUploads, so this reads its data directory, where each upload
    /// in progress is a `.upload-<id>.json` file. Part files (`.upload_id-<id>.part-N`)
    /// without it are not an upload any request can reach: s3s-fs forgets the id first when
    /// it completes or aborts, so a completion cut short (its client killed) leaves them.
    pub fn in_progress_uploads(&self) -> Vec<String> {
        let mut ids = std::collections::BTreeSet::new();
        let Ok(entries) = std::fs::read_dir(self.data_dir()) else {
            return Vec::new();
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix(".upload-")
                .and_then(|r| r.strip_suffix(".json"))
            {
                ids.insert(id.to_string());
            }
        }
        ids.into_iter().collect()
    }

    /// The key of upload `id` in progress, read from the name of the metadata file s3s-fs
    /// keeps for it: `.bucket-<b64>.object-<b64>.upload-<id>.metadata.json` (URL-safe
    /// base64 without padding).
    pub fn upload_key(&self, id: &str) -> Option<String> {
        use base64::Engine;
        let suffix = format!(".upload-{id}.metadata.json");
        std::fs::read_dir(self.data_dir())
            .ok()?
            .flatten()
            .find_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let rest = name.strip_suffix(&suffix)?;
                let (_, object) = rest.split_once(".object-")?;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(object)
                    .ok()?;
                String::from_utf8(bytes).ok()
            })
    }

    /// Part numbers the server holds for upload `id`.
    pub fn stored_parts(&self, id: &str) -> Vec<u32> {
        let prefix = format!(".upload_id-{id}.part-");
        let mut parts: Vec<u32> = std::fs::read_dir(self.data_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name.strip_prefix(&prefix).and_then(|n| n.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default();
        parts.sort_unstable();
        parts
    }

    /// Kills the server (a realistic connection loss) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data and keys.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use skynet_core::conformance::pseudo_random;

/// Every object whose key starts with `prefix`, listed page by page and downloaded, by key:
/// what the tests compare with the source.
pub async fn objects(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.clone())
            .send()
            .await
            .map_err(|e| format!("list {prefix}: {e:?}"))?;
        for obj in page.contents() {
            let key = obj.key().unwrap_or_default().to_string();
            let got = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| format!("get {key}: {e:?}"))?;
            let bytes = got
                .body
                .collect()
                .await
                .map_err(|e| format!("read {key}: {e:?}"))?
                .into_bytes();
            out.insert(key, bytes.to_vec());
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}
