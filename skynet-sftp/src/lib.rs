//! SFTP destination for skynet, over libssh2 (the `ssh2` crate).
//!
//! ```no_run
//! use skynet_sftp::{HostKeyPolicy, SftpConfig, SftpConnection};
//! let cfg = SftpConfig::from_url("sftp://backup@example.org:2222/srv/mirror")?
//!     .with_identity("/home/me/.ssh/id_ed25519")
//!     .with_host_key_policy(HostKeyPolicy::Strict)
//!     .with_pool_size(4);
//! let conn = skynet_core::connection::Blocking::new(SftpConnection::new(cfg));
//! # Ok::<(), skynet_sftp::SftpError>(())
//! ```
//!
//! Only SFTP protocol requests are used — never a remote command — so it works on chrooted
//! `internal-sftp` servers and no file name can be interpreted by a shell.
//!
//! # Layout
//! Each module depends only on those listed before it (no module imports one that imports it):
//! - `errors`: every error of the crate, and the one classification of libssh2's errors into
//!   the engine's kinds, on which the handler's retry policy rests.
//! - `url`, `config`: the destination URL and everything configurable about it.
//! - `known_hosts`, `hostkey`, `auth`: checking the server's host key, and logging in.
//! - `pool`: opening sessions, and pooling them so that workers transfer in parallel.
//! - `remote_fs`: the destination's filesystem over one session (stat, list, `mkdir -p`,
//!   recursive removal, a rename that replaces its target).
//! - `durable`: flushing uploads to the server's disk before a hand-off acknowledges them.
//! - `upload`: sending a file through a temporary name, resuming large ones, sweeping the
//!   temporaries left behind.
//! - `connection`: [`SftpConnection`], the `BlockingConnection` composing the above, and
//!   the retry of an operation whose pooled session turned out to be dead.
//! - `testing` (feature `testing`): a private OpenSSH sshd for tests.

mod auth;
mod config;
mod connection;
mod durable;
mod errors;
mod hostkey;
mod known_hosts;
mod pool;
mod remote_fs;
mod upload;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{HostKeyPolicy, Secret, SftpConfig, PASSPHRASE_ENV, PASSWORD_ENV};
pub use connection::SftpConnection;
pub use errors::SftpError;
pub use hostkey::fingerprint;
pub use upload::RESUME_MIN;
pub use url::SftpUrl;
