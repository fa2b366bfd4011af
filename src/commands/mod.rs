//! One module per subcommand; `prepare` is what `run`, `sync` and `baseline` share.

pub mod baseline;
pub mod queue;
pub mod run;
pub mod status;
pub mod sync;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use skynet_core::{Connection, HandlerConfig, Mapping, MappingOptions};

use crate::cli::MappingArgs;
use crate::destination::Destination;
use crate::state::{self, MappingLock};

/// A mapping ready to work: its state opened and locked, its connection built.
pub struct Prepared {
    pub mapping: Mapping,
    pub conn: Arc<dyn Connection>,
    pub destination: String,
    _lock: MappingLock,
}

/// Checks the source, resolves the destination and state, takes the lock.
pub async fn prepare(src: &Path, dest: &str, args: &MappingArgs, what: &str) -> Result<Prepared> {
    let source = src
        .canonicalize()
        .with_context(|| format!("source {}", src.display()))?;
    if !source.is_dir() {
        anyhow::bail!("source {}: not a directory", src.display());
    }
    let destination = Destination::parse(dest)?;
    if let Destination::Local(root) = &destination {
        if root.starts_with(&source) || source.starts_with(root) {
            anyhow::bail!(
                "destination {} and source {} overlap; mirroring one into the other would loop",
                root.display(),
                source.display()
            );
        }
    }
    let identity = destination.identity();
    // Two S3-compatible servers can hold the same bucket name: the endpoint is part of what
    // the mapping is, so it names the state too.
    let state_key = match (&destination, &args.s3_endpoint) {
        (Destination::S3(url), Some(endpoint)) => format!("{url} {endpoint}"),
        _ => identity.clone(),
    };
    let root = state::state_root(args.state_dir.as_deref())?;
    let state_dir = root.join(state::mapping_name(&source, &state_key));
    let lock = MappingLock::acquire(
        &state_dir,
        &format!("{} -> {identity} ({what})", source.display()),
    )?;
    let opts = mapping_options(args);
    let mapping = Mapping::open(&source, &state_dir, opts)?;
    mapping.queue().set_meta(
        skynet_core::engine::meta::SOURCE,
        &source.display().to_string(),
    )?;
    mapping
        .queue()
        .set_meta(skynet_core::engine::meta::DESTINATION, &identity)?;
    let conn = destination.connect(args, &state_dir).await?;
    Ok(Prepared {
        mapping,
        conn,
        destination: identity,
        _lock: lock,
    })
}

pub fn mapping_options(args: &MappingArgs) -> MappingOptions {
    let defaults = HandlerConfig::default();
    let handler = HandlerConfig {
        workers: args.workers.unwrap_or(defaults.workers).max(1),
        max_attempts: args.max_attempts.unwrap_or(defaults.max_attempts).max(1),
        retry_base: args.retry_delay.unwrap_or(defaults.retry_base),
        reconnect_cap: args.reconnect_max.unwrap_or(defaults.reconnect_cap),
        reconnect_base: args
            .reconnect_max
            .map(|m| m.min(defaults.reconnect_base))
            .unwrap_or(defaults.reconnect_base),
        ..defaults
    };
    MappingOptions {
        complete_sync: args.complete_sync,
        settle: args.settle.unwrap_or(Duration::from_secs(1)),
        excludes: args.excludes.clone(),
        poll: args.poll,
        poll_interval: Duration::from_secs(1),
        handler,
        progress: true,
    }
}
