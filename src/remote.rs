//! Network destinations: SFTP and S3 connections from their parsed configs (see
//! [`crate::destination`]) and the command-line options. Secrets come only from the
//! environment and never reach logs or `status`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use skynet_core::{Blocking, Connection};

use crate::cli::{HostKeyPolicy, MappingArgs};

pub fn sftp(cfg: skynet_sftp::SftpConfig, args: &MappingArgs) -> Arc<dyn Connection> {
    let mut cfg = cfg
        .with_pool_size(args.workers.unwrap_or(4).max(1))
        .with_host_key_policy(
            match args
                .connection
                .host_key_policy
                .unwrap_or(HostKeyPolicy::Strict)
            {
                HostKeyPolicy::Strict => skynet_sftp::HostKeyPolicy::Strict,
                HostKeyPolicy::AcceptNew => skynet_sftp::HostKeyPolicy::AcceptNew,
            },
        );
    if let Some(identity) = &args.connection.identity {
        cfg = cfg.with_identity(identity);
    }
    if let Some(known) = &args.connection.known_hosts {
        cfg = cfg.with_known_hosts(known);
    }
    if let Some(timeout) = args.connection.timeout {
        cfg = cfg.with_timeout(timeout);
    }
    cfg = cfg.with_verify_read_back(args.verify_read_back);
    // The hand-off removes the only local copy: flush each upload to the server's disk first.
    cfg = cfg.with_fsync(args.remove_source);
    Arc::new(Blocking::new(skynet_sftp::SftpConnection::new(cfg)))
}

/// `cfg` already carries the endpoint ([`crate::destination::Destination::with_args`]).
pub async fn s3(
    mut cfg: skynet_s3::S3Config,
    args: &MappingArgs,
    state_dir: &Path,
) -> Result<Arc<dyn Connection>> {
    cfg.path_style = cfg.path_style || args.connection.s3_path_style;
    cfg.concurrency = args.workers.unwrap_or(4).max(1);
    if let Some(timeout) = args.connection.timeout {
        cfg.read_timeout = timeout;
    }
    cfg.state_db = Some(skynet_core::state::database_path(state_dir));
    let url = cfg.url();
    let conn = skynet_s3::S3Connection::new(cfg)
        .await
        .with_context(|| format!("destination {url}"))?;
    Ok(Arc::new(conn))
}
