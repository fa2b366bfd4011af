//! The handler: drains the queue through a [`Connection`].
//!
//! - Up to `workers` actions execute at once; the queue only hands out actions whose older
//!   related actions are done, so per-path order holds.
//! - Results are acknowledged in batches: after [`Connection::flush`] succeeds, one
//!   transaction removes the rows and updates the ledger. Nothing is acknowledged before it is
//!   durable, and a crash before the acknowledgement just replays idempotent actions.
//! - The whole error policy is one `match` on [`ErrorKind`] (see [`Handler::outcome`]): a lost
//!   connection pauses everything and reconnects with capped, jittered backoff; a transient
//!   error retries the action with backoff and parks it after `max_attempts`; a permanent one
//!   parks it at once; others continue either way.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::action::Action;
use crate::connection::{Connection, SourceFile};
use crate::error::{ConnError, ErrorKind};
use crate::merge::Entry;
use crate::queue::{mtime_ns, now_ms, Claimed, LedgerUpdate, Outcome, Queue, StateError};
use crate::relpath::RelPath;
use crate::scan;

/// Tuning of the handler. The defaults suit a daemon; tests shorten the delays.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Actions executing at once.
    pub workers: usize,
    /// Failed attempts after which a transient error parks the action.
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    /// Acknowledge at the latest after this many results or this much time.
    pub ack_batch: usize,
    pub ack_delay: Duration,
    /// `sync`: return once nothing is left to do (parked actions aside).
    pub exit_when_drained: bool,
    /// `sync`: give up on a [`ErrorKind::Setup`] error instead of retrying forever.
    pub fail_on_setup_error: bool,
    /// `sync`: give up after this many failed attempts when the destination was never
    /// reached in this run (a dead or silent server ends the sync instead of hanging it).
    /// Once connected, outages are waited out.
    pub give_up_unreached_after: Option<u32>,
    /// Deletions are propagated: a send that finds its local file gone also removes the
    /// path remotely (a crash may have left a copy there that the ledger never recorded).
    pub complete_sync: bool,
    /// How long to let executing actions finish after a stop request.
    pub stop_grace: Duration,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            workers: 4,
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            reconnect_base: Duration::from_millis(500),
            reconnect_cap: Duration::from_secs(30),
            ack_batch: 512,
            ack_delay: Duration::from_millis(100),
            exit_when_drained: false,
            fail_on_setup_error: false,
            give_up_unreached_after: None,
            complete_sync: false,
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Live figures of one handler, shared with `status` and metrics.
#[derive(Debug, Default)]
pub struct HandlerStatus {
    pub connected: AtomicBool,
    pub bytes_sent: AtomicU64,
    pub actions_done: AtomicU64,
    pub actions_failed: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl HandlerStatus {
    fn set_error(&self, message: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message.to_string());
        }
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Why the handler stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Setup(String),
}

/// What a drain achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub parked: u64,
}

/// The result of executing one action, before acknowledgement.
struct Executed {
    claimed: Claimed,
    result: Result<LedgerUpdate, ConnError>,
    bytes: u64,
}

/// Drains one mapping's queue through one connection.
pub struct Handler {
    queue: Arc<Queue>,
    conn: Arc<dyn Connection>,
    source_root: PathBuf,
    cfg: HandlerConfig,
    status: Arc<HandlerStatus>,
    /// Excludes applied when a move falls back to sending a whole local directory.
    filter: Arc<scan::Filter>,
    /// Targets of actions in flight when the previous run died, cleaned up after connecting.
    recovered: Mutex<Vec<RelPath>>,
}

impl Handler {
    pub fn new(
        queue: Arc<Queue>,
        conn: Arc<dyn Connection>,
        source_root: PathBuf,
        cfg: HandlerConfig,
        filter: Arc<scan::Filter>,
    ) -> Self {
        Handler {
            queue,
            conn,
            source_root,
            cfg,
            status: Arc::default(),
            filter,
            recovered: Mutex::new(Vec::new()),
        }
    }

    /// Paths whose actions were in flight when the previous run died (see
    /// [`Connection::cleanup`]).
    pub fn set_recovered(&self, paths: Vec<RelPath>) {
        if let Ok(mut r) = self.recovered.lock() {
            *r = paths;
        }
    }

