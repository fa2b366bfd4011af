//! Executing claimed actions against the [`Connection`]: one action, or a batch of sends of
//! files in one directory (see [`Connection::send_batch`]). Each comes back as an
//! [`Executed`]: a [`Step`] or an error, for the policy to judge.
//!
//! Whether a send's local file vanished is decided here, by looking at the local file
//! (`settle_by_local_file`), never from a destination's answer: a vanished send is neither
//! done nor failed, it is counted apart (`vanished`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::action::Action;
use crate::clock::{mtime_ns, now_ms, Instant};
use crate::connection::{Connection, SourceError, SourceFile};
use crate::digest::Sha256Digest;
use crate::error::{ConnError, ErrorKind};
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::send_policy::{SendPolicy, Verdict};
use crate::source_root::SourceRoot;
use crate::state::{Claimed, LedgerUpdate, Queue, StateError};

use super::fallback;

/// The result of executing one action, before acknowledgement.
pub(super) struct Executed {
    pub(super) claimed: Claimed,
    pub(super) result: Result<Step, ConnError>,
    pub(super) bytes: u64,
    /// From the start of the work to its result.
    pub(super) elapsed: Duration,
}

/// What an action that did not fail came to.
pub(super) enum Step {
    /// Done (or nothing to do): the ledger changes so once acknowledged.
    Did(LedgerUpdate),
    /// A gate holds it until `until` (see [`crate::gate`]).
    Held { until: u64, reason: String },
    /// A send whose local file is gone: nothing was delivered.
    Vanished(RelPath),
    /// A send whose path is no longer a regular file (a directory moved in, or carried
    /// there by a parent's rename): the files in it are sent instead.
    NotAFile(RelPath),
}

/// What every worker task needs.
#[derive(Clone)]
pub(super) struct Context {
    pub(super) conn: Arc<dyn Connection>,
    pub(super) queue: Arc<Queue>,
    pub(super) root: PathBuf,
    pub(super) policy: Arc<SendPolicy>,
    /// Asked before every deletion: never delete while the source is missing or unmounted.
    pub(super) source: Option<Arc<SourceRoot>>,
}

/// Runs a batch of sends: stats and judges each local file, then hands the files to send
/// to the destination in one [`Connection::send_batch`] call.
pub(super) async fn execute_sends(cx: Context, batch: Vec<Claimed>) -> Vec<Executed> {
    let started = Instant::now();
    type Settled = Option<(Result<Step, ConnError>, u64)>;
    let mut results: Vec<Settled> = Vec::with_capacity(batch.len());
    let mut items: Vec<(SourceFile, RelPath)> = Vec::with_capacity(batch.len());
    let mut hashes: Vec<Option<Sha256Digest>> = Vec::with_capacity(batch.len());
    for claimed in &batch {
        let Action::Send(p) = &claimed.action else {
            unreachable!("a send batch holds sends only");
        };
        match prepare_send(&cx, p).await {
            Ok((file, hash)) => {
                items.push((file, p.clone()));
                hashes.push(hash);
                results.push(None);
            }
            // Settled without sending (skipped, held, already delivered, gone…).
            Err(done) => results.push(Some(done)),
        }
    }
    let mut sent = cx.conn.send_batch(&items).await.into_iter();
    // One call for the whole batch: each item is credited with an even share of its time.
    let elapsed = started.elapsed() / u32::try_from(batch.len().max(1)).unwrap_or(u32::MAX);
    let mut items = items.into_iter().zip(hashes);
    batch
        .into_iter()
        .zip(results)
        .map(|(claimed, done)| {
            let (result, bytes) = match done {
                Some(done) => done,
                None => {
                    let ((file, p), hash) = items.next().expect("one item per unsent claim");
                    let result = sent.next().unwrap_or_else(|| {
                        Err(ConnError::transient(format!(
                            "{p}: no result from send_batch"
                        )))
                    });
                    send_result(&file, p, result, hash)
                }
            };
            Executed {
                claimed,
                result,
                bytes,
                elapsed,
            }
        })
        .collect()
}

