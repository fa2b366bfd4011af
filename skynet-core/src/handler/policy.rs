//! The policy: what becomes of an executed action, as the outcome the queue records once it
//! is acknowledged.
//!
//! The whole error policy is one `match` on the classified [`ErrorKind`] ([`decide`], the
//! OpenDAL habit: each backend maps its library's errors into the kind in one place, and the
//! handler decides from the kind alone). A lost connection pauses everything and reconnects
//! with capped, jittered backoff; a transient error retries the action with backoff and parks
//! it after `max_attempts`; a permanent one parks it at once; others continue either way.
//! Results that are no failure ([`Step`]) are counted and logged here too, so that `status`
//! and the summary agree with what the queue records.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::action::Action;
use crate::clock::now_ms;
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;
use crate::state::{Claimed, LedgerUpdate, Outcome, StateError};

use super::config::HandlerConfig;
use super::execute::{Executed, Step};
use super::fallback::Repairs;
use super::status::{HandlerError, HandlerStatus, Link, Summary};

/// What a failed action comes to.
#[derive(Debug, PartialEq)]
pub(super) enum Decision<'a> {
    /// The link is down: pause every worker, reconnect, and replay the action then, with no
    /// attempt counted against it.
    Reconnect,
    /// The destination refused us (authentication, host key, bucket): paused and retried
    /// like a lost link, since `run` waits for the user to fix it.
    Refused,
    /// The destination refused us and `sync` was told not to wait (`fail_on_setup_error`).
    GiveUp,
    /// The move's remote source is gone (never sent, or removed by someone): send the local
    /// target instead (see [`Repairs::resend_moved`]).
    ResendTarget { from: &'a RelPath, to: &'a RelPath },
    /// Try the action again after this delay.
    Retry(Duration),
    /// Park the action as failed; its next episode starts after this delay.
    Park(Duration),
}

/// The error policy: one classified error, one decision. Delays draw their jitter here, once
/// per failure.
pub(super) fn decide<'a>(
    kind: ErrorKind,
    claimed: &'a Claimed,
    cfg: &HandlerConfig,
) -> Decision<'a> {
    let retry = &cfg.retry;
    match (kind, &claimed.action) {
        (ErrorKind::ConnectionLost, _) => Decision::Reconnect,
        (ErrorKind::Setup, _) if cfg.fail_on_setup_error => Decision::GiveUp,
        (ErrorKind::Setup, _) => Decision::Refused,
        (ErrorKind::RemoteMissing, Action::Move { from, to }) => {
            Decision::ResendTarget { from, to }
        }
        // "Not found" from the destination for anything but a move's source is a failed
        // write like any other: it says nothing about the local file.
        (ErrorKind::Transient | ErrorKind::RemoteMissing, _) if !retry.parks(claimed.attempts) => {
            Decision::Retry(retry.retry_delay(claimed.attempts))
        }
        (ErrorKind::Transient | ErrorKind::RemoteMissing | ErrorKind::Permanent, _) => {
            Decision::Park(retry.park_delay(claimed.parks))
        }
    }
}

/// What judging an executed action needs from the handler.
pub(super) struct Policy<'a> {
    pub(super) cfg: &'a HandlerConfig,
    pub(super) status: &'a HandlerStatus,
    pub(super) repairs: Repairs<'a>,
}

