//! The queue's merge rules as pure logic: given what is pending and one incoming action,
//! which rows to put and remove. Kept apart from SQL so that every rule is a case in the
//! table of `tests` below; [`crate::state`] applies the changes inside a transaction.
//!
//! Rules (latest intent wins, at most one pending action per key):
//! - send+send → send; send+delete → delete; delete+send → send.
//! - pending send(a) + move(a→b) → send(b), plus delete(a) when `a` may exist remotely
//!   (the contract's invariant 3 names only send(b); without the delete, an older copy of `a` at the
//!   destination would be left behind, breaking convergence).
//! - move(a→b) + move(b→c) → move(a→c); move(a→b) + move(b→a) → nothing; in both, plus
//!   delete(b) when the destination may hold an older `b` (the first move overwrote it).
//! - Rename cycles: the merged move(a→c) takes move(a→b)'s place, ahead of the rows filed in
//!   between. When one of those touches `c` or `b` (in the swap `mv a t; mv b a; mv t b`, the
//!   `move b→a` in between still reads b, the final target), renaming early would overwrite a
//!   source before it is read. The chain then degrades: `a` is deleted in place (unless a
//!   later row overwrites it anyway) and `send(c)` goes last. See `merge_chain` for why.
//! - move(a→b) + send(b) → send(b), plus delete(a) when `a` may exist remotely.
//! - move(a→b) + delete(b) → delete(b), plus delete(a) likewise.
//! - A move onto `b` drops what was pending at `b` (it is overwritten).
//! - A move of a file whose send is in flight becomes delete(a) + send(b): if that send finds
//!   the file gone, a rename would carry the previous version to `b`.
//! - A directory move rewrites pending *sends* under it (they read local files, which now
//!   live at the new path) and re-queues sends of files under it that are in flight. Pending
//!   deletes and moves under it stay: they run first (they are older) at the old path.
//! - A delete of a directory drops pending sends under it (older deletes and moves stay).
//!
//! Only pending rows merge. In-flight and retrying rows are committed: a new event for their
//! path becomes a new pending row that runs after them, so an edit made during a send is
//! never lost.

use crate::action::Action;
use crate::relpath::RelPath;

/// A queued action with the earliest time (ms since the epoch) it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub action: Action,
    pub ready_at: u64,
}

impl Entry {
    pub fn new(action: Action, ready_at: u64) -> Self {
        Entry { action, ready_at }
    }
}

/// A queued row in any state, with its place in the order (see [`PendingView::touching`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The row's place: among related paths, rows run in `seq` order.
    pub seq: i64,
    /// Pending rows merge; in-flight, retrying, held and parked ones are committed.
    pub pending: bool,
    pub action: Action,
}

/// What the merge needs to know about the queue and the ledger.
pub trait PendingView {
    /// Every queued row, in any state, with a path that is `path`, lies below it or above it.
    fn touching(&self, path: &RelPath) -> Vec<Queued>;
    /// The pending (not in-flight) entry filed under `key`.
    fn pending(&self, key: &RelPath) -> Option<Entry>;
    /// Pending entries whose key lies strictly below `dir`.
    fn pending_under(&self, dir: &RelPath) -> Vec<Entry>;
    /// Paths of in-flight or retrying sends at `path` or below it.
    fn committed_sends_within(&self, path: &RelPath) -> Vec<RelPath>;
    /// Whether the destination holds `path` (a file, or a directory with files) or is about
    /// to: it or something below it is in the ledger, or an in-flight or retrying action
    /// touches it.
    fn known_remotely(&self, path: &RelPath) -> bool;
    /// Whether the destination's copy of the file at `path` is known to be out of date (a send
    /// of it found the local file already gone).
    fn stale_remotely(&self, path: &RelPath) -> bool;
}

