//! Complete-sync: removing at the destination the directories the source no longer has.
//!
//! Deleting a folder's files, or renaming them away, leaves the folder itself at the
//! destination; so does a folder deleted or renamed while skynet was stopped (the catch-up
//! scan knows files, from the ledger, not folders). The contract says the destination holds
//! exactly the source's files; an empty folder the source lost is part of that mirror too.
//!
//! How, and why it can never cost data:
//! - When a deletion or rename is acknowledged, the directory it may have left empty (the
//!   parent of the deleted path, of the rename's source) is filed in the same transaction
//!   (`dest_dirs` in the state database), so a crash never forgets one.
//! - When the handler is idle (nothing executing, nothing claimed: no send of its own can be
//!   writing into a directory being removed), each filed directory is looked at, deepest
//!   first: if the source has a directory there, it is kept (and looked at again after the
//!   next catch-up scan, which may find it gone: a folder emptied while watched, removed while
//!   stopped); if a queued action will still touch it, it waits for that action. Otherwise it
//!   is removed with [`Connection::remove_empty_dir`], which only ever removes an *empty*
//!   directory (`rmdir`); then its parent is looked at the same way, up to, never including,
//!   the destination root, and never past a directory the source has. One that is not empty
//!   (it holds what the source lacks: the destination's own files) is kept, and looked at
//!   again after the next catch-up scan.
//! - Nothing happens while the source is missing or unmounted (every folder would look gone).
//! - Removing an already removed directory succeeds: a crash replays the look, harmlessly.
//!
//! The worst a mistake here can cost is an empty directory left behind, never a file.

use std::path::Path;

use crate::connection::Connection;
use crate::error::ConnError;
use crate::relpath::RelPath;
use crate::source_root::SourceRoot;
use crate::state::{DirVerdict, Queue, StateError};

/// How a look at the filed directories ended.
#[derive(Debug)]
pub enum PassEnd {
    /// Everything due was settled (removed, kept, forgotten, or left for a queued action).
    Done {
        /// Directories removed at the destination.
        removed: u64,
        /// Some were left for queued actions that touch them: look again after those.
        waiting: bool,
    },
    /// The destination failed: what was settled before is recorded, the rest stays due.
    Failed(ConnError),
    /// The source is missing or unmounted: nothing was looked at.
    SourceAway,
}

/// What the source has at a path.
enum Local {
    Dir,
    /// A file, a link, something unreadable: not a directory of ours to remove.
    Other,
    Absent,
}

fn local(root: &Path, dir: &RelPath) -> Local {
    match std::fs::symlink_metadata(dir.under(root)) {
        Ok(m) if m.is_dir() => Local::Dir,
        Ok(_) => Local::Other,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::NotADirectory =>
        {
            Local::Absent
        }
        // Cannot tell (no permission to look): keep it.
        Err(_) => Local::Other,
    }
}

