//! Acknowledging claimed actions: one transaction removes or reschedules their rows, updates
//! the ledger (only on acknowledged success), files hand-off rows and counts the day's
//! deliveries, so that a crash leaves either all of it or none.

use rusqlite::params;

use super::ledger::{apply_ledger, LedgerUpdate};
use super::queue::drop_superseded_send;
use super::{dest_dirs, handoff, ledger_rows, Queue, StateError};
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

impl Queue {
    /// Records the outcomes of claimed actions in one transaction.
    pub fn finish(&self, outcomes: &[Outcome]) -> Result<(), StateError> {
        let mut conn = self.lock();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms() as i64;
        let handoff = self.handoff.load(std::sync::atomic::Ordering::Relaxed);
        let (mut files, mut bytes) = (0i64, 0i64);
        let mut vanished = 0i64;
        let dirs = self.removes_empty_dirs();
        let mut dirs_filed = false;
        for outcome in outcomes {
            match outcome {
                Outcome::Vanished { id, ledger } => {
                    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
                        .and_then(|mut st| st.execute([id]))
                        .map_err(|e| self.err(e))?;
                    apply_ledger(&tx, ledger, now).map_err(|e| self.err(e))?;
                    vanished += 1;
                }
                Outcome::Done { id, ledger } => {
                    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")
                        .and_then(|mut st| st.execute([id]))
                        .map_err(|e| self.err(e))?;
                    if dirs {
                        dirs_filed |= dest_dirs::note(&tx, ledger).map_err(|e| self.err(e))?;
                    }
                    apply_ledger(&tx, ledger, now).map_err(|e| self.err(e))?;
                    if let LedgerUpdate::Sent {
                        path,
                        size,
                        mtime_ns,
                        identity,
                        ..
                    } = ledger
                    {
                        files += 1;
                        bytes += *size as i64;
                        if handoff {
                            let delay = self
                                .handoff_delay_ms
                                .load(std::sync::atomic::Ordering::Relaxed);
                            let ready_at = now.saturating_add(delay as i64);
                            handoff::file(&tx, path, *size, *mtime_ns, *identity, ready_at)
                                .map_err(|e| self.err(e))?;
                        }
                    }
                }
                Outcome::Hold {
                    id,
                    reason,
                    ready_at,
                } => {
                    // A newer pending send of the same path will meet the same gate itself.
                    if !drop_superseded_send(&tx, *id).map_err(|e| self.err(e))? {
                        tx.execute(
                            "UPDATE queue SET state = 4, ready_at = ?2, last_error = ?3 WHERE seq = ?1",
                            params![id, *ready_at as i64, reason],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
                Outcome::Retry {
                    id,
                    error,
                    ready_at,
                    failed,
                } => {
                    // A failed send with a newer pending send of the same path is redundant.
                    if !drop_superseded_send(&tx, *id).map_err(|e| self.err(e))? {
                        tx.execute(
                            "UPDATE queue SET state = 3, ready_at = ?2, last_error = COALESCE(NULLIF(?3, ''), last_error),
                             attempts = attempts + ?4 WHERE seq = ?1",
                            params![id, *ready_at as i64, error, *failed as i64],
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
                Outcome::Park {
                    id,
                    error,
                    ready_at,
                } => {
                    tx.execute(
                        "UPDATE queue SET state = 2, last_error = ?2, attempts = attempts + 1,
                         parks = parks + 1, ready_at = ?3 WHERE seq = ?1",
                        params![id, error, *ready_at as i64],
                    )
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        if files > 0 {
            ledger_rows::count_delivered(&tx, files, bytes).map_err(|e| self.err(e))?;
        }
        if vanished > 0 {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            )
            .and_then(|mut st| st.execute(params![VANISHED_KEY, vanished]))
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        if dirs_filed {
            self.request_dirs_check();
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
