//! Symlinks in the source: never followed, their targets never read (invariant 10 of `docs/contract.md`).
//!
//! The scan, the watcher and the handler each meet links (a link in the tree, a queued file
//! swapped for one). Each link is noticed once per path and process, one log line rather than
//! one per event or scan, and counted for `status` under the meta key [`SKIPPED_LINKS`]
//! (links met since the current run or sync started).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::relpath::RelPath;

/// Meta key: how many distinct symlinks this run has skipped.
pub const SKIPPED_LINKS: &str = "skipped_links";

/// The links already noticed.
#[derive(Debug, Default)]
pub struct LinkNotices {
    seen: Mutex<HashSet<RelPath>>,
}

impl LinkNotices {
    /// Notes the link at `rel`: the new number of distinct links when it was not noticed
    /// before, `None` when it was.
    pub fn note(&self, rel: &RelPath) -> Option<usize> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.insert(rel.clone()).then(|| seen.len())
    }

    /// Forgets every notice: a new run (or a run resumed after a pause) notices afresh.
    pub fn clear(&self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_noticed_once() {
        let n = LinkNotices::default();
        let p = |s: &str| RelPath::from_bytes(s.as_bytes()).unwrap();
        assert_eq!(n.note(&p("a")), Some(1));
        assert_eq!(n.note(&p("a")), None);
        assert_eq!(n.note(&p("d/b")), Some(2));
        n.clear();
        assert_eq!(n.note(&p("a")), Some(1));
    }
}
