//! The handler: drains the queue through a [`Connection`].
//!
//! - Up to `workers` actions execute at once; the queue only hands out actions whose older
//!   related actions are done, so per-path order holds.
//! - Results are acknowledged in batches: after [`Connection::flush`] succeeds, one
//!   transaction removes the rows and updates the ledger. Nothing is acknowledged before it is
//!   durable, and a crash before the acknowledgement just replays idempotent actions.
//! - The whole error policy is one `match` on [`ErrorKind`] (see `Handler::outcome`): a lost
//!   connection pauses everything and reconnects with capped, jittered backoff; a transient
//!   error retries the action with backoff and parks it after `max_attempts`; a permanent one
//!   parks it at once; others continue either way.
//! - Whether a send's local file vanished is decided here, by looking at the local file
//!   (`settle_by_local_file`), never from a destination's answer: a vanished send is
//!   neither done nor failed, it is counted apart (`vanished`).

mod batch;
mod config;
mod execute;
mod fallback;
mod policy;
mod status;

pub use config::HandlerConfig;
pub use status::{
    HandlerError, HandlerStatus, KindCounters, LatencyHistogram, LatencySnapshot, Summary,
};

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Instant;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::now_ms;
use crate::connection::Connection;
use crate::empty_dirs::{self, PassEnd};
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;
use crate::retry::backoff;
use crate::send_policy::SendPolicy;
use crate::source_root::SourceRoot;
use crate::state::meta;
use crate::state::{Claimed, Outcome, Queue, StateError};

use batch::{next_batch, send_dir, Batch};
use execute::{execute, execute_sends, Context, Executed};
use fallback::Repairs;
use policy::Policy;
use status::Link;

/// When the handler looks at the directories complete-sync may have to remove again, besides
/// when the queue asks (a deletion or rename acknowledged, a catch-up scan).
#[derive(Default)]
struct DirLook {
    /// After a failure: look again then.
    retry_at: Option<Instant>,
    /// Failures in a row, for the backoff.
    attempt: u32,
    /// Some waited for queued actions: look again once one more action has settled (the
    /// figure of [`DirLook::progress`] when they waited).
    waiting_at: Option<u64>,
}

impl DirLook {
    /// Actions settled so far (done, or vanished), to tell that one more has.
    fn progress(status: &HandlerStatus) -> u64 {
        status.actions_done.load(Ordering::Relaxed) + status.vanished.load(Ordering::Relaxed)
    }

    /// Whether it is time to look again: the retry delay passed, or an action settled since
    /// some directories waited for one.
    fn due(&mut self, status: &HandlerStatus) -> bool {
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_at = None;
            return true;
        }
        if self
            .waiting_at
            .is_some_and(|at| at != Self::progress(status))
        {
            self.waiting_at = None;
            return true;
        }
        false
    }
}

/// Drains one mapping's queue through one connection.
pub struct Handler {
    queue: Arc<Queue>,
    conn: Arc<dyn Connection>,
    source_root: PathBuf,
    cfg: HandlerConfig,
    status: Arc<HandlerStatus>,
    /// Includes, gates, send-once, deletes; its filter also serves fallback sends.
    policy: Arc<SendPolicy>,
    /// Targets of actions in flight when the previous run died, cleaned up after connecting.
    recovered: Mutex<Vec<RelPath>>,
    /// Set when `run` returned with no send abandoned mid-way (see [`Handler::ended_cleanly`]).
    clean_end: AtomicBool,
    /// The source root's identity, checked before every deletion.
    source: Option<Arc<SourceRoot>>,
}

impl Handler {
    pub fn new(
        queue: Arc<Queue>,
        conn: Arc<dyn Connection>,
        source_root: PathBuf,
        cfg: HandlerConfig,
        policy: Arc<SendPolicy>,
    ) -> Self {
        Handler {
            queue,
            conn,
            source_root,
            cfg,
            status: Arc::default(),
            policy,
            recovered: Mutex::new(Vec::new()),
            clean_end: AtomicBool::new(false),
            source: None,
        }
    }

    /// Checks `source` before every deletion (see [`crate::source_root`]).
    pub fn with_source_check(mut self, source: Arc<SourceRoot>) -> Self {
        self.source = Some(source);
        self
    }

    /// True when the last `run` stopped with nothing executing: no send was abandoned
    /// half-way, so it left no temporary file behind (as far as the handler can tell).
    pub fn ended_cleanly(&self) -> bool {
        self.clean_end.load(Ordering::SeqCst)
    }

    /// Sweeps the destination for temporary files when a sweep is due (`meta::SWEEP_TEMPS`,
    /// set by the engine after a run that died), keeping those a queued send may resume.
    /// Runs right after connecting, before any work is handed out, so it never races a send
    /// of this run. The flag is cleared only once a sweep completed; a failure leaves it for
    /// the next start. `Err` only for the state database.
    async fn sweep_if_due(&self, link: &mut Link) -> Result<(), StateError> {
        if self.queue.meta(meta::SWEEP_TEMPS)?.as_deref() != Some("1") {
            return Ok(());
        }
        let queued = self.queue.queued_sends()?;
        let started = Instant::now();
        match self.conn.sweep_temps(&queued).await {
            Ok(removed) => {
                tracing::info!(removed, elapsed = ?started.elapsed(), "swept temporary files left by a crash");
                self.queue.set_meta(meta::SWEEP_TEMPS, "0")?;
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "sweeping temporary files failed; will try again on the next start");
                if e.kind == ErrorKind::ConnectionLost {
                    link.disconnect();
                }
            }
        }
        Ok(())
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

