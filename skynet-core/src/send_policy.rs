//! What happens to an action before the destination sees it, per mapping options:
//!
//! - a send must be of a file this mapping takes (include globs: routing), must pass the
//!   gates (`min_age`, dated names), and in send-once mode must differ in content from what
//!   was delivered (a touched or re-saved file with the same bytes is not sent again);
//! - a delete reaches the destination only with complete-sync; in send-once mode without it,
//!   a local delete only drops the file from the ledger (sent once: if it comes back, it is
//!   new).
//!
//! The handler asks right before executing, so every action is judged whoever queued it
//! (watcher, scan, fallback sends, `ledger forget`).

use std::sync::Arc;

use crate::connection::SourceFile;
use crate::digest::Sha256Digest;
use crate::error::ConnError;
use crate::filter::Filter;
use crate::gate::{Admission, Gate};
use crate::relpath::RelPath;
use crate::state::Queue;

/// The per-mapping rules; the default sends everything and propagates deletes.
#[derive(Clone)]
pub struct SendPolicy {
    pub filter: Arc<Filter>,
    pub gate: Gate,
    /// Compare content hashes with the ledger before sending (send-once mode).
    pub send_once: bool,
    /// Deletes go to the destination; false in send-once mode without complete-sync, where
    /// a local delete only drops the ledger row.
    pub remote_deletes: bool,
}

impl Default for SendPolicy {
    fn default() -> Self {
        SendPolicy {
            filter: Arc::default(),
            gate: Gate::default(),
            send_once: false,
            remote_deletes: true,
        }
    }
}

/// The verdict on one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; `hash` is its content hash when one was computed (send-once).
    Send { hash: Option<Sha256Digest> },
    /// Not this mapping's file (include globs, no date in its name): nothing to do.
    Skip,
    /// Send-once: the destination already received exactly these bytes.
    AlreadyDelivered { hash: Sha256Digest },
    /// Not yet (a gate).
    Hold { until: u64, reason: String },
}

impl SendPolicy {
    /// True when a move to `to` carries a file this mapping does not take (an include glob
    /// no longer matches its new name): the destination should lose the old name rather
    /// than hold a file outside its includes.
    pub fn moves_out(&self, root: &std::path::Path, to: &RelPath) -> bool {
        let local = to.under(root);
        std::fs::symlink_metadata(local).is_ok_and(|m| m.is_file()) && !self.filter.admits_file(to)
    }

    /// Judges a send of `file` (stat'ed just now) to `rel` at `now` (ms).
    pub async fn judge(
        &self,
        queue: &Queue,
        rel: &RelPath,
        file: &SourceFile,
        now: u64,
    ) -> Result<Verdict, ConnError> {
        if !self.filter.admits_file(rel) {
            return Ok(Verdict::Skip);
        }
        match self.gate.check(rel, file.mtime, now) {
            Admission::Go => {}
            Admission::Skip(why) => {
                tracing::debug!(%why, "not sent");
                return Ok(Verdict::Skip);
            }
            Admission::Hold { until, reason } => return Ok(Verdict::Hold { until, reason }),
        }
        if !self.send_once {
            return Ok(Verdict::Send { hash: None });
        }
        let source = file.clone();
        let hash = tokio::task::spawn_blocking(move || source.sha256())
            .await
            .map_err(|e| ConnError::transient(format!("{rel}: hashing task failed: {e}")))??;
        let delivered = queue
            .ledger_digest(rel)
            .map_err(|e| ConnError::transient(e.to_string()))?;
        Ok(match delivered {
            Some((size, Some(h))) if h == hash && size == file.size as i64 => {
                Verdict::AlreadyDelivered { hash }
            }
            _ => Verdict::Send { hash: Some(hash) },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::conformance::rel as p;
    use crate::gate::DatedNames;
    use crate::merge::Entry;
    use crate::state::{LedgerUpdate, Outcome};
    use crate::Action;
    use std::time::Duration;

    #[tokio::test]
    async fn includes_gates_and_send_once() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
            SourceFile::stat(&path).unwrap()
        };
        let q = Queue::open_in_memory().unwrap();
        let now = now_ms();

        let routed = SendPolicy {
            filter: Arc::new(Filter::default().with_includes(&["*.mp4".into()]).unwrap()),
            ..SendPolicy::default()
        };
        let jpg = write("a.jpg", b"x");
        assert_eq!(
            routed.judge(&q, &p("a.jpg"), &jpg, now).await.unwrap(),
            Verdict::Skip
        );
        let mp4 = write("a.mp4", b"x");
        assert_eq!(
            routed.judge(&q, &p("a.mp4"), &mp4, now).await.unwrap(),
            Verdict::Send { hash: None }
        );

        let dated = SendPolicy {
            gate: Gate {
                min_age: Duration::ZERO,
                dated: Some(DatedNames::new("%Y%m%d", Duration::ZERO).unwrap()),
                ..Gate::default()
            },
            ..SendPolicy::default()
        };
        let future = write("20990101/b", b"y");
        assert!(matches!(
            dated
                .judge(&q, &p("20990101/b"), &future, now)
                .await
                .unwrap(),
            Verdict::Hold { .. }
        ));
        let past = write("20000101/b", b"y");
        assert_eq!(
            dated.judge(&q, &p("20000101/b"), &past, now).await.unwrap(),
            Verdict::Send { hash: None }
        );

        // Send-once: the first send carries a hash; once the ledger holds it, the same
        // content is already delivered, and new content is sent again.
        let once = SendPolicy {
            send_once: true,
            ..SendPolicy::default()
        };
        let f = write("c", b"same");
        let Verdict::Send { hash: Some(hash) } = once.judge(&q, &p("c"), &f, now).await.unwrap()
        else {
            panic!("first send must carry its hash");
        };
        q.push(&[Entry::new(Action::Send(p("c")), 0)]).unwrap();
        let claimed = q.claim(1, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: claimed[0].id,
            ledger: LedgerUpdate::Sent {
                path: p("c"),
                size: f.size,
                mtime_ns: crate::clock::mtime_ns(f.mtime),
                hash: Some(hash),
                identity: None,
            },
        }])
        .unwrap();
        assert_eq!(
            once.judge(&q, &p("c"), &f, now).await.unwrap(),
            Verdict::AlreadyDelivered { hash }
        );
        let changed = write("c", b"diff");
        assert!(matches!(
            once.judge(&q, &p("c"), &changed, now).await.unwrap(),
            Verdict::Send { hash: Some(h) } if h != hash
        ));
    }
}