impl Policy<'_> {
    /// What becomes of an executed action: the outcome to record, after counting it in the
    /// live figures and the summary. `link` goes down when the error says the destination
    /// is unreachable. `Err` ends the run.
    pub(super) fn outcome(
        &self,
        executed: Executed,
        link: &mut Link,
        summary: &mut Summary,
    ) -> Result<Outcome, HandlerError> {
        let Executed {
            claimed,
            result,
            bytes,
            elapsed,
        } = executed;
        if !matches!(result, Ok(Step::Held { .. })) {
            self.status.latency.observe(elapsed);
        }
        match result {
            Ok(step) => Ok(self.settled(&claimed, step, bytes, summary)?),
            Err(error) => self.failed(&claimed, error, link),
        }
    }

    /// An action that did not fail: done, held by a gate, or a send with nothing to send.
    fn settled(
        &self,
        claimed: &Claimed,
        step: Step,
        bytes: u64,
        summary: &mut Summary,
    ) -> Result<Outcome, StateError> {
        let id = claimed.id;
        Ok(match step {
            Step::Held { until, reason } => {
                tracing::debug!(action = %claimed.action, %reason, "held");
                Outcome::Hold {
                    id,
                    reason,
                    ready_at: until,
                }
            }
            Step::Vanished(p) => {
                tracing::info!(path = %p, "vanished before it could be sent; not delivered");
                self.status.vanished.fetch_add(1, Ordering::Relaxed);
                summary.vanished += 1;
                Outcome::Vanished {
                    id,
                    ledger: self.repairs.gone_ledger(&p)?,
                }
            }
            Step::NotAFile(p) => {
                tracing::debug!(path = %p, "not a regular file any more; sending the files in it");
                // With complete-sync, what the destination holds at `p` goes first: this send
                // may have superseded the file's deletion (delete+send merge into the send),
                // and the files in the directory replace a remote file only if there are any
                // (found by the simulation, seed 7397: the file `D1/f4` stayed).
                self.repairs.resend_within(&p, self.cfg.complete_sync)?;
                Outcome::Done {
                    id,
                    ledger: self.repairs.gone_ledger(&p)?,
                }
            }
            Step::Did(ledger) => {
                self.status.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                self.count_done(claimed, &ledger, bytes, summary);
                Outcome::Done { id, ledger }
            }
        })
    }

    /// One line per file that reached the destination or left it (silenced by -q); a send
    /// this mapping does not take (include globs, no date) or that was already delivered is
    /// no delivery, and is not counted as one.
    fn count_done(
        &self,
        claimed: &Claimed,
        ledger: &LedgerUpdate,
        bytes: u64,
        summary: &mut Summary,
    ) {
        match ledger {
            LedgerUpdate::Unchanged | LedgerUpdate::Confirmed { .. } => {
                self.status.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(action = %claimed.action, "nothing to send");
            }
            _ => {
                summary.done += 1;
                self.status.actions_done.fetch_add(1, Ordering::Relaxed);
                self.status.done_by_kind.add(claimed.action.kind(), 1);
                match &claimed.action {
                    Action::Send(p) => tracing::info!(path = %p, bytes, "sent"),
                    Action::Delete(p) => tracing::info!(path = %p, "deleted"),
                    Action::Move { from, to } => {
                        tracing::info!(from = %from, to = %to, "moved")
                    }
                }
            }
        }
    }

    /// A failed action, as [`decide`] says.
    fn failed(
        &self,
        claimed: &Claimed,
        error: ConnError,
        link: &mut Link,
    ) -> Result<Outcome, HandlerError> {
        self.status.set_error(&error.message);
        let id = claimed.id;
        // Replayed once reconnected: the failure was the link's, not the action's.
        let replay = |error: String| Outcome::Retry {
            id,
            error,
            ready_at: 0,
            failed: false,
        };
        Ok(match decide(error.kind, claimed, self.cfg) {
            Decision::Reconnect => {
                if link.is_up() {
                    tracing::warn!(error = %error.message, "connection lost; pausing");
                }
                link.disconnect();
                replay(error.message)
            }
            Decision::GiveUp => return Err(HandlerError::Setup(error.message)),
            Decision::Refused => {
                link.disconnect();
                tracing::error!(error = %error.message, "destination refused us; will retry");
                replay(error.message)
            }
            // The sends wait for this row's acknowledgement.
            Decision::ResendTarget { from, to } => {
                self.repairs.resend_moved(id, to)?;
                Outcome::Done {
                    id,
                    ledger: LedgerUpdate::MovedUnverified {
                        from: from.clone(),
                        to: to.clone(),
                    },
                }
            }
            Decision::Retry(delay) => {
                tracing::warn!(action = %claimed.action, error = %error.message, retry_in = ?delay, "will retry");
                let ready_at = now_ms() + delay.as_millis() as u64;
                Outcome::Retry {
                    id,
                    error: error.message,
                    ready_at,
                    failed: true,
                }
            }
            Decision::Park(delay) => {
                tracing::error!(action = %claimed.action, error = %error.message, retry_in = ?delay, "parked as failed");
                self.status.actions_failed.fetch_add(1, Ordering::Relaxed);
                self.status.failed_by_kind.add(claimed.action.kind(), 1);
                Outcome::Park {
                    id,
                    error: error.message,
                    ready_at: now_ms() + delay.as_millis() as u64,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryPolicy;

    fn claimed(action: Action, attempts: u32) -> Claimed {
        Claimed {
            id: 1,
            action,
            attempts,
            parks: 0,
        }
    }

    /// The whole error policy as data: (kind, action, failed attempts so far, give up on a
    /// setup error) → the decision, named.
    #[test]
    fn one_classified_error_one_decision() {
        let p = |s: &str| RelPath::try_from(s).expect("a valid relative path");
        let send = || Action::Send(p("a"));
        let moved = || Action::Move {
            from: p("a"),
            to: p("b"),
        };
        use ErrorKind::*;
        let cases = [
            (ConnectionLost, send(), 0, false, "reconnect"),
            (ConnectionLost, send(), 9, true, "reconnect"),
            (Setup, send(), 0, false, "refused"),
            (Setup, moved(), 0, true, "give up"),
            (RemoteMissing, moved(), 0, false, "resend target"),
            (RemoteMissing, moved(), 9, false, "resend target"),
            (RemoteMissing, send(), 0, false, "retry"),
            (RemoteMissing, send(), 4, false, "park"),
            (Transient, send(), 3, false, "retry"),
            (Transient, moved(), 4, false, "park"),
            (Permanent, send(), 0, false, "park"),
        ];
        for (kind, action, attempts, fail_on_setup_error, expected) in cases {
            let cfg = HandlerConfig {
                retry: RetryPolicy {
                    max_attempts: 5,
                    ..RetryPolicy::default()
                },
                fail_on_setup_error,
                ..HandlerConfig::default()
            };
            let c = claimed(action, attempts);
            let got = match decide(kind, &c, &cfg) {
                Decision::Reconnect => "reconnect",
                Decision::Refused => "refused",
                Decision::GiveUp => "give up",
                Decision::ResendTarget { .. } => "resend target",
                Decision::Retry(_) => "retry",
                Decision::Park(_) => "park",
            };
            assert_eq!(got, expected, "{kind:?} {} after {attempts}", c.action);
        }
    }
}
