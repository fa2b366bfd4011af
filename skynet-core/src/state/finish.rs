//! Acknowledging claimed actions: one transaction removes or reschedules their rows, updates
//! the ledger (only on acknowledged success), files hand-off rows and counts the day's
//! deliveries, so that a crash leaves either all of it or none.

use std::sync::atomic::Ordering;

use const_format::formatcp;
use rusqlite::{params, Transaction};

use super::ledger::{apply_ledger, LedgerUpdate};
use super::queue::drop_superseded_send;
use super::{dest_dirs, handoff, ledger_rows, Queue, StateError};
use super::{HELD, PARKED, RETRY};
use crate::clock::now_ms;

/// The meta key of [`Queue::vanished`], counted in the transaction that settles each send.
pub(super) const VANISHED_KEY: &str = "vanished";

/// The result of one claimed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done and durable: remove the row, update the ledger.
    Done { id: i64, ledger: LedgerUpdate },
    /// A send whose local file was gone: remove the row, update the ledger, and count it in
    /// the mapping's `vanished` total (see [`Queue::vanished`]). Never a delivery.
    Vanished { id: i64, ledger: LedgerUpdate },
    /// Try again at `ready_at`; `failed` counts it as a failed attempt (a lost connection
    /// is not the action's fault and does not).
    Retry {
        id: i64,
        error: String,
        ready_at: u64,
        failed: bool,
    },
    /// Give up: keep the row as parked, visible in `status`, until retried or dropped.
    /// Parked until `ready_at`, when it comes back by itself for another episode of attempts
    /// (sooner when its file changes, or at the next start).
    Park {
        id: i64,
        error: String,
        ready_at: u64,
    },
    /// Not yet: a gate holds the action until `ready_at`; `reason` is shown in `status`.
    /// Counts no attempt.
    Hold {
        id: i64,
        reason: String,
        ready_at: u64,
    },
}

/// What one acknowledging transaction adds up, written once at its end.
#[derive(Default)]
struct Tally {
    files: i64,
    bytes: i64,
    vanished: i64,
    /// Directory rows were filed: the handler should look at them.
    dirs_filed: bool,
}

impl Queue {
    /// Records the outcomes of claimed actions in one transaction.
    pub fn finish(&self, outcomes: &[Outcome]) -> Result<(), StateError> {
        let now = now_ms() as i64;
        let tally = self.write(|tx| {
            let mut tally = Tally::default();
            for outcome in outcomes {
                self.settle(tx, outcome, now, &mut tally)?;
            }
            if tally.files > 0 {
                ledger_rows::count_delivered(tx, tally.files, tally.bytes)?;
            }
            if tally.vanished > 0 {
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                )?
                .execute(params![VANISHED_KEY, tally.vanished])?;
            }
            Ok(tally)
        })?;
        if tally.dirs_filed {
            self.request_dirs_check();
        }
        Ok(())
    }

    /// Records one outcome inside the acknowledging transaction.
    fn settle(
        &self,
        tx: &Transaction<'_>,
        outcome: &Outcome,
        now: i64,
        tally: &mut Tally,
    ) -> rusqlite::Result<()> {
        match outcome {
            Outcome::Vanished { id, ledger } => {
                tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")?
                    .execute([id])?;
                apply_ledger(tx, ledger, now)?;
                tally.vanished += 1;
            }
            Outcome::Done { id, ledger } => {
                tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")?
                    .execute([id])?;
                if self.removes_empty_dirs() {
                    tally.dirs_filed |= dest_dirs::note(tx, ledger)?;
                }
                apply_ledger(tx, ledger, now)?;
                if let LedgerUpdate::Sent {
                    path,
                    size,
                    mtime_ns,
                    identity,
                    ..
                } = ledger
                {
                    tally.files += 1;
                    tally.bytes += *size as i64;
                    if self.handoff.load(Ordering::Relaxed) {
                        let delay = self.handoff_delay_ms.load(Ordering::Relaxed);
                        let ready_at = now.saturating_add(delay as i64);
                        handoff::file(tx, path, *size, *mtime_ns, *identity, ready_at)?;
                    }
                }
            }
            Outcome::Hold {
                id,
                reason,
                ready_at,
            } => {
                // A newer pending send of the same path will meet the same gate itself.
                if !drop_superseded_send(tx, *id)? {
                    tx.execute(
                        formatcp!(
                            "UPDATE queue SET state = {HELD}, ready_at = ?2, last_error = ?3
                             WHERE seq = ?1"
                        ),
                        params![id, *ready_at as i64, reason],
                    )?;
                }
            }
            Outcome::Retry {
                id,
                error,
                ready_at,
                failed,
            } => {
                // A failed send with a newer pending send of the same path is redundant.
                if !drop_superseded_send(tx, *id)? {
                    tx.execute(
                        formatcp!(
                            "UPDATE queue SET state = {RETRY}, ready_at = ?2,
                             last_error = COALESCE(NULLIF(?3, ''), last_error),
                             attempts = attempts + ?4 WHERE seq = ?1"
                        ),
                        params![id, *ready_at as i64, error, *failed as i64],
                    )?;
                }
            }
            Outcome::Park {
                id,
                error,
                ready_at,
            } => {
                tx.execute(
                    formatcp!(
                        "UPDATE queue SET state = {PARKED}, last_error = ?2,
                         attempts = attempts + 1, parks = parks + 1, ready_at = ?3 WHERE seq = ?1"
                    ),
                    params![id, error, *ready_at as i64],
                )?;
            }
        }
        Ok(())
    }

    /// Sends settled without a delivery because their local file was gone, over the life of
    /// this state database (`status` shows it: a file removed before it was sent is a loss
    /// someone may want to know about, not a delivery).
    pub fn vanished(&self) -> Result<u64, StateError> {
        Ok(self
            .meta(VANISHED_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}
