//! Hand-offs waiting to happen: deliveries acknowledged with `remove_source` or
//! `on_delivered` set. A row is filed in the transaction that acknowledges the send (see
//! [`Queue::finish`]), so a crash between delivery and hand-off loses nothing; the hand-off
//! worker (`crate::handoff`) takes rows from here.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use const_format::formatcp;
use rusqlite::{params, Transaction};

use super::{Queue, StateError, PARKED, PENDING};
use crate::action::Action;
use crate::connection::FileIdentity;
use crate::merge::Entry;
use crate::relpath::RelPath;

/// One delivery waiting for its hand-off, with the size and mtime the destination received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HandoffRow {
    #[serde(serialize_with = "crate::relpath::serialize_lossy")]
    pub path: RelPath,
    pub size: u64,
    pub mtime_ns: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Gave up after repeated failures; kept for `status` until the file is delivered again.
    pub parked: bool,
    /// The local file's device, inode and ctime when the delivery read it; `None` for rows
    /// filed by versions that did not record it.
    #[serde(skip)]
    pub identity: Option<FileIdentity>,
}

/// Files (or refiles) the hand-off of a delivery; a newer delivery of the same path replaces
/// an older one's row.
pub(super) fn file(
    tx: &Transaction<'_>,
    path: &RelPath,
    size: u64,
    mtime_ns: i64,
    identity: Option<FileIdentity>,
    ready_at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO handoff
         (path, size, mtime_ns, state, ready_at, attempts, dev, ino, ctime_ns)
         VALUES (?1, ?2, ?3, 0, ?4, 0, ?5, ?6, ?7)",
    )?
    .execute(params![
        path.as_bytes(),
        size as i64,
        mtime_ns,
        ready_at,
        identity.map(|i| i.dev as i64),
        identity.map(|i| i.ino as i64),
        identity.map(|i| i.ctime_ns),
    ])?;
    Ok(())
}

