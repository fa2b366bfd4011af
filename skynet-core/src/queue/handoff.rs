//! Hand-offs waiting to happen: deliveries acknowledged with `remove_source` or
//! `on_delivered` set. A row is filed in the transaction that acknowledges the send (see
//! [`Queue::finish`]), so a crash between delivery and hand-off loses nothing; the hand-off
//! worker (`crate::handoff`) takes rows from here.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{params, Transaction};

use super::{Queue, StateError, PARKED};
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
}

/// Files (or refiles) the hand-off of a delivery; a newer delivery of the same path replaces
/// an older one's row.
pub(super) fn file(
    tx: &Transaction<'_>,
    path: &RelPath,
    size: u64,
    mtime_ns: i64,
    ready_at: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO handoff (path, size, mtime_ns, state, ready_at, attempts)
         VALUES (?1, ?2, ?3, 0, ?4, 0)",
    )?
    .execute(params![path.as_bytes(), size as i64, mtime_ns, ready_at])?;
    Ok(())
}

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
            "SELECT path, size, mtime_ns, attempts, last_error, state FROM handoff
             WHERE state = 0 AND ready_at <= ?1 ORDER BY ready_at LIMIT ?2",
            params![now as i64, limit as i64],
        )
    }

    /// Every hand-off row, waiting and parked, for `status`.
    pub fn handoff_rows(&self) -> Result<Vec<HandoffRow>, StateError> {
        self.handoff_query(
            "SELECT path, size, mtime_ns, attempts, last_error, state FROM handoff ORDER BY path",
            [],
        )
    }

    fn handoff_query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<HandoffRow>, StateError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (path, size, mtime_ns, attempts, last_error, state) =
                row.map_err(|e| self.err(e))?;
            if let Ok(path) = RelPath::from_bytes(&path) {
                out.push(HandoffRow {
                    path,
                    size: size.max(0) as u64,
                    mtime_ns,
                    attempts: attempts.max(0) as u32,
                    last_error,
                    parked: state == PARKED,
                });
            }
        }
        Ok(out)
    }

    /// When the next waiting hand-off is due, if any.
    pub fn handoff_next_due(&self) -> Result<Option<u64>, StateError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT MIN(ready_at) FROM handoff WHERE state = 0",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map(|v| v.map(|v| v.max(0) as u64))
        .map_err(|e| self.err(e))
    }

    /// The hand-off of `row` is over (done, or no longer wanted). A newer delivery of the
    /// same path, filed meanwhile, keeps its row.
    pub fn handoff_done(&self, row: &HandoffRow) -> Result<(), StateError> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM handoff WHERE path = ?1 AND mtime_ns = ?2 AND size = ?3",
            params![row.path.as_bytes(), row.mtime_ns, row.size as i64],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
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
        let conn = self.lock();
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
        .map_err(|e| self.err(e))
    }

    /// Parked hand-offs become due again now, attempts reset (`skynet queue retry all`).
    pub fn handoff_retry_parked(&self) -> Result<u64, StateError> {
        let conn = self.lock();
        conn.execute(
            "UPDATE handoff SET state = 0, attempts = 0, ready_at = 0 WHERE state = ?1",
            [PARKED],
        )
        .map(|n| n as u64)
        .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::Entry;
    use crate::queue::{now_ms, LedgerUpdate, Outcome};
    use crate::Action;

    fn p(s: &str) -> RelPath {
        RelPath::from_bytes(s.as_bytes()).unwrap()
    }

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

    #[test]
    fn handoff_delay_postpones() {
        let q = Queue::open_in_memory().unwrap();
        q.set_handoff(Some(Duration::from_secs(60)));
        deliver(&q, "a", 1);
        assert!(q.handoff_due(10, now_ms()).unwrap().is_empty());
        assert!(q.handoff_next_due().unwrap().unwrap() > now_ms() + 50_000);
    }
}
