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

mod auth;
mod config;
mod connection;
mod durable;
mod errors;
mod hostkey;
mod known_hosts;
mod pool;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{HostKeyPolicy, Secret, SftpConfig, PASSPHRASE_ENV, PASSWORD_ENV};
pub use connection::{SftpConnection, RESUME_MIN};
pub use errors::SftpError;
pub use hostkey::fingerprint;
pub use url::SftpUrl;