/// Deletions of files that a sibling mapping's hand-off removed locally (ledger rows marked
/// `handed_off`) are not the user's: they are dropped, so the destination keeps its copy. A
/// directory's deletion becomes the deletion of the unmarked files in it. Entries other
/// than deletions pass through. Borrowed when nothing is marked (the usual case: one lookup
/// in a partial index).
pub(super) fn spare_handed_off<'e>(
    tx: &Transaction<'_>,
    entries: &'e [Entry],
) -> rusqlite::Result<Cow<'e, [Entry]>> {
    let deletes = entries
        .iter()
        .any(|e| matches!(e.action, Action::Delete(_)));
    if !deletes
        || !tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM ledger WHERE handed_off = 1)",
            [],
            |r| r.get::<_, bool>(0),
        )?
    {
        return Ok(Cow::Borrowed(entries));
    }
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Action::Delete(p) = &e.action else {
            out.push(e.clone());
            continue;
        };
        let (lo, hi) = super::within_bounds(p);
        let rows = |sql: &str| -> rusqlite::Result<Vec<Vec<u8>>> {
            tx.prepare_cached(sql)?
                .query_map(params![p.as_bytes(), lo, hi], |r| r.get(0))?
                .collect()
        };
        let marked = rows(
            "SELECT path FROM ledger WHERE handed_off = 1
             AND (path = ?1 OR (path > ?2 AND path < ?3))",
        )?;
        if marked.is_empty() {
            out.push(e.clone());
            continue;
        }
        tracing::debug!(path = %p, files = marked.len(), "not deleted remotely: removed locally by another mapping's hand-off after this one delivered it");
        if marked.iter().any(|m| m.as_slice() == p.as_bytes()) {
            continue;
        }
        for q in rows("SELECT path FROM ledger WHERE handed_off = 0 AND path > ?2 AND path < ?3")? {
            if let Ok(q) = RelPath::from_bytes(&q) {
                out.push(Entry::new(Action::Delete(q), e.ready_at));
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// A ledger row holding the version a hand-off row delivered (parameters: [`version_params`]).
const SAME_VERSION: &str = "path = ?1 AND stale = 0 AND size = ?2 AND mtime_ns = ?3
    AND (ctime_ns IS NULL OR ?4 IS NULL OR (ctime_ns = ?4 AND ino = ?5 AND dev = ?6))";

fn version_params(row: &HandoffRow) -> impl rusqlite::Params + '_ {
    let id = row.identity;
    (
        row.path.as_bytes(),
        row.size as i64,
        row.mtime_ns,
        id.map(|i| i.ctime_ns),
        id.map(|i| i.ino as i64),
        id.map(|i| i.dev as i64),
        row.path.top_level().as_bytes().to_vec(),
    )
}

/// A mapping whose command runs per top-level entry holds a file only once the entry's
/// command succeeded: its ledger row says the change was recorded, not delivered
/// (parameter ?7: the top-level entry of the path).
const ENTRY_DELIVERED: &str = "NOT EXISTS(SELECT 1 FROM entries WHERE entry = ?7)";

impl Queue {
    /// Turns hand-off filing on (`Some(delay)`: each waits `delay` after delivery) or off.
    pub fn set_handoff(&self, delay: Option<Duration>) {
        self.handoff.store(delay.is_some(), Ordering::Relaxed);
        let ms = delay.map(|d| d.as_millis() as u64).unwrap_or(0);
        self.handoff_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Up to `limit` waiting hand-offs that are due at `now` (ms), oldest first.
    pub fn handoff_due(&self, limit: usize, now: u64) -> Result<Vec<HandoffRow>, StateError> {
        self.handoff_query(
            formatcp!(
                "SELECT path, size, mtime_ns, attempts, last_error, state, dev, ino, ctime_ns
                 FROM handoff WHERE state = {PENDING} AND ready_at <= ?1 ORDER BY ready_at LIMIT ?2"
            ),
            params![now as i64, limit as i64],
        )
    }

    /// Every hand-off row, waiting and parked, for `status`.
    pub fn handoff_rows(&self) -> Result<Vec<HandoffRow>, StateError> {
        self.handoff_query(
            "SELECT path, size, mtime_ns, attempts, last_error, state, dev, ino, ctime_ns FROM handoff ORDER BY path",
            [],
        )
    }

    fn handoff_query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<HandoffRow>, StateError> {
        let rows = self.query_rows(sql, args, |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, i64>(5)?,
                (
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ),
            ))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(path, size, mtime_ns, attempts, last_error, state, ident)| {
                    let identity = match ident {
                        (Some(dev), Some(ino), Some(ctime_ns)) => Some(FileIdentity {
                            dev: dev as u64,
                            ino: ino as u64,
                            ctime_ns,
                        }),
                        _ => None,
                    };
                    Some(HandoffRow {
                        path: RelPath::from_bytes(&path).ok()?,
                        size: size.max(0) as u64,
                        mtime_ns,
                        attempts: attempts.max(0) as u32,
                        last_error,
                        parked: state == PARKED,
                        identity,
                    })
                },
            )
            .collect())
    }

    /// When the next waiting hand-off is due, if any.
    pub fn handoff_next_due(&self) -> Result<Option<u64>, StateError> {
        self.read(|conn| {
            conn.query_row(
                formatcp!("SELECT MIN(ready_at) FROM handoff WHERE state = {PENDING}"),
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|v| v.max(0) as u64))
        })
    }

    /// The hand-off of `row` is over (done, or no longer wanted). A newer delivery of the
    /// same path, filed meanwhile, keeps its row.
    pub fn handoff_done(&self, row: &HandoffRow) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "DELETE FROM handoff WHERE path = ?1 AND mtime_ns = ?2 AND size = ?3",
                params![row.path.as_bytes(), row.mtime_ns, row.size as i64],
            )
            .map(|_| ())
        })
    }

    /// The hand-off of `row` failed: try again at `ready_at`, or park it (`park`);
    /// `counted`: the failure counts as an attempt (an unreachable destination does not).
    pub fn handoff_failed(
        &self,
        row: &HandoffRow,
        error: &str,
        ready_at: u64,
        park: bool,
        counted: bool,
    ) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "UPDATE handoff SET attempts = attempts + ?7, last_error = ?4, ready_at = ?5,
                 state = ?6 WHERE path = ?1 AND mtime_ns = ?2 AND size = ?3",
                params![
                    row.path.as_bytes(),
                    row.mtime_ns,
                    row.size as i64,
                    error,
                    ready_at as i64,
                    if park { PARKED } else { 0 },
                    counted as i64
                ],
            )
            .map(|_| ())
        })
    }

    /// As a sibling mapping: whether this mapping's ledger holds the version of `path` that
    /// the hand-off `row` delivered elsewhere (same size and mtime, and inode and ctime where
    /// both recorded them; rows recorded without, by older versions or `baseline`, match on
    /// size and mtime). Read only.
    pub fn holds_handed_off(&self, row: &HandoffRow) -> Result<bool, StateError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT EXISTS(SELECT 1 FROM ledger WHERE {SAME_VERSION}) AND {ENTRY_DELIVERED}"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| st.query_row(version_params(row), |r| r.get::<_, bool>(0)))
        })
    }

    /// [`Queue::holds_handed_off`], and if so marks the row `handed_off` (its local removal
    /// is then never propagated as the user's deletion). One conditional UPDATE is both check
    /// and mark, committed with `synchronous = FULL` so that the mark is on disk before the
    /// caller removes the file.
    pub fn mark_handed_off(&self, row: &HandoffRow) -> Result<bool, StateError> {
        self.read(|conn| {
            conn.pragma_update(None, "synchronous", "FULL")?;
            let sql = format!(
                "UPDATE ledger SET handed_off = 1 WHERE {SAME_VERSION} AND {ENTRY_DELIVERED}"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| st.execute(version_params(row)))
                .map(|n| n > 0)
        })
    }

    /// Parked hand-offs become due again now, attempts reset (`skynet queue retry all`).
    pub fn handoff_retry_parked(&self) -> Result<u64, StateError> {
        self.read(|conn| {
            conn.execute(
                formatcp!("UPDATE handoff SET state = {PENDING}, attempts = 0, ready_at = 0 WHERE state = ?1"),
                [PARKED],
            )
            .map(|n| n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::conformance::rel as p;
    use crate::merge::Entry;
    use crate::state::{LedgerUpdate, Outcome};
    use crate::Action;

    fn deliver(q: &Queue, path: &str, mtime_ns: i64) {
        q.push(&[Entry::new(Action::Send(p(path)), 0)]).unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: LedgerUpdate::Sent {
                path: p(path),
                size: 3,
                mtime_ns,
                hash: None,
                identity: None,
            },
        }])
        .unwrap();
    }

    #[test]
    fn acknowledged_sends_file_handoffs_only_when_enabled() {
        let q = Queue::open_in_memory().unwrap();
        deliver(&q, "off", 1);
        assert!(q.handoff_rows().unwrap().is_empty());
        q.set_handoff(Some(Duration::ZERO));
        deliver(&q, "a", 1);
        let due = q.handoff_due(10, now_ms()).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].path.clone(), due[0].size), (p("a"), 3));
        // A newer delivery replaces the row; finishing the old one leaves the new one.
        deliver(&q, "a", 2);
        q.handoff_done(&due[0]).unwrap();
        assert_eq!(q.handoff_rows().unwrap()[0].mtime_ns, 2);
        let row = q.handoff_rows().unwrap().remove(0);
        q.handoff_failed(&row, "unreachable", 0, false, false)
            .unwrap();
        assert_eq!(q.handoff_rows().unwrap()[0].attempts, 0);
        q.handoff_failed(&row, "verification failed", 0, true, true)
            .unwrap();
        assert_eq!(q.handoff_rows().unwrap()[0].attempts, 1);
        assert!(q.handoff_due(10, now_ms()).unwrap().is_empty());
        assert!(q.handoff_rows().unwrap()[0].parked);
        assert_eq!(q.handoff_retry_parked().unwrap(), 1);
        assert_eq!(q.handoff_due(10, now_ms()).unwrap().len(), 1);
    }

    /// A row as a sibling's hand-off sees it.
    fn row(path: &str, mtime_ns: i64, identity: Option<FileIdentity>) -> HandoffRow {
        HandoffRow {
            path: p(path),
            size: 3,
            mtime_ns,
            attempts: 0,
            last_error: None,
            parked: false,
            identity,
        }
    }

    fn queued(q: &Queue) -> Vec<String> {
        q.queued_actions()
            .unwrap()
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    #[test]
    fn a_sibling_marks_only_the_version_this_mapping_holds() {
        let q = Queue::open_in_memory().unwrap();
        let id = FileIdentity {
            dev: 1,
            ino: 2,
            ctime_ns: 3,
        };
        q.push(&[Entry::new(Action::Send(p("a")), 0)]).unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        let sent = LedgerUpdate::Sent {
            path: p("a"),
            size: 3,
            mtime_ns: 7,
            hash: None,
            identity: Some(id),
        };
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: sent,
        }])
        .unwrap();
        assert!(!q.mark_handed_off(&row("a", 8, Some(id))).unwrap(), "mtime");
        let rewritten = FileIdentity { ctime_ns: 4, ..id };
        assert!(
            !q.mark_handed_off(&row("a", 7, Some(rewritten))).unwrap(),
            "ctime"
        );
        assert!(
            !q.mark_handed_off(&row("b", 7, Some(id))).unwrap(),
            "never sent"
        );
        assert!(q.mark_handed_off(&row("a", 7, Some(id))).unwrap());
        // Rows without an identity (baseline, older versions) match on size and mtime.
        q.record_delivered(&[(p("old"), 3, 7, None)]).unwrap();
        assert!(q.mark_handed_off(&row("old", 7, Some(id))).unwrap());
    }

    /// A mapping whose command runs per top-level entry holds a file only once the entry's
    /// command succeeded: its ledger row alone (the change recorded) must not let a sibling's
    /// hand-off remove the local file (found by review: a failing per-entry command, and the
    /// sibling with --remove-source removed `album/song.flac` it never delivered).
    #[test]
    fn a_waiting_entry_does_not_hold_its_files_for_a_sibling() {
        let q = Queue::open_in_memory().unwrap();
        q.record_delivered(&[
            (p("album/song.flac"), 3, 7, None),
            (p("single"), 3, 7, None),
        ])
        .unwrap();
        q.entry_changed(&p("album")).unwrap();
        let song = row("album/song.flac", 7, None);
        assert!(!q.holds_handed_off(&song).unwrap());
        assert!(!q.mark_handed_off(&song).unwrap());
        assert!(q.holds_handed_off(&row("single", 7, None)).unwrap());
        let waiting = q.entries_due(now_ms()).unwrap().remove(0);
        q.entry_done(&waiting).unwrap();
        assert!(q.mark_handed_off(&song).unwrap());
    }

    #[test]
    fn deletions_of_handed_off_files_are_dropped_and_carried_by_moves() {
        let q = Queue::open_in_memory().unwrap();
        q.record_delivered(&[
            (p("d/gone"), 3, 7, None),
            (p("d/mine"), 3, 7, None),
            (p("x"), 3, 7, None),
        ])
        .unwrap();
        assert!(q.mark_handed_off(&row("d/gone", 7, None)).unwrap());
        assert!(q.mark_handed_off(&row("x", 7, None)).unwrap());
        let delete = |s: &str| Entry::new(Action::Delete(p(s)), 0);
        q.push(&[delete("x")]).unwrap();
        assert!(queued(&q).is_empty(), "{:?}", queued(&q));
        // A directory renamed carries the mark with it.
        q.push(&[Entry::new(
            Action::Move {
                from: p("d"),
                to: p("e"),
            },
            0,
        )])
        .unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: LedgerUpdate::Moved {
                from: p("d"),
                to: p("e"),
            },
        }])
        .unwrap();
        // The folder deleted: only the user's own file goes.
        q.push(&[delete("e")]).unwrap();
        assert_eq!(queued(&q), vec!["delete e/mine".to_string()]);
        // A new delivery of the path is the user's file again.
        deliver(&q, "x", 9);
        q.push(&[delete("x")]).unwrap();
        assert_eq!(queued(&q).last().map(String::as_str), Some("delete x"));
    }

    #[test]
    fn a_version_2_database_opens_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.sqlite");
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            for sql in &crate::state::db::MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO ledger (path, size, mtime_ns, sent_at) VALUES (x'61', 3, 7, 0);
                 INSERT INTO handoff (path, size, mtime_ns, ready_at) VALUES (x'61', 3, 7, 0);",
            )
            .unwrap();
        }
        let q = Queue::open(&db).unwrap();
        let rows = q.handoff_rows().unwrap();
        assert_eq!((rows.len(), rows[0].identity), (1, None));
        assert_eq!(q.ledger().unwrap()[&p("a")].mtime_ns, 7);
        assert!(q.mark_handed_off(&rows[0]).unwrap());
    }

    #[test]
    fn handoff_delay_postpones() {
        let q = Queue::open_in_memory().unwrap();
        q.set_handoff(Some(Duration::from_secs(60)));
        deliver(&q, "a", 1);
        assert!(q.handoff_due(10, now_ms()).unwrap().is_empty());
        assert!(q.handoff_next_due().unwrap().unwrap() > now_ms() + 50_000);
    }
}
