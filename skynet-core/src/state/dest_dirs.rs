//! The state behind removing directories at the destination (complete-sync): which
//! directories may be left empty there, filed when a deletion or rename is acknowledged, and
//! settled by [`crate::empty_dirs`]. See `schema/007_dest_dirs.sql`.

use std::sync::atomic::Ordering;

use const_format::formatcp;
use rusqlite::{params, OptionalExtension, Transaction};

use super::db::corrupt;
use super::{within_bounds, LedgerUpdate, Queue, StateError, PARKED, PENDING};
use crate::relpath::RelPath;

/// What became of a directory looked at by [`crate::empty_dirs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirVerdict {
    /// Kept: the source has it, or it holds something at the destination. Looked at again
    /// after the next catch-up scan.
    Kept(RelPath),
    /// Removed at the destination (or not there): nothing more to do.
    Removed(RelPath),
    /// The source has something else than a directory there (a file, a link): not a
    /// directory of ours, forgotten.
    Forget(RelPath),
    /// A queued action still touches it: due again once that is done.
    Waiting(RelPath),
}

/// Files the directories a deletion or rename may have left empty (inside `finish`'s
/// transaction, before the ledger changes: it tells whether the path was a directory).
/// Returns whether it filed one.
///
/// Not only the parent: a destination that renames by copying and deletes files one by one
/// (S3, and servers that store keys as files in folders) leaves behind the empty
/// directories it had under the old name, which a filesystem removes or carries along. So the
/// rows under a deleted or renamed directory, and the directory itself, are due too (a
/// filesystem answers "already gone" for them, one call each), and a rename copies its rows
/// to the new name (a kept directory stays known wherever the rename put it).
pub(super) fn note(tx: &Transaction<'_>, update: &LedgerUpdate) -> rusqlite::Result<bool> {
    let (gone, to) = match update {
        LedgerUpdate::Deleted(path) => (path, None),
        LedgerUpdate::Moved { from, to } | LedgerUpdate::MovedUnverified { from, to } => {
            (from, Some(to))
        }
        _ => return Ok(false),
    };
    let was_dir = holds_files(tx, gone)? || known_within(tx, gone)?;
    if let Some(to) = to {
        copy_rows(tx, gone, to)?;
    }
    let (lo, hi) = within_bounds(gone);
    tx.prepare_cached("UPDATE dest_dirs SET due = 1 WHERE path > ?1 AND path < ?2")?
        .execute(params![lo, hi])?;
    let mut filed = was_dir;
    if was_dir {
        due(tx, gone)?;
    }
    // The root itself is never filed: never removed.
    if let Some(parent) = gone.parent() {
        due(tx, &parent)?;
        filed = true;
    }
    Ok(filed)
}

/// A pending move at `key` is about to be dropped or replaced by the merge rules (a rename
/// cancelled by a later one, or folded into a deletion that does not name its source): the
/// destination may keep an empty directory at its source that no acknowledged action will
/// ever file, when the ledger knows no file there (found by the simulation, seed 34685: a
/// folder emptied, renamed, then replaced by a file; the merged deletion of the new name
/// dropped the rename, and the old name stayed). The rows at and below the source are made
/// due, so that the next look removes what is left there, if empty. Returns whether any was.
pub(super) fn dropped_move(tx: &Transaction<'_>, key: &RelPath) -> rusqlite::Result<bool> {
    let from: Option<Vec<u8>> = tx
        .prepare_cached(formatcp!(
            "SELECT from_path FROM queue WHERE path = ?1 AND state = {PENDING} AND kind = 'move'"
        ))?
        .query_row([key.as_bytes()], |r| r.get(0))
        .optional()?
        .flatten();
    let Some(from) = from.and_then(|f| RelPath::from_bytes(&f).ok()) else {
        return Ok(false);
    };
    let (lo, hi) = within_bounds(&from);
    let n = tx
        .prepare_cached(
            "UPDATE dest_dirs SET due = 1 WHERE due = 0 AND (path = ?1 OR (path > ?2 AND path < ?3))",
        )?
        .execute(params![from.as_bytes(), lo, hi])?;
    Ok(n > 0)
}

fn due(tx: &Transaction<'_>, dir: &RelPath) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO dest_dirs (path, due) VALUES (?1, 1)
         ON CONFLICT(path) DO UPDATE SET due = 1",
    )?
    .execute([dir.as_bytes()])?;
    Ok(())
}

/// Whether the ledger has files below `path` (it was a directory with files).
fn holds_files(tx: &Transaction<'_>, path: &RelPath) -> rusqlite::Result<bool> {
    let (lo, hi) = within_bounds(path);
    tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM ledger WHERE path > ?1 AND path < ?2)")?
        .query_row(params![lo, hi], |r| r.get(0))
}

