//! The merge rules' view of the queue and ledger ([`PendingView`]) inside the filing
//! transaction: the pure rules of [`crate::merge`] ask, this answers from SQL.

use std::cell::RefCell;

use const_format::formatcp;
use rusqlite::{params, Transaction};

use super::queue::decode_action;
use super::{within_bounds, HELD, IN_FLIGHT, PENDING, RETRY};
use crate::merge::{Entry, PendingView, Queued};
use crate::relpath::RelPath;

/// The merge's view of the queue inside the current transaction.
pub(super) struct SqlView<'a, 'c> {
    tx: &'a Transaction<'c>,
    error: RefCell<Option<rusqlite::Error>>,
}

impl<'a, 'c> SqlView<'a, 'c> {
    pub(super) fn new(tx: &'a Transaction<'c>) -> Self {
        SqlView {
            tx,
            error: RefCell::new(None),
        }
    }

    /// The first SQL failure met while the rules asked (they cannot take errors: the view
    /// answers "nothing" and keeps the failure for the caller, which rolls back).
    pub(super) fn failure(self) -> rusqlite::Result<()> {
        match self.error.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn keep<T: Default>(&self, result: rusqlite::Result<T>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                T::default()
            }
        }
    }

    fn entries(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> rusqlite::Result<Vec<Entry>> {
        let mut stmt = self.tx.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, kind, from, ready_at) = row?;
            if let Ok(action) = decode_action(&path, &kind, from.as_deref()) {
                out.push(Entry::new(action, ready_at.max(0) as u64));
            }
        }
        Ok(out)
    }
}

impl PendingView for SqlView<'_, '_> {
    fn touching(&self, path: &RelPath) -> Vec<Queued> {
        // Indexed terms only (by path, by from_path): equal or below, then each ancestor.
        let (lo, hi) = within_bounds(path);
        let mut sql = String::from(
            "SELECT seq, state, path, kind, from_path FROM queue WHERE
             path = ?1 OR (path > ?2 AND path < ?3) OR from_path = ?1
             OR (from_path > ?2 AND from_path < ?3)",
        );
        let mut args: Vec<Vec<u8>> = vec![path.as_bytes().to_vec(), lo, hi];
        for parent in path.ancestors() {
            args.push(parent.as_bytes().to_vec());
            let n = args.len();
            sql.push_str(&format!(" OR path = ?{n} OR from_path = ?{n}"));
        }
        let found = self.tx.prepare_cached(&sql).and_then(|mut stmt| {
            let rows = stmt.query_map(rusqlite::params_from_iter(&args), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, state, path, kind, from) = row?;
                if let Ok(action) = decode_action(&path, &kind, from.as_deref()) {
                    out.push(Queued {
                        seq,
                        pending: state == PENDING,
                        action,
                    });
                }
            }
            Ok(out)
        });
        self.keep(found)
    }

    fn pending(&self, key: &RelPath) -> Option<Entry> {
        let found = self.entries(
            formatcp!("SELECT path, kind, from_path, ready_at FROM queue WHERE path = ?1 AND state = {PENDING}"),
            &[&key.as_bytes()],
        );
        self.keep(found).into_iter().next()
    }

    fn pending_under(&self, dir: &RelPath) -> Vec<Entry> {
        let (lo, hi) = within_bounds(dir);
        let found = self.entries(
            formatcp!(
                "SELECT path, kind, from_path, ready_at FROM queue
                 WHERE path > ?1 AND path < ?2 AND state = {PENDING}"
            ),
            &[&lo, &hi],
        );
        self.keep(found)
    }

    fn committed_sends_within(&self, path: &RelPath) -> Vec<RelPath> {
        let (lo, hi) = within_bounds(path);
        let found = self.entries(
            formatcp!(
                "SELECT path, kind, from_path, ready_at FROM queue
                 WHERE (path = ?1 OR (path > ?2 AND path < ?3))
                 AND state IN ({IN_FLIGHT}, {RETRY}, {HELD}) AND kind = 'send'"
            ),
            &[&path.as_bytes(), &lo, &hi],
        );
        self.keep(found)
            .into_iter()
            .map(|e| e.action.key().clone())
            .collect()
    }

    fn stale_remotely(&self, path: &RelPath) -> bool {
        let found = self.tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM ledger WHERE path = ?1 AND stale = 1)",
            [path.as_bytes()],
            |r| r.get::<_, bool>(0),
        );
        self.keep(found)
    }

    fn known_remotely(&self, path: &RelPath) -> bool {
        // A directory is known remotely when any file under it is.
        let (lo, hi) = within_bounds(path);
        let found = self.tx.query_row(
            formatcp!(
                "SELECT EXISTS(SELECT 1 FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3))
                 OR EXISTS(SELECT 1 FROM queue WHERE (path = ?1 OR (path > ?2 AND path < ?3))
                           AND state IN ({IN_FLIGHT}, {RETRY}, {HELD}))"
            ),
            params![path.as_bytes(), lo, hi],
            |r| r.get::<_, bool>(0),
        );
        self.keep(found)
    }
}
