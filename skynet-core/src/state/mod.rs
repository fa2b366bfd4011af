//! The state database of one mapping (SQLite in WAL mode): the queue of actions, the
//! ledger of what the destination holds, and the rows of the later stages (hand-offs,
//! per-entry commands, kept versions, directories to remove, held deletions).
//!
//! # Layout
//! - `db`: opening, migrations (`schema/*.sql`), the writer's lock, `meta` rows
//!   (key names in [`meta`]).
//! - `queue`: filing events through the pure merge rules of [`crate::merge`]
//!   (at most one pending action per path; the SQL side of the rules is `merge_view`),
//!   claiming ready actions in per-path order, listings and `queue retry`/`drop`.
//! - `finish`: acknowledging results in one transaction (queue rows, ledger,
//!   hand-off rows, daily counts).
//! - `ledger`: what the destination holds; changes only on acknowledged
//!   success ([`Queue::finish`]), `baseline` and `ledger forget`.
//! - The later stages' tables: `handoff`, `entries`, `versions`, `dest_dirs`,
//!   `deletion_guard`, and `ledger_rows` (ledger listings and daily counts).
//!
//! One `rusqlite::Connection` behind a mutex is the single writer; every call is short.
//! Durability: `synchronous = NORMAL` in WAL mode survives a process crash (the case that
//! matters for `kill -9`); a power loss may lose the last transactions, which the catch-up scan
//! at the next start repairs.

use std::sync::Mutex;

use const_format::formatcp;

use crate::guard::MaxDelete;
use crate::relpath::RelPath;

mod claim;
mod db;
mod deletion_guard;
mod dest_dirs;
mod entries;
mod finish;
mod handoff;
mod ledger;
mod ledger_rows;
mod merge_view;
pub mod meta;
mod queue;
#[cfg(test)]
mod rename_cycles;
#[cfg(test)]
mod tests;
mod versions;

pub use db::database_path;
pub use dest_dirs::DirVerdict;
pub use entries::EntryRow;
pub use finish::Outcome;
pub use handoff::HandoffRow;
pub use ledger::{Delivered, LedgerEntry, LedgerUpdate};
pub use ledger_rows::{today, Forget, LedgerRow};
pub use queue::{Claimed, Counts, QueueRow};
pub use versions::VersionRow;

/// Gives every parked action a new episode of attempts, ready now (`queue retry all`, and
/// each start).
// The states of a `queue` row (its `state` column; `schema/001_init.sql` and later
// migrations), named wherever SQL uses them.
/// Filed, waiting to be claimed once `ready_at` has passed.
const PENDING: i64 = 0;
/// Claimed by the handler; turned back into a retry by [`Queue::recover`] after a crash.
const IN_FLIGHT: i64 = 1;
/// Failed `max_attempts` times: shown as failed, tried again after its park (`ready_at`),
/// at the next start, or by `queue retry`.
const PARKED: i64 = 2;
/// Failed (or taken back after a crash), tried again at `ready_at`.
const RETRY: i64 = 3;
/// Held back by a gate (`min_age`, dated names) until `ready_at`; not a failure.
const HELD: i64 = 4;
/// A deletion held by the mass-deletion guard until a person confirms it (see [`crate::guard`]).
const GUARDED: i64 = 5;

/// Gives every parked action a new episode of attempts, ready now (`queue retry all`, and
/// each start).
const REVIVE_PARKED: &str = formatcp!(
    "UPDATE queue SET state = {RETRY}, ready_at = 0, attempts = 0 WHERE state = {PARKED}"
);

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

/// `(path = p OR path within p)` bounds: everything within `p/` sorts between `p/` and `p0`.
fn within_bounds(p: &RelPath) -> (Vec<u8>, Vec<u8>) {
    let mut lo = p.as_bytes().to_vec();
    lo.push(b'/');
    let mut hi = p.as_bytes().to_vec();
    hi.push(b'0');
    (lo, hi)
}
