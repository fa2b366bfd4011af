//! The ledger: what the destination is known to hold (path, size, mtime, content hash, the
//! local file's identity). It changes only when an action is acknowledged (see
//! [`Queue::finish`]), or by `baseline` and `ledger forget`. A row whose content is not known
//! (an unacknowledged send may or may not have landed) is stale: size -1.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::{within_bounds, Queue, StateError};
use crate::clock::now_ms;
use crate::connection::FileIdentity;
use crate::relpath::RelPath;

/// How the ledger changes when an action is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerUpdate {
    Sent {
        path: RelPath,
        size: u64,
        mtime_ns: i64,
        /// SHA-256 of the content sent, where it was computed (send-once mode).
        hash: Option<crate::digest::Sha256Digest>,
        /// The local file's identity when it was read (none for `baseline`).
        identity: Option<FileIdentity>,
    },
    /// Send-once: the destination already holds these bytes (a touched file); recorded like
    /// a send, but not counted as a delivery and not handed off again.
    Confirmed {
        path: RelPath,
        size: u64,
        mtime_ns: i64,
        hash: Option<crate::digest::Sha256Digest>,
    },
    Deleted(RelPath),
    Moved {
        from: RelPath,
        to: RelPath,
    },
    /// A move whose remote source was gone: an earlier run may have done it without
    /// acknowledging it (killed in between), so `to` may hold what the ledger had at `from`,
    /// content unproven. Recorded like a move, but stale (size -1): the destination is known
    /// to possibly hold `to`, so a later delete or move of it is kept, and the catch-up scan
    /// re-sends or removes it.
    MovedUnverified {
        from: RelPath,
        to: RelPath,
    },
    /// Complete-sync: the send found the local file gone. An earlier run may have sent it
    /// without acknowledging it (killed in between), so the destination may hold it though
    /// the ledger never did: recorded stale (size -1) even when absent, so that a directory
    /// move carries the record along and the copy is deleted wherever it ends up.
    Vanished(RelPath),
    /// The send found the local file gone: whatever the destination holds at this path is
    /// not known to be current (size -1 in the ledger), so a later move of it re-sends.
    /// Recorded even when absent, as `Vanished` is: a send done but not acknowledged (its
    /// flush failed, the link dropped) left a copy there that the ledger must not deny
    /// (found by the simulation, seed 49).
    Stale(RelPath),
    Unchanged,
}

/// A file recorded as delivered: path, size, mtime (ns), content hash.
pub type Delivered = (RelPath, u64, i64, Option<crate::digest::Sha256Digest>);

/// What the ledger knows of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    /// `None` when the row is stale: the destination may hold something at this path, but
    /// what is not known (see `schema/010_stale_column.sql`), so no file matches it.
    pub size: Option<u64>,
    pub mtime_ns: i64,
}

impl LedgerEntry {
    fn from_columns(size: i64, mtime_ns: i64, stale: bool) -> Self {
        LedgerEntry {
            size: (!stale).then_some(size.max(0) as u64),
            mtime_ns,
        }
    }
}

/// Marks stale the ledger rows of the paths above `path`: a file delivered at `a/b` makes `a` a
/// directory at a filesystem destination (a file standing where a parent goes is replaced), so
/// a row saying `a` is a file is wrong there; on S3, where keys are independent, the object
/// `a` may still exist. Stale says both: nothing is known. Left as it was, a catch-up scan took
/// `a` for a file the user deleted, with nothing sent again after (found by the simulation,
/// seed 12); dropped, the ledger forgot an S3 object that stayed (found by running the
/// simulation's histories against S3). A stale row costs one delete and re-send of that
/// directory at the next catch-up scan.
pub(super) fn mark_files_above_stale(tx: &Transaction<'_>, path: &RelPath) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached("UPDATE ledger SET stale = 1 WHERE path = ?1")?;
    for dir in path.ancestors() {
        stmt.execute([dir.as_bytes()])?;
    }
    Ok(())
}

/// Moves the ledger rows at `from` and below it to the same places under `to`, whole (a
/// handed-off file keeps its mark where it lands), replacing rows there.
pub(super) fn carry_rows(
    tx: &Transaction<'_>,
    from: &RelPath,
    to: &RelPath,
    now: i64,
) -> rusqlite::Result<()> {
    let (lo, hi) = within_bounds(from);
    type Row = (
        Vec<u8>,
        i64,
        i64,
        Option<Vec<u8>>,
        [Option<i64>; 3],
        [i64; 2],
    );
    let moved: Vec<Row> = tx
        .prepare(
            "SELECT path, size, mtime_ns, hash, dev, ino, ctime_ns, handed_off, stale FROM ledger
             WHERE path = ?1 OR (path > ?2 AND path < ?3)",
        )?
        .query_map(params![from.as_bytes(), lo, hi], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                [r.get(4)?, r.get(5)?, r.get(6)?],
                [r.get(7)?, r.get(8)?],
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (old, size, mtime, hash, [dev, ino, ctime], [handed_off, stale]) in moved {
        tx.execute("DELETE FROM ledger WHERE path = ?1", [&old])?;
        let Ok(old) = RelPath::from_bytes(&old) else {
            continue;
        };
        // The rows travel whole: a handed-off file keeps its mark where it lands.
        if let Some(new) = old.rebase(from, to) {
            tx.execute(
                "INSERT OR REPLACE INTO ledger
                 (path, size, mtime_ns, hash, sent_at, dev, ino, ctime_ns, handed_off, stale)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    new.as_bytes(),
                    size,
                    mtime,
                    hash,
                    now,
                    dev,
                    ino,
                    ctime,
                    handed_off,
                    stale
                ],
            )?;
        }
    }
    Ok(())
}

