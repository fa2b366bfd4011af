//! Entries whose command is due (`--exec-per top-level`, see [`crate::entries`]). See
//! `schema/008_entries.sql`.

use rusqlite::params;

use super::{Queue, StateError};
use crate::relpath::RelPath;

/// One top-level entry waiting for its command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRow {
    #[serde(serialize_with = "crate::relpath::serialize_lossy")]
    pub entry: RelPath,
    /// Grows with every change filed; a run clears the row only at the generation it saw.
    #[serde(skip)]
    pub generation: i64,
    /// Not before this time (ms since the epoch).
    pub ready_at: u64,
    pub attempts: u32,
    /// Gave up after repeated failures: tried again after a long backoff, at once when a
    /// file under it changes, and by each `sync`.
    pub parked: bool,
    pub last_error: Option<String>,
}

const COLUMNS: &str = "entry, generation, ready_at, attempts, parked, last_error";

impl Queue {
    /// Files a change under `entry`: due now, with a new episode of attempts (a parked entry
    /// is tried again at once when its files change).
    pub fn entry_changed(&self, entry: &RelPath) -> Result<(), StateError> {
        self.read(|conn| {
            conn.prepare_cached(
                "INSERT INTO entries (entry, generation) VALUES (?1, 1)
                 ON CONFLICT(entry) DO UPDATE SET generation = generation + 1, ready_at = 0,
                 attempts = 0, parked = 0",
            )
            .and_then(|mut s| s.execute([entry.as_bytes()]))
            .map(|_| ())
        })
    }

    /// The entries due at `now` (ms), parked ones included once their backoff has passed.
    pub fn entries_due(&self, now: u64) -> Result<Vec<EntryRow>, StateError> {
        self.entry_query(
            &format!("SELECT {COLUMNS} FROM entries WHERE ready_at <= ?1 ORDER BY entry"),
            params![now as i64],
        )
    }

    /// Every entry waiting for its command, for `status`.
    pub fn entry_rows(&self) -> Result<Vec<EntryRow>, StateError> {
        self.entry_query(&format!("SELECT {COLUMNS} FROM entries ORDER BY entry"), [])
    }

