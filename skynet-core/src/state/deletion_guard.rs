//! The mass-deletion guard's side of the queue (the rule itself is [`crate::guard`]):
//! deletions filed by [`Queue::push`] learn how many ledger files they would remove, and
//! are held (state `GUARDED`) together when they would remove too much; `skynet queue release`
//! confirms them, a higher limit at the next start lets them run.

use const_format::formatcp;
use rusqlite::{params, Transaction};

use super::{within_bounds, Queue, StateError};
use super::{GUARDED, IN_FLIGHT, PENDING, RETRY};
use crate::guard::MaxDelete;
use crate::relpath::RelPath;

/// The mass-deletion guard, inside the transaction that filed new deletes: each new
/// delete learns how many ledger files it would remove; when the deletes waiting to run
/// would together remove more than `limit` allows, or some are held already (the same
/// mass deletion going on), every waiting delete is held until confirmed. Sends go on.
pub(super) fn judge(tx: &Transaction<'_>, limit: Option<MaxDelete>) -> rusqlite::Result<()> {
    let Some(limit) = limit else {
        tx.execute(
            "UPDATE queue SET covers = 0 WHERE covers IS NULL AND kind = 'delete'",
            [],
        )?;
        return Ok(());
    };
    let fresh: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached(formatcp!(
            "SELECT seq, path FROM queue WHERE kind = 'delete'
                       AND state IN ({PENDING}, {RETRY}) AND covers IS NULL"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (seq, path) in fresh {
        let covers = match RelPath::from_bytes(&path) {
            Ok(p) => {
                let (lo, hi) = within_bounds(&p);
                tx.prepare_cached(
                    "SELECT COUNT(*) FROM ledger WHERE path = ?1 OR (path > ?2 AND path < ?3)",
                )?
                .query_row(params![path, lo, hi], |r| r.get::<_, i64>(0))?
            }
            Err(_) => 0,
        };
        tx.prepare_cached("UPDATE queue SET covers = ?2 WHERE seq = ?1")?
            .execute(params![seq, covers])?;
    }
    const WAITING: &str =
        formatcp!("kind = 'delete' AND state IN ({PENDING}, {RETRY}) AND covers > 0");
    let hold = |reason: &str| {
        tx.execute(
            formatcp!("UPDATE queue SET state = {GUARDED}, last_error = ?1 WHERE {WAITING}"),
            [reason],
        )
    };
    let held_already: bool = tx.query_row(
        formatcp!("SELECT EXISTS(SELECT 1 FROM queue WHERE state = {GUARDED})"),
        [],
        |r| r.get(0),
    )?;
    if held_already {
        // The same mass deletion going on: join it, uncounted (cheap per watcher batch).
        hold("held by the mass-deletion guard with the deletions before it; if intended, run `skynet queue release` or raise --max-delete")?;
        return Ok(());
    }
    // The sum over-counts nested deletes: when even it is within the limit, so is the truth
    // (the common case, one indexed aggregate); only otherwise count exactly.
    let upper: i64 = tx.query_row(
        formatcp!("SELECT COALESCE(SUM(covers), 0) FROM queue WHERE {WAITING}"),
        [],
        |r| r.get(0),
    )?;
    let delivered = tx.query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get::<_, i64>(0))? as u64;
    if upper == 0 || !limit.holds(upper as u64, delivered) {
        return Ok(());
    }
    let covered = covered_by(tx, formatcp!("state IN ({PENDING}, {RETRY})"))?.min(delivered);
    if !limit.holds(covered, delivered) {
        return Ok(());
    }
    let reason = format!(
        "held by the mass-deletion guard: deletions would remove {covered} of {delivered} delivered files (limit: {limit}); if intended, run `skynet queue release` or raise --max-delete"
    );
    let n = hold(&reason)?;
    tracing::warn!(deletions = n, files = covered, delivered, "{reason}");
    Ok(())
}