    /// Publishes this handler's live figures into `status` (shared with a metrics exporter
    /// that outlives the handler) instead of a fresh one.
    pub fn with_status(mut self, status: Arc<HandlerStatus>) -> Self {
        self.status = status;
        self
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
        let mut link = Link::new(Arc::clone(&self.status));
        let mut reconnect_attempt: u32 = 0;
        let mut ever_connected = false;
        let mut stopping_since: Option<Instant> = None;
        // One sweep attempt per run, after the first successful connect.
        let mut swept = false;
        let mut dirs = DirLook::default();
        // Directories filed by an earlier run (killed before it looked at them) are due.
        self.queue.request_dirs_check();
        self.clean_end.store(false, Ordering::SeqCst);

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
            if !link.is_up() && !ready.is_empty() {
                self.unclaim(&mut ready)?;
            }
            // Results that came back before the pause are recorded now (a success whose flush
            // fails is retried), not left in flight while reconnecting.
            if !link.is_up() && executing.is_empty() && !unacked.is_empty() {
                self.acknowledge(&mut unacked, &mut link).await?;
                oldest_unacked = None;
            }

            // (Re)connect before handing out work.
            if !link.is_up() && stopping_since.is_none() && executing.is_empty() {
                match self.conn.connect().await {
                    Ok(()) => {
                        link.connected();
                        ever_connected = true;
                        reconnect_attempt = 0;
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
                        if !swept {
                            swept = true;
                            self.sweep_if_due(&mut link).await?;
                            if !link.is_up() {
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        link.disconnect();
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
                            biased;
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => {}
                        }
                        continue;
                    }
                }
            }

            // Hand out work while there is room.
            if link.is_up() && stopping_since.is_none() {
                if ready.len() < self.cfg.workers.max(window / 2) {
                    let want = window - ready.len();
                    ready.extend(self.queue.claim(want, now_ms())?);
                }
                while executing.len() < self.cfg.workers {
                    let free = self.cfg.workers - executing.len();
                    let Some(batch) = next_batch(&mut ready, batch_max, free, &busy_dirs) else {
                        break;
                    };
                    let cx = self.context();
                    match batch {
                        Batch::One(claimed) => {
                            executing.spawn(async move { vec![execute(cx, claimed).await] });
                        }
                        Batch::Sends(dir, claimed) => {
                            busy_dirs.push(dir);
                            executing.spawn(async move { execute_sends(cx, claimed).await });
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

            // Idle: look at the directories deletions and renames may have left empty at
            // the destination (see `empty_dirs`). Nothing of this handler runs meanwhile, so
            // none of its sends writes into a directory being removed.
            if link.is_up()
                && stopping_since.is_none()
                && executing.is_empty()
                && ready.is_empty()
                && unacked.is_empty()
                && flush_task.is_empty()
            {
                if dirs.due(&self.status) {
                    self.queue.request_dirs_check();
                }
                if self.queue.take_dirs_check() {
                    let stop = stop.clone();
                    self.remove_empty_dirs(&mut link, &mut dirs, move || *stop.borrow())
                        .await?;
                    continue;
                }
            }

            if self.cfg.exit_when_drained
                && executing.is_empty()
                && flush_task.is_empty()
                && ready.is_empty()
                && unacked.is_empty()
                && link.is_up()
            {
                let counts = self.queue.counts()?;
                if counts.pending + counts.retrying + counts.in_flight == 0 {
                    summary.parked = counts.failed;
                    summary.held = counts.held;
                    summary.deletions_held = counts.deletions_held;
                    break;
                }
            }

            // Wait for a result, new work, a timer, or a stop.
            // The queue's next ready time only matters when a worker is idle with nothing
            // to hand it: a busy handler is woken by the next result anyway. (Asking SQLite
            // after every result scanned the whole queue each time: 64% of a 10,000-file sync.)
            let idle = link.is_up() && ready.is_empty() && executing.len() < self.cfg.workers;
            let ack_timer = if flush_task.is_empty() {
                oldest_unacked
            } else {
                None
            };
            let mut timer = self.next_wake(ack_timer, idle)?;
            if let Some(at) = dirs.retry_at {
                timer = timer.min(at.saturating_duration_since(Instant::now()));
            }
            let timer = timer.max(Duration::from_millis(1));
            // `biased`: polled in this order, so that a simulated run replays exactly (an
            // unbiased select draws its order from a random source nobody can seed).
            tokio::select! {
                biased;
                Some(flushed) = flush_task.join_next(), if !flush_task.is_empty() => {
                    let flushed = flushed.unwrap_or_else(|e| {
                        Err(ConnError::transient(format!("flush task failed: {e}")))
                    });
                    self.record(std::mem::take(&mut flushing), flushed, &mut link)?;
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
                        unacked.push(self.judge().outcome(executed, &mut link, &mut summary)?);
                        oldest_unacked.get_or_insert_with(Instant::now);
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
            self.record(std::mem::take(&mut flushing), flushed, &mut link)?;
        }
        // Whatever was claimed but not started goes back as a retry, ready now.
        let mut rest: Vec<Outcome> = std::mem::take(&mut unacked);
        while let Some(Ok(batch)) = executing.try_join_next() {
            for executed in batch {
                rest.push(self.judge().outcome(executed, &mut link, &mut summary)?);
            }
        }
        // Tasks still running here are abandoned mid-action: a send may leave its temp.
        let abandoned = !executing.is_empty();
        executing.abort_all();
        if !rest.is_empty() {
            self.acknowledge(&mut rest, &mut link).await?;
        }
        self.unclaim(&mut ready)?;
        self.clean_end.store(!abandoned, Ordering::SeqCst);
        Ok(summary)
    }

    /// One look at the directories complete-sync may have to remove (see [`empty_dirs`]).
    /// A failure leaves them due: looked at again after a backoff, or after reconnecting.
    async fn remove_empty_dirs(
        &self,
        link: &mut Link,
        dirs: &mut DirLook,
        stopping: impl Fn() -> bool,
    ) -> Result<(), StateError> {
        let end = empty_dirs::remove_due(
            self.conn.as_ref(),
            &self.queue,
            &self.source_root,
            self.source.as_deref(),
            stopping,
        )
        .await?;
        match end {
            PassEnd::Done { waiting, .. } => {
                dirs.attempt = 0;
                dirs.retry_at = None;
                dirs.waiting_at = waiting.then(|| DirLook::progress(&self.status));
            }
            // The engine pauses the mapping meanwhile; until it does, look again shortly.
            PassEnd::SourceAway => {
                dirs.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            PassEnd::Failed(e) if e.kind == ErrorKind::ConnectionLost => {
                tracing::warn!(error = %e.message, "connection lost; pausing");
                self.status.set_error(&e.message);
                link.disconnect();
                self.queue.request_dirs_check();
            }
            PassEnd::Failed(e) => {
                let delay = self.cfg.retry.retry_delay(dirs.attempt);
                dirs.attempt = dirs.attempt.saturating_add(1);
                tracing::warn!(error = %e.message, retry_in = ?delay, "cannot remove a directory the source no longer has; will try again");
                self.status.set_error(&e.message);
                dirs.retry_at = Some(Instant::now() + delay);
            }
        }
        Ok(())
    }

    /// Where the fallback work of this mapping is filed (see [`fallback`]).
    fn repairs(&self) -> Repairs<'_> {
        Repairs {
            queue: &self.queue,
            root: &self.source_root,
            filter: &self.policy.filter,
            complete_sync: self.cfg.complete_sync,
        }
    }

    /// What becomes of executed actions (see [`policy`]).
    fn judge(&self) -> Policy<'_> {
        Policy {
            cfg: &self.cfg,
            status: &self.status,
            repairs: self.repairs(),
        }
    }

    fn context(&self) -> Context {
        Context {
            conn: Arc::clone(&self.conn),
            queue: Arc::clone(&self.queue),
            root: self.source_root.clone(),
            policy: Arc::clone(&self.policy),
            source: self.source.clone(),
        }
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
            // Only future ready times: an action ready now but not claimed waits behind one
            // in flight, and the handler woke every millisecond for it until that finished
            // (a busy loop of SQLite queries for the whole length of a slow upload; seen as
            // 60% of the simulation's time).
            let now = now_ms();
            if let Some(at) = self.queue.next_ready_after(now)? {
                wait = wait.min(Duration::from_millis(at.saturating_sub(now)));
            }
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    /// Flushes the destination, then records the outcomes. A failed flush turns the
    /// successes back into retries: they were not proven durable.
    async fn acknowledge(
        &self,
        unacked: &mut Vec<Outcome>,
        link: &mut Link,
    ) -> Result<(), StateError> {
        let batch = std::mem::take(unacked);
        let any_done = batch.iter().any(|o| matches!(o, Outcome::Done { .. }));
        let flushed = if any_done {
            self.conn.flush().await
        } else {
            Ok(())
        };
        self.record(batch, flushed, link)
    }

    /// Records a batch of outcomes after its flush: a failed flush turns the successes back
    /// into retries.
    fn record(
        &self,
        batch: Vec<Outcome>,
        flushed: Result<(), ConnError>,
        link: &mut Link,
    ) -> Result<(), StateError> {
        if let Err(e) = flushed {
            tracing::warn!(error = %e.message, "flush failed; actions will be replayed");
            self.status.set_error(&e.message);
            if e.kind == ErrorKind::ConnectionLost {
                link.disconnect();
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
}