pub(super) fn apply_ledger(
    tx: &Transaction<'_>,
    update: &LedgerUpdate,
    now: i64,
) -> rusqlite::Result<()> {
    match update {
        LedgerUpdate::Sent {
            path,
            size,
            mtime_ns,
            hash,
            identity: _,
        }
        | LedgerUpdate::Confirmed {
            path,
            size,
            mtime_ns,
            hash,
        } => {
            let identity = match update {
                LedgerUpdate::Sent { identity, .. } => *identity,
                _ => None,
            };
            // A new delivery: whatever a sibling's hand-off did to the older version, this
            // one is the user's file again (`handed_off` cleared).
            tx.prepare_cached(
                "INSERT INTO ledger (path, size, mtime_ns, hash, sent_at, dev, ino, ctime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(path) DO UPDATE SET size = excluded.size,
                 mtime_ns = excluded.mtime_ns, hash = excluded.hash, sent_at = excluded.sent_at,
                 dev = excluded.dev, ino = excluded.ino, ctime_ns = excluded.ctime_ns,
                 handed_off = 0, stale = 0",
            )?
            .execute(params![
                path.as_bytes(),
                *size as i64,
                mtime_ns,
                hash.as_ref().map(|h| &h[..]),
                now,
                identity.map(|i| i.dev as i64),
                identity.map(|i| i.ino as i64),
                identity.map(|i| i.ctime_ns),
            ])?;
            // A file replaces whatever directory stood there.
            let (lo, hi) = within_bounds(path);
            tx.prepare_cached("DELETE FROM ledger WHERE path > ?1 AND path < ?2")?
                .execute(params![lo, hi])?;
            mark_files_above_stale(tx, path)?;
        }
        LedgerUpdate::Deleted(path) => {
            let (lo, hi) = within_bounds(path);
            tx.prepare_cached("DELETE FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3)")?
                .execute(params![path.as_bytes(), lo, hi])?;
        }
        LedgerUpdate::MovedUnverified { from, to } => {
            // Whether the rename happened is not known: rows already at `to` stay (marked
            // stale below), for the destination may still hold those files. Dropping them
            // made the ledger deny files the destination kept (found by the simulation,
            // seed 322: a directory swap whose move found its source missing).
            mark_files_above_stale(tx, to)?;
            carry_rows(tx, from, to, now)?;
            let (lo, hi) = within_bounds(to);
            tx.prepare_cached(
                "UPDATE ledger SET stale = 1 WHERE path = ?1 OR (path > ?2 AND path < ?3)",
            )?
            .execute(params![to.as_bytes(), lo, hi])?;
        }
        LedgerUpdate::Moved { from, to } => {
            let (lo, hi) = within_bounds(to);
            tx.execute(
                "DELETE FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3)",
                params![to.as_bytes(), lo, hi],
            )?;
            mark_files_above_stale(tx, to)?;
            carry_rows(tx, from, to, now)?;
        }
        LedgerUpdate::Vanished(path) | LedgerUpdate::Stale(path) => {
            tx.prepare_cached(
                "INSERT INTO ledger (path, size, mtime_ns, hash, sent_at, stale)
                 VALUES (?1, 0, 0, NULL, ?2, 1) ON CONFLICT(path) DO UPDATE SET stale = 1",
            )?
            .execute(params![path.as_bytes(), now])?;
            // An earlier attempt may have been delivered (its acknowledgement lost), replacing
            // the files above it by directories and the directory at it by a file: none of
            // those is known any more (found by the simulation, seeds 1328 and 7557).
            mark_files_above_stale(tx, path)?;
            let (lo, hi) = within_bounds(path);
            tx.prepare_cached("UPDATE ledger SET stale = 1 WHERE path > ?1 AND path < ?2")?
                .execute(params![lo, hi])?;
        }
        LedgerUpdate::Unchanged => {}
    }
    Ok(())
}

impl Queue {
    /// The whole ledger.
    pub fn ledger(&self) -> Result<HashMap<RelPath, LedgerEntry>, StateError> {
        let rows = self.query_rows("SELECT path, size, mtime_ns, stale FROM ledger", [], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                LedgerEntry::from_columns(r.get(1)?, r.get(2)?, r.get(3)?),
            ))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(path, entry)| Some((RelPath::from_bytes(&path).ok()?, entry)))
            .collect())
    }

    /// The ledger row of one path, if the ledger holds it (stale or not).
    pub fn ledger_entry(&self, path: &RelPath) -> Result<Option<LedgerEntry>, StateError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT size, mtime_ns, stale FROM ledger WHERE path = ?1")?
                .query_row([path.as_bytes()], |r| {
                    Ok(LedgerEntry::from_columns(r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
        })
    }

    /// Records files as delivered without sending them (`skynet baseline`): path, size,
    /// mtime and, where computed, content hash.
    pub fn record_delivered(&self, files: &[Delivered]) -> Result<(), StateError> {
        let now = now_ms() as i64;
        self.write(|tx| {
            for (path, size, mtime_ns, hash) in files {
                let update = LedgerUpdate::Sent {
                    path: path.clone(),
                    size: *size,
                    mtime_ns: *mtime_ns,
                    hash: *hash,
                    identity: None,
                };
                apply_ledger(tx, &update, now)?;
            }
            Ok(())
        })
    }
}
