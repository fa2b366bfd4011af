//! S3 destination for skynet: [`S3Connection`] implements [`skynet_core::Connection`] over
//! aws-sdk-s3, for AWS and S3-compatible servers.
//!
//! ```text
//! let mut cfg = S3Config::from_url("s3://bucket/prefix")?;
//! cfg.endpoint = Some("http://127.0.0.1:9000".into());
//! cfg.path_style = true;
//! cfg.state_db = Some(mapping_state_db_path);
//! let conn = S3Connection::new(cfg).await?;   // inside the tokio runtime
//! ```
//!
//! With the `testing` feature, [`testing`] starts a private s3s-fs server for tests.
//!
//! Modules, each depending only on those listed before it, so that no two import each other:
//! `config`, `keys`, `errors` (every reading of an error code), `checksum`, `bounded` (N
//! requests at a time) and `resume_store` (the versioned multipart table) are leaves;
//! `client` holds the SDK client and the state every request shares; `abandoned` (uploads
//! left behind), `multipart` (big sends) and `copy` (server-side copies) build on it; and
//! `connection` implements the trait on top of them all.

mod abandoned;
mod bounded;
mod checksum;
mod client;
mod config;
mod connection;
mod copy;
mod errors;
mod keys;
mod multipart;
mod resume_store;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::MTIME_METADATA;
pub use config::{S3Config, S3ConfigError, StaticCredentials, MIB};
pub use connection::S3Connection;
pub use multipart::part_size_for;
