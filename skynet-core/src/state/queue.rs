//! The action queue: filing events through the merge rules (at most one pending action per
//! path), claiming ready actions in per-path order, and the listings and repairs behind
//! `queue list`, `queue retry` and `queue drop`.
//!
//! A claimed row stays in the table, marked in flight, until [`Queue::finish`] acknowledges
//! it, so a `kill -9` loses nothing: [`Queue::recover`] turns in-flight rows back into
//! retries on the next start. A row is claimable only when no older row touches a related
//! path (the same path, an ancestor or a descendant); unrelated paths go in parallel.

use std::collections::{HashMap, HashSet};

use const_format::formatcp;
use rusqlite::{params, OptionalExtension, Transaction};

use super::db::corrupt;
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
        .prepare_cached(formatcp!(
            "DELETE FROM queue WHERE seq = ?1 AND kind = 'send' AND EXISTS
             (SELECT 1 FROM queue q WHERE q.path = queue.path AND q.state = {PENDING}
              AND q.kind = 'send') RETURNING path"
        ))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(path) = path else {
        return Ok(false);
    };
    // The failed attempt may have been delivered (a lost reply, a failed flush): the ledger
    // must not deny the copy, or a move merged into the newer send would not delete it at
    // its old name (found by the simulation, seed 9173).
    tx.prepare_cached(
        "INSERT INTO ledger (path, size, mtime_ns, hash, sent_at, stale)
         VALUES (?1, 0, 0, NULL, 0, 1) ON CONFLICT(path) DO UPDATE SET stale = 1",
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

/// Collapses repeated sends of one path before touching SQL: a burst of a million writes
/// costs one merge per distinct path. Only within a run of sends: a move or delete in
/// between must see the sends before it (`send(a)`, `move(a→b)`, `send(a)` needs the first
/// send to become `send(b)`, or `b` would get the old remote `a`). A collapsed send is ready
/// when the latest of its sends is.
fn collapse_sends(entries: &[Entry]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len());
    for run in entries.split_inclusive(|e| !matches!(e.action, Action::Send(_))) {
        let (sends, rest) = match run.split_last() {
            Some((last, sends)) if !matches!(last.action, Action::Send(_)) => (sends, Some(last)),
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
                    out.push(Entry::new(e.action.clone(), ready));
                }
            }
        }
        out.extend(rest.cloned());
    }
    out
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

    fn push_judged(&self, entries: &[Entry], judged: bool) -> Result<u64, StateError> {
        let limit = match self.delete_guard.lock() {
            Ok(g) if judged => *g,
            _ => None,
        };
        let (pending, dirs_due) = self.write(|tx| {
            let entries = handoff::spare_handed_off(tx, entries)?;
            let mut dirs_due = false;
            for entry in collapse_sends(&entries) {
                tracing::trace!(action = %entry.action, "queued");
                dirs_due |= self.merge_one(tx, entry)?;
            }
            if entries.iter().any(|e| !matches!(e.action, Action::Send(_))) {
                deletion_guard::judge(tx, limit)?;
            }
            let pending = tx.query_row(
                formatcp!("SELECT COUNT(*) FROM queue WHERE state = {PENDING}"),
                [],
                |r| r.get::<_, i64>(0),
            )?;
            Ok((pending as u64, dirs_due))
        })?;
        if dirs_due {
            self.request_dirs_check();
        }
        Ok(pending)
    }

    /// Files one entry through the merge rules. Returns whether directory rows became due
    /// (see [`dest_dirs::dropped_move`]).
    fn merge_one(&self, tx: &Transaction<'_>, entry: Entry) -> rusqlite::Result<bool> {
        let view = SqlView::new(tx);
        let changes = merge::merge(&view, entry);
        view.failure()?;
        let mut dirs_due = false;
        if self.removes_empty_dirs() {
            for change in &changes {
                let key = match change {
                    Change::Put(e) => e.action.key(),
                    Change::Remove(key) | Change::Replace { key, .. } => key,
                };
                dirs_due |= dest_dirs::dropped_move(tx, key)?;
            }
        }
        let now = now_ms() as i64;
        for change in changes {
            match change {
                Change::Replace { key, with } => {
                    tx.prepare_cached(formatcp!(
                        "UPDATE queue SET path = ?2, kind = ?3, from_path = ?4, ready_at = ?5,
                         covers = NULL WHERE path = ?1 AND state = {PENDING}"
                    ))?
                    .execute(params![
                        key.as_bytes(),
                        with.action.key().as_bytes(),
                        with.action.kind().as_str(),
                        with.action.from().map(|f| f.as_bytes()),
                        with.ready_at as i64
                    ])?;
                }
                Change::Remove(key) => {
                    tx.prepare_cached(formatcp!(
                        "DELETE FROM queue WHERE path = ?1 AND state = {PENDING}"
                    ))?
                    .execute([key.as_bytes()])?;
                }
                Change::Put(e) => {
                    let key = e.action.key().as_bytes();
                    tx.prepare_cached(formatcp!(
                        "DELETE FROM queue WHERE path = ?1 AND state = {PENDING}"
                    ))?
                    .execute([key])?;
                    // A parked send or delete, or a deletion held by the guard, is superseded
                    // by any newer intent for its path.
                    tx.prepare_cached(formatcp!(
                        "DELETE FROM queue WHERE path = ?1 AND state IN ({PARKED}, {GUARDED})
                         AND kind != 'move'"
                    ))?
                    .execute([key])?;
                    tx.prepare_cached(formatcp!(
                        "INSERT INTO queue (path, kind, from_path, state, ready_at, created_at)
                         VALUES (?1, ?2, ?3, {PENDING}, ?4, ?5)"
                    ))?
                    .execute(params![
                        key,
                        e.action.kind().as_str(),
                        e.action.from().map(|f| f.as_bytes()),
                        e.ready_at as i64,
                        now
                    ])?;
                }
            }
        }
        Ok(dirs_due)
    }
}