/// Whether a directory row is at `path` or below it.
fn known_within(tx: &Transaction<'_>, path: &RelPath) -> rusqlite::Result<bool> {
    let (lo, hi) = within_bounds(path);
    tx.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM dest_dirs WHERE path = ?1 OR (path > ?2 AND path < ?3))",
    )?
    .query_row(params![path.as_bytes(), lo, hi], |r| r.get(0))
}

/// Copies the rows at `from` and below it to the same places under `to`, keeping whether
/// each is due.
fn copy_rows(tx: &Transaction<'_>, from: &RelPath, to: &RelPath) -> rusqlite::Result<()> {
    let (lo, hi) = within_bounds(from);
    let rows: Vec<(Vec<u8>, i64)> = tx
        .prepare_cached(
            "SELECT path, due FROM dest_dirs WHERE path = ?1 OR (path > ?2 AND path < ?3)",
        )?
        .query_map(params![from.as_bytes(), lo, hi], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (old, due) in rows {
        let Some(new) = RelPath::from_bytes(&old)
            .ok()
            .and_then(|p| p.rebase(from, to))
        else {
            continue;
        };
        tx.prepare_cached(
            "INSERT INTO dest_dirs (path, due) VALUES (?1, ?2)
             ON CONFLICT(path) DO UPDATE SET due = MAX(due, excluded.due)",
        )?
        .execute(params![new.as_bytes(), due])?;
    }
    Ok(())
}

impl Queue {
    /// Complete-sync: file the directories deletions and renames may leave empty at the
    /// destination (see [`crate::empty_dirs`]). Off, nothing is filed.
    pub fn set_remove_empty_dirs(&self, on: bool) {
        self.dirs.enabled.store(on, Ordering::Relaxed);
    }

    pub(super) fn removes_empty_dirs(&self) -> bool {
        self.dirs.enabled.load(Ordering::Relaxed)
    }

    /// Asks the handler to look at the filed directories when it is next idle.
    pub fn request_dirs_check(&self) {
        self.dirs.check.store(true, Ordering::SeqCst);
    }

    /// Whether a look at the filed directories was asked for since the last call.
    pub fn take_dirs_check(&self) -> bool {
        self.dirs.check.swap(false, Ordering::SeqCst)
    }

    /// A catch-up scan ran: the source may have lost directories while nobody watched, so
    /// every kept directory is due again.
    pub fn mark_dirs_due(&self) -> Result<(), StateError> {
        self.read(|conn| {
            conn.prepare_cached("UPDATE dest_dirs SET due = 1 WHERE due = 0")?
                .execute([])
        })?;
        self.dirs.scans.fetch_add(1, Ordering::SeqCst);
        self.request_dirs_check();
        Ok(())
    }

    /// How many catch-up scans marked the directories due so far (see
    /// [`Queue::settle_dirs`]).
    pub fn dir_scans(&self) -> u64 {
        self.dirs.scans.load(Ordering::SeqCst)
    }

    /// The directories due to be looked at, deepest first (a parent is looked at after its
    /// children had their chance to go).
    pub fn dirs_due(&self) -> Result<Vec<RelPath>, StateError> {
        self.query_rows(
            "SELECT path FROM dest_dirs WHERE due = 1 ORDER BY length(path) DESC, path",
            [],
            |r| {
                RelPath::from_bytes(&r.get::<_, Vec<u8>>(0)?)
                    .map_err(|e| corrupt(format!("directory row: {e}")))
            },
        )
    }

    /// Whether a queued action that will still run (anything but a parked one) touches `dir`
    /// or a path below it: it may write there, or remove what is there and file `dir` again
    /// when it is acknowledged, so `dir` is left alone until then.
    pub fn busy_within(&self, dir: &RelPath) -> Result<bool, StateError> {
        let (lo, hi) = within_bounds(dir);
        self.read(|conn| {
            conn.prepare_cached(formatcp!(
                "SELECT EXISTS(SELECT 1 FROM queue WHERE state != {PARKED} AND (path = ?1
                 OR (path > ?2 AND path < ?3) OR from_path = ?1
                 OR (from_path > ?2 AND from_path < ?3)))"
            ))?
            .query_row(params![dir.as_bytes(), lo, hi], |r| r.get(0))
        })
    }

    /// Records what became of the directories looked at. `scans`: [`Queue::dir_scans`] when
    /// the look began; if a catch-up scan ran since, a kept directory stays due (the scan may
    /// have seen the source lose it after it was looked at).
    pub fn settle_dirs(&self, verdicts: &[DirVerdict], scans: u64) -> Result<(), StateError> {
        let rescanned = self.dir_scans() != scans;
        self.write(|tx| {
            for v in verdicts {
                match v {
                    DirVerdict::Kept(p) => tx
                        .prepare_cached(
                            "INSERT INTO dest_dirs (path, due) VALUES (?1, ?2)
                             ON CONFLICT(path) DO UPDATE SET due = excluded.due",
                        )?
                        .execute(params![p.as_bytes(), rescanned as i64])?,
                    DirVerdict::Waiting(p) => tx
                        .prepare_cached(
                            "INSERT INTO dest_dirs (path, due) VALUES (?1, 1)
                             ON CONFLICT(path) DO UPDATE SET due = 1",
                        )?
                        .execute([p.as_bytes()])?,
                    DirVerdict::Removed(p) | DirVerdict::Forget(p) => tx
                        .prepare_cached("DELETE FROM dest_dirs WHERE path = ?1")?
                        .execute([p.as_bytes()])?,
                };
            }
            Ok(())
        })?;
        if rescanned {
            self.request_dirs_check();
        }
        Ok(())
    }

    /// Every directory row, with whether it is due (tests and the simulation).
    pub fn dir_rows(&self) -> Result<Vec<(RelPath, bool)>, StateError> {
        let rows = self.query_rows("SELECT path, due FROM dest_dirs ORDER BY path", [], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(path, due)| Some((RelPath::from_bytes(&path).ok()?, due == 1)))
            .collect())
    }
}

