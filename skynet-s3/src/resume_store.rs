//! The record of multipart uploads in progress, kept in the mapping's state database so that
//! an upload interrupted by a crash, a restart or a lost link continues where it stopped
//! instead of sending the whole file again, and so that abandoned uploads can be aborted
//! (S3 bills stored parts until the upload is completed or aborted).
//!
//! Tables: `s3_multipart` has one row per object key with an upload in progress and the
//! local file's size and mtime when it started; `s3_multipart_parts` has the parts the server
//! acknowledged (number, size, ETag, checksum), which CompleteMultipartUpload needs and which
//! some servers do not report back in ListParts; `s3_multipart_intent` has the upload
//! creations under way (see [`crate::abandoned`]). Their schema is versioned like the
//! queue's: numbered SQL migrations (`resume_store/schema/`), applied in order at open, so
//! that a later skynet can change them without losing the uploads an older one recorded.
//!
//! This is a separate SQLite connection from the queue's (WAL + busy timeout make the two
//! coexist). Every call is short; callers run them on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use skynet_core::ConnError;

use crate::config::S3ConfigError;

/// One recorded upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    /// The local file being sent (to tell, at connect time, whether it still matches).
    pub local_path: PathBuf,
    pub size: u64,
    /// Local mtime in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub part_size: u64,
}

/// One part the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRecord {
    pub part_number: i32,
    pub size: u64,
    pub etag: String,
    pub checksum_crc32c: Option<String>,
}

/// Shared handle to the table; cheap to clone.
#[derive(Clone)]
pub(crate) struct ResumeStore {
    db: Arc<Mutex<rusqlite::Connection>>,
    name: String,
}

/// The schema, oldest first: migration N brings a database from version N-1 to N, in one
/// transaction with the version's update. One that has shipped is never edited: a change is
/// the next file.
const MIGRATIONS: &[&str] = &[include_str!("resume_store/schema/001_init.sql")];

/// Where the store keeps its schema version: a one-row table of its own. Not `PRAGMA
/// user_version`, the queue's habit: the store lives in the queue's database file (the
/// mapping's state database), whose `user_version` numbers the queue's schema, not this one.
/// A database without the table is at version 0: new, or made before the schema had one.
const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS s3_schema_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
";

/// The store's schema version in `conn` (0 when it has none). Reads only.
fn schema_version(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    let versioned: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = 's3_schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !versioned {
        return Ok(0);
    }
    conn.query_row(
        "SELECT version FROM s3_schema_version WHERE id = 1",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(0))
}

