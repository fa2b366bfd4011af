//! The record of multipart uploads in progress, kept in the mapping's state database so that
//! an upload interrupted by a crash, a restart or a lost link continues where it stopped
//! instead of sending the whole file again, and so that abandoned uploads can be aborted
//! (S3 bills stored parts until the upload is completed or aborted).
//!
//! Tables (created if missing): `s3_multipart` has one row per object key with an upload in
//! progress and the local file's size and mtime when it started; `s3_multipart_parts` has the
//! parts the server acknowledged (number, size, ETag, checksum), which CompleteMultipartUpload
//! needs and which some servers do not report back in ListParts.
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS s3_multipart (
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    upload_id  TEXT NOT NULL,
    local_path BLOB NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    part_size  INTEGER NOT NULL,
    created    INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS s3_multipart_parts (
    upload_id       TEXT NOT NULL,
    part_number     INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    etag            TEXT NOT NULL,
    checksum_crc32c TEXT,
    PRIMARY KEY (upload_id, part_number)
);
-- Written before CreateMultipartUpload, removed when the upload is recorded above: a row left
-- here means a creation was cut short (the run killed, the answer lost) between the server
-- creating an upload and skynet learning its id, so an upload nobody recorded may be open on
-- the server. The row is what entitles skynet to abort such an upload (see abandoned.rs).
CREATE TABLE IF NOT EXISTS s3_multipart_intent (
    bucket  TEXT NOT NULL,
    key     TEXT NOT NULL,
    started INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
);
";

impl ResumeStore {
    /// Opens (creating if needed) the table in the mapping's database, or an in-memory one.
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, S3ConfigError> {
        let name = path.map_or_else(|| ":memory:".to_string(), |p| p.display().to_string());
        let err = |source| S3ConfigError::StateDb {
            path: name.clone(),
            source,
        };
        let conn = match path {
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
        conn.execute_batch(SCHEMA).map_err(err)?;
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
mod tests {
    use super::*;

    fn rec(key: &str, id: &str) -> UploadRecord {
        UploadRecord {
            bucket: "b".into(),
            key: key.into(),
            upload_id: id.into(),
            local_path: PathBuf::from("/src/x"),
            size: 10,
            mtime_ns: -5,
            part_size: 5,
        }
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = ResumeStore::open(Some(&db)).unwrap();
        store.insert(&rec("p/a", "u1")).unwrap();
        store.insert(&rec("p/b", "u2")).unwrap();
        store.insert(&rec("q/c", "u3")).unwrap();
        let part = PartRecord {
            part_number: 1,
            size: 5,
            etag: "\"e\"".into(),
            checksum_crc32c: Some("c==".into()),
        };
        store.record_part("u1", &part).unwrap();
        drop(store);

        let store = ResumeStore::open(Some(&db)).unwrap();
        assert_eq!(store.get("b", "p/a").unwrap(), Some(rec("p/a", "u1")));
        assert_eq!(store.parts("u1").unwrap(), vec![part]);
        let keys: Vec<String> = store
            .list("b", "p/")
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["p/a", "p/b"]);
        // A new upload for the same key replaces the record and drops the old parts.
        store.insert(&rec("p/a", "u9")).unwrap();
        assert!(store.parts("u1").unwrap().is_empty());
        store.remove("u9").unwrap();
        assert_eq!(store.get("b", "p/a").unwrap(), None);
        assert_eq!(store.list("b", "").unwrap().len(), 2);
    }

    #[test]
    fn an_announced_upload_is_reported_until_recorded_or_settled() {
        let store = ResumeStore::open(None).unwrap();
        store.announce("b", "p/big").unwrap();
        store.announce("b", "p/done").unwrap();
        store.announce("b", "q/other").unwrap();
        store.insert(&rec("p/done", "u1")).unwrap();
        assert_eq!(store.intent("b", "p/done").unwrap(), None);
        let started = store.intent("b", "p/big").unwrap().expect("announced");
        // Announced after `before`: the current run's own creations are left alone.
        assert!(store.intents("b", "p/", 0).unwrap().is_empty());
        let later = now_ms() + 1;
        assert_eq!(
            store.intents("b", "p/", later).unwrap(),
            [("p/big".to_string(), started)]
        );
        // Reading does not settle: a start-up cut short finds them again.
        assert_eq!(store.intents("b", "p/", later).unwrap().len(), 1);
        // Settling an older announcement leaves a newer one of the same key.
        store.settle_intent("b", "p/big", started - 1).unwrap();
        assert_eq!(store.intents("b", "p/", later).unwrap().len(), 1);
        store.settle_intent("b", "p/big", started).unwrap();
        assert!(store.intents("b", "p/", later).unwrap().is_empty());
        assert_eq!(store.intents("b", "", later).unwrap().len(), 1);
    }
}