/// Looks at every directory due (see the module docs); stops early, keeping the rest due,
/// once `stopping` says so. `Err` only for the state database.
pub async fn remove_due(
    conn: &dyn Connection,
    queue: &Queue,
    root: &Path,
    source: Option<&SourceRoot>,
    stopping: impl Fn() -> bool,
) -> Result<PassEnd, StateError> {
    let scans = queue.dir_scans();
    let due = queue.dirs_due()?;
    if due.is_empty() {
        return Ok(PassEnd::Done {
            removed: 0,
            waiting: false,
        });
    }
    if source.is_some_and(|s| s.check().is_err()) {
        return Ok(PassEnd::SourceAway);
    }
    let mut verdicts: Vec<DirVerdict> = Vec::new();
    let mut removed = 0u64;
    let mut waiting = false;
    let mut failure: Option<ConnError> = None;
    // A work list, deepest first, each directory once: a directory is looked at after every
    // due one below it, and its parent joins the list when it is removed (many due siblings
    // share a parent, which one look settles: climbing from each tried it again and again).
    let depth =
        |d: &RelPath| std::cmp::Reverse(d.as_bytes().iter().filter(|b| **b == b'/').count());
    let mut todo: std::collections::BTreeSet<_> = due.into_iter().map(|d| (depth(&d), d)).collect();
    while let Some((_, dir)) = todo.pop_first() {
        if stopping() {
            break;
        }
        match local(root, &dir) {
            Local::Dir => {
                verdicts.push(DirVerdict::Kept(dir));
                continue;
            }
            Local::Other => {
                verdicts.push(DirVerdict::Forget(dir));
                continue;
            }
            Local::Absent => {}
        }
        if queue.busy_within(&dir)? {
            waiting = true;
            verdicts.push(DirVerdict::Waiting(dir));
            continue;
        }
        match conn.remove_empty_dir(&dir).await {
            Ok(true) => {
                tracing::info!(path = %dir, "removed a directory the source no longer has");
                removed += 1;
                if let Some(parent) = dir.parent() {
                    todo.insert((depth(&parent), parent));
                }
                verdicts.push(DirVerdict::Removed(dir));
            }
            Ok(false) => {
                // It holds what the source lacks (the destination's own files, a temporary a
                // crash left before the next sweep): looked at again after the next scan.
                tracing::debug!(path = %dir, "directory kept at the destination: not empty");
                verdicts.push(DirVerdict::Kept(dir));
            }
            // The link is down: the rest waits for the reconnection.
            Err(e) if e.kind == crate::error::ErrorKind::ConnectionLost => {
                failure = Some(e);
                break;
            }
            // This directory cannot go (no permission, refused): kept, looked at again after
            // the next catch-up scan; the others are not held up behind it.
            Err(e) => {
                tracing::warn!(path = %dir, error = %e.message, "cannot remove a directory the source no longer has; keeping it");
                verdicts.push(DirVerdict::Kept(dir));
            }
        }
    }
    // Removals count once durable, as every other action does; replaying one is harmless.
    if removed > 0 {
        if let Err(e) = conn.flush().await {
            verdicts.retain(|v| !matches!(v, DirVerdict::Removed(_)));
            failure.get_or_insert(e);
        }
    }
    queue.settle_dirs(&verdicts, scans)?;
    Ok(match failure {
        Some(e) => PassEnd::Failed(e),
        None => PassEnd::Done { removed, waiting },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::clock::now_ms;
    use crate::conformance::rel as p;
    use crate::connection::Blocking;
    use crate::local::LocalConnection;
    use crate::merge::Entry;
    use crate::state::{LedgerUpdate, Outcome};

    fn deleted(q: &Queue, path: &str) {
        q.push_repair(&[Entry::new(Action::Delete(p(path)), 0)])
            .unwrap();
        let claimed = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: claimed[0].id,
            ledger: LedgerUpdate::Deleted(p(path)),
        }])
        .unwrap();
    }

    #[tokio::test]
    async fn removes_up_to_a_directory_the_source_has_and_keeps_what_holds_anything() {
        let scratch = tempfile::tempdir().unwrap();
        let (src, dest) = (scratch.path().join("src"), scratch.path().join("dest"));
        for d in ["keep", "busy"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        for d in ["keep/gone/deeper", "keep/other", "foreign", "busy/sub"] {
            std::fs::create_dir_all(dest.join(d)).unwrap();
        }
        std::fs::write(dest.join("keep/other/x"), b"x").unwrap();
        std::fs::write(dest.join("foreign/theirs"), b"the destination's own").unwrap();
        let conn = Blocking::new(LocalConnection::new(&dest));
        conn.connect().await.unwrap();
        let q = Queue::open_in_memory().unwrap();
        q.set_remove_empty_dirs(true);
        for f in ["keep/gone/deeper/f", "foreign/f", "busy/sub/f"] {
            deleted(&q, f);
        }
        // `busy/sub/new` will still be sent (its file may come back): `busy/sub` waits.
        q.push(&[Entry::new(
            Action::Send(p("busy/sub/new")),
            now_ms() + 60_000,
        )])
        .unwrap();

        let end = remove_due(&conn, &q, &src, None, || false).await.unwrap();
        assert!(
            matches!(
                end,
                PassEnd::Done {
                    removed: 2,
                    waiting: true
                }
            ),
            "{end:?}"
        );
        assert!(!dest.join("keep/gone").exists());
        assert!(dest.join("keep/other/x").is_file());
        assert!(dest.join("foreign/theirs").is_file());
        assert!(dest.join("busy/sub").is_dir());
        let rows: Vec<(String, bool)> = q
            .dir_rows()
            .unwrap()
            .into_iter()
            .map(|(p, due)| (p.display(), due))
            .collect();
        assert_eq!(
            rows,
            [
                ("busy/sub".to_string(), true),
                ("foreign".to_string(), false),
                ("keep".to_string(), false),
            ]
        );
        // A stop request ends a look at once: a removable due directory stays, still due.
        std::fs::create_dir_all(dest.join("later")).unwrap();
        deleted(&q, "later/f");
        let end = remove_due(&conn, &q, &src, None, || true).await.unwrap();
        assert!(matches!(end, PassEnd::Done { removed: 0, .. }), "{end:?}");
        assert!(dest.is_dir());
        assert!(dest.join("later").is_dir(), "removed after a stop request");
        let later_due = q
            .dir_rows()
            .unwrap()
            .into_iter()
            .any(|(p, due)| p.display() == "later" && due);
        assert!(later_due, "no longer due after a stop request");
    }
}
