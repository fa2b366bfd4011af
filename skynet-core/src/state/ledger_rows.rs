//! The ledger as people see it (`skynet ledger list|forget`), the content hashes send-once
//! compares, and the per-day delivery counts `status` shows.

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Queue, StateError};
use crate::digest::{hex, Sha256Digest};
use crate::relpath::RelPath;

/// One ledger row: a file the destination is believed to hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerRow {
    pub id: i64,
    #[serde(serialize_with = "crate::relpath::serialize_lossy")]
    pub path: RelPath,
    pub size: u64,
    /// The destination may hold something at this path, but what is not known: the next
    /// catch-up scan sends the file again (or removes what is there).
    pub stale: bool,
    pub mtime_ns: i64,
    /// SHA-256 in hex, where it was computed (send-once mode).
    pub sha256: Option<String>,
    /// When it was delivered (ms since the epoch).
    pub sent_at: u64,
}

/// The local calendar day, `YYYY-MM-DD`: deliveries are counted per day as people read them.
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

/// Adds to today's delivery counts (inside `finish`'s transaction).
pub(super) fn count_delivered(
    tx: &Transaction<'_>,
    files: i64,
    bytes: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO daily (day, files, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT(day) DO UPDATE SET files = files + excluded.files,
         bytes = bytes + excluded.bytes",
    )?
    .execute(params![today(), files, bytes])?;
    Ok(())
}

impl Queue {
    /// Every ledger row, by path.
    pub fn ledger_rows(&self) -> Result<Vec<LedgerRow>, StateError> {
        let rows = self.query_rows(
            "SELECT id, path, size, mtime_ns, hash, sent_at, stale FROM ledger ORDER BY path",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            },
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, path, size, mtime_ns, hash, sent_at, stale)| {
                Some(LedgerRow {
                    id,
                    path: RelPath::from_bytes(&path).ok()?,
                    size: size.max(0) as u64,
                    stale,
                    mtime_ns,
                    sha256: hash.map(|h| hex(&h)),
                    sent_at: sent_at.max(0) as u64,
                })
            })
            .collect())
    }

    /// The size and content hash the ledger holds for `path`, if it holds the path.
    pub fn ledger_digest(
        &self,
        path: &RelPath,
    ) -> Result<Option<(i64, Option<Sha256Digest>)>, StateError> {
        let row = self.read(|conn| {
            conn.prepare_cached("SELECT size, hash FROM ledger WHERE path = ?1 AND stale = 0")?
                .query_row([path.as_bytes()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
                })
                .optional()
        })?;
        Ok(row.map(|(size, hash)| (size, hash.and_then(|h| h.try_into().ok()))))
    }

    /// Forgets the ledger row with this id, or the rows at and under this path: those files
    /// count as never delivered. Returns the paths forgotten.
    pub fn forget(&self, what: &Forget) -> Result<Vec<RelPath>, StateError> {
        let paths: Vec<Vec<u8>> = self.write(|tx| {
            let paths: Vec<Vec<u8>> = match what {
                Forget::Id(id) => tx
                    .query_row("SELECT path FROM ledger WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?
                    .into_iter()
                    .collect(),
                Forget::Path(p) => {
                    let (lo, hi) = super::within_bounds(p);
                    tx.prepare(
                        "SELECT path FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3)",
                    )?
                    .query_map(params![p.as_bytes(), lo, hi], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
                }
            };
            for p in &paths {
                tx.execute("DELETE FROM ledger WHERE path = ?1", [p])?;
            }
            Ok(paths)
        })?;
        Ok(paths
            .iter()
            .filter_map(|p| RelPath::from_bytes(p).ok())
            .collect())
    }

    /// Files and bytes delivered on `day` (`YYYY-MM-DD`, see [`today`]).
    pub fn delivered_on(&self, day: &str) -> Result<(u64, u64), StateError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT files, bytes FROM daily WHERE day = ?1",
                [day],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )
            .optional()
            .map(|v| v.unwrap_or((0, 0)))
        })
    }
}

/// What `skynet ledger forget` names: a row id or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    Id(i64),
    Path(RelPath),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;

    #[test]
    fn forget_by_id_and_by_directory() {
        let q = Queue::open_in_memory().unwrap();
        q.record_delivered(&[
            (p("a"), 1, 1, None),
            (p("d/x"), 2, 2, None),
            (p("d/y"), 3, 3, None),
            (p("dz"), 4, 4, None),
        ])
        .unwrap();
        let rows = q.ledger_rows().unwrap();
        assert_eq!(rows.len(), 4);
        let a = rows.iter().find(|r| r.path == p("a")).unwrap().id;
        assert_eq!(q.forget(&Forget::Id(a)).unwrap(), vec![p("a")]);
        let mut gone = q.forget(&Forget::Path(p("d"))).unwrap();
        gone.sort();
        assert_eq!(gone, vec![p("d/x"), p("d/y")]);
        let left: Vec<RelPath> = q
            .ledger_rows()
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(left, vec![p("dz")]);
        assert!(q.forget(&Forget::Id(9999)).unwrap().is_empty());
    }

    #[test]
    fn deliveries_are_counted_per_day_confirmations_are_not() {
        use crate::clock::now_ms;
        use crate::merge::Entry;
        use crate::state::{LedgerUpdate, Outcome};
        use crate::Action;
        let q = Queue::open_in_memory().unwrap();
        q.set_handoff(Some(std::time::Duration::ZERO));
        assert_eq!(q.delivered_on(&today()).unwrap(), (0, 0));
        q.push(&[
            Entry::new(Action::Send(p("a")), 0),
            Entry::new(Action::Send(p("b")), 0),
        ])
        .unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[
            Outcome::Done {
                id: c[0].id,
                ledger: LedgerUpdate::Sent {
                    path: p("a"),
                    size: 5,
                    mtime_ns: 1,
                    hash: None,
                    identity: None,
                },
            },
            Outcome::Done {
                id: c[1].id,
                ledger: LedgerUpdate::Confirmed {
                    path: p("b"),
                    size: 7,
                    mtime_ns: 1,
                    hash: Some([9; 32]),
                },
            },
        ])
        .unwrap();
        assert_eq!(q.delivered_on(&today()).unwrap(), (1, 5));
        assert_eq!(q.ledger_digest(&p("b")).unwrap(), Some((7, Some([9; 32]))));
        let handoffs: Vec<RelPath> = q
            .handoff_rows()
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(handoffs, vec![p("a")]);
        q.record_delivered(&[(p("c"), 5, 1, None)]).unwrap();
        assert_eq!(q.ledger_digest(&p("c")).unwrap(), Some((5, None)));
        assert_eq!(q.ledger_digest(&p("d")).unwrap(), None);
    }
}