/// Whether the destination may hold `path` once the queue has run: known there directly, or
/// known at the source of a pending move that will carry it to `path` (a file sent into a
/// directory whose rename is still pending is at the old name now, at `path` later).
pub fn may_exist_remotely(view: &dyn PendingView, path: &RelPath) -> bool {
    fn go(view: &dyn PendingView, path: &RelPath, depth: u8) -> bool {
        if view.known_remotely(path) {
            return true;
        }
        if depth == 0 {
            return true; // a long chain of pending moves: assume it may, a delete is harmless
        }
        for carrier in path.ancestors().chain(std::iter::once(path.clone())) {
            if let Some(Entry {
                action: Action::Move { from, .. },
                ..
            }) = view.pending(&carrier)
            {
                if let Some(before) = path.rebase(&carrier, &from) {
                    return go(view, &before, depth - 1);
                }
            }
        }
        // A move already under way (or to be retried after a crash) carries it there too
        // (found by the simulation's soak, seed 51727: a file renamed out of a directory
        // whose own rename was being retried stayed at the destination).
        view.touching(path).into_iter().any(|q| match &q.action {
            Action::Move { from, to } if !q.pending => path
                .rebase(to, from)
                .is_some_and(|before| go(view, &before, depth - 1)),
            _ => false,
        })
    }
    go(view, path, 16)
}

/// One change to the pending set. Changes are applied in order; every `Put` replaces what is
/// pending under its key and is ordered after all existing rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Entry),
    Remove(RelPath),
    /// Turns the entry pending under `key` into `with`, keeping its place in the order. Used
    /// when a superseded move still has to remove its source: the delete must run where the
    /// move would have run, before any later directory move carries the file elsewhere.
    Replace {
        key: RelPath,
        with: Entry,
    },
}

/// The changes that file `incoming` into the pending set seen through `view`.
pub fn merge(view: &dyn PendingView, incoming: Entry) -> Vec<Change> {
    let ready = incoming.ready_at;
    match incoming.action {
        Action::Send(p) => merge_send(view, p, ready),
        Action::Delete(p) => merge_delete(view, p, ready),
        Action::Move { from, to } => merge_move(view, from, to, ready),
    }
}

/// The entry pending under `key` is superseded; if it was a move whose source `from` the
/// destination may still hold, it becomes `delete(from)` in place, else it is removed.
fn supersede(view: &dyn PendingView, key: &RelPath, from: Option<&RelPath>, out: &mut Vec<Change>) {
    match from {
        Some(from) if view.pending(from).is_none() && may_exist_remotely(view, from) => {
            let with = Entry::new(Action::Delete(from.clone()), 0);
            out.push(Change::Replace {
                key: key.clone(),
                with,
            });
        }
        _ => out.push(Change::Remove(key.clone())),
    }
}

/// A pending send of `a` whose file moved away: if the destination may hold an older `a`,
/// delete it in the send's place in the order, else just drop the send.
fn supersede_send(view: &dyn PendingView, a: &RelPath, out: &mut Vec<Change>) {
    if may_exist_remotely(view, a) {
        let with = Entry::new(Action::Delete(a.clone()), 0);
        out.push(Change::Replace {
            key: a.clone(),
            with,
        });
    } else {
        out.push(Change::Remove(a.clone()));
    }
}

fn merge_send(view: &dyn PendingView, p: RelPath, ready: u64) -> Vec<Change> {
    let mut out = Vec::new();
    let ready_at = match view.pending(&p) {
        Some(Entry {
            action: Action::Send(_),
            ready_at,
        }) => ready_at.max(ready),
        Some(Entry {
            action: Action::Delete(_),
            ..
        }) => {
            delete_where_carried(view, &p, &mut out);
            ready
        }
        Some(Entry {
            action: Action::Move { from, .. },
            ..
        }) => {
            supersede(view, &p, Some(&from), &mut out);
            ready
        }
        _ => ready,
    };
    out.push(Change::Put(Entry::new(Action::Send(p), ready_at)));
    out
}

/// A pending delete of `p` superseded by a send of `p`: the send runs last, so a directory
/// move queued after the delete (`rm d/f; mv d e; … d/f made again`) carries the old remote
/// `d/f` to `e/f` first, and nothing would remove it there (found by the simulation's soak,
/// seed 73244). Each such copy is deleted after its move; the handler sends the file instead
/// if one stands there locally.
fn delete_where_carried(view: &dyn PendingView, p: &RelPath, out: &mut Vec<Change>) {
    let rows = view.touching(p);
    let Some(since) = rows
        .iter()
        .find(|q| q.pending && q.action == Action::Delete(p.clone()))
        .map(|q| q.seq)
    else {
        return;
    };
    let mut at = p.clone();
    let mut moves: Vec<&Queued> = rows.iter().filter(|q| q.seq > since).collect();
    moves.sort_by_key(|q| q.seq);
    for q in moves {
        if let Action::Move { from, to } = &q.action {
            if let Some(moved) = at.rebase(from, to).filter(|m| *m != at) {
                at = moved;
                out.push(Change::Put(Entry::new(Action::Delete(at.clone()), 0)));
            }
        }
    }
}

