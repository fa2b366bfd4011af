//! The action queue: filing events through the merge rules (at most one pending action per
//! path), claiming ready actions in per-path order, and the listings and repairs behind
//! `queue list`, `queue retry` and `queue drop`.
//!
//! A claimed row stays in the table, marked in flight, until [`Queue::finish`] acknowledges
//! it, so a `kill -9` loses nothing: [`Queue::recover`] turns in-flight rows back into
//! retries on the next start. A row is claimable only when no older row touches a related
//! path (the same path, an ancestor or a descendant); unrelated paths go in parallel.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Transaction};

use super::merge_view::SqlView;
use super::{deletion_guard, dest_dirs, handoff, Queue, StateError};
use super::{GUARDED, HELD, IN_FLIGHT, PARKED, PENDING, RETRY, REVIVE_PARKED};
use crate::action::{Action, ActionKind};
use crate::clock::now_ms;
use crate::merge::{self, Change, Entry};
use crate::relpath::RelPath;

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

/// Removes the claimed send `id` when a newer pending send of the same path exists (that one
/// covers it). True when it was removed.
pub(super) fn drop_superseded_send(tx: &Transaction<'_>, id: i64) -> rusqlite::Result<bool> {
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

pub(super) fn decode_action(
    path: &[u8],
    kind: &str,
    from: Option<&[u8]>,
) -> Result<Action, String> {
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

/// Paths that block later actions: a later action waits when one of its paths is equal to,
/// above or below one of these.
#[derive(Default)]
pub(super) struct PathSet(BTreeSet<Vec<u8>>);

impl PathSet {
    pub(super) fn insert(&mut self, p: Vec<u8>) {
        self.0.insert(p);
    }

    pub(super) fn conflicts(&self, p: &[u8]) -> bool {
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

impl Queue {
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

    pub(super) fn push_judged(&self, entries: &[Entry], judged: bool) -> Result<u64, StateError> {
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

    /// Files one entry through the merge rules. Returns whether directory rows became due
    /// (see [`dest_dirs::dropped_move`]).
    pub(super) fn merge_one(&self, tx: &Transaction<'_>, entry: Entry) -> Result<bool, StateError> {
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

    pub(super) fn row_action(&self, row: &rusqlite::Row<'_>) -> Result<Action, StateError> {
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

    pub(super) fn sends_in(&self, sql: &str) -> Result<HashSet<RelPath>, StateError> {
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
}
