//! The persistent queue and ledger of one mapping: a SQLite database in WAL mode.
//!
//! - Events are filed in batches ([`Queue::push`]: many events, one transaction) through the
//!   pure merge rules of [`crate::merge`], so there is at most one pending action per path.
//! - The handler claims ready actions ([`Queue::claim`]); a claimed row stays in the table,
//!   marked in flight, until [`Queue::finish`] acknowledges it, so a `kill -9` loses nothing:
//!   [`Queue::recover`] turns in-flight rows back into retries on the next start.
//! - Per-path order: a row is claimable only when no older row touches a related path (the
//!   same path, an ancestor or a descendant). Unrelated paths go in parallel.
//! - The ledger (what the destination holds) changes only in `finish`, on acknowledged success.
//!
//! One `rusqlite::Connection` behind a mutex is the single writer; every call is short.
//! Durability: `synchronous = NORMAL` in WAL mode survives a process crash (the case that
//! matters for `kill -9`); a power loss may lose the last transactions, which the catch-up scan
//! at the next start repairs.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, OptionalExtension, Transaction};

use crate::action::{Action, ActionKind};
use crate::clock::now_ms;
use crate::connection::FileIdentity;
use crate::guard::MaxDelete;
use crate::merge::{self, Change, Entry, PendingView, Queued};
use crate::relpath::RelPath;

mod deletion_guard;
mod dest_dirs;
mod entries;
mod handoff;
mod ledger_rows;
pub mod meta;
#[cfg(test)]
mod rename_cycles;
mod versions;

pub use dest_dirs::DirVerdict;
pub use entries::EntryRow;
pub use ledger_rows::{today, Forget};
pub use versions::VersionRow;

pub use handoff::HandoffRow;
pub use ledger_rows::LedgerRow;

pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("schema/001_init.sql"),
    include_str!("schema/002_workflows.sql"),
    include_str!("schema/003_guard.sql"),
    include_str!("schema/004_handoff_identity.sql"),
    include_str!("schema/005_move_sources.sql"),
    include_str!("schema/006_park_retries.sql"),
    include_str!("schema/007_dest_dirs.sql"),
    include_str!("schema/008_entries.sql"),
    include_str!("schema/009_versions.sql"),
];

/// Gives every parked action a new episode of attempts, ready now (`queue retry all`, and
/// each start).
const REVIVE_PARKED: &str =
    "UPDATE queue SET state = 3, ready_at = 0, attempts = 0 WHERE state = 2";

const PENDING: i64 = 0;
const IN_FLIGHT: i64 = 1;
const PARKED: i64 = 2;
const RETRY: i64 = 3;
/// Held back by a gate (`min_age`, dated names) until `ready_at`; not a failure.
const HELD: i64 = 4;
/// A deletion held by the mass-deletion guard until a person confirms it (see [`crate::guard`]).
pub(crate) const GUARDED: i64 = 5;

/// A failure of the state database, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Db {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state database {path}: corrupt row: {detail}")]
    Corrupt { path: String, detail: String },
    #[error(
        "state database {path}: made by a newer skynet (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("no queued action with id {0}")]
    NoSuchId(i64),
}

/// The meta key of [`Queue::vanished`], counted in the transaction that settles each send.
const VANISHED_KEY: &str = "vanished";

/// An action handed to the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub action: Action,
    /// Failed attempts so far in this episode (a parked action comes back with none).
    pub attempts: u32,
    /// How many times it was parked before: each park waits longer for the next episode.
    pub parks: u32,
}

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

/// The result of one claimed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done and durable: remove the row, update the ledger.
    Done { id: i64, ledger: LedgerUpdate },
    /// A send whose local file was gone: remove the row, update the ledger, and count it in
    /// the mapping's `vanished` total (see [`Queue::vanished`]). Never a delivery.
    Vanished { id: i64, ledger: LedgerUpdate },
    /// Try again at `ready_at`; `failed` counts it as a failed attempt (a lost connection
    /// is not the action's fault and does not).
    Retry {
        id: i64,
        error: String,
        ready_at: u64,
        failed: bool,
    },
    /// Give up: keep the row as parked, visible in `status`, until retried or dropped.
    /// Parked until `ready_at`, when it comes back by itself for another episode of attempts
    /// (sooner when its file changes, or at the next start).
    Park {
        id: i64,
        error: String,
        ready_at: u64,
    },
    /// Not yet: a gate holds the action until `ready_at`; `reason` is shown in `status`.
    /// Counts no attempt.
    Hold {
        id: i64,
        reason: String,
        ready_at: u64,
    },
}

/// Row counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub pending: u64,
    pub in_flight: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Held back by a gate until their time comes.
    pub held: u64,
    /// Deletions held by the mass-deletion guard until confirmed.
    pub deletions_held: u64,
}

/// One row, for `queue list` and `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueRow {
    pub id: i64,
    pub kind: ActionKind,
    pub path: String,
    pub from: Option<String>,
    pub state: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub ready_at: u64,
}

/// A file recorded as delivered: path, size, mtime (ns), content hash.
pub type Delivered = (RelPath, u64, i64, Option<crate::digest::Sha256Digest>);

/// A ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEntry {
    pub size: u64,
    pub mtime_ns: i64,
}

/// The state database of one mapping.
pub struct Queue {
    conn: Mutex<rusqlite::Connection>,
    path: String,
    /// File a hand-off row for every acknowledged send (see [`Queue::set_handoff`]).
    handoff: std::sync::atomic::AtomicBool,
    /// How long a filed hand-off waits before it is tried, in milliseconds.
    handoff_delay_ms: std::sync::atomic::AtomicU64,
    /// Symlinks met in the source this run (see [`Queue::note_skipped_link`]).
    links: crate::links::LinkNotices,
    /// The mass-deletion guard's limit; `None`: deletions are not judged.
    delete_guard: Mutex<Option<MaxDelete>>,
    /// Directories complete-sync may have to remove (see [`crate::empty_dirs`]).
    dirs: dest_dirs::DirState,
}