/// How many ledger files the judged deletes in `states` (an SQL condition) would remove
/// together: a delete below another one (a file in a deleted folder) is already counted there.
fn covered_by(tx: &Transaction<'_>, states: &str) -> rusqlite::Result<u64> {
    let rows: Vec<(Vec<u8>, i64)> = tx
        .prepare(&format!(
            "SELECT path, covers FROM queue WHERE kind = 'delete' AND covers > 0 AND {states}"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let paths: std::collections::HashSet<&[u8]> = rows.iter().map(|(p, _)| &p[..]).collect();
    let below_another = |p: &[u8]| {
        p.iter()
            .enumerate()
            .any(|(i, b)| *b == b'/' && paths.contains(&p[..i]))
    };
    Ok(rows
        .iter()
        .filter(|(p, _)| !below_another(p))
        .map(|(_, n)| *n as u64)
        .sum())
}

impl Queue {
    /// Judges the deletions filed by [`Queue::push`] against `limit` (complete-sync), or not
    /// at all (`None`).
    pub fn set_delete_guard(&self, limit: Option<MaxDelete>) {
        if let Ok(mut g) = self.delete_guard.lock() {
            *g = limit;
        }
    }

    /// Judges the held deletions again under the current limit (a sync started with a higher
    /// `--max-delete`): when together they are now allowed, they run. Returns how many.
    pub fn rejudge_held_deletions(&self) -> Result<u64, StateError> {
        let Some(limit) = self.delete_guard.lock().ok().and_then(|g| *g) else {
            return Ok(0);
        };
        let released = self.write(|tx| {
            let (held, delivered): (i64, i64) = tx.query_row(
                formatcp!(
                    "SELECT (SELECT COUNT(*) FROM queue WHERE state = {GUARDED}),
                            (SELECT COUNT(*) FROM ledger)"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if held == 0 {
                return Ok(0);
            }
            let covered = covered_by(tx, formatcp!("state IN ({PENDING}, {RETRY}, {GUARDED})"))?;
            if limit.holds(covered, delivered as u64) {
                return Ok(0);
            }
            tx.execute(
                formatcp!(
                    "UPDATE queue SET state = {RETRY}, ready_at = 0, last_error = NULL
                     WHERE state = {GUARDED}"
                ),
                [],
            )
        })?;
        if released > 0 {
            tracing::info!(deletions = released, %limit, "held deletions are within the limit now; they run");
        }
        Ok(released as u64)
    }

    /// Confirms deletions held by the guard (`id`, or all of them): they run, and are never
    /// judged again. Returns how many were released.
    pub fn release_deletions(&self, id: Option<i64>) -> Result<u64, StateError> {
        const RELEASE: &str = formatcp!(
            "UPDATE queue SET state = {RETRY}, ready_at = 0, covers = 0, last_error = NULL
             WHERE state = {GUARDED}"
        );
        let n = self.read(|conn| match id {
            Some(id) => conn.execute(formatcp!("{RELEASE} AND seq = ?1"), [id]),
            None => conn.execute(RELEASE, []),
        })?;
        if n == 0 {
            if let Some(id) = id {
                return Err(StateError::NoSuchId(id));
            }
        }
        Ok(n as u64)
    }

    /// Drops queued deletes of paths for which `present` says the local file or folder
    /// exists: those the guard holds (`held_only`: the file came back, or the folder is
    /// there, and a catch-up scan judges what under it is really gone), or every one not in
    /// flight (filed while the source was away, unmounted or pulled: not the user's).
    /// Returns how many were dropped.
    pub fn drop_deletes_of_present(
        &self,
        held_only: bool,
        present: impl Fn(&RelPath) -> bool,
    ) -> Result<u64, StateError> {
        let sql = if held_only {
            formatcp!("SELECT seq, path FROM queue WHERE kind = 'delete' AND state = {GUARDED}")
        } else {
            formatcp!("SELECT seq, path FROM queue WHERE kind = 'delete' AND state != {IN_FLIGHT}")
        };
        self.write(|tx| {
            let rows: Vec<(i64, Vec<u8>)> = tx
                .prepare(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut dropped = 0;
            for (seq, path) in rows {
                if RelPath::from_bytes(&path).is_ok_and(|p| present(&p)) {
                    tx.execute("DELETE FROM queue WHERE seq = ?1", [seq])?;
                    dropped += 1;
                }
            }
            Ok(dropped)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::clock::now_ms;
    use crate::conformance::rel as p;
    use crate::merge::Entry;

    /// A queue whose ledger holds `n` files `d/f0..`, guarded by `limit`.
    fn delivered(n: usize, limit: MaxDelete) -> Queue {
        let q = Queue::open_in_memory().unwrap();
        let files: Vec<_> = (0..n)
            .map(|i| (p(&format!("d/f{i}")), 1, 1, None))
            .collect();
        q.record_delivered(&files).unwrap();
        q.set_delete_guard(Some(limit));
        q
    }

    fn delete(s: &str) -> Entry {
        Entry::new(Action::Delete(p(s)), 0)
    }

    fn claimable(q: &Queue) -> Vec<Action> {
        q.claim(usize::MAX, now_ms())
            .unwrap()
            .into_iter()
            .map(|c| c.action)
            .collect()
    }

    #[test]
    fn a_few_deletions_run_a_mass_deletion_is_held() {
        let q = delivered(1000, MaxDelete::Default);
        let few: Vec<Entry> = (0..10).map(|i| delete(&format!("d/f{i}"))).collect();
        q.push(&few).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 0);
        assert_eq!(claimable(&q).len(), 10);

        let q = delivered(1000, MaxDelete::Default);
        let most: Vec<Entry> = (0..600).map(|i| delete(&format!("d/f{i}"))).collect();
        q.push(&most).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 600);
        assert!(claimable(&q).is_empty(), "a held deletion was handed out");
        // One directory delete covering everything counts every file below it.
        let q = delivered(1000, MaxDelete::Default);
        q.push(&[delete("d")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 1);
        let row = &q.rows().unwrap()[0];
        assert_eq!(row.state, "deletion_held");
        assert!(
            row.last_error.as_deref().unwrap().contains("1000 of 1000"),
            "{row:?}"
        );
    }

    #[test]
    fn deletions_arriving_in_pieces_add_up_and_join_a_held_set() {
        let q = delivered(100, MaxDelete::Files(20));
        for chunk in 0..3 {
            let batch: Vec<Entry> = (0..10)
                .map(|i| delete(&format!("d/f{}", chunk * 10 + i)))
                .collect();
            q.push(&batch).unwrap();
        }
        // 10 and 20 are within the limit; the third batch makes 30 and holds all of them.
        assert_eq!(q.counts().unwrap().deletions_held, 30);
        // A later single deletion joins the held set rather than slipping through.
        q.push(&[delete("d/f99")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 31);
    }

    #[test]
    fn zero_holds_every_deletion_and_repairs_are_not_judged() {
        let q = delivered(1000, MaxDelete::Files(0));
        q.push_repair(&[delete("d/f1")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 0);
        q.push(&[delete("d/f2")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 1);
        // A deletion of something the ledger never had removes nothing known: not held.
        let q = delivered(10, MaxDelete::Files(0));
        q.push(&[delete("unknown")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 0);
    }

    #[test]
    fn release_rejudge_and_supersede() {
        let q = delivered(100, MaxDelete::Default);
        let all: Vec<Entry> = (0..100).map(|i| delete(&format!("d/f{i}"))).collect();
        q.push(&all).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 100);
        // The file came back: its newer intent replaces the held deletion.
        q.push(&[Entry::new(Action::Send(p("d/f0")), 0)]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 99);
        // The same limit still holds them; a higher one lets them run.
        assert_eq!(q.rejudge_held_deletions().unwrap(), 0);
        q.set_delete_guard(Some(MaxDelete::Percent(100)));
        assert_eq!(q.rejudge_held_deletions().unwrap(), 99);
        assert_eq!(claimable(&q).len(), 100);

        let q = delivered(100, MaxDelete::Default);
        q.push(&all).unwrap();
        let id = q.rows().unwrap()[0].id;
        assert_eq!(q.release_deletions(Some(id)).unwrap(), 1);
        assert!(q.release_deletions(Some(id)).is_err(), "released twice");
        assert_eq!(q.release_deletions(None).unwrap(), 99);
        assert_eq!(q.counts().unwrap().deletions_held, 0);
        // Confirmed deletions are never judged again by later pushes.
        q.push(&[delete("d/f0")]).unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 0);
    }

    #[test]
    fn deletions_of_what_is_present_are_dropped_after_a_pause() {
        let q = delivered(100, MaxDelete::Files(1000));
        q.push(&[delete("d/f1"), delete("d/f2")]).unwrap();
        let present = |p: &RelPath| p.as_bytes() == b"d/f1";
        // Not held: kept unless the source was away.
        assert_eq!(q.drop_deletes_of_present(true, present).unwrap(), 0);
        assert_eq!(q.drop_deletes_of_present(false, present).unwrap(), 1);
        assert_eq!(claimable(&q), vec![Action::Delete(p("d/f2"))]);
        // Held ones are dropped at any start when their file is there.
        let q = delivered(4, MaxDelete::Default);
        q.push(
            &(0..4)
                .map(|i| delete(&format!("d/f{i}")))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(q.counts().unwrap().deletions_held, 4);
        assert_eq!(q.drop_deletes_of_present(true, present).unwrap(), 1);
        assert_eq!(q.counts().unwrap().deletions_held, 3);
    }
}