/// In-memory state of the directory rows, part of [`Queue`].
#[derive(Debug, Default)]
pub(super) struct DirState {
    /// Complete-sync: file directories at all.
    enabled: std::sync::atomic::AtomicBool,
    /// A look was asked for (a row was filed, a scan ran, the handler started).
    check: std::sync::atomic::AtomicBool,
    /// Catch-up scans that marked the rows due.
    scans: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::clock::now_ms;
    use crate::conformance::rel as p;
    use crate::merge::Entry;
    use crate::state::Outcome;

    /// Files `action` and acknowledges it as done with `ledger`.
    fn done(q: &Queue, action: Action, ledger: LedgerUpdate) {
        q.push_repair(&[Entry::new(action, 0)]).unwrap();
        let claimed = q.claim(10, now_ms()).unwrap();
        assert_eq!(claimed.len(), 1);
        q.finish(&[Outcome::Done {
            id: claimed[0].id,
            ledger,
        }])
        .unwrap();
    }

    fn rows(q: &Queue) -> Vec<(String, bool)> {
        q.dir_rows()
            .unwrap()
            .into_iter()
            .map(|(p, due)| (p.display(), due))
            .collect()
    }

    fn row(path: &str, due: bool) -> (String, bool) {
        (path.to_string(), due)
    }

    #[test]
    fn deletions_and_renames_file_the_directory_they_may_empty() {
        let q = Queue::open_in_memory().unwrap();
        // Off (no complete-sync): nothing is filed.
        done(
            &q,
            Action::Delete(p("a/b/f")),
            LedgerUpdate::Deleted(p("a/b/f")),
        );
        assert!(rows(&q).is_empty());

        q.set_remove_empty_dirs(true);
        assert!(!q.take_dirs_check());
        done(
            &q,
            Action::Delete(p("a/b/f")),
            LedgerUpdate::Deleted(p("a/b/f")),
        );
        assert_eq!(rows(&q), [row("a/b", true)]);
        assert!(q.take_dirs_check(), "filing a row asks for a look");
        // A file at the root leaves no directory but the root, which is never filed.
        done(
            &q,
            Action::Delete(p("top")),
            LedgerUpdate::Deleted(p("top")),
        );
        assert_eq!(rows(&q), [row("a/b", true)]);
        assert!(!q.take_dirs_check());

        // A directory's deletion: it and the directories known below it are due (a store
        // that deletes file by file may keep them), and so is its parent.
        q.settle_dirs(&[DirVerdict::Kept(p("a/b"))], q.dir_scans())
            .unwrap();
        done(&q, Action::Delete(p("a")), LedgerUpdate::Deleted(p("a")));
        assert_eq!(rows(&q), [row("a", true), row("a/b", true)]);
    }