    pub fn status(&self) -> Arc<HandlerStatus> {
        Arc::clone(&self.status)
    }

    /// Runs until `stop` turns true (or, with `exit_when_drained`, until the queue is empty).
    /// `wake` is notified by whoever adds to the queue.
    pub async fn run(
        &self,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Summary, HandlerError> {
        let mut summary = Summary::default();
        let mut executing: JoinSet<Vec<Executed>> = JoinSet::new();
        let mut ready: VecDeque<Claimed> = Default::default();
        // Sends per task (see `Connection::send_batch_size`), and the parent directories the
        // executing send batches work in, so concurrent batches go to different directories.
        let batch_max = self.conn.send_batch_size().max(1);
        let window = (self.cfg.workers * 16)
            .max(64)
            .max(self.cfg.workers * batch_max * 2);
        let mut busy_dirs: Vec<Vec<u8>> = Vec::new();
        // The flush running for the batch in `flushing` (at most one at a time), while
        // workers go on: results that arrive meanwhile wait for the next flush.
        let mut flush_task: JoinSet<Result<(), ConnError>> = JoinSet::new();
        let mut flushing: Vec<Outcome> = Vec::new();
        let mut unacked: Vec<Outcome> = Vec::new();
        let mut oldest_unacked: Option<Instant> = None;
        let mut connected = false;
        let mut reconnect_attempt: u32 = 0;
        let mut ever_connected = false;
        let mut stopping_since: Option<Instant> = None;

        loop {
            if *stop.borrow() && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            if let Some(since) = stopping_since {
                if executing.is_empty() || since.elapsed() >= self.cfg.stop_grace {
                    break;
                }
            }

            // Paused: claimed work that has not started goes back to the queue, so status
            // shows it as waiting rather than in flight during the outage.
            if !connected && !ready.is_empty() {
                self.unclaim(&mut ready)?;
            }
            // Results that came back before the pause are recorded now (a success whose flush
            // fails is retried), not left in flight while reconnecting.
            if !connected && executing.is_empty() && !unacked.is_empty() {
                self.acknowledge(&mut unacked, &mut connected).await?;
                oldest_unacked = None;
            }

            // (Re)connect before handing out work.
            if !connected && stopping_since.is_none() && executing.is_empty() {
                match self.conn.connect().await {
                    Ok(()) => {
                        connected = true;
                        ever_connected = true;
                        reconnect_attempt = 0;
                        self.status.connected.store(true, Ordering::Relaxed);
                        tracing::info!(destination = %self.conn.describe(), "connected");
                        let recovered = self
                            .recovered
                            .lock()
                            .map(|mut r| std::mem::take(&mut *r))
                            .unwrap_or_default();
                        if !recovered.is_empty() {
                            if let Err(e) = self.conn.cleanup(&recovered).await {
                                tracing::warn!(error = %e.message, "cleanup after a crash failed");
                            }
                        }
                    }
                    Err(e) => {
                        self.status.connected.store(false, Ordering::Relaxed);
                        self.status.set_error(&e.message);
                        if e.kind == ErrorKind::Setup && self.cfg.fail_on_setup_error {
                            return Err(HandlerError::Setup(e.message));
                        }
                        if !ever_connected
                            && self
                                .cfg
                                .give_up_unreached_after
                                .is_some_and(|n| reconnect_attempt + 1 >= n)
                        {
                            return Err(HandlerError::Setup(format!(
                                "cannot reach the destination after {} attempts: {}",
                                reconnect_attempt + 1,
                                e.message
                            )));
                        }
                        let delay = backoff(
                            self.cfg.reconnect_base,
                            self.cfg.reconnect_cap,
                            reconnect_attempt,
                        );
                        reconnect_attempt = reconnect_attempt.saturating_add(1);
                        tracing::warn!(error = %e.message, retry_in = ?delay, "cannot connect");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }

            // Hand out work while there is room.
            if connected && stopping_since.is_none() {
                if ready.len() < self.cfg.workers.max(window / 2) {
                    let want = window - ready.len();
                    ready.extend(self.queue.claim(want, now_ms())?);
                }
                while executing.len() < self.cfg.workers {
                    let free = self.cfg.workers - executing.len();
                    let Some(batch) = next_batch(&mut ready, batch_max, free, &busy_dirs) else {
                        break;
                    };
                    let conn = Arc::clone(&self.conn);
                    let root = self.source_root.clone();
                    match batch {
                        Batch::One(claimed) => {
                            executing
                                .spawn(async move { vec![execute(conn, root, claimed).await] });
                        }
                        Batch::Sends(dir, claimed) => {
                            busy_dirs.push(dir);
                            executing
                                .spawn(async move { execute_sends(conn, root, claimed).await });
                        }
                    }
                }
            }

            // Acknowledge in batches, after a durability barrier. The flush runs as its own
            // task and covers only results that came back before it started.
            let ack_due = flush_task.is_empty()
                && !unacked.is_empty()
                && (unacked.len() >= self.cfg.ack_batch
                    || executing.is_empty()
                    || oldest_unacked.is_some_and(|t| t.elapsed() >= self.cfg.ack_delay)
                    || stopping_since.is_some());
            if ack_due {
                let batch = std::mem::take(&mut unacked);
                oldest_unacked = None;
                if batch.iter().any(|o| matches!(o, Outcome::Done { .. })) {
                    let conn = Arc::clone(&self.conn);
                    flush_task.spawn(async move { conn.flush().await });
                    flushing = batch;
                } else {
                    self.queue.finish(&batch)?;
                }
                continue;
            }

            if self.cfg.exit_when_drained
                && executing.is_empty()
                && flush_task.is_empty()
                && ready.is_empty()
                && unacked.is_empty()
                && connected
            {
                let counts = self.queue.counts()?;
                if counts.pending + counts.retrying + counts.in_flight == 0 {
                    summary.parked = counts.failed;
                    break;
                }
            }

            // Wait for a result, new work, a timer, or a stop.
            // The queue's next ready time only matters when a worker is idle with nothing
            // to hand it: a busy handler is woken by the next result anyway. (Asking SQLite
            // after every result scanned the whole queue each time: 64% of a 10,000-file sync.)
            let idle = connected && ready.is_empty() && executing.len() < self.cfg.workers;
            let ack_timer = if flush_task.is_empty() {
                oldest_unacked
            } else {
                None
            };
            let timer = self.next_wake(ack_timer, idle)?;
            tokio::select! {
                Some(flushed) = flush_task.join_next(), if !flush_task.is_empty() => {
                    let flushed = flushed.unwrap_or_else(|e| {
                        Err(ConnError::transient(format!("flush task failed: {e}")))
                    });
                    self.record(std::mem::take(&mut flushing), flushed, &mut connected)?;
                }
                Some(joined) = executing.join_next(), if !executing.is_empty() => {
                    let batch = match joined {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::error!(error = %e, "worker task failed");
                            continue;
                        }
                    };
                    if batch_max > 1 {
                        if let Some(dir) = batch.first().and_then(|x| send_dir(&x.claimed.action)) {
                            if let Some(i) = busy_dirs.iter().position(|d| *d == dir) {
                                busy_dirs.swap_remove(i);
                            }
                        }
                    }
                    for executed in batch {
                        if let Some(outcome) = self.outcome(executed, &mut connected, &mut summary)? {
                            unacked.push(outcome);
                            oldest_unacked.get_or_insert_with(Instant::now);
                        }
                    }
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(timer) => {}
                _ = stop.changed() => {}
            }
        }

        // Stopping: the flush under way completes and its batch is recorded first.
        if let Some(flushed) = flush_task.join_next().await {
            let flushed = flushed
                .unwrap_or_else(|e| Err(ConnError::transient(format!("flush task failed: {e}"))));
            self.record(std::mem::take(&mut flushing), flushed, &mut connected)?;
        }
        // Whatever was claimed but not started goes back as a retry, ready now.
        let mut rest: Vec<Outcome> = std::mem::take(&mut unacked);
        while let Some(Ok(batch)) = executing.try_join_next() {
            for executed in batch {
                if let Some(outcome) = self.outcome(executed, &mut connected, &mut summary)? {
                    rest.push(outcome);
                }
            }
        }
        executing.abort_all();
        if !rest.is_empty() {
            self.acknowledge(&mut rest, &mut connected).await?;
        }
        self.unclaim(&mut ready)?;
        Ok(summary)
    }

    /// Gives claimed actions that never started back to the queue, ready now, without
    /// counting an attempt or touching their last error.
    fn unclaim(&self, ready: &mut VecDeque<Claimed>) -> Result<(), StateError> {
        let back: Vec<Outcome> = ready
            .drain(..)
            .map(|c| Outcome::Retry {
                id: c.id,
                error: String::new(),
                ready_at: 0,
                failed: false,
            })
            .collect();
        self.queue.finish(&back)
    }

    /// How long to sleep when nothing else wakes us. `idle`: connected with a free worker and
    /// nothing claimed, so the next queued action's ready time counts.
    fn next_wake(
        &self,
        oldest_unacked: Option<Instant>,
        idle: bool,
    ) -> Result<Duration, StateError> {
        let mut wait = Duration::from_secs(1);
        if let Some(t) = oldest_unacked {
            wait = wait.min(self.cfg.ack_delay.saturating_sub(t.elapsed()));
        }
        if idle {
            if let Some(at) = self.queue.next_ready_at()? {
                wait = wait.min(Duration::from_millis(at.saturating_sub(now_ms())));
            }
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    /// Flushes the destination, then records the outcomes. A failed flush turns the
    /// successes back into retries: they were not proven durable.
    async fn acknowledge(
        &self,
        unacked: &mut Vec<Outcome>,
        connected: &mut bool,
    ) -> Result<(), StateError> {
        let batch = std::mem::take(unacked);
        let any_done = batch.iter().any(|o| matches!(o, Outcome::Done { .. }));
        let flushed = if any_done {
            self.conn.flush().await
        } else {
            Ok(())
        };
        self.record(batch, flushed, connected)
    }

    /// Records a batch of outcomes after its flush: a failed flush turns the successes back
    /// into retries.
    fn record(
        &self,
        batch: Vec<Outcome>,
        flushed: Result<(), ConnError>,
        connected: &mut bool,
    ) -> Result<(), StateError> {
        if let Err(e) = flushed {
            tracing::warn!(error = %e.message, "flush failed; actions will be replayed");
            self.status.set_error(&e.message);
            if e.kind == ErrorKind::ConnectionLost {
                *connected = false;
                self.status.connected.store(false, Ordering::Relaxed);
            }
            let retried: Vec<Outcome> = batch
                .into_iter()
                .map(|o| match o {
                    Outcome::Done { id, .. } => Outcome::Retry {
                        id,
                        error: e.message.clone(),
                        ready_at: 0,
                        failed: false,
                    },
                    other => other,
                })
                .collect();
            return self.queue.finish(&retried);
        }
        self.queue.finish(&batch)
    }

    /// The policy: what becomes of an executed action. `None` when nothing is to be recorded.
    fn outcome(
        &self,
        executed: Executed,
        connected: &mut bool,
        summary: &mut Summary,
    ) -> Result<Option<Outcome>, HandlerError> {
        let Executed {
            claimed,
            result,
            bytes,
        } = executed;
        let id = claimed.id;
        let error = match result {
            Ok(ledger) => {
                self.status.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                self.status.actions_done.fetch_add(1, Ordering::Relaxed);
                summary.done += 1;
                tracing::debug!(action = %claimed.action, bytes, "done");
                return Ok(Some(Outcome::Done { id, ledger }));
            }
            Err(e) => e,
        };
        self.status.set_error(&error.message);
        let outcome = match error.kind {
            ErrorKind::ConnectionLost => {
                if *connected {
                    tracing::warn!(error = %error.message, "connection lost; pausing");
                }
                *connected = false;
                self.status.connected.store(false, Ordering::Relaxed);
                Outcome::Retry {
                    id,
                    error: error.message,
                    ready_at: 0,
                    failed: false,
                }
            }
            ErrorKind::Setup => {
                if self.cfg.fail_on_setup_error {
                    return Err(HandlerError::Setup(error.message));
                }
                *connected = false;
                self.status.connected.store(false, Ordering::Relaxed);
                tracing::error!(error = %error.message, "destination refused us; will retry");
                Outcome::Retry {
                    id,
                    error: error.message,
                    ready_at: 0,
                    failed: false,
                }
            }
            ErrorKind::SourceMissing => match &claimed.action {
                // The move's remote source is gone (never sent, or removed by someone):
                // send the local target instead. The sends wait for this row's acknowledgement.
                Action::Move { from, to } => {
                    self.queue_fallback_sends(to)?;
                    self.delete_if_gone(to)?;
                    Outcome::Done {
                        id,
                        ledger: LedgerUpdate::Deleted(from.clone()),
                    }
                }
                // The local file is gone (its delete or move event covers it), or the path is
                // now a directory (a directory moved in or carried by a parent's rename):
                // send the files in it, if any.
                Action::Send(p) => {
                    self.queue_fallback_sends(p)?;
                    self.delete_if_gone(p)?;
                    Outcome::Done {
                        id,
                        ledger: LedgerUpdate::Stale(p.clone()),
                    }
                }
                Action::Delete(_) => Outcome::Done {
                    id,
                    ledger: LedgerUpdate::Unchanged,
                },
            },
            ErrorKind::Transient if claimed.attempts + 1 < self.cfg.max_attempts => {
                let delay = backoff(self.cfg.retry_base, self.cfg.retry_cap, claimed.attempts);
                tracing::warn!(action = %claimed.action, error = %error.message, retry_in = ?delay, "will retry");
                let ready_at = now_ms() + delay.as_millis() as u64;
                Outcome::Retry {
                    id,
                    error: error.message,
                    ready_at,
                    failed: true,
                }
            }
            ErrorKind::Transient | ErrorKind::Permanent => {
                tracing::error!(action = %claimed.action, error = %error.message, "parked as failed");
                self.status.actions_failed.fetch_add(1, Ordering::Relaxed);
                Outcome::Park {
                    id,
                    error: error.message,
                }
            }
        };
        Ok(Some(outcome))
    }

    /// Queues sends for the local files at `to` (a file or a directory), for a move whose
    /// remote source vanished.
    /// With complete-sync, queues the remote deletion of `path` when nothing is there
    /// locally: a send or move done remotely but not acknowledged before a crash leaves a
    /// copy the ledger does not know, which no catch-up scan would ever remove.
    fn delete_if_gone(&self, path: &RelPath) -> Result<(), StateError> {
        let local = path.under(&self.source_root);
        if self.cfg.complete_sync && std::fs::symlink_metadata(local).is_err() {
            self.queue
                .push(&[Entry::new(Action::Delete(path.clone()), 0)])?;
        }
        Ok(())
    }

    pub fn queue_fallback_sends(&self, to: &RelPath) -> Result<(), StateError> {
        let entries: Vec<Entry> = scan::local_files_within(&self.source_root, to, &self.filter)
            .into_iter()
            .map(|p| Entry::new(Action::Send(p), 0))
            .collect();
        if !entries.is_empty() {
            self.queue.push(&entries)?;
        }
        Ok(())
    }
}

/// Capped exponential backoff with jitter (50–100% of the step), so many clients that lost
/// the same server do not all come back at the same instant.
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let step = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    step.mul_f64(jitter)
}

/// What one worker task executes.
enum Batch {
    One(Claimed),
    /// Sends of files in one parent directory (its bytes; empty for the root).
    Sends(Vec<u8>, Vec<Claimed>),
}

/// The parent directory of a send's target (empty for the root); `None` for other actions.
fn send_dir(action: &Action) -> Option<Vec<u8>> {
    match action {
        Action::Send(p) => Some(
            p.parent()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// The next task's work. With `batch_max` 1, or when the oldest claimed action is not a send,
/// one action. Otherwise up to `batch_max` sends (a fair share of `ready` for `free` workers)
/// of files in one directory, preferring a directory no executing batch is working in:
/// creating and renaming files takes the directory's lock, so concurrent batches in the same
/// directory wait on each other. Claimed actions never touch related paths, so any order
/// among them is fine.
fn next_batch(
    ready: &mut VecDeque<Claimed>,
    batch_max: usize,
    free: usize,
    busy_dirs: &[Vec<u8>],
) -> Option<Batch> {
    let front = ready.front()?;
    if batch_max <= 1 || !matches!(front.action, Action::Send(_)) {
        return ready.pop_front().map(Batch::One);
    }
    let dir = ready
        .iter()
        .filter_map(|c| send_dir(&c.action))
        .find(|d| !busy_dirs.contains(d))
        .or_else(|| send_dir(&front.action))?;
    let share = ready.len().div_ceil(free.max(1)).clamp(1, batch_max);
    let mut batch = Vec::with_capacity(share);
    let mut rest = VecDeque::with_capacity(ready.len());
    for c in ready.drain(..) {
        if batch.len() < share && send_dir(&c.action).as_deref() == Some(dir.as_slice()) {
            batch.push(c);
        } else {
            rest.push_back(c);
        }
    }
    *ready = rest;
    Some(Batch::Sends(dir, batch))
}

/// Runs a batch of sends: stats each local file, then hands the files still there to the
/// destination in one [`Connection::send_batch`] call.
async fn execute_sends(
    conn: Arc<dyn Connection>,
    root: PathBuf,
    batch: Vec<Claimed>,
) -> Vec<Executed> {
    let mut results: Vec<Option<(Result<LedgerUpdate, ConnError>, u64)>> =
        Vec::with_capacity(batch.len());
    let mut items: Vec<(SourceFile, RelPath)> = Vec::with_capacity(batch.len());
    for claimed in &batch {
        let Action::Send(p) = &claimed.action else {
            unreachable!("a send batch holds sends only");
        };
        match SourceFile::stat(&p.under(&root)) {
            Ok(f) => {
                items.push((f, p.clone()));
                results.push(None);
            }
            // Gone, or a directory: settled in `outcome`.
            Err(e) => results.push(Some((Err(e), 0))),
        }
    }
    let mut sent = conn.send_batch(&items).await.into_iter();
    let mut items = items.into_iter();
    batch
        .into_iter()
        .zip(results)
        .map(|(claimed, done)| {
            let (result, bytes) = match done {
                Some(done) => done,
                None => {
                    let (file, p) = items.next().expect("one item per unsent claim");
                    let result = sent.next().unwrap_or_else(|| {
                        Err(ConnError::transient(format!(
                            "{p}: no result from send_batch"
                        )))
                    });
                    send_result(&file, p, result)
                }
            };
            Executed {
                claimed,
                result,
                bytes,
            }
        })
        .collect()
}

/// Runs one action against the destination.
async fn execute(conn: Arc<dyn Connection>, root: PathBuf, claimed: Claimed) -> Executed {
    let (result, bytes) = match &claimed.action {
        Action::Send(p) => send(&*conn, &root, p).await,
        Action::Delete(p) => (
            conn.delete(p)
                .await
                .map(|_| LedgerUpdate::Deleted(p.clone())),
            0,
        ),
        Action::Move { from, to } => match conn.rename(from, to).await {
            Ok(()) => (
                Ok(LedgerUpdate::Moved {
                    from: from.clone(),
                    to: to.clone(),
                }),
                0,
            ),
            Err(e) => (Err(e), 0),
        },
    };
    Executed {
        claimed,
        result,
        bytes,
    }
}

async fn send(
    conn: &dyn Connection,
    root: &Path,
    p: &RelPath,
) -> (Result<LedgerUpdate, ConnError>, u64) {
    let file = match SourceFile::stat(&p.under(root)) {
        Ok(f) => f,
        // Gone, or a directory: settled in `outcome`.
        Err(e) => return (Err(e), 0),
    };
    let result = conn.send(&file, p).await;
    send_result(&file, p.clone(), result)
}

/// The ledger update of a send's result.
fn send_result(
    file: &SourceFile,
    path: RelPath,
    result: Result<u64, ConnError>,
) -> (Result<LedgerUpdate, ConnError>, u64) {
    match result {
        Ok(bytes) => (
            Ok(LedgerUpdate::Sent {
                path,
                size: file.size,
                mtime_ns: mtime_ns(file.mtime),
            }),
            bytes,
        ),
        Err(e) if e.kind == ErrorKind::SourceMissing => (Ok(LedgerUpdate::Unchanged), 0),
        Err(e) => (Err(e), 0),
    }
}