impl Queue {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Queue, StateError> {
        let shown = path.display().to_string();
        let conn = rusqlite::Connection::open(path).map_err(|source| StateError::Db {
            path: shown.clone(),
            source,
        })?;
        Self::setup(conn, shown)
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Queue, StateError> {
        let conn = rusqlite::Connection::open_in_memory().map_err(|source| StateError::Db {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, ":memory:".into())
    }

    fn setup(mut conn: rusqlite::Connection, path: String) -> Result<Queue, StateError> {
        let err = |source| StateError::Db {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // Migrate under an immediate (write-locked) transaction and read the version inside
        // it: `status` in another process may open the same database at the same moment. A
        // database already current is not written at all (readers like `status` must not
        // disturb the daemon's transactions).
        let known = MIGRATIONS.len() as i64;
        let current: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if current != known {
            Self::migrate(&mut conn, &path)?;
        }
        Ok(Queue {
            conn: Mutex::new(conn),
            path,
            handoff: Default::default(),
            handoff_delay_ms: Default::default(),
            links: Default::default(),
            delete_guard: Mutex::new(None),
            dirs: Default::default(),
        })
    }

    /// Brings the schema up to date under the write lock, re-reading the version inside it.
    fn migrate(conn: &mut rusqlite::Connection, path: &str) -> Result<(), StateError> {
        let err = |source| StateError::Db {
            path: path.to_string(),
            source,
        };
        let known = MIGRATIONS.len() as i64;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > known {
            return Err(StateError::TooNew {
                path: path.to_string(),
                found: version,
                known,
            });
        }
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql).map_err(err)?;
        }
        tx.pragma_update(None, "user_version", known.max(version))
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// A write transaction that takes the write lock up front (`BEGIN IMMEDIATE`). A deferred
    /// one that reads first and writes later fails at once with "database is locked" when
    /// another process (`status`, `queue retry`, `ledger forget`) wrote in between; waiting for
    /// the lock up front lets the busy timeout apply instead.
    fn write_tx<'c>(
        &self,
        conn: &'c mut rusqlite::Connection,
    ) -> Result<Transaction<'c>, StateError> {
        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))
    }

    fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `sql` and maps each row with `row`, failures named with this database.
    pub(crate) fn query_rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StateError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(args, row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<T>>>()
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Files a batch of incoming actions (the user's changes, seen by the watcher or the
    /// catch-up scan) in one transaction; their deletions pass the mass-deletion guard.
    /// Returns the pending row count.
    pub fn push(&self, entries: &[Entry]) -> Result<u64, StateError> {
        self.push_judged(entries, true)
    }

    /// Files actions skynet derives itself (fallback sends, removing what a crash left
    /// behind): their deletions repair the destination and are not the user's, so the guard
    /// does not judge them.
    pub fn push_repair(&self, entries: &[Entry]) -> Result<u64, StateError> {
        self.push_judged(entries, false)
    }

    fn push_judged(&self, entries: &[Entry], judged: bool) -> Result<u64, StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let entries = handoff::spare_handed_off(&tx, entries).map_err(|e| self.err(e))?;
        let entries = &entries[..];
        let mut dirs_due = false;
        // Collapse repeated sends of one path before touching SQL: a burst of a million
        // writes costs one merge per distinct path. Only within a run of sends: a move or
        // delete in between must see the sends before it (`send(a)`, `move(a→b)`, `send(a)`
        // needs the first send to become `send(b)`, or `b` would get the old remote `a`).
        for run in entries.split_inclusive(|e| !matches!(e.action, Action::Send(_))) {
            let (sends, rest) = match run.split_last() {
                Some((last, sends)) if !matches!(last.action, Action::Send(_)) => {
                    (sends, Some(last))
                }
                _ => (run, None),
            };
            let mut last_send: HashMap<&RelPath, usize> = HashMap::new();
            let mut max_ready: HashMap<&RelPath, u64> = HashMap::new();
            for (i, e) in sends.iter().enumerate() {
                if let Action::Send(p) = &e.action {
                    last_send.insert(p, i);
                    let m = max_ready.entry(p).or_insert(0);
                    *m = (*m).max(e.ready_at);
                }
            }
            for (i, e) in sends.iter().enumerate() {
                if let Action::Send(p) = &e.action {
                    if last_send.get(p) == Some(&i) {
                        let ready = max_ready.get(p).copied().unwrap_or(e.ready_at);
                        tracing::trace!(action = %e.action, "queued");
                        dirs_due |= self.merge_one(&tx, Entry::new(e.action.clone(), ready))?;
                    }
                }
            }
            if let Some(e) = rest {
                tracing::trace!(action = %e.action, "queued");
                dirs_due |= self.merge_one(&tx, e.clone())?;
            }
        }
        if entries.iter().any(|e| !matches!(e.action, Action::Send(_))) {
            let limit = match self.delete_guard.lock() {
                Ok(g) if judged => *g,
                _ => None,
            };
            deletion_guard::judge(&tx, limit).map_err(|e| self.err(e))?;
        }
        let pending = tx
            .query_row("SELECT COUNT(*) FROM queue WHERE state = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        if dirs_due {
            self.request_dirs_check();
        }
        Ok(pending as u64)
    }

    /// A private in-memory copy of this database (`--dry-run` works on it and throws it
    /// away), judging deletions like this one.
    pub fn snapshot(&self) -> Result<Queue, StateError> {
        let mut copy = rusqlite::Connection::open_in_memory().map_err(|e| self.err(e))?;
        {
            let conn = self.lock();
            let backup =
                rusqlite::backup::Backup::new(&conn, &mut copy).map_err(|e| self.err(e))?;
            backup
                .run_to_completion(1000, Duration::ZERO, None)
                .map_err(|e| self.err(e))?;
        }
        let queue = Self::setup(copy, format!("{} (dry-run copy)", self.path))?;
        queue.set_delete_guard(self.delete_guard.lock().ok().and_then(|g| *g));
        Ok(queue)
    }

    /// Files one entry through the merge rules. Returns whether directory rows became due
    /// (see [`dest_dirs::dropped_move`]).
    fn merge_one(&self, tx: &Transaction<'_>, entry: Entry) -> Result<bool, StateError> {
        let view = SqlView {
            tx,
            error: RefCell::new(None),
            path: &self.path,
        };
        let changes = merge::merge(&view, entry);
        if let Some(e) = view.error.into_inner() {
            return Err(e);
        }
        let mut dirs_due = false;
        if self.removes_empty_dirs() {
            for change in &changes {
                let key = match change {
                    Change::Put(e) => e.action.key(),
                    Change::Remove(key) | Change::Replace { key, .. } => key,
                };
                dirs_due |= dest_dirs::dropped_move(tx, key).map_err(|e| self.err(e))?;
            }
        }
        let now = now_ms() as i64;
        for change in changes {
            match change {
                Change::Replace { key, with } => {
                    tx.prepare_cached(
                        "UPDATE queue SET path = ?2, kind = ?3, from_path = ?4, ready_at = ?5,
                         covers = NULL WHERE path = ?1 AND state = 0",
                    )
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            key.as_bytes(),
                            with.action.key().as_bytes(),
                            with.action.kind().as_str(),
                            with.action.from().map(|f| f.as_bytes()),
                            with.ready_at as i64
                        ])
                    })
                    .map_err(|e| self.err(e))?;
                }
                Change::Remove(key) => {
                    tx.prepare_cached("DELETE FROM queue WHERE path = ?1 AND state = 0")
                        .and_then(|mut st| st.execute([key.as_bytes()]))
                        .map_err(|e| self.err(e))?;
                }
                Change::Put(e) => {
                    let key = e.action.key().as_bytes();
                    tx.prepare_cached("DELETE FROM queue WHERE path = ?1 AND state = 0")
                        .and_then(|mut st| st.execute([key]))
                        .map_err(|e| self.err(e))?;
                    // A parked send or delete, or a deletion held by the guard, is superseded
                    // by any newer intent for its path.
                    tx.prepare_cached(
                        "DELETE FROM queue WHERE path = ?1 AND state IN (2, 5) AND kind != 'move'",
                    )
                    .and_then(|mut st| st.execute([key]))
                    .map_err(|e| self.err(e))?;
                    tx.prepare_cached(
                        "INSERT INTO queue (path, kind, from_path, state, ready_at, created_at)
                         VALUES (?1, ?2, ?3, 0, ?4, ?5)",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            key,
                            e.action.kind().as_str(),
                            e.action.from().map(|f| f.as_bytes()),
                            e.ready_at as i64,
                            now
                        ])
                    })
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(dirs_due)
    }

    /// At each start: every in-flight row (after a crash or stop) becomes a retry, ready now,
    /// and every parked row gets one more episode of attempts. Returns the paths the in-flight
    /// actions touch, so the destination can clean up beside them.
    pub fn recover(&self) -> Result<Vec<RelPath>, StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let mut paths = Vec::new();
        {
            let mut stmt = tx
                .prepare("SELECT path, from_path FROM queue WHERE state = 1")
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                let (path, from) = row.map_err(|e| self.err(e))?;
                paths.extend(RelPath::from_bytes(&path).ok());
                paths.extend(from.and_then(|f| RelPath::from_bytes(&f).ok()));
            }
        }
        tx.execute(
            "UPDATE queue SET state = 3, ready_at = 0 WHERE state = 1",
            [],
        )
        .map_err(|e| self.err(e))?;
        // Each start (a cron `sync`, a restarted daemon) gives parked actions one more episode
        // before reporting them: what failed may have been fixed meanwhile, and waiting for
        // someone to type `queue retry` left them failed forever.
        tx.execute(REVIVE_PARKED, []).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(paths)
    }

    /// Claims up to `limit` actions that are ready at `now` and not ordered behind an older
    /// action on a related path, marking them in flight.
    pub fn claim(&self, limit: usize, now: u64) -> Result<Vec<Claimed>, StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let mut claimed = Vec::new();
        {
            let mut blocked = PathSet::default();
            let mut stmt = tx
                .prepare_cached("SELECT path, from_path FROM queue WHERE state = 1")
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                blocked.insert(row.get::<_, Vec<u8>>(0).map_err(|e| self.err(e))?);
                if let Some(f) = row.get::<_, Option<Vec<u8>>>(1).map_err(|e| self.err(e))? {
                    blocked.insert(f);
                }
            }
            // NOT INDEXED: walk the table in seq (rowid) order and stop after `limit` claims.
            // Through the (state, seq) index SQLite read and sorted every queued row on each
            // call, making a drain of N rows O(N^2 log N) (100,000 files: 44 s vs rsync's 6).
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, path, kind, from_path, ready_at, attempts, parks, state
                     FROM queue NOT INDEXED WHERE state IN (0, 2, 3, 4) ORDER BY seq",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while claimed.len() < limit {
                let Some(row) = rows.next().map_err(|e| self.err(e))? else {
                    break;
                };
                let id: i64 = row.get(0).map_err(|e| self.err(e))?;
                let ready_at: i64 = row.get(4).map_err(|e| self.err(e))?;
                let state: i64 = row.get(7).map_err(|e| self.err(e))?;
                // A parked action waiting for its next episode holds nothing back, as before
                // parked actions came back by themselves: one file that keeps failing must
                // not stop the actions after it on related paths (nor keep a sync waiting).
                if state == PARKED && ready_at as u64 > now {
                    continue;
                }
                let action = self.row_action(row)?;
                let free = action.paths().all(|p| !blocked.conflicts(p.as_bytes()));
                for p in action.paths() {
                    blocked.insert(p.as_bytes().to_vec());
                }
                if free && ready_at as u64 <= now {
                    let attempts: i64 = row.get(5).map_err(|e| self.err(e))?;
                    let parks: i64 = row.get(6).map_err(|e| self.err(e))?;
                    // A parked action whose wait is over starts a new episode of attempts.
                    let attempts = if state == PARKED { 0 } else { attempts };
                    claimed.push(Claimed {
                        id,
                        action,
                        attempts: attempts as u32,
                        parks: parks.clamp(0, u32::MAX as i64) as u32,
                    });
                }
            }
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE queue SET attempts = CASE WHEN state = 2 THEN 0 ELSE attempts END,
                     state = 1 WHERE seq = ?1",
                )
                .map_err(|e| self.err(e))?;
            for c in &claimed {
                stmt.execute([c.id]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(claimed)
    }

    fn row_action(&self, row: &rusqlite::Row<'_>) -> Result<Action, StateError> {
        let path: Vec<u8> = row.get(1).map_err(|e| self.err(e))?;
        let kind: String = row.get(2).map_err(|e| self.err(e))?;
        let from: Option<Vec<u8>> = row.get(3).map_err(|e| self.err(e))?;
        decode_action(&path, &kind, from.as_deref()).map_err(|detail| StateError::Corrupt {
            path: self.path.clone(),
            detail,
        })
    }

    /// The earliest time after `now` at which a pending or retrying action becomes ready, if
    /// any is queued. Actions ready already are not counted: if they were not claimed, they
    /// wait behind an action in flight, whose result wakes the handler anyway.
    pub fn next_ready_after(&self, now: u64) -> Result<Option<u64>, StateError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT MIN(ready_at) FROM queue WHERE state IN (0, 2, 3, 4) AND ready_at > ?1",
            [now as i64],
            |r| r.get::<_, Option<i64>>(0),
        )
        .map(|v| v.map(|v| v.max(0) as u64))
        .map_err(|e| self.err(e))
    }

    /// Records the outcomes of claimed actions in one transaction.
    pub fn finish(&self, outcomes: &[Outcome]) -> Result<(), StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms() as i64;
        let handoff = self.handoff.load(std::sync::atomic::Ordering::Relaxed);
        let (mut files, mut bytes) = (0i64, 0i64);
        let mut vanished = 0i64;
        let dirs = self.removes_empty_dirs();
        let mut dirs_filed = false;
        for outcome in outcomes {
            match outcome {
                Outcome::Vanished { id, ledger } => {
                    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
                        .and_then(|mut st| st.execute([id]))
                        .map_err(|e| self.err(e))?;
                    apply_ledger(&tx, ledger, now).map_err(|e| self.err(e))?;
                    vanished += 1;
                }
                Outcome::Done { id, ledger } => {
                    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
                        .and_then(|mut st| st.execute([id]))
                        .map_err(|e| self.err(e))?;
                    if dirs {
                        dirs_filed |= dest_dirs::note(&tx, ledger).map_err(|e| self.err(e))?;
                    }
                    apply_ledger(&tx, ledger, now).map_err(|e| self.err(e))?;
                    if let LedgerUpdate::Sent {
                        path,
                        size,
                        mtime_ns,
                        identity,
                        ..
                    } = ledger
                    {
                        files += 1;
                        bytes += *size as i64;
                        if handoff {
                            let delay = self
                                .handoff_delay_ms
                                .load(std::sync::atomic::Ordering::Relaxed);
                            let ready_at = now.saturating_add(delay as i64);
                            handoff::file(&tx, path, *size, *mtime_ns, *identity, ready_at)
                                .map_err(|e| self.err(e))?;
                        }
                    }
                }
                Outcome::Hold {
                    id,
                    reason,
                    ready_at,
                } => {
                    // A newer pending send of the same path will meet the same gate itself.
                    if !drop_superseded_send(&tx, *id).map_err(|e| self.err(e))? {
                        tx.execute(
                            "UPDATE queue SET state = 4, ready_at = ?2, last_error = ?3 WHERE seq = ?1",
                            params![id, *ready_at as i64, reason],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
                Outcome::Retry {
                    id,
                    error,
                    ready_at,
                    failed,
                } => {
                    // A failed send with a newer pending send of the same path is redundant.
                    if !drop_superseded_send(&tx, *id).map_err(|e| self.err(e))? {
                        tx.execute(
                            "UPDATE queue SET state = 3, ready_at = ?2, last_error = COALESCE(NULLIF(?3, ''), last_error),
                             attempts = attempts + ?4 WHERE seq = ?1",
                            params![id, *ready_at as i64, error, *failed as i64],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
                Outcome::Park {
                    id,
                    error,
                    ready_at,
                } => {
                    tx.execute(
                        "UPDATE queue SET state = 2, last_error = ?2, attempts = attempts + 1,
                         parks = parks + 1, ready_at = ?3 WHERE seq = ?1",
                        params![id, error, *ready_at as i64],
                    )
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        if files > 0 {
            ledger_rows::count_delivered(&tx, files, bytes).map_err(|e| self.err(e))?;
        }
        if vanished > 0 {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            )
            .and_then(|mut st| st.execute(params![VANISHED_KEY, vanished]))
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        if dirs_filed {
            self.request_dirs_check();
        }
        Ok(())
    }

    /// Sends settled without a delivery because their local file was gone, over the life of
    /// this state database (`status` shows it: a file removed before it was sent is a loss
    /// someone may want to know about, not a delivery).
    pub fn vanished(&self) -> Result<u64, StateError> {
        Ok(self
            .meta(VANISHED_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Rows by state.
    pub fn counts(&self) -> Result<Counts, StateError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM queue GROUP BY state")
            .map_err(|e| self.err(e))?;
        let mut counts = Counts::default();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (state, n) = row.map_err(|e| self.err(e))?;
            match state {
                PENDING => counts.pending = n,
                IN_FLIGHT => counts.in_flight = n,
                PARKED => counts.failed = n,
                RETRY => counts.retrying = n,
                HELD => counts.held = n,
                GUARDED => counts.deletions_held = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Every row in order, parked ones included.
    pub fn rows(&self) -> Result<Vec<QueueRow>, StateError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT seq, path, kind, from_path, state, attempts, last_error, ready_at
                 FROM queue ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, path, kind, from, state, attempts, last_error, ready_at) =
                row.map_err(|e| self.err(e))?;
            out.push(QueueRow {
                id,
                kind: ActionKind::parse(&kind).unwrap_or(ActionKind::Send),
                path: String::from_utf8_lossy(&path).into_owned(),
                from: from.map(|f| String::from_utf8_lossy(&f).into_owned()),
                state: match state {
                    PENDING => "pending",
                    IN_FLIGHT => "in_flight",
                    PARKED => "failed",
                    HELD => "held",
                    GUARDED => "deletion_held",
                    _ => "retrying",
                },
                attempts: attempts as u32,
                last_error,
                ready_at: ready_at.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// Makes a parked or waiting action ready now, with its attempts reset.
    pub fn retry(&self, id: i64) -> Result<(), StateError> {
        let conn = self.lock();
        let n = conn
            .execute(
                "UPDATE queue SET state = 3, ready_at = 0, attempts = 0 WHERE seq = ?1 AND state != 1",
                [id],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StateError::NoSuchId(id));
        }
        Ok(())
    }

    /// Retries every parked action. Returns how many.
    pub fn retry_failed(&self) -> Result<u64, StateError> {
        let conn = self.lock();
        conn.execute(REVIVE_PARKED, [])
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Removes an action from the queue without doing it.
    pub fn drop_action(&self, id: i64) -> Result<(), StateError> {
        let conn = self.lock();
        let n = conn
            .execute("DELETE FROM queue WHERE seq = ?1", [id])
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StateError::NoSuchId(id));
        }
        Ok(())
    }

    /// The most recent error of any queued row, for `status` (a gate's reason is no error).
    pub fn last_error(&self) -> Result<Option<String>, StateError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT last_error FROM queue WHERE last_error IS NOT NULL AND state != 4
             ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Every queued action (pending, in flight, retrying, held or parked), oldest first.
    pub fn queued_actions(&self) -> Result<Vec<Action>, StateError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT seq, path, kind, from_path FROM queue ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.row_action(row)?);
        }
        Ok(out)
    }

    /// Where the destination's `path` will be once the moves queued behind row `seq` have
    /// run: each later move of `path` or of a directory above it carries it on. Rows run in
    /// `seq` order among related paths, so these moves have not run yet, and whatever a
    /// repair filed now (last in the order) finds at `path` will have been carried there.
    pub fn carried_by_later_moves(&self, seq: i64, path: &RelPath) -> Result<RelPath, StateError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, path, kind, from_path FROM queue
                 WHERE seq > ?1 AND kind = 'move' ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([seq]).map_err(|e| self.err(e))?;
        let mut at = path.clone();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            if let Action::Move { from, to } = self.row_action(row)? {
                if let Some(moved) = at.rebase(&from, &to) {
                    at = moved;
                }
            }
        }
        Ok(at)
    }

    /// Targets of the sends that will run (every state but parked): the uploads a backend may
    /// resume, whose temporaries a sweep keeps (see `Connection::sweep_temps`). Parked sends
    /// are left out: they run again only after their park (minutes to an hour) or at the next
    /// start, and a resumable temp is an optimisation, not worth keeping around until then.
    pub fn queued_sends(&self) -> Result<HashSet<RelPath>, StateError> {
        self.sends_in("SELECT path FROM queue WHERE kind = 'send' AND state != 2")
    }

    /// Targets of the sends that have not read their file yet (pending, retrying, held): each
    /// will send the file as it is when it runs. An in-flight send may have read an older
    /// version, and a parked one may fail again (it runs after its park), so neither stands
    /// for the file's current content (the catch-up scan relies on this).
    pub fn waiting_sends(&self) -> Result<HashSet<RelPath>, StateError> {
        self.sends_in("SELECT path FROM queue WHERE kind = 'send' AND state IN (0, 3, 4)")
    }

    /// Targets of the sends in flight: each may deliver the version it read, whatever the
    /// local file became since.
    pub fn sends_in_flight(&self) -> Result<HashSet<RelPath>, StateError> {
        self.sends_in("SELECT path FROM queue WHERE kind = 'send' AND state = 1")
    }

    fn sends_in(&self, sql: &str) -> Result<HashSet<RelPath>, StateError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for row in rows {
            out.extend(RelPath::from_bytes(&row.map_err(|e| self.err(e))?).ok());
        }
        Ok(out)
    }

    /// The whole ledger.
    pub fn ledger(&self) -> Result<HashMap<RelPath, LedgerEntry>, StateError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT path, size, mtime_ns FROM ledger")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for row in rows {
            let (path, size, mtime_ns) = row.map_err(|e| self.err(e))?;
            if let Ok(p) = RelPath::from_bytes(&path) {
                out.insert(
                    p,
                    LedgerEntry {
                        size: size as u64,
                        mtime_ns,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The ledger row of one path, if the ledger holds it (a stale row has size `u64::MAX`).
    pub fn ledger_entry(&self, path: &RelPath) -> Result<Option<LedgerEntry>, StateError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT size, mtime_ns FROM ledger WHERE path = ?1")
            .and_then(|mut st| {
                st.query_row([path.as_bytes()], |r| {
                    Ok(LedgerEntry {
                        size: r.get::<_, i64>(0)? as u64,
                        mtime_ns: r.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Records files as delivered without sending them (`skynet baseline`): path, size,
    /// mtime and, where computed, content hash.
    pub fn record_delivered(&self, files: &[Delivered]) -> Result<(), StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms() as i64;
        for (path, size, mtime_ns, hash) in files {
            let update = LedgerUpdate::Sent {
                path: path.clone(),
                size: *size,
                mtime_ns: *mtime_ns,
                hash: *hash,
                identity: None,
            };
            apply_ledger(&tx, &update, now).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sets a fact about the mapping (source, destination, daemon heartbeat…).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Records that the symlink at `rel` was skipped (never followed, see [`crate::links`]):
    /// logged and counted for `status` the first time this process meets that path.
    pub fn note_skipped_link(&self, rel: &RelPath) {
        let Some(count) = self.links.note(rel) else {
            return;
        };
        tracing::warn!(path = %rel, "is a symbolic link; not followed, not sent");
        if let Err(e) = self.set_meta(crate::links::SKIPPED_LINKS, &count.to_string()) {
            tracing::warn!(error = %e, "cannot record the skipped link count");
        }
    }

    /// Starts counting skipped links afresh (a run starts, or resumes after a pause).
    pub fn reset_skipped_links(&self) -> Result<(), StateError> {
        self.links.clear();
        self.set_meta(crate::links::SKIPPED_LINKS, "0")
    }

    pub fn delete_meta(&self, key: &str) -> Result<(), StateError> {
        let conn = self.lock();
        conn.execute("DELETE FROM meta WHERE key = ?1", [key])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let conn = self.lock();
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// Removes the claimed send `id` when a newer pending send of the same path exists (that one
/// covers it). True when it was removed.
fn drop_superseded_send(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<bool> {
    let path: Option<Vec<u8>> = tx
        .prepare_cached(
            "DELETE FROM queue WHERE seq = ?1 AND kind = 'send' AND EXISTS
             (SELECT 1 FROM queue q WHERE q.path = queue.path AND q.state = 0
              AND q.kind = 'send') RETURNING path",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(path) = path else {
        return Ok(false);
    };
    // The failed attempt may have been delivered (a lost reply, a failed flush): the ledger
    // must not deny the copy, or a move merged into the newer send would not delete it at
    // its old name (found by the simulation, seed 9173).
    tx.prepare_cached(
        "INSERT INTO ledger (path, size, mtime_ns, hash, sent_at) VALUES (?1, -1, 0, NULL, 0)
         ON CONFLICT(path) DO UPDATE SET size = -1",
    )?
    .execute([&path])?;
    Ok(true)
}

fn decode_action(path: &[u8], kind: &str, from: Option<&[u8]>) -> Result<Action, String> {
    let key = RelPath::from_bytes(path).map_err(|e| e.to_string())?;
    match (ActionKind::parse(kind), from) {
        (Some(ActionKind::Send), _) => Ok(Action::Send(key)),
        (Some(ActionKind::Delete), _) => Ok(Action::Delete(key)),
        (Some(ActionKind::Move), Some(f)) => Ok(Action::Move {
            from: RelPath::from_bytes(f).map_err(|e| e.to_string())?,
            to: key,
        }),
        _ => Err(format!("unknown action kind {kind:?}")),
    }
}

/// `(path = p OR path within p)` bounds: everything within `p/` sorts between `p/` and `p0`.
fn within_bounds(p: &RelPath) -> (Vec<u8>, Vec<u8>) {
    let mut lo = p.as_bytes().to_vec();
    lo.push(b'/');
    let mut hi = p.as_bytes().to_vec();
    hi.push(b'0');
    (lo, hi)
}

/// Marks stale the ledger rows of the paths above `path`: a file delivered at `a/b` makes `a` a
/// directory at a filesystem destination (a file standing where a parent goes is replaced), so
/// a row saying `a` is a file is wrong there; on S3, where keys are independent, the object
/// `a` may still exist. Stale says both: nothing is known. Left as it was, a catch-up scan took
/// `a` for a file the user deleted, with nothing sent again after (found by the simulation,
/// seed 12); dropped, the ledger forgot an S3 object that stayed (found by running the
/// simulation's histories against S3). A stale row costs one delete and re-send of that
/// directory at the next catch-up scan.
fn mark_files_above_stale(tx: &Transaction<'_>, path: &RelPath) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached("UPDATE ledger SET size = -1 WHERE path = ?1")?;
    for dir in path.ancestors() {
        stmt.execute([dir.as_bytes()])?;
    }
    Ok(())
}

/// Moves the ledger rows at `from` and below it to the same places under `to`, whole (a
/// handed-off file keeps its mark where it lands), replacing rows there.
fn carry_rows(
    tx: &Transaction<'_>,
    from: &RelPath,
    to: &RelPath,
    now: i64,
) -> rusqlite::Result<()> {
    let (lo, hi) = within_bounds(from);
    type Row = (Vec<u8>, i64, i64, Option<Vec<u8>>, [Option<i64>; 3], i64);
    let moved: Vec<Row> = tx
        .prepare(
            "SELECT path, size, mtime_ns, hash, dev, ino, ctime_ns, handed_off FROM ledger
             WHERE path = ?1 OR (path > ?2 AND path < ?3)",
        )?
        .query_map(params![from.as_bytes(), lo, hi], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                [r.get(4)?, r.get(5)?, r.get(6)?],
                r.get(7)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (old, size, mtime, hash, [dev, ino, ctime], handed_off) in moved {
        tx.execute("DELETE FROM ledger WHERE path = ?1", [&old])?;
        let Ok(old) = RelPath::from_bytes(&old) else {
            continue;
        };
        // The rows travel whole: a handed-off file keeps its mark where it lands.
        if let Some(new) = old.rebase(from, to) {
            tx.execute(
                "INSERT OR REPLACE INTO ledger
                 (path, size, mtime_ns, hash, sent_at, dev, ino, ctime_ns, handed_off)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.as_bytes(),
                    size,
                    mtime,
                    hash,
                    now,
                    dev,
                    ino,
                    ctime,
                    handed_off
                ],
            )?;
        }
    }
    Ok(())
}

fn apply_ledger(tx: &Transaction<'_>, update: &LedgerUpdate, now: i64) -> rusqlite::Result<()> {
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
                 handed_off = 0",
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
                "UPDATE ledger SET size = -1 WHERE path = ?1 OR (path > ?2 AND path < ?3)",
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
                "INSERT INTO ledger (path, size, mtime_ns, hash, sent_at) VALUES (?1, -1, 0, NULL, ?2)
                 ON CONFLICT(path) DO UPDATE SET size = -1",
            )?
            .execute(params![path.as_bytes(), now])?;
            // An earlier attempt may have been delivered (its acknowledgement lost), replacing
            // the files above it by directories and the directory at it by a file: none of
            // those is known any more (found by the simulation, seeds 1328 and 7557).
            mark_files_above_stale(tx, path)?;
            let (lo, hi) = within_bounds(path);
            tx.prepare_cached("UPDATE ledger SET size = -1 WHERE path > ?1 AND path < ?2")?
                .execute(params![lo, hi])?;
        }
        LedgerUpdate::Unchanged => {}
    }
    Ok(())
}

/// The merge's view of the queue inside the current transaction.
struct SqlView<'a, 'c> {
    tx: &'a Transaction<'c>,
    error: RefCell<Option<StateError>>,
    path: &'a str,
}

impl SqlView<'_, '_> {
    fn keep<T: Default>(&self, result: rusqlite::Result<T>) -> T {
        match result {
            Ok(v) => v,
            Err(source) => {
                self.error.borrow_mut().get_or_insert(StateError::Db {
                    path: self.path.to_string(),
                    source,
                });
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
            "SELECT path, kind, from_path, ready_at FROM queue WHERE path = ?1 AND state = 0",
            &[&key.as_bytes()],
        );
        self.keep(found).into_iter().next()
    }

    fn pending_under(&self, dir: &RelPath) -> Vec<Entry> {
        let (lo, hi) = within_bounds(dir);
        let found = self.entries(
            "SELECT path, kind, from_path, ready_at FROM queue
             WHERE path > ?1 AND path < ?2 AND state = 0",
            &[&lo, &hi],
        );
        self.keep(found)
    }

    fn committed_sends_within(&self, path: &RelPath) -> Vec<RelPath> {
        let (lo, hi) = within_bounds(path);
        let found = self.entries(
            "SELECT path, kind, from_path, ready_at FROM queue
             WHERE (path = ?1 OR (path > ?2 AND path < ?3)) AND state IN (1, 3, 4) AND kind = 'send'",
            &[&path.as_bytes(), &lo, &hi],
        );
        self.keep(found)
            .into_iter()
            .map(|e| e.action.key().clone())
            .collect()
    }

    fn stale_remotely(&self, path: &RelPath) -> bool {
        let found = self.tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM ledger WHERE path = ?1 AND size = -1)",
            [path.as_bytes()],
            |r| r.get::<_, bool>(0),
        );
        self.keep(found)
    }

    fn known_remotely(&self, path: &RelPath) -> bool {
        // A directory is known remotely when any file under it is.
        let (lo, hi) = within_bounds(path);
        let found = self.tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3))
                 OR EXISTS(SELECT 1 FROM queue WHERE (path = ?1 OR (path > ?2 AND path < ?3))
                           AND state IN (1, 3, 4))",
            params![path.as_bytes(), lo, hi],
            |r| r.get::<_, bool>(0),
        );
        self.keep(found)
    }
}

/// Paths that block later actions: a later action waits when one of its paths is equal to,
/// above or below one of these.
#[derive(Default)]
struct PathSet(BTreeSet<Vec<u8>>);

impl PathSet {
    fn insert(&mut self, p: Vec<u8>) {
        self.0.insert(p);
    }

    fn conflicts(&self, p: &[u8]) -> bool {
        if self.0.contains(p) {
            return true;
        }
        // An ancestor of p is blocked.
        for (i, b) in p.iter().enumerate() {
            if *b == b'/' && self.0.contains(&p[..i]) {
                return true;
            }
        }
        // A descendant of p is blocked.
        let mut lo = p.to_vec();
        lo.push(b'/');
        let mut hi = p.to_vec();
        hi.push(b'0');
        self.0.range(lo..hi).next().is_some()
    }
}

/// Where a mapping's database lives inside its state directory.
pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join("queue.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::from_bytes(s.as_bytes()).unwrap()
    }

    /// Claims everything claimable now and returns the actions.
    fn claim_actions(q: &Queue) -> Vec<Action> {
        q.claim(10, now_ms())
            .unwrap()
            .into_iter()
            .map(|c| c.action)
            .collect()
    }

    fn send(s: &str) -> Entry {
        Entry::new(Action::Send(p(s)), 0)
    }

    #[test]
    fn later_moves_carry_a_path_along() {
        let q = Queue::open_in_memory().unwrap();
        let mv = |a: &str, b: &str| {
            Entry::new(
                Action::Move {
                    from: p(a),
                    to: p(b),
                },
                0,
            )
        };
        q.push(&[
            mv("x", "a/b"),
            send("a/b/f"),
            mv("a", "D0"),
            mv("D0/b", "e"),
        ])
        .unwrap();
        let first = q.claim(1, now_ms()).unwrap().remove(0);
        assert_eq!(first.action, mv("x", "a/b").action);
        // Behind `move x -> a/b`: `a` becomes `D0`, then `D0/b` becomes `e`.
        assert_eq!(
            q.carried_by_later_moves(first.id, &p("a/b")).unwrap(),
            p("e")
        );
        assert_eq!(
            q.carried_by_later_moves(first.id, &p("a/c")).unwrap(),
            p("D0/c")
        );
        assert_eq!(q.carried_by_later_moves(first.id, &p("z")).unwrap(), p("z"));
    }

    #[test]
    fn burst_of_writes_keeps_one_row_per_path() {
        let q = Queue::open_in_memory().unwrap();
        let batch: Vec<Entry> = (0..100_000)
            .map(|i| send(&format!("f{}", i % 100)))
            .collect();
        assert_eq!(q.push(&batch).unwrap(), 100);
        assert_eq!(q.push(&batch).unwrap(), 100);
        assert_eq!(q.counts().unwrap().pending, 100);
    }

    #[test]
    fn a_burst_keeps_the_sends_a_rename_in_it_carries() {
        // One watcher batch: a written, renamed to b, a written again. Collapsing the two
        // sends of `a` across the rename would rename the destination's old `a` to `b`.
        let q = Queue::open_in_memory().unwrap();
        let mv = Entry::new(
            Action::Move {
                from: p("a"),
                to: p("b"),
            },
            0,
        );
        q.push(&[send("a"), mv, send("a")]).unwrap();
        let mut got = claim_actions(&q);
        got.sort_by_key(|a| a.to_string());
        assert_eq!(got, vec![Action::Send(p("a")), Action::Send(p("b"))]);
    }

    #[test]
    fn a_replayed_move_keeps_its_target_known_remotely() {
        // a was sent; a run renamed it to b remotely and died before acknowledging. The
        // replay found no a remotely (MovedUnverified). b, re-sent, is then renamed to c:
        // the destination's b must be deleted, not forgotten.
        let q = Queue::open_in_memory().unwrap();
        q.push(&[send("a")]).unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        let sent = LedgerUpdate::Sent {
            path: p("a"),
            size: 3,
            mtime_ns: 7,
            hash: None,
            identity: None,
        };
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: sent,
        }])
        .unwrap();
        let mv = |from: &str, to: &str| {
            Entry::new(
                Action::Move {
                    from: p(from),
                    to: p(to),
                },
                0,
            )
        };
        q.push(&[mv("a", "b")]).unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: LedgerUpdate::MovedUnverified {
                from: p("a"),
                to: p("b"),
            },
        }])
        .unwrap();
        // Stale: size -1 in SQL, never equal to a real file.
        assert_eq!(q.ledger().unwrap()[&p("b")].size, u64::MAX);
        q.push(&[send("b")]).unwrap();
        q.push(&[mv("b", "c")]).unwrap();
        assert_eq!(
            claim_actions(&q),
            vec![Action::Delete(p("b")), Action::Send(p("c"))]
        );
    }

    #[test]
    fn a_vanished_send_is_followed_by_a_directory_move() {
        // A killed run sent d/f without acknowledging it; the replayed send found f gone
        // (its folder renamed to e). The destination's copy then travels with the folder:
        // the ledger must follow it, so that f's later rename deletes it there.
        let q = Queue::open_in_memory().unwrap();
        let mv = |from: &str, to: &str| {
            Entry::new(
                Action::Move {
                    from: p(from),
                    to: p(to),
                },
                0,
            )
        };
        let finish = |ledger: LedgerUpdate| {
            let c = q.claim(10, now_ms()).unwrap();
            q.finish(&[Outcome::Done {
                id: c[0].id,
                ledger,
            }])
            .unwrap();
        };
        q.push(&[send("d/f")]).unwrap();
        finish(LedgerUpdate::Vanished(p("d/f")));
        q.push(&[mv("d", "e")]).unwrap();
        finish(LedgerUpdate::Moved {
            from: p("d"),
            to: p("e"),
        });
        q.push(&[mv("e/f", "g")]).unwrap();
        assert_eq!(
            claim_actions(&q),
            vec![Action::Delete(p("e/f")), Action::Send(p("g"))]
        );
    }

    #[test]
    fn edit_during_send_is_not_lost() {
        let q = Queue::open_in_memory().unwrap();
        q.push(&[send("a")]).unwrap();
        let first = q.claim(10, now_ms()).unwrap();
        assert_eq!(first.len(), 1);
        // The file changes while its send is in flight: a new pending row, not merged.
        q.push(&[send("a")]).unwrap();
        assert!(
            q.claim(10, now_ms()).unwrap().is_empty(),
            "same path must wait"
        );
        q.finish(&[Outcome::Done {
            id: first[0].id,
            ledger: LedgerUpdate::Unchanged,
        }])
        .unwrap();
        let second = q.claim(10, now_ms()).unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].action, Action::Send(p("a")));
    }

    #[test]
    fn related_paths_keep_order_unrelated_run_in_parallel() {
        let q = Queue::open_in_memory().unwrap();
        q.push(&[send("d/x"), send("e/y")]).unwrap();
        q.push(&[Entry::new(Action::Delete(p("d")), 0)]).unwrap();
        q.push(&[send("f")]).unwrap();
        let got = claim_actions(&q);
        // delete(d) dropped the pending send under it; e/y and f are free.
        assert_eq!(
            got,
            vec![
                Action::Send(p("e/y")),
                Action::Delete(p("d")),
                Action::Send(p("f"))
            ]
        );

        let q = Queue::open_in_memory().unwrap();
        q.push(&[send("a/x")]).unwrap();
        let c = q.claim(1, now_ms()).unwrap();
        q.push(&[
            Entry::new(
                Action::Move {
                    from: p("a"),
                    to: p("b"),
                },
                0,
            ),
            send("c"),
        ])
        .unwrap();
        let got = claim_actions(&q);
        assert_eq!(
            got,
            vec![Action::Send(p("c"))],
            "the dir move waits for the send under it"
        );
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: LedgerUpdate::Unchanged,
        }])
        .unwrap();
        let got = claim_actions(&q);
        assert_eq!(
            got,
            vec![Action::Move {
                from: p("a"),
                to: p("b")
            }]
        );
    }

    #[test]
    fn settle_time_is_respected() {
        let q = Queue::open_in_memory().unwrap();
        q.push(&[Entry::new(Action::Send(p("a")), 5_000)]).unwrap();
        assert!(q.claim(10, 4_999).unwrap().is_empty());
        assert_eq!(q.next_ready_after(4_999).unwrap(), Some(5_000));
        // Ready already: not a time to wake up for.
        assert_eq!(q.next_ready_after(5_000).unwrap(), None);
        assert_eq!(q.claim(10, 5_000).unwrap().len(), 1);
    }

    #[test]
    fn crash_recovery_retries_in_flight_and_ledger_moves() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.sqlite");
        {
            let q = Queue::open(&db).unwrap();
            q.push(&[send("a"), send("b")]).unwrap();
            let c = q.claim(10, now_ms()).unwrap();
            q.finish(&[Outcome::Done {
                id: c[0].id,
                ledger: LedgerUpdate::Sent {
                    path: p("a"),
                    size: 3,
                    mtime_ns: 7,
                    hash: None,
                    identity: None,
                },
            }])
            .unwrap();
            // b stays in flight: the process "dies" here.
        }
        let q = Queue::open(&db).unwrap();
        assert_eq!(q.recover().unwrap(), vec![p("b")]);
        let c = q.claim(10, now_ms()).unwrap();
        assert_eq!(c[0].action, Action::Send(p("b")));
        q.finish(&[Outcome::Retry {
            id: c[0].id,
            error: "boom".into(),
            ready_at: 0,
            failed: true,
        }])
        .unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        assert_eq!(c[0].attempts, 1);
        q.finish(&[Outcome::Park {
            ready_at: u64::MAX >> 2,
            id: c[0].id,
            error: "gave up".into(),
        }])
        .unwrap();
        assert_eq!(q.counts().unwrap().failed, 1);
        // Waiting for its next episode, a parked action holds back nothing queued after it
        // on a related path (a sync would otherwise wait for it, park after park).
        q.push(&[Entry::new(
            Action::Move {
                from: p("b"),
                to: p("b2"),
            },
            0,
        )])
        .unwrap();
        let claimed = q.claim(10, now_ms()).unwrap();
        assert_eq!(
            claimed.iter().map(|c| &c.action).collect::<Vec<_>>(),
            [&Action::Move {
                from: p("b"),
                to: p("b2"),
            }],
            "a parked send held back a later move of its path"
        );
        q.finish(&[Outcome::Done {
            id: claimed[0].id,
            ledger: LedgerUpdate::Unchanged,
        }])
        .unwrap();
        assert_eq!(q.last_error().unwrap().as_deref(), Some("gave up"));
        q.record_delivered(&[(p("d/x"), 1, 1, None)]).unwrap();
        q.finish(&[]).unwrap();
        let mut conn = q.lock();
        let tx = conn.transaction().unwrap();
        apply_ledger(
            &tx,
            &LedgerUpdate::Moved {
                from: p("d"),
                to: p("e"),
            },
            0,
        )
        .unwrap();
        tx.commit().unwrap();
        drop(conn);
        let ledger = q.ledger().unwrap();
        assert!(ledger.contains_key(&p("e/x")) && !ledger.contains_key(&p("d/x")));
        assert_eq!(
            ledger[&p("a")],
            LedgerEntry {
                size: 3,
                mtime_ns: 7
            }
        );
    }

    #[test]
    fn superseded_move_deletes_its_source_in_its_own_place_in_the_order() {
        // Found by the convergence property test: a/b/deep moved to a/r2, then a/b renamed to
        // D3, then another file moved onto a/r2. The old source must be deleted before the
        // directory move carries it to D3/deep.
        let q = Queue::open_in_memory().unwrap();
        q.record_delivered(&[(p("a/b/deep"), 1, 1, None), (p("a/b/f2"), 1, 1, None)])
            .unwrap();
        let mv = |f: &str, t: &str| {
            Entry::new(
                Action::Move {
                    from: p(f),
                    to: p(t),
                },
                0,
            )
        };
        q.push(&[mv("a/b/deep", "a/r2"), mv("a/b", "D3"), mv("D3/f2", "a/r2")])
            .unwrap();
        let order: Vec<String> = q
            .rows()
            .unwrap()
            .into_iter()
            .map(|r| {
                format!(
                    "{} {}{}",
                    r.kind.as_str(),
                    r.from.map(|f| f + " -> ").unwrap_or_default(),
                    r.path
                )
            })
            .collect();
        assert_eq!(
            order,
            vec!["delete a/b/deep", "move a/b -> D3", "move D3/f2 -> a/r2"]
        );
    }

    #[test]
    fn path_set_conflicts() {
        let mut s = PathSet::default();
        s.insert(b"a/b".to_vec());
        assert!(s.conflicts(b"a/b"));
        assert!(s.conflicts(b"a"));
        assert!(s.conflicts(b"a/b/c"));
        assert!(!s.conflicts(b"a/bc"));
        assert!(!s.conflicts(b"ab"));
    }
}
