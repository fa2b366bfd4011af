//! The versions kept at the destination (`--keep-versions`, see [`crate::versions`]). See
//! `schema/009_versions.sql`.

use rusqlite::params;

use super::{Queue, StateError};
use crate::relpath::RelPath;

/// One kept version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionRow {
    /// Where it is at the destination (under the versions folder).
    #[serde(serialize_with = "crate::relpath::serialize_lossy")]
    pub version: RelPath,
    /// The path it was kept from.
    #[serde(serialize_with = "crate::relpath::serialize_lossy")]
    pub original: RelPath,
    /// When it was moved aside (ms since the epoch).
    pub kept_at: u64,
    /// The destination said the move aside was done; `false` when the link was lost while
    /// it moved it, or the process died in between (the version may or may not exist).
    pub confirmed: bool,
}

const COLUMNS: &str = "version, original, kept_at, confirmed";

impl Queue {
    /// Files the version of `original` about to be moved aside at `kept_at`, under the first
    /// of `name(0)`, `name(1)`, … that no row holds. Filed *before* the move: a crash right
    /// after the move must not leave a version the state does not know, whose name the next
    /// move aside would take, replacing it (found by the simulation, seed 773).
    pub fn version_reserve(
        &self,
        original: &RelPath,
        kept_at: u64,
        name: impl Fn(u32) -> Option<RelPath>,
    ) -> Result<RelPath, StateError> {
        for n in 0..1000 {
            let Some(version) = name(n) else { break };
            let filed = self.read(|conn| {
                conn.execute(
                    "INSERT OR IGNORE INTO versions (version, original, kept_at) VALUES (?1, ?2, ?3)",
                    params![version.as_bytes(), original.as_bytes(), kept_at as i64],
                )
            })?;
            if filed == 1 {
                return Ok(version);
            }
        }
        Err(StateError::Corrupt {
            path: self.path.clone(),
            detail: format!("no free version name for {original}"),
        })
    }

    /// The move aside of `version` is done.
    pub fn version_confirm(&self, version: &RelPath) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "UPDATE versions SET confirmed = 1 WHERE version = ?1",
                [version.as_bytes()],
            )
            .map(|_| ())
        })
    }

    /// `version` names nothing (there was nothing to keep, or it was pruned).
    pub fn version_forget(&self, version: &RelPath) -> Result<(), StateError> {
        self.read(|conn| {
            conn.execute(
                "DELETE FROM versions WHERE version = ?1",
                [version.as_bytes()],
            )
            .map(|_| ())
        })
    }

    /// Every version, newest first; only those of `original` (and under it) when given.
    pub fn version_rows(&self, original: Option<&RelPath>) -> Result<Vec<VersionRow>, StateError> {
        match original {
            None => self.version_query(
                &format!("SELECT {COLUMNS} FROM versions ORDER BY kept_at DESC, version"),
                params![],
            ),
            Some(p) => {
                let (lo, hi) = super::within_bounds(p);
                self.version_query(
                    &format!(
                        "SELECT {COLUMNS} FROM versions
                         WHERE original = ?1 OR (original > ?2 AND original < ?3)
                         ORDER BY kept_at DESC, version"
                    ),
                    params![p.as_bytes(), lo, hi],
                )
            }
        }
    }

    /// How many versions are known to be kept (confirmed), and when the oldest was (ms).
    pub fn versions_summary(&self) -> Result<(u64, Option<u64>), StateError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*), MIN(kept_at) FROM versions WHERE confirmed = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, Option<i64>>(1)?.map(|t| t.max(0) as u64),
                    ))
                },
            )
        })
    }

    /// Up to `limit` versions kept before `before` (ms), oldest first.
    pub fn versions_expired(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<VersionRow>, StateError> {
        self.version_query(
            &format!("SELECT {COLUMNS} FROM versions WHERE kept_at < ?1 ORDER BY kept_at LIMIT ?2"),
            params![before as i64, limit as i64],
        )
    }

    fn version_query(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<VersionRow>, StateError> {
        let rows = self.query_rows(sql, args, |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(version, original, kept_at, confirmed)| {
                Some(VersionRow {
                    version: RelPath::from_bytes(&version).ok()?,
                    original: RelPath::from_bytes(&original).ok()?,
                    kept_at: kept_at.max(0) as u64,
                    confirmed: confirmed != 0,
                })
            })
            .collect())
    }
}