    #[test]
    fn a_rename_files_its_old_name_and_copies_its_rows() {
        let q = Queue::open_in_memory().unwrap();
        q.set_remove_empty_dirs(true);
        done(
            &q,
            Action::Delete(p("x/y/z")),
            LedgerUpdate::Deleted(p("x/y/z")),
        );
        q.settle_dirs(&[DirVerdict::Kept(p("x/y"))], q.dir_scans())
            .unwrap();
        // A directory: the old name, what was known under it and its parent are due; the
        // rows go along to the new name as they were (kept stays kept).
        let mv = |from: &str, to: &str| Action::Move {
            from: p(from),
            to: p(to),
        };
        done(
            &q,
            mv("x", "t/n"),
            LedgerUpdate::Moved {
                from: p("x"),
                to: p("t/n"),
            },
        );
        assert_eq!(
            rows(&q),
            [row("t/n/y", false), row("x", true), row("x/y", true)]
        );
        // A file (nothing known below it): only its parent.
        done(
            &q,
            mv("f/g", "h"),
            LedgerUpdate::MovedUnverified {
                from: p("f/g"),
                to: p("h"),
            },
        );
        assert_eq!(
            rows(&q),
            [
                row("f", true),
                row("t/n/y", false),
                row("x", true),
                row("x/y", true)
            ]
        );
    }

    #[test]
    fn a_catch_up_scan_makes_kept_directories_due_again() {
        let q = Queue::open_in_memory().unwrap();
        q.set_remove_empty_dirs(true);
        done(
            &q,
            Action::Delete(p("a/f")),
            LedgerUpdate::Deleted(p("a/f")),
        );
        done(
            &q,
            Action::Delete(p("b/f")),
            LedgerUpdate::Deleted(p("b/f")),
        );
        let scans = q.dir_scans();
        q.settle_dirs(
            &[DirVerdict::Kept(p("a")), DirVerdict::Removed(p("b"))],
            scans,
        )
        .unwrap();
        assert_eq!(rows(&q), [row("a", false)]);
        assert!(q.dirs_due().unwrap().is_empty());
        let _ = q.take_dirs_check();
        q.mark_dirs_due().unwrap();
        assert!(q.take_dirs_check());
        assert_eq!(q.dirs_due().unwrap(), [p("a")]);

        // A scan that ran while `a` was being looked at: it stays due (the scan may have seen
        // the source lose it after the look), and another look is asked for.
        let scans = q.dir_scans();
        q.mark_dirs_due().unwrap();
        let _ = q.take_dirs_check();
        q.settle_dirs(&[DirVerdict::Kept(p("a"))], scans).unwrap();
        assert_eq!(rows(&q), [row("a", true)]);
        assert!(q.take_dirs_check());
    }

    #[test]
    fn a_rename_dropped_by_the_merge_makes_its_source_due() {
        let q = Queue::open_in_memory().unwrap();
        q.set_remove_empty_dirs(true);
        done(
            &q,
            Action::Delete(p("a/f")),
            LedgerUpdate::Deleted(p("a/f")),
        );
        q.settle_dirs(&[DirVerdict::Kept(p("a"))], q.dir_scans())
            .unwrap();
        let _ = q.take_dirs_check();
        let mv = Action::Move {
            from: p("a"),
            to: p("b"),
        };
        q.push(&[Entry::new(mv, 0)]).unwrap();
        assert_eq!(rows(&q), [row("a", false)]);
        // `b` deleted: the rename, which no ledger file needs, is dropped with no deletion
        // of `a`; the empty `a` the destination keeps is due.
        q.push(&[Entry::new(Action::Delete(p("b")), 0)]).unwrap();
        assert_eq!(rows(&q), [row("a", true)]);
        assert!(q.take_dirs_check());
    }

    #[test]
    fn deepest_first_and_busy_while_an_action_will_still_touch_it() {
        let q = Queue::open_in_memory().unwrap();
        q.set_remove_empty_dirs(true);
        for f in ["a/f", "a/b/c/f", "a/b/f"] {
            done(&q, Action::Delete(p(f)), LedgerUpdate::Deleted(p(f)));
        }
        assert_eq!(q.dirs_due().unwrap(), [p("a/b/c"), p("a/b"), p("a")]);

        q.push(&[Entry::new(Action::Send(p("a/b/new")), 0)])
            .unwrap();
        assert!(q.busy_within(&p("a/b")).unwrap());
        assert!(q.busy_within(&p("a")).unwrap());
        assert!(!q.busy_within(&p("a/b/c")).unwrap());
        assert!(!q.busy_within(&p("a/bc")).unwrap());
        // Parked: it will not run before its next episode (an hour away here), and a folder
        // removal is only ever an rmdir, which a later send's parents simply recreate.
        let claimed = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Park {
            id: claimed[0].id,
            error: "refused".into(),
            ready_at: now_ms() + 3_600_000,
        }])
        .unwrap();
        assert!(!q.busy_within(&p("a/b")).unwrap());
        // The source of a queued move counts too.
        let mv = Action::Move {
            from: p("m/x"),
            to: p("n"),
        };
        q.push(&[Entry::new(mv, 0)]).unwrap();
        assert!(q.busy_within(&p("m")).unwrap());
    }
}