/// Runs one action against the destination.
pub(super) async fn execute(cx: Context, claimed: Claimed) -> Executed {
    let started = Instant::now();
    let conn = &cx.conn;
    let (result, bytes) = match &claimed.action {
        Action::Send(p) => match prepare_send(&cx, p).await {
            Ok((file, hash)) => {
                let result = conn.send(&file, p).await;
                send_result(&file, p.clone(), result, hash)
            }
            Err(done) => done,
        },
        // Send-once without complete-sync: the delete only drops the ledger row.
        Action::Delete(p) if !cx.policy.remote_deletes => {
            (Ok(Step::Did(LedgerUpdate::Deleted(p.clone()))), 0)
        }
        Action::Delete(p) => match cx.may_delete(p) {
            Err(step) => (Ok(step), 0),
            Ok(()) => (
                conn.delete(p)
                    .await
                    .map(|_| Step::Did(LedgerUpdate::Deleted(p.clone()))),
                0,
            ),
        },
        // A directory into itself or out of itself is no rename any destination can make.
        Action::Move { from, to } if to.is_strictly_within(from) || from.is_strictly_within(to) => {
            (Ok(cx.remirror_nested(from, to)), 0)
        }
        // Renamed to a name this mapping does not take (routing): drop the old name.
        Action::Move { from, to } if cx.policy.moves_out(&cx.root, to) => {
            if let Some(Err(problem)) = cx.source.as_ref().map(|s| s.check()) {
                return Executed {
                    claimed,
                    result: Ok(source_away(problem)),
                    bytes: 0,
                    elapsed: started.elapsed(),
                };
            }
            let deleted = if cx.policy.remote_deletes {
                conn.delete(from).await
            } else {
                Ok(())
            };
            (
                deleted.map(|_| Step::Did(LedgerUpdate::Deleted(from.clone()))),
                0,
            )
        }
        Action::Move { from, to } => match conn.rename(from, to).await {
            Ok(()) => {
                let moved = LedgerUpdate::Moved {
                    from: from.clone(),
                    to: to.clone(),
                };
                (
                    Ok(cx
                        .resend_if_carried_other(from, to)
                        .unwrap_or(Step::Did(moved))),
                    0,
                )
            }
            Err(e) => (Err(e), 0),
        },
    };
    Executed {
        claimed,
        result,
        bytes,
        elapsed: started.elapsed(),
    }
}

impl Context {
    /// After a file rename: it carried what the destination held at `from`, the bytes the
    /// ledger records there. A rename keeps size and mtime, so when the local file now at
    /// `to` differs in either, those were other bytes: a send of `from` read the file after a
    /// rename onto it that the queue had not heard of yet (a rotation `mv a t; mv b a; mv t b`
    /// racing a send of `b`; found by tests/convergence.rs). `to` is then sent again. `Some`
    /// settles the move otherwise: held when the repair could not be queued, so that it runs
    /// again and, its source gone, falls back to sending `to`.
    fn resend_if_carried_other(&self, from: &RelPath, to: &RelPath) -> Option<Step> {
        let meta = std::fs::symlink_metadata(to.under(&self.root)).ok()?;
        if !meta.is_file() {
            return None;
        }
        let local = (Some(meta.len()), meta.modified().ok().map(mtime_ns));
        let carried = match self.queue.ledger_entry(from) {
            Ok(entry) => entry.map(|e| (e.size, Some(e.mtime_ns))),
            Err(e) => return Some(held(e)),
        };
        if carried == Some(local) {
            return None;
        }
        tracing::debug!(%from, %to, "the rename carried other bytes than the local file's; sending it");
        match self
            .queue
            .push_repair(&[Entry::new(Action::Send(to.clone()), 0)])
        {
            Ok(_) => None,
            Err(e) => Some(held(e)),
        }
    }

    /// A merged move between nested paths (`a -> a/b`): a rename cycle through a directory
    /// and its own subdirectory can merge into one, which no destination can perform (it was
    /// parked, and the mirror never converged: found by the simulation's soak, seed 16012).
    /// Instead the outer path is removed remotely and the local files under it sent again,
    /// after this row: the destination ends up as the source is, at the price of re-uploading
    /// that directory.
    fn remirror_nested(&self, from: &RelPath, to: &RelPath) -> Step {
        let outer = if to.is_strictly_within(from) {
            from
        } else {
            to
        };
        tracing::info!(%from, %to, "a move between nested paths; sending {outer} again instead");
        match fallback::resend_within(&self.queue, &self.root, &self.policy.filter, outer, true) {
            Ok(_) => Step::Did(LedgerUpdate::Unchanged),
            Err(e) => held(e),
        }
    }

    /// Whether the remote copy of `p` may be deleted now. `Err` settles the delete instead:
    /// held while the source is missing or unmounted (a vanished source is no user's
    /// deletion), or dropped when the local file is there after all (the delete is stale:
    /// the file came back, e.g. its disk was remounted); the file is sent if it changed.
    fn may_delete(&self, p: &RelPath) -> Result<(), Step> {
        if let Some(Err(problem)) = self.source.as_ref().map(|s| s.check()) {
            return Err(source_away(problem));
        }
        let local = p.under(&self.root);
        if std::fs::symlink_metadata(&local).is_ok_and(|m| m.is_file()) {
            tracing::info!(path = %p, "not deleted: the local file exists; sending it instead");
            let send = [Entry::new(Action::Send(p.clone()), 0)];
            return Err(match self.queue.push_repair(&send) {
                Ok(_) => Step::Did(LedgerUpdate::Unchanged),
                Err(e) => Step::Held {
                    until: now_ms() + 1000,
                    reason: e.to_string(),
                },
            });
        }
        Ok(())
    }
}