fn merge_delete(view: &dyn PendingView, p: RelPath, ready: u64) -> Vec<Change> {
    let mut out = Vec::new();
    match view.pending(&p) {
        Some(Entry {
            action: Action::Delete(_),
            ..
        }) => return out,
        Some(Entry {
            action: Action::Move { from, .. },
            ..
        }) => supersede(view, &p, Some(&from), &mut out),
        _ => {}
    }
    // Sends under a deleted directory are moot. Older deletes and moves under it stay: they
    // run first, at paths that may name something else by now (the directory may have been
    // renamed away and re-created since), so dropping them could leave files behind.
    for entry in view.pending_under(&p) {
        if let Action::Send(key) = &entry.action {
            out.push(Change::Remove(key.clone()));
        }
    }
    out.push(Change::Put(Entry::new(Action::Delete(p), ready)));
    out
}

fn merge_move(view: &dyn PendingView, a: RelPath, b: RelPath, ready: u64) -> Vec<Change> {
    let mut out = Vec::new();
    if a == b {
        return out;
    }
    // Whatever was pending at b is overwritten; a pending move into b leaves its source behind.
    match view.pending(&b) {
        Some(Entry {
            action: Action::Move { from, .. },
            ..
        }) if from != a => supersede(view, &b, Some(&from), &mut out),
        Some(_) => out.push(Change::Remove(b.clone())),
        None => {}
    }
    match view.pending(&a) {
        Some(Entry {
            action: Action::Send(_),
            ready_at,
        }) => {
            supersede_send(view, &a, &mut out);
            out.push(Change::Put(Entry::new(Action::Send(b.clone()), ready_at)));
        }
        Some(Entry {
            action: Action::Move { from: x, .. },
            ..
        }) => merge_chain(view, x, &a, &b, ready, &mut out),
        Some(Entry {
            action: Action::Delete(_),
            ..
        }) => {
            out.push(Change::Put(Entry::new(Action::Send(b.clone()), ready)));
        }
        // The file is being sent right now, or a send already found it gone: the destination
        // may keep a previous version, which a rename would carry to b. So: delete a (after
        // that send), and send b.
        None if view.committed_sends_within(&a).contains(&a) || view.stale_remotely(&a) => {
            out.push(Change::Put(Entry::new(Action::Delete(a.clone()), ready)));
            out.push(Change::Put(Entry::new(Action::Send(b.clone()), ready)));
        }
        None => out.push(Change::Put(Entry::new(
            Action::Move {
                from: a.clone(),
                to: b.clone(),
            },
            ready,
        ))),
    }
    // A directory move: sends under it now read their files at the new path.
    for entry in view.pending_under(&a) {
        if let Action::Send(p) = &entry.action {
            if let Some(moved) = p.rebase(&a, &b) {
                out.push(Change::Remove(p.clone()));
                out.push(Change::Put(Entry::new(Action::Send(moved), entry.ready_at)));
            }
        }
    }
    for p in view.committed_sends_within(&a) {
        if p != a {
            if let Some(moved) = p.rebase(&a, &b) {
                out.push(Change::Put(Entry::new(Action::Send(moved), ready)));
            }
        }
    }
    out
}

