//! `SftpConfig`: everything needed to reach an SFTP destination.
//!
//! Built from the URL (`SftpConfig::from_url`), then adjusted with the `with_*` methods from
//! command-line options. Secrets (password, key passphrase) come only from environment
//! variables and are held in [`Secret`], whose `Debug` never shows them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::errors::SftpError;
use crate::url::SftpUrl;

/// Environment variable holding the password for password authentication.
pub const PASSWORD_ENV: &str = "SKYNET_SFTP_PASSWORD";
/// Environment variable holding the passphrase of the identity file.
pub const PASSPHRASE_ENV: &str = "SKYNET_SFTP_PASSPHRASE";

/// A password or passphrase. Never printed: `Debug` shows `***`, there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, only for handing to libssh2.
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn from_env(var: &str) -> Option<Secret> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What to do with a host key that is not in the known_hosts file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse unknown and changed keys (the default, like OpenSSH's `StrictHostKeyChecking yes`).
    #[default]
    Strict,
    /// Record an unknown key in known_hosts and accept it; still refuse a changed key
    /// (like OpenSSH's `StrictHostKeyChecking accept-new`).
    AcceptNew,
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" | "yes" => Ok(HostKeyPolicy::Strict),
            "accept-new" | "accept_new" => Ok(HostKeyPolicy::AcceptNew),
            other => Err(format!(
                "unknown host key policy {other:?}: expected strict or accept-new"
            )),
        }
    }
}

/// How to reach and authenticate to an SFTP destination.
#[derive(Clone)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Remote root; a relative path is relative to the login's home directory.
    pub root: PathBuf,
    /// Private key to authenticate with; `None` means ssh-agent, then password.
    pub identity: Option<PathBuf>,
    /// Passphrase of `identity` (from `SKYNET_SFTP_PASSPHRASE`).
    pub identity_passphrase: Option<Secret>,
    /// Password (from `SKYNET_SFTP_PASSWORD`), tried after the key and the agent.
    pub password: Option<Secret>,
    /// Whether to try ssh-agent (when `SSH_AUTH_SOCK` is set).
    pub use_agent: bool,
    /// OpenSSH known_hosts file; empty when `$HOME` was unset and none was given.
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// Limit for TCP connect and for every blocking SSH call: a silent peer is reported as a
    /// lost connection after this long.
    pub timeout: Duration,
    /// Most sessions open at once (one per concurrent worker).
    pub pool_size: usize,
    /// Whether `verify` reads the remote file back and compares its SHA-256 with the local
    /// file's. SFTP v3 has no hash request (OpenSSH offers none, and skynet never runs remote
    /// commands), so proving content costs a full download; off, `verify` checks the size.
    pub verify_read_back: bool,
    /// Flush every upload to the server's disk (`fsync@openssh.com`) before acknowledging
    /// it: on when the mapping removes the local copy after delivery (`remove_source`).
    pub fsync: bool,
}

impl SftpConfig {
    pub const DEFAULT_PORT: u16 = 22;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_POOL_SIZE: usize = 4;

    /// Parses `sftp://[user@]host[:port]/path` and fills the rest with defaults: user from
    /// `$USER`, `~/.ssh/known_hosts`, strict host keys, 30 s timeout, secrets from the
    /// environment (`SKYNET_SFTP_PASSWORD`, `SKYNET_SFTP_PASSPHRASE`).
    pub fn from_url(url: &str) -> Result<SftpConfig, SftpError> {
        let parsed = SftpUrl::parse(url)?;
        let user = match parsed.user {
            Some(u) => u,
            None => std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .ok()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| SftpError::NoUser {
                    url: url.to_string(),
                })?,
        };
        // Without $HOME the default is empty and connect() asks for an explicit file, so
        // that a caller passing one (`with_known_hosts`) does not fail here.
        let known_hosts = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| Path::new(&home).join(".ssh").join("known_hosts"))
            .unwrap_or_default();
        Ok(SftpConfig {
            host: parsed.host,
            port: parsed.port.unwrap_or(Self::DEFAULT_PORT),
            user,
            root: parsed.path,
            identity: None,
            identity_passphrase: Secret::from_env(PASSPHRASE_ENV),
            password: Secret::from_env(PASSWORD_ENV),
            use_agent: true,
            known_hosts,
            host_key_policy: HostKeyPolicy::Strict,
            timeout: Self::DEFAULT_TIMEOUT,
            pool_size: Self::DEFAULT_POOL_SIZE,
            verify_read_back: false,
            fsync: false,
        })
    }

    pub fn with_identity(mut self, key: impl Into<PathBuf>) -> Self {
        self.identity = Some(key.into());
        self
    }
    pub fn with_known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = path.into();
        self
    }
    pub fn with_host_key_policy(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key_policy = policy;
        self
    }
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// At least 1.
    pub fn with_pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }
    pub fn with_password(mut self, password: Option<Secret>) -> Self {
        self.password = password;
        self
    }
    pub fn with_agent(mut self, use_agent: bool) -> Self {
        self.use_agent = use_agent;
        self
    }
    /// See [`SftpConfig::verify_read_back`].
    pub fn with_verify_read_back(mut self, read_back: bool) -> Self {
        self.verify_read_back = read_back;
        self
    }

    /// See [`SftpConfig::fsync`].
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// `host` as written in URLs and known_hosts (IPv6 in brackets).
    pub(crate) fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `sftp://user@host:port`: names the server in messages. No secrets.
    pub fn server(&self) -> String {
        format!("sftp://{}@{}:{}", self.user, self.host_for_url(), self.port)
    }

    /// `sftp://user@host:port/root`, for logs and `status`. No secrets.
    pub fn describe(&self) -> String {
        let root = self.root.display().to_string();
        if self.root.is_absolute() {
            format!("{}{root}", self.server())
        } else if root == "." {
            format!("{}/~", self.server())
        } else {
            format!("{}/~/{root}", self.server())
        }
    }
}

impl fmt::Debug for SftpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<Secret>| if s.is_some() { "***" } else { "none" };
        f.debug_struct("SftpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("root", &self.root)
            .field("identity", &self.identity)
            .field("identity_passphrase", &redact(&self.identity_passphrase))
            .field("password", &redact(&self.password))
            .field("use_agent", &self.use_agent)
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .field("verify_read_back", &self.verify_read_back)
            .field("fsync", &self.fsync)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_describe() {
        let c = SftpConfig::from_url("sftp://alice@[::1]:2200/~/backup").expect("parse");
        assert_eq!(c.port, 2200);
        assert_eq!(c.describe(), "sftp://alice@[::1]:2200/~/backup");
        let c = SftpConfig::from_url("sftp://alice@h/srv").expect("parse");
        assert_eq!(c.port, 22);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.host_key_policy, HostKeyPolicy::Strict);
        assert!(!c.verify_read_back, "read-back costs a download: opt-in");
        assert!(c.known_hosts.ends_with(".ssh/known_hosts"));
        assert_eq!(c.describe(), "sftp://alice@h:22/srv");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = SftpConfig::from_url("sftp://alice@h/srv")
            .expect("parse")
            .with_password(Some(Secret::new("hunter2")));
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn policy_names() {
        assert_eq!("strict".parse(), Ok(HostKeyPolicy::Strict));
        assert_eq!("accept-new".parse(), Ok(HostKeyPolicy::AcceptNew));
        assert!("maybe".parse::<HostKeyPolicy>().is_err());
    }
}
