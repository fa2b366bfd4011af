//! Network destinations: SFTP and S3, built from a URL and the command-line options.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use skynet_core::Connection;

use crate::cli::MappingArgs;

pub fn sftp(url: &str, _args: &MappingArgs) -> Result<Arc<dyn Connection>> {
    bail!("destination {url}: SFTP support is not built into this binary yet")
}

pub fn s3(url: &str, _args: &MappingArgs, _state_dir: &Path) -> Result<Arc<dyn Connection>> {
    bail!("destination {url}: S3 support is not built into this binary yet")
}