impl Queue {
    /// Rows by state.
    pub fn counts(&self) -> Result<Counts, StateError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT state, COUNT(*) FROM queue GROUP BY state")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            let mut counts = Counts::default();
            for row in rows {
                let (state, n) = row?;
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
        })
    }

    /// Every row in order, parked ones included.
    pub fn rows(&self) -> Result<Vec<QueueRow>, StateError> {
        self.query_rows(
            "SELECT seq, path, kind, from_path, state, attempts, last_error, ready_at
             FROM queue ORDER BY seq",
            [],
            |r| {
                let path: Vec<u8> = r.get(1)?;
                let kind: String = r.get(2)?;
                let from: Option<Vec<u8>> = r.get(3)?;
                Ok(QueueRow {
                    id: r.get(0)?,
                    kind: ActionKind::parse(&kind).unwrap_or(ActionKind::Send),
                    path: String::from_utf8_lossy(&path).into_owned(),
                    from: from.map(|f| String::from_utf8_lossy(&f).into_owned()),
                    state: match r.get::<_, i64>(4)? {
                        PENDING => "pending",
                        IN_FLIGHT => "in_flight",
                        PARKED => "failed",
                        HELD => "held",
                        GUARDED => "deletion_held",
                        _ => "retrying",
                    },
                    attempts: r.get::<_, i64>(5)? as u32,
                    last_error: r.get(6)?,
                    ready_at: r.get::<_, i64>(7)?.max(0) as u64,
                })
            },
        )
    }

    /// Makes a parked or waiting action ready now, with its attempts reset.
    pub fn retry(&self, id: i64) -> Result<(), StateError> {
        let n = self.read(|conn| {
            conn.execute(
                formatcp!(
                    "UPDATE queue SET state = {RETRY}, ready_at = 0, attempts = 0
                     WHERE seq = ?1 AND state != {IN_FLIGHT}"
                ),
                [id],
            )
        })?;
        if n == 0 {
            return Err(StateError::NoSuchId(id));
        }
        Ok(())
    }

    /// Retries every parked action. Returns how many.
    pub fn retry_failed(&self) -> Result<u64, StateError> {
        self.read(|conn| conn.execute(REVIVE_PARKED, []).map(|n| n as u64))
    }

    /// Removes an action from the queue without doing it.
    pub fn drop_action(&self, id: i64) -> Result<(), StateError> {
        let n = self.read(|conn| conn.execute("DELETE FROM queue WHERE seq = ?1", [id]))?;
        if n == 0 {
            return Err(StateError::NoSuchId(id));
        }
        Ok(())
    }

    /// The most recent error of any queued row, for `status` (a gate's reason is no error).
    pub fn last_error(&self) -> Result<Option<String>, StateError> {
        self.read(|conn| {
            conn.query_row(
                formatcp!(
                    "SELECT last_error FROM queue WHERE last_error IS NOT NULL AND state != {HELD}
                     ORDER BY seq DESC LIMIT 1"
                ),
                [],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Every queued action (pending, in flight, retrying, held or parked), oldest first.
    pub fn queued_actions(&self) -> Result<Vec<Action>, StateError> {
        self.query_rows(
            "SELECT seq, path, kind, from_path FROM queue ORDER BY seq",
            [],
            row_action,
        )
    }

    /// Where the destination's `path` will be once the moves queued behind row `seq` have
    /// run: each later move of `path` or of a directory above it carries it on. Rows run in
    /// `seq` order among related paths, so these moves have not run yet, and whatever a
    /// repair filed now (last in the order) finds at `path` will have been carried there.
    pub fn carried_by_later_moves(&self, seq: i64, path: &RelPath) -> Result<RelPath, StateError> {
        let moves = self.query_rows(
            "SELECT seq, path, kind, from_path FROM queue
             WHERE seq > ?1 AND kind = 'move' ORDER BY seq",
            [seq],
            row_action,
        )?;
        let mut at = path.clone();
        for action in moves {
            if let Action::Move { from, to } = action {
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
        self.sends_in(formatcp!(
            "SELECT path FROM queue WHERE kind = 'send' AND state != {PARKED}"
        ))
    }

    /// Targets of the sends that have not read their file yet (pending, retrying, held): each
    /// will send the file as it is when it runs. An in-flight send may have read an older
    /// version, and a parked one may fail again (it runs after its park), so neither stands
    /// for the file's current content (the catch-up scan relies on this).
    pub fn waiting_sends(&self) -> Result<HashSet<RelPath>, StateError> {
        self.sends_in(formatcp!(
            "SELECT path FROM queue WHERE kind = 'send' AND state IN ({PENDING}, {RETRY}, {HELD})"
        ))
    }

    /// Targets of the sends in flight: each may deliver the version it read, whatever the
    /// local file became since.
    pub fn sends_in_flight(&self) -> Result<HashSet<RelPath>, StateError> {
        self.sends_in(formatcp!(
            "SELECT path FROM queue WHERE kind = 'send' AND state = {IN_FLIGHT}"
        ))
    }

    fn sends_in(&self, sql: &str) -> Result<HashSet<RelPath>, StateError> {
        let paths = self.query_rows(sql, [], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(paths
            .iter()
            .filter_map(|p| RelPath::from_bytes(p).ok())
            .collect())
    }
}

/// The action of a row whose columns 1-3 are path, kind and from_path.
pub(super) fn row_action(row: &rusqlite::Row<'_>) -> rusqlite::Result<Action> {
    let path: Vec<u8> = row.get(1)?;
    let kind: String = row.get(2)?;
    let from: Option<Vec<u8>> = row.get(3)?;
    decode_action(&path, &kind, from.as_deref()).map_err(corrupt)
}