/// Brings the store's schema up to date, as the queue does its own: a database already
/// current is not written at all (another process may be using it), and otherwise the
/// migrations run under the write lock taken up front, with the version read again inside
/// it, since another process may have migrated meanwhile. A schema newer than this build
/// knows is refused rather than used.
fn migrate(conn: &mut rusqlite::Connection, name: &str) -> Result<(), S3ConfigError> {
    let err = |source| S3ConfigError::StateDb {
        path: name.to_string(),
        source,
    };
    let known = MIGRATIONS.len() as i64;
    if schema_version(conn).map_err(err)? == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let version = schema_version(&tx).map_err(err)?;
    if version > known {
        return Err(S3ConfigError::StateDbTooNew {
            path: name.to_string(),
            found: version,
            known,
        });
    }
    for sql in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.execute_batch(VERSION_TABLE).map_err(err)?;
    tx.execute(
        "INSERT OR REPLACE INTO s3_schema_version (id, version) VALUES (1, ?1)",
        params![known],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

impl ResumeStore {
    /// Opens (creating if needed) the tables in the mapping's database, or an in-memory one,
    /// and brings their schema up to date (see [`MIGRATIONS`]).
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, S3ConfigError> {
        let name = path.map_or_else(|| ":memory:".to_string(), |p| p.display().to_string());
        let err = |source| S3ConfigError::StateDb {
            path: name.clone(),
            source,
        };
        let mut conn = match path {
            Some(p) => rusqlite::Connection::open(p).map_err(err)?,
            None => rusqlite::Connection::open_in_memory().map_err(err)?,
        };
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        if path.is_some() {
            // The query returns the resulting mode, so it cannot go through `execute`.
            let _mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .map_err(err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(err)?;
        }
        migrate(&mut conn, &name)?;
        Ok(ResumeStore {
            db: Arc::new(Mutex::new(conn)),
            name,
        })
    }

    fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call is one
        // statement or one transaction), so a poisoned mutex is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_error(&self, e: rusqlite::Error) -> ConnError {
        ConnError::transient(format!("multipart state database {}: {e}", self.name))
    }

    /// Runs `f` on the blocking pool: SQLite may wait on its busy timeout, which must not stall
    /// the runtime's workers.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, ConnError>
    where
        T: Send + 'static,
        F: FnOnce(&ResumeStore) -> Result<T, ConnError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ConnError::transient(format!("multipart state task failed: {e}")))?
    }

    pub(crate) fn get(&self, bucket: &str, key: &str) -> Result<Option<UploadRecord>, ConnError> {
        self.lock()
            .query_row(
                "SELECT bucket, key, upload_id, local_path, size, mtime_ns, part_size
                 FROM s3_multipart WHERE bucket = ?1 AND key = ?2",
                params![bucket, key],
                row_to_record,
            )
            .optional()
            .map_err(|e| self.db_error(e))
    }

    /// Every recorded upload of `bucket` whose key starts with `prefix`.
    pub(crate) fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadRecord>, ConnError> {
        let db = self.lock();
        let mut stmt = db
            .prepare(
                "SELECT bucket, key, upload_id, local_path, size, mtime_ns, part_size
                 FROM s3_multipart WHERE bucket = ?1 AND substr(key, 1, ?3) = ?2
                 ORDER BY key",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![bucket, prefix, prefix.len() as i64], row_to_record)
            .map_err(|e| self.db_error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db_error(e))
    }

    /// Notes that an upload of `key` is about to be created (see `s3_multipart_intent`).
    pub(crate) fn announce(&self, bucket: &str, key: &str) -> Result<(), ConnError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO s3_multipart_intent (bucket, key, started)
                 VALUES (?1, ?2, ?3)",
                params![bucket, key, now_ms()],
            )
            .map(|_| ())
            .map_err(|e| self.db_error(e))
    }

    /// The announcements (key, time in ms since the epoch) of `bucket` under `prefix` made
    /// before `before` and never followed by a recorded upload: creations an earlier run
    /// began and did not see through. They stay until [`ResumeStore::settle_intent`], so that
    /// a start-up cut short looks at them again.
    pub(crate) fn intents(
        &self,
        bucket: &str,
        prefix: &str,
        before: i64,
    ) -> Result<Vec<(String, i64)>, ConnError> {
        let db = self.lock();
        let mut stmt = db
            .prepare(
                "SELECT key, started FROM s3_multipart_intent
                 WHERE bucket = ?1 AND substr(key, 1, ?3) = ?2 AND started < ?4 ORDER BY key",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![bucket, prefix, prefix.len() as i64, before], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.db_error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db_error(e))
    }

    /// When the creation of an upload of `key` was announced and not yet recorded, if it was.
    pub(crate) fn intent(&self, bucket: &str, key: &str) -> Result<Option<i64>, ConnError> {
        self.lock()
            .query_row(
                "SELECT started FROM s3_multipart_intent WHERE bucket = ?1 AND key = ?2",
                params![bucket, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_error(e))
    }

    /// Drops the announcement of `key` made at `started`, once whatever upload it may have
    /// left was aborted or reported. A newer announcement of the same key stays.
    pub(crate) fn settle_intent(
        &self,
        bucket: &str,
        key: &str,
        started: i64,
    ) -> Result<(), ConnError> {
        self.lock()
            .execute(
                "DELETE FROM s3_multipart_intent WHERE bucket = ?1 AND key = ?2 AND started = ?3",
                params![bucket, key, started],
            )
            .map(|_| ())
            .map_err(|e| self.db_error(e))
    }

    /// Records a new upload, replacing any older record for the same key, and clears the
    /// announcement of its creation in the same transaction.
    pub(crate) fn insert(&self, rec: &UploadRecord) -> Result<(), ConnError> {
        use std::os::unix::ffi::OsStrExt;
        let mut db = self.lock();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.db_error(e))?;
        let old: Option<String> = tx
            .query_row(
                "SELECT upload_id FROM s3_multipart WHERE bucket = ?1 AND key = ?2",
                params![rec.bucket, rec.key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_error(e))?;
        if let Some(old) = old {
            tx.execute(
                "DELETE FROM s3_multipart_parts WHERE upload_id = ?1",
                params![old],
            )
            .map_err(|e| self.db_error(e))?;
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "DELETE FROM s3_multipart_intent WHERE bucket = ?1 AND key = ?2",
            params![rec.bucket, rec.key],
        )
        .map_err(|e| self.db_error(e))?;
        tx.execute(
            "INSERT OR REPLACE INTO s3_multipart
             (bucket, key, upload_id, local_path, size, mtime_ns, part_size, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                rec.bucket,
                rec.key,
                rec.upload_id,
                rec.local_path.as_os_str().as_bytes(),
                rec.size as i64,
                rec.mtime_ns,
                rec.part_size as i64,
                created
            ],
        )
        .map_err(|e| self.db_error(e))?;
        tx.commit().map_err(|e| self.db_error(e))
    }

    /// Forgets an upload (completed or aborted) and its parts.
    pub(crate) fn remove(&self, upload_id: &str) -> Result<(), ConnError> {
        let mut db = self.lock();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.db_error(e))?;
        tx.execute(
            "DELETE FROM s3_multipart_parts WHERE upload_id = ?1",
            params![upload_id],
        )
        .map_err(|e| self.db_error(e))?;
        tx.execute(
            "DELETE FROM s3_multipart WHERE upload_id = ?1",
            params![upload_id],
        )
        .map_err(|e| self.db_error(e))?;
        tx.commit().map_err(|e| self.db_error(e))
    }

    pub(crate) fn record_part(&self, upload_id: &str, part: &PartRecord) -> Result<(), ConnError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO s3_multipart_parts
                 (upload_id, part_number, size, etag, checksum_crc32c)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    upload_id,
                    part.part_number,
                    part.size as i64,
                    part.etag,
                    part.checksum_crc32c
                ],
            )
            .map(|_| ())
            .map_err(|e| self.db_error(e))
    }

    pub(crate) fn parts(&self, upload_id: &str) -> Result<Vec<PartRecord>, ConnError> {
        let db = self.lock();
        let mut stmt = db
            .prepare(
                "SELECT part_number, size, etag, checksum_crc32c FROM s3_multipart_parts
                 WHERE upload_id = ?1 ORDER BY part_number",
            )
            .map_err(|e| self.db_error(e))?;
        let rows = stmt
            .query_map(params![upload_id], |r| {
                Ok(PartRecord {
                    part_number: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    etag: r.get(2)?,
                    checksum_crc32c: r.get(3)?,
                })
            })
            .map_err(|e| self.db_error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.db_error(e))
    }
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRecord> {
    use std::os::unix::ffi::OsStrExt;
    let path: Vec<u8> = r.get(3)?;
    Ok(UploadRecord {
        bucket: r.get(0)?,
        key: r.get(1)?,
        upload_id: r.get(2)?,
        local_path: PathBuf::from(std::ffi::OsStr::from_bytes(&path)),
        size: r.get::<_, i64>(4)? as u64,
        mtime_ns: r.get(5)?,
        part_size: r.get::<_, i64>(6)? as u64,
    })
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    skynet_core::clock::now_ms().min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests;
