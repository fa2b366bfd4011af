//! Network destinations: SFTP and S3, built from a URL and the command-line options.
//! Secrets come only from the environment and never reach logs or `status`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use skynet_core::{Blocking, Connection};

use crate::cli::{HostKeyPolicy, MappingArgs};

pub fn sftp(url: &str, args: &MappingArgs) -> Result<Arc<dyn Connection>> {
    let mut cfg = skynet_sftp::SftpConfig::from_url(url)
        .with_context(|| format!("destination {}", redact(url)))?
        .with_pool_size(args.workers.unwrap_or(4).max(1))
        .with_host_key_policy(
            match args.host_key_policy.unwrap_or(HostKeyPolicy::Strict) {
                HostKeyPolicy::Strict => skynet_sftp::HostKeyPolicy::Strict,
                HostKeyPolicy::AcceptNew => skynet_sftp::HostKeyPolicy::AcceptNew,
            },
        );
    if let Some(identity) = &args.identity {
        cfg = cfg.with_identity(identity);
    }
    if let Some(known) = &args.known_hosts {
        cfg = cfg.with_known_hosts(known);
    }
    if let Some(timeout) = args.timeout {
        cfg = cfg.with_timeout(timeout);
    }
    cfg = cfg.with_verify_read_back(args.verify_read_back);
    // The hand-off removes the only local copy: flush each upload to the server's disk first.
    cfg = cfg.with_fsync(args.remove_source);
    Ok(Arc::new(Blocking::new(skynet_sftp::SftpConnection::new(
        cfg,
    ))))
}

pub async fn s3(url: &str, args: &MappingArgs, state_dir: &Path) -> Result<Arc<dyn Connection>> {
    let mut cfg = skynet_s3::S3Config::from_url(url)
        .with_context(|| format!("destination {}", redact(url)))?;
    if let Some(endpoint) = &args.s3_endpoint {
        cfg.endpoint = Some(endpoint.clone());
    }
    cfg.path_style = cfg.path_style || args.s3_path_style;
    cfg.concurrency = args.workers.unwrap_or(4).max(1);
    if let Some(timeout) = args.timeout {
        cfg.read_timeout = timeout;
    }
    cfg.state_db = Some(skynet_core::queue::database_path(state_dir));
    let conn = skynet_s3::S3Connection::new(cfg)
        .await
        .with_context(|| format!("destination {}", redact(url)))?;
    Ok(Arc::new(conn))
}

/// The URL without any `user:password@` part, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("sftp://u:secret@h/x"), "sftp://u:***@h/x");
        assert_eq!(super::redact("sftp://u@h/x"), "sftp://u@h/x");
        assert_eq!(super::redact("s3://b/p"), "s3://b/p");
    }
}