/// A pending move(x→m) followed by move(m→b).
///
/// The merged action takes the pending move's place in the order, because that is where `x`
/// is known to hold the content (a later directory move may carry `x` away). Running the
/// rename there is the same as running it at the end only when no row after that place
/// touches `b` or `m` (or lies above or below them): otherwise a rename cycle
/// (`x→m, b→x, m→b`, or longer) would overwrite `b` before the row that still reads it, and a
/// directory moved through `m` would miss what the rows after it did there.
///
/// When such a row exists the chain degrades: `x` is deleted in place (the first rename
/// vacated it there; nothing is deleted when a later row already overwrites `x`, as in every
/// cycle, where x's new content comes from the next rename) and `send(b)` goes last, after
/// every row that still reads `b`; a directory send sends each file under it. Why this design
/// and not a rename through a temporary remote name: it adds no new kind of remote state.
/// Deletes and sends are already idempotent and crash-safe (a `kill -9` between any two
/// steps replays one of them, or the fallback of a move whose source is gone), the ledger
/// records only real names, and no stray temporary can survive a crash. The price is one
/// re-upload per cycle (for a directory cycle, of that directory), paid only for cycles.
///
/// Either way `m` no longer exists locally; when the destination may hold something there
/// (an older file the first rename overwrote, or whatever rows touching `m` leave), it is
/// deleted last.
///
/// Known limit: a directory moved away and back (`x == b`) with a row after it that touches
/// it is degraded to `send(x)` without deleting `x` first (one pending row per key), so files
/// removed inside it meanwhile may stay at the destination until the next catch-up scan.
fn merge_chain(
    view: &dyn PendingView,
    x: RelPath,
    m: &RelPath,
    b: &RelPath,
    ready: u64,
    out: &mut Vec<Change>,
) {
    let near_m = view.touching(m);
    let near_b = view.touching(b);
    // The pending move under `m`; not found (never: `pending(m)` returned it) means degrade.
    let place = near_m
        .iter()
        .find(|r| r.pending && r.action.key() == m)
        .map_or(i64::MIN, |r| r.seq);
    // The rows this merge itself replaces: the pending move under `m`, and whatever is pending
    // under `b` (dropped or turned into a delete of another path by the caller).
    let merged = |r: &Queued| r.pending && (r.action.key() == m || r.action.key() == b);
    let overtaken = near_m
        .iter()
        .chain(&near_b)
        .any(|r| r.seq > place && !merged(r));
    match (overtaken, &x == b) {
        // Moved back where it was: the destination already has it there.
        (_, true) => out.push(Change::Remove(m.clone())),
        (false, false) => {
            let with = Entry::new(
                Action::Move {
                    from: x,
                    to: b.clone(),
                },
                ready,
            );
            out.push(Change::Replace {
                key: m.clone(),
                with,
            });
        }
        (true, false) => supersede(view, m, Some(&x), out),
    }
    let others_at_m = near_m.iter().any(|r| !(r.pending && r.action.key() == m));
    if others_at_m || view.known_remotely(m) {
        out.push(Change::Put(Entry::new(Action::Delete(m.clone()), ready)));
    }
    if overtaken {
        out.push(Change::Put(Entry::new(Action::Send(b.clone()), ready)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;
    use std::collections::{BTreeMap, BTreeSet};

    /// An in-memory queue: pending entries by key with their place in the order (`seq`),
    /// committed sends, ledger paths.
    #[derive(Default)]
    struct Model {
        pending: BTreeMap<RelPath, (i64, Entry)>,
        next_seq: i64,
        committed: BTreeSet<RelPath>,
        ledger: BTreeSet<RelPath>,
        stale: BTreeSet<RelPath>,
    }

    impl PendingView for Model {
        fn touching(&self, path: &RelPath) -> Vec<Queued> {
            let related = |p: &RelPath| p.is_within(path) || path.is_within(p);
            // Committed sends are older than every pending row.
            let committed = self.committed.iter().map(|p| Queued {
                seq: 0,
                pending: false,
                action: Action::Send(p.clone()),
            });
            let pending = self.pending.values().map(|(seq, e)| Queued {
                seq: *seq,
                pending: true,
                action: e.action.clone(),
            });
            committed
                .chain(pending)
                .filter(|r| r.action.paths().any(related))
                .collect()
        }
        fn pending(&self, key: &RelPath) -> Option<Entry> {
            self.pending.get(key).map(|(_, e)| e.clone())
        }
        fn pending_under(&self, dir: &RelPath) -> Vec<Entry> {
            self.pending
                .iter()
                .filter(|(k, _)| k.is_strictly_within(dir))
                .map(|(_, (_, e))| e.clone())
                .collect()
        }
        fn committed_sends_within(&self, path: &RelPath) -> Vec<RelPath> {
            self.committed
                .iter()
                .filter(|p| p.is_within(path))
                .cloned()
                .collect()
        }
        fn known_remotely(&self, path: &RelPath) -> bool {
            self.ledger
                .iter()
                .chain(&self.committed)
                .any(|p| p.is_within(path))
        }
        fn stale_remotely(&self, path: &RelPath) -> bool {
            self.stale.contains(path)
        }
    }

    impl Model {
        /// The pending actions in the order they run, as text.
        fn in_order(&self) -> Vec<String> {
            let mut rows: Vec<&(i64, Entry)> = self.pending.values().collect();
            rows.sort_by_key(|(seq, _)| *seq);
            rows.iter().map(|(_, e)| e.action.to_string()).collect()
        }

        fn put(&mut self, e: Entry) {
            self.next_seq += 1;
            self.pending
                .insert(e.action.key().clone(), (self.next_seq, e));
        }

        fn apply(&mut self, changes: Vec<Change>) {
            for change in changes {
                match change {
                    Change::Put(e) => self.put(e),
                    Change::Remove(k) => {
                        self.pending.remove(&k);
                    }
                    Change::Replace { key, with } => {
                        if let Some((seq, _)) = self.pending.remove(&key) {
                            self.pending.insert(with.action.key().clone(), (seq, with));
                        }
                    }
                }
            }
        }

        /// The model after `case`'s incoming actions.
        fn after(case: &Case) -> Model {
            let mut model = Model {
                ledger: case.ledger.iter().map(|s| p(s)).collect(),
                committed: case.committed.iter().map(|s| p(s)).collect(),
                ..Model::default()
            };
            for s in case.pending {
                model.put(Entry::new(act(s), 0));
            }
            for s in case.incoming {
                let changes = merge(&model, Entry::new(act(s), 0));
                model.apply(changes);
            }
            model
        }
    }

    /// Parses "send a", "delete a", "move a b" (ready_at 0).
    fn act(s: &str) -> Action {
        let w: Vec<&str> = s.split(' ').collect();
        match w.as_slice() {
            ["send", a] => Action::Send(p(a)),
            ["delete", a] => Action::Delete(p(a)),
            ["move", a, b] => Action::Move {
                from: p(a),
                to: p(b),
            },
            _ => panic!("bad action {s}"),
        }
    }

    struct Case {
        name: &'static str,
        ledger: &'static [&'static str],
        committed: &'static [&'static str],
        pending: &'static [&'static str],
        incoming: &'static [&'static str],
        expect: &'static [&'static str],
    }

    /// `expect` lists the pending actions in the order they run: the queue runs related rows
    /// in order, so order is part of every rule (a send under a moved directory runs after
    /// the move, an older move into a directory before that directory's own move). Rows that
    /// share no path keep their filing order too (`send dx` was filed before `move d e`).
    #[rustfmt::skip]
    const CASES: &[Case] = &[
        Case { name: "send once", ledger: &[], committed: &[], pending: &[], incoming: &["send a"], expect: &["send a"] },
        Case { name: "send+send", ledger: &[], committed: &[], pending: &["send a"], incoming: &["send a", "send a"], expect: &["send a"] },
        Case { name: "send+delete", ledger: &[], committed: &[], pending: &["send a"], incoming: &["delete a"], expect: &["delete a"] },
        Case { name: "delete+send", ledger: &[], committed: &[], pending: &["delete a"], incoming: &["send a"], expect: &["send a"] },
        Case { name: "delete+delete", ledger: &[], committed: &[], pending: &["delete a"], incoming: &["delete a"], expect: &["delete a"] },
        Case { name: "send(a)+move(a,b), a new", ledger: &[], committed: &[], pending: &["send a"], incoming: &["move a b"], expect: &["send b"] },
        Case { name: "send(a)+move(a,b), a at destination", ledger: &["a"], committed: &[], pending: &["send a"], incoming: &["move a b"], expect: &["delete a", "send b"] },
        Case { name: "move+move", ledger: &["a"], committed: &[], pending: &[], incoming: &["move a b", "move b c"], expect: &["move a c"] },
        Case { name: "move and back", ledger: &["a"], committed: &[], pending: &[], incoming: &["move a b", "move b a"], expect: &[] },
        Case { name: "move(a,b)+send(b)", ledger: &["a"], committed: &[], pending: &["move a b"], incoming: &["send b"], expect: &["delete a", "send b"] },
        Case { name: "move(a,b)+delete(b)", ledger: &["a"], committed: &[], pending: &["move a b"], incoming: &["delete b"], expect: &["delete a", "delete b"] },
        Case { name: "move overwrites pending send at target", ledger: &["a"], committed: &[], pending: &["send b"], incoming: &["move a b"], expect: &["move a b"] },
        Case { name: "move onto a pending move's target orphans its source", ledger: &["a", "x"], committed: &[], pending: &["move x b"], incoming: &["move a b"], expect: &["delete x", "move a b"] },
        Case { name: "delete+move onto it", ledger: &["a"], committed: &[], pending: &["delete b"], incoming: &["move a b"], expect: &["move a b"] },
        Case { name: "dir move rewrites pending sends", ledger: &["d", "d/x"], committed: &[], pending: &["send d/x", "send d/s/y", "send dx"], incoming: &["move d e"], expect: &["send dx", "move d e", "send e/s/y", "send e/x"] },
        Case { name: "dir move keeps older deletes and moves under it", ledger: &["d/x", "d/y"], committed: &[], pending: &["delete d/x", "move z d/w"], incoming: &["move d e"], expect: &["delete d/x", "move z d/w", "move d e"] },
        Case { name: "dir move re-sends in-flight files under it", ledger: &[], committed: &["d/x", "dd/y"], pending: &[], incoming: &["move d e"], expect: &["move d e", "send e/x"] },
        Case { name: "in-flight send is not merged: edit during send", ledger: &[], committed: &["a"], pending: &[], incoming: &["send a"], expect: &["send a"] },
        Case { name: "dir delete drops pending under it", ledger: &["d/x"], committed: &[], pending: &["send d/x", "send d/y/z", "send dx"], incoming: &["delete d"], expect: &["send dx", "delete d"] },
        Case { name: "dir delete keeps an older move into it (it runs first)", ledger: &["z"], committed: &[], pending: &["move z d/w"], incoming: &["delete d"], expect: &["move z d/w", "delete d"] },
        Case { name: "dir renamed away, re-created and deleted: the older delete stays", ledger: &["a/b/deep"], committed: &[], pending: &["delete a/b/deep"], incoming: &["move a D4", "delete a"], expect: &["delete a/b/deep", "move a D4", "delete a"] },
        Case { name: "move of a new file then edit", ledger: &[], committed: &[], pending: &["send a"], incoming: &["move a b", "send b"], expect: &["send b"] },
        Case { name: "camera: write tmp then rename", ledger: &[], committed: &[], pending: &[], incoming: &["send IMG.tmp", "send IMG.tmp", "move IMG.tmp IMG.jpg"], expect: &["send IMG.jpg"] },
        Case { name: "rename chain", ledger: &["a"], committed: &[], pending: &[], incoming: &["move a b", "move b c", "move c d"], expect: &["move a d"] },
        Case { name: "file sent during a dir move, then moved out of it", ledger: &[], committed: &["pre/f"], pending: &[], incoming: &["move pre D", "move D/f a/r"], expect: &["move pre D", "delete D/f", "send a/r"] },
        Case { name: "moved out of a dir whose move is pending", ledger: &["pre/f"], committed: &[], pending: &[], incoming: &["move pre D", "send D/f", "move D/f a/r"], expect: &["move pre D", "delete D/f", "send a/r"] },
        Case { name: "dir moved then deleted: its old name is deleted", ledger: &["a/b/deep"], committed: &[], pending: &[], incoming: &["move a D1", "delete D1"], expect: &["delete a", "delete D1"] },
        Case { name: "file moved while its send is in flight", ledger: &["a"], committed: &["a"], pending: &[], incoming: &["move a b"], expect: &["delete a", "send b"] },
        Case { name: "move to self", ledger: &["a"], committed: &[], pending: &[], incoming: &["move a a"], expect: &[] },
    ];

    #[test]
    fn table_of_cases() {
        let mut wrong = Vec::new();
        for case in CASES {
            let got = Model::after(case).in_order();
            let want: Vec<String> = case.expect.iter().map(|s| act(s).to_string()).collect();
            if got != want {
                wrong.push(format!("{:?}: got {got:?}, want {want:?}", case.name));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Rename cycles (issue 12): `expect` lists the pending actions in the order they run.
    /// No move may run before a move whose source is its target: `mv a t; mv b a; mv t b`
    /// used to merge into `move a b` then `move b a`, and the first destroyed b.
    #[rustfmt::skip]
    const CYCLES: &[Case] = &[
        Case { name: "file swap through a temporary name", ledger: &["a", "b"], committed: &[], pending: &[], incoming: &["move a t", "move b a", "move t b"], expect: &["move b a", "send b"] },
        Case { name: "3-cycle", ledger: &["a", "b", "c"], committed: &[], pending: &[], incoming: &["move a t", "move b a", "move c b", "move t c"], expect: &["move b a", "move c b", "send c"] },
        Case { name: "directory swap", ledger: &["d/x", "e/y"], committed: &[], pending: &[], incoming: &["move d t", "move e d", "move t e"], expect: &["move e d", "send e"] },
        Case { name: "swap in a batch with a send and a delete", ledger: &["a", "b", "c", "d"], committed: &[], pending: &[], incoming: &["move a t", "send c", "move b a", "delete d", "move t b"], expect: &["send c", "move b a", "delete d", "send b"] },
        Case { name: "swap, then the swapped files are edited and one deleted", ledger: &["a", "b"], committed: &[], pending: &[], incoming: &["move a t", "move b a", "move t b", "send a", "delete b"], expect: &["send a", "delete b"] },
        Case { name: "a file edited at the temporary name", ledger: &["a", "b"], committed: &[], pending: &[], incoming: &["move a t", "send t", "move b a", "move t b"], expect: &["move b a", "send b"] },
        Case { name: "swap in a renamed directory", ledger: &["d/a", "d/b"], committed: &[], pending: &[], incoming: &["move d/a d/t", "move d/b d/a", "move d/t d/b", "move d e"], expect: &["move d/b d/a", "move d e", "send e/b"] },
        Case { name: "moved onto an existing name, then on: the overwritten copy goes", ledger: &["x", "m"], committed: &[], pending: &[], incoming: &["move x m", "move m b"], expect: &["move x b", "delete m"] },
        Case { name: "moved onto an existing name and back: the overwritten copy goes", ledger: &["x", "m"], committed: &[], pending: &[], incoming: &["move x m", "move m x"], expect: &["delete m"] },
    ];

    #[test]
    fn rename_cycles_never_overwrite_a_pending_source() {
        let mut wrong = Vec::new();
        for case in CYCLES {
            let got = Model::after(case).in_order();
            let want: Vec<String> = case.expect.iter().map(|s| act(s).to_string()).collect();
            if got != want {
                wrong.push(format!("{:?}: got {got:?}, want {want:?}", case.name));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn moving_a_file_whose_remote_copy_is_stale_sends_it() {
        let mut model = Model::default();
        model.ledger.insert(p("a"));
        model.stale.insert(p("a"));
        let changes = merge(&model, Entry::new(act("move a b"), 0));
        model.apply(changes);
        assert_eq!(model.in_order(), vec!["delete a", "send b"]);
    }

    #[test]
    fn send_keeps_the_latest_settle_deadline() {
        let mut model = Model::default();
        model.apply(merge(&model, Entry::new(act("send a"), 100)));
        model.apply(merge(&model, Entry::new(act("send a"), 300)));
        model.apply(merge(&model, Entry::new(act("send a"), 200)));
        assert_eq!(model.pending[&p("a")].1.ready_at, 300);
    }

    #[test]
    fn a_million_writes_leave_one_row() {
        let mut model = Model::default();
        for i in 0..1_000_000u64 {
            let path = format!("f{}", i % 1000);
            model.apply(merge(&model, Entry::new(Action::Send(p(&path)), i)));
        }
        assert_eq!(model.pending.len(), 1000);
    }
}
