//! Opening the state database: WAL mode, the busy timeout, migrations from the `.sql` files
//! in `schema/` (versioned with `PRAGMA user_version`), the single writer's lock, and the
//! `meta` rows (facts a run records about itself, see [`super::meta`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{OptionalExtension, Transaction};

use super::{Queue, StateError};
use crate::relpath::RelPath;

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
    include_str!("schema/010_stale_column.sql"),
];

/// Where a mapping's database lives inside its state directory.
pub fn database_path(state_dir: &Path) -> PathBuf {
    state_dir.join("queue.sqlite")
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

    /// Runs `f` on the connection under the writer's lock. Every function of the state
    /// database goes through this or [`Queue::write`], so SQL failures are named with the
    /// database here, once.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&self.lock()).map_err(|e| self.err(e))
    }

    /// Runs `f` in one write transaction, committed when `f` succeeds (rolled back when it
    /// fails). The write lock is taken up front (`BEGIN IMMEDIATE`): a deferred transaction
    /// that reads first and writes later fails at once with "database is locked" when another
    /// process (`status`, `queue retry`, `ledger forget`) wrote in between; waiting for the
    /// lock up front lets the busy timeout apply instead.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.lock();
        let run = |conn: &mut rusqlite::Connection| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run(&mut conn).map_err(|e| self.err(e))
    }

    fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `sql` and maps each row with `row`.
    pub(crate) fn query_rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StateError> {
        self.read(|conn| {
            conn.prepare_cached(sql)?
                .query_map(args, row)?
                .collect::<rusqlite::Result<Vec<T>>>()
        })
    }

    /// Names a failure with this database; a row that does not decode (see [`corrupt`]) is
    /// reported as such.
    fn err(&self, source: rusqlite::Error) -> StateError {
        match source {
            rusqlite::Error::FromSqlConversionFailure(_, _, detail) => StateError::Corrupt {
                path: self.path.clone(),
                detail: detail.to_string(),
            },
            source => StateError::Db {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// A private in-memory copy of this database (`--dry-run` works on it and throws it
    /// away), judging deletions like this one.
    pub fn snapshot(&self) -> Result<Queue, StateError> {
        let copy = self.read(|conn| {
            let mut copy = rusqlite::Connection::open_in_memory()?;
            rusqlite::backup::Backup::new(conn, &mut copy)?.run_to_completion(
                1000,
                Duration::ZERO,
                None,
            )?;
            Ok(copy)
        })?;
        let queue = Self::setup(copy, format!("{} (dry-run copy)", self.path))?;
        queue.set_delete_guard(self.delete_guard.lock().ok().and_then(|g| *g));
        Ok(queue)
    }

    /// Sets a fact about the mapping (source, destination, daemon heartbeat…).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
        })
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
        self.read(|conn| {
            conn.execute("DELETE FROM meta WHERE key = ?1", [key])
                .map(|_| ())
        })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.read(|conn| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }
}

/// The error of a row that does not decode (an unknown action kind, a path that is not a
/// relative path): reported as a corrupt row of the database by [`Queue::read`]/[`Queue::write`].
pub(super) fn corrupt(detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, detail.into())
}