/// Held for a second: the state database refused a write the action needs.
fn held(e: StateError) -> Step {
    Step::Held {
        until: now_ms() + 1000,
        reason: e.to_string(),
    }
}

/// A deletion held while the source is away: retried once a second until the engine pauses
/// the mapping (or it comes back).
fn source_away(problem: crate::source_root::SourceProblem) -> Step {
    Step::Held {
        until: now_ms() + 1000,
        reason: problem.to_string(),
    }
}

/// Stats and judges the local file of a send (see [`SendPolicy`]). `Ok`: send this file (with
/// its content hash, in send-once mode); `Err`: the send is settled without sending.
async fn prepare_send(
    cx: &Context,
    p: &RelPath,
) -> Result<(SourceFile, Option<Sha256Digest>), (Result<Step, ConnError>, u64)> {
    // A link or a special file is never read: settled here, with nothing to record.
    // Gone, or a directory: settled by looking at the local path.
    let local = p.under(&cx.root);
    let skipped = Err((Ok(Step::Did(LedgerUpdate::Unchanged)), 0));
    let file = match SourceFile::lstat(&local) {
        Ok(file) => file,
        Err(SourceError::Symlink(_)) => {
            cx.queue.note_skipped_link(p);
            return skipped;
        }
        Err(SourceError::Special(_)) => {
            tracing::info!(path = %p, "not a regular file (FIFO, device or socket); not read, not sent");
            return skipped;
        }
        Err(e) => return Err((settle_by_local_file(&local, p, e.into()), 0)),
    };
    let verdict = cx.policy.judge(&cx.queue, p, &file, now_ms()).await;
    let step = match verdict {
        Ok(Verdict::Send { hash }) => return Ok((file, hash)),
        Ok(Verdict::Skip) => Step::Did(LedgerUpdate::Unchanged),
        Ok(Verdict::AlreadyDelivered { hash }) => {
            tracing::debug!(path = %p, "already delivered with the same content; not sent");
            Step::Did(LedgerUpdate::Confirmed {
                path: p.clone(),
                size: file.size,
                mtime_ns: mtime_ns(file.mtime),
                hash: Some(hash),
            })
        }
        Ok(Verdict::Hold { until, reason }) => Step::Held { until, reason },
        Err(e) => return Err((settle_by_local_file(&local, p, e), 0)),
    };
    Err((Ok(step), 0))
}

/// The ledger update of a send's result.
fn send_result(
    file: &SourceFile,
    path: RelPath,
    result: Result<u64, ConnError>,
    hash: Option<Sha256Digest>,
) -> (Result<Step, ConnError>, u64) {
    match result {
        Ok(bytes) => (
            Ok(Step::Did(LedgerUpdate::Sent {
                path,
                size: file.size,
                mtime_ns: mtime_ns(file.mtime),
                hash,
                identity: Some(file.identity),
            })),
            bytes,
        ),
        Err(e) => (settle_by_local_file(&file.path, &path, e), 0),
    }
}

/// What a send that failed comes to, decided by looking at the local file (`local`, the
/// absolute path of `path`), never from the error: a destination's "not found" says nothing
/// about the local file.
/// - gone (or a parent is no longer a directory): [`Step::Vanished`], nothing to deliver;
/// - a directory now (or a link to one): [`Step::NotAFile`], the files in it are sent;
/// - still there: `err` stands, for the policy (`handler::policy`).
///
/// A lost link or a refused destination stands as it is, so that the handler pauses; the
/// retry finds the file gone, if it is.
fn settle_by_local_file(local: &Path, path: &RelPath, err: ConnError) -> Result<Step, ConnError> {
    use std::io::ErrorKind as K;
    if matches!(err.kind, ErrorKind::ConnectionLost | ErrorKind::Setup) {
        return Err(err);
    }
    match std::fs::symlink_metadata(local) {
        Err(e) if matches!(e.kind(), K::NotFound | K::NotADirectory) => {
            Ok(Step::Vanished(path.clone()))
        }
        Ok(meta) if meta.is_dir() => Ok(Step::NotAFile(path.clone())),
        Ok(meta)
            if meta.file_type().is_symlink()
                && std::fs::metadata(local).is_ok_and(|m| m.is_dir()) =>
        {
            Ok(Step::NotAFile(path.clone()))
        }
        _ => Err(err),
    }
}