    /// When the next entry is due, if any.
    pub fn entries_next_due(&self) -> Result<Option<u64>, StateError> {
        self.read(|conn| {
            conn.query_row("SELECT MIN(ready_at) FROM entries", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|v| v.max(0) as u64))
        })
    }

    /// Its command succeeded on the entry as it was at `row`'s generation: done, unless a
    /// change came in meanwhile (that one is still due).
    pub fn entry_done(&self, row: &EntryRow) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "DELETE FROM entries WHERE entry = ?1 AND generation = ?2",
                params![row.entry.as_bytes(), row.generation],
            )
            .map(|_| ())
        })
    }

    /// Not done: look again at `ready_at`. `counts`: this try counts toward parking; `park`:
    /// it is parked (visible as failed). A change filed meanwhile keeps its fresh episode.
    pub fn entry_retry(
        &self,
        row: &EntryRow,
        why: &str,
        ready_at: u64,
        counts: bool,
        park: bool,
    ) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "UPDATE entries SET ready_at = ?3, last_error = ?4,
                 attempts = attempts + ?5, parked = ?6
                 WHERE entry = ?1 AND generation = ?2",
                params![
                    row.entry.as_bytes(),
                    row.generation,
                    ready_at as i64,
                    why,
                    counts as i64,
                    park as i64
                ],
            )
            .map(|_| ())
        })
    }

    /// Gives every parked entry a new episode, due now (each `sync`, `queue retry all`).
    pub fn entries_revive(&self) -> Result<u64, StateError> {
        self.read(|conn| {
            conn.execute(
                "UPDATE entries SET parked = 0, attempts = 0, ready_at = 0 WHERE parked = 1",
                [],
            )
            .map(|n| n as u64)
        })
    }

    /// Whether an action under `entry` (at it or below, as its path or a move's source) is
    /// still queued, running, retrying, held by a gate or by the mass-deletion guard: its
    /// command waits for them, so that it never carries a change skynet has not let through.
    /// Parked actions do not hold it.
    pub fn entry_busy(&self, entry: &RelPath) -> Result<bool, StateError> {
        let (lo, hi) = super::within_bounds(entry);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM queue WHERE state != ?4 AND
                 (path = ?1 OR (path > ?2 AND path < ?3)
                  OR from_path = ?1 OR (from_path > ?2 AND from_path < ?3)))",
            )
            .and_then(|mut s| {
                s.query_row(params![entry.as_bytes(), lo, hi, super::PARKED], |r| {
                    r.get::<_, bool>(0)
                })
            })
        })
    }

    /// Whether the ledger still names something at or under `entry`.
    pub fn ledger_holds_under(&self, entry: &RelPath) -> Result<bool, StateError> {
        let (lo, hi) = super::within_bounds(entry);
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3))",
            )
            .and_then(|mut s| s.query_row(params![entry.as_bytes(), lo, hi], |r| r.get(0)))
        })
    }

    /// Leaves per-entry mode: the files under each waiting entry are forgotten by the
    /// ledger (so that the catch-up scan sends them per file) and the entries go. Returns
    /// how many entries there were.
    pub fn entries_abandon(&self) -> Result<u64, StateError> {
        let rows = self.entry_rows()?;
        self.write(|tx| {
            for row in &rows {
                let (lo, hi) = super::within_bounds(&row.entry);
                tx.execute(
                    "DELETE FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3)",
                    params![row.entry.as_bytes(), lo, hi],
                )?;
            }
            tx.execute("DELETE FROM entries", [])
        })?;
        Ok(rows.len() as u64)
    }

    fn entry_query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<EntryRow>, StateError> {
        let rows = self.query_rows(sql, args, |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(entry, generation, ready_at, attempts, parked, last_error)| {
                    Some(EntryRow {
                        entry: RelPath::from_bytes(&entry).ok()?,
                        generation,
                        ready_at: ready_at.max(0) as u64,
                        attempts: attempts.max(0) as u32,
                        parked: parked != 0,
                        last_error,
                    })
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::conformance::rel;

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = Queue::open(&dir.path().join("state.db")).expect("open");
        (dir, q)
    }

    /// A change filed while the command ran keeps the entry due: the run saw an older
    /// generation, and clears nothing.
    #[test]
    fn a_change_during_the_command_keeps_the_entry_due() {
        let (_d, q) = queue();
        q.entry_changed(&rel("album")).expect("file");
        let seen = q.entries_due(now_ms()).expect("due").remove(0);
        q.entry_changed(&rel("album")).expect("file again");
        q.entry_done(&seen).expect("done");
        assert_eq!(
            q.entry_rows().expect("rows").len(),
            1,
            "the later change was lost"
        );
        let again = q.entries_due(now_ms()).expect("due").remove(0);
        q.entry_done(&again).expect("done");
        assert!(q.entry_rows().expect("rows").is_empty());
    }

    /// A parked entry is tried again at once when a file under it changes, and by a revive.
    #[test]
    fn a_change_or_a_revive_ends_a_park() {
        let (_d, q) = queue();
        q.entry_changed(&rel("a")).expect("file");
        let row = q.entries_due(now_ms()).expect("due").remove(0);
        let later = now_ms() + 3_600_000;
        q.entry_retry(&row, "exit 1", later, true, true)
            .expect("park");
        let parked = q.entry_rows().expect("rows").remove(0);
        assert!(parked.parked && parked.attempts == 1);
        assert!(q.entries_due(now_ms()).expect("due").is_empty());
        assert_eq!(q.entries_revive().expect("revive"), 1);
        assert_eq!(q.entries_due(now_ms()).expect("due").len(), 1);
        let row = q.entries_due(now_ms()).expect("due").remove(0);
        q.entry_retry(&row, "exit 1", later, true, true)
            .expect("park");
        q.entry_changed(&rel("a")).expect("change");
        let fresh = q.entries_due(now_ms()).expect("due").remove(0);
        assert!(!fresh.parked && fresh.attempts == 0);
    }
}
