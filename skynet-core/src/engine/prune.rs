//! Pruning the versions a mapping keeps (`--keep-versions`): each `sync` prunes once, a
//! running daemon every minute, in small batches so that a stop is never kept waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Mapping;
use crate::connection::Connection;
use crate::versions::Versioned;

/// How many expired versions one pruning step removes before looking at `stop` again.
pub(super) const PRUNE_BATCH: usize = 100;

/// How often a running daemon prunes expired versions.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Mapping {
    /// Removes the expired versions (see [`prune_expired`]).
    pub(super) async fn prune_versions(&self, stop: &watch::Receiver<bool>) -> u64 {
        match (&self.versions, self.opts.keep_versions) {
            (Some(versions), Some(keep)) => prune_expired(versions, keep, stop).await,
            _ => 0,
        }
    }
}

/// Removes the expired versions, batch by batch, until none is left or `stop` says so. A
/// failure is logged: the versions stay, and the next pass tries again.
pub(super) async fn prune_expired(
    versions: &Versioned<Arc<dyn Connection>>,
    keep: Duration,
    stop: &watch::Receiver<bool>,
) -> u64 {
    let mut total = 0;
    while !*stop.borrow() {
        match versions.prune(keep, PRUNE_BATCH).await {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot prune expired versions; will try again");
                break;
            }
        }
    }
    total
}
