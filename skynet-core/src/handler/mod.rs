//! The handler: drains the queue through a [`Connection`].
//!
//! [`Handler::run`] is one loop over a `RunState`: connect (pausing with capped, jittered
//! backoff while the destination is unreachable), hand claimed actions to workers
//! (`workers`), acknowledge their results in batches after a durability barrier (`ack`),
//! look at directories complete-sync may have left empty while idle (`dirs`), and sleep
//! until a result, new work, a timer or a stop. Around it:
//!
//! - `execute` runs one action, or a batch of sends, against the [`Connection`], and
//!   decides from the local file, never from the destination's answer, whether a send's file
//!   vanished;
//! - `policy` turns each result into what the queue records: the whole error policy is one
//!   `match` from a classified [`ErrorKind`] to a decision;
//! - `fallback` files the repairs a result calls for (the local target of a move whose
//!   remote source is gone, the files of a path that became a directory);
//! - `status` holds the live figures `status` and metrics read, and the summary of a drain;
//!   `config` the tuning.
//!
//! The submodules never import this one: whatever they need from the handler is handed to
//! them, so the loop reads top-down here.

mod ack;
mod config;
mod dirs;
mod execute;
mod fallback;
mod policy;
mod status;
mod workers;

pub use config::HandlerConfig;
pub use status::{
    HandlerError, HandlerStatus, KindCounters, LatencyHistogram, LatencySnapshot, Summary,
};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::clock::{now_ms, Instant};
use crate::connection::Connection;
use crate::error::{ConnError, ErrorKind};
use crate::relpath::RelPath;
use crate::retry::backoff;
use crate::send_policy::SendPolicy;
use crate::source_root::SourceRoot;
use crate::state::{meta, Queue, StateError};

use ack::Acks;
use dirs::EmptyDirs;
use execute::Context;
use fallback::Repairs;
use policy::Policy;
use status::Link;
use workers::Workers;

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
        let mut st = RunState::new(self);
        // Directories filed by an earlier run (killed before it looked at them) are due.
        self.queue.request_dirs_check();
        self.clean_end.store(false, Ordering::SeqCst);
        loop {
            if st.should_end(*stop.borrow(), self.cfg.stop_grace) {
                break;
            }
            if !st.link.is_up() {
                self.pause(&mut st).await?;
            }
            if st.may_connect() && !self.connect(&mut st, &mut stop).await? {
                continue;
            }
            // Hand out work while there is room.
            if st.link.is_up() && !st.stopping() {
                st.work.hand_out()?;
            }
            if st.ack_due(&self.cfg) {
                st.acks.start()?;
                continue;
            }
            // Idle: nothing of this handler runs while it removes directories.
            if st.quiet() && !st.stopping() && st.dirs.wanted() {
                let stop = stop.clone();
                st.dirs.look(&mut st.link, move || *stop.borrow()).await?;
                continue;
            }
            if self.cfg.exit_when_drained && st.quiet() && self.drained(&mut st.summary)? {
                break;
            }
            self.wait(&mut st, &wake, &mut stop).await?;
        }
        self.finish(st).await
    }

    /// While disconnected: claimed work that has not started goes back to the queue, so that
    /// status shows it as waiting rather than in flight during the outage; results that came
    /// back before the pause are recorded once nothing executes.
    async fn pause(&self, st: &mut RunState) -> Result<(), StateError> {
        if st.work.has_ready() {
            st.work.unclaim()?;
        }
        if st.work.executing.is_empty() && st.acks.has_unacked() {
            st.acks.acknowledge_now(&mut st.link).await?;
        }
        Ok(())
    }

    /// Connects; `false` when that failed (after a backoff), or a sweep right after it lost
    /// the link again: the loop starts over.
    async fn connect(
        &self,
        st: &mut RunState,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, HandlerError> {
        if let Err(e) = self.conn.connect().await {
            self.connect_failed(st, e, stop).await?;
            return Ok(false);
        }
        st.link.connected();
        st.ever_connected = true;
        st.reconnect_attempt = 0;
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
        // One sweep attempt per run, after the first successful connect.
        if !st.swept {
            st.swept = true;
            self.sweep_if_due(&mut st.link).await?;
        }
        Ok(st.link.is_up())
    }

    /// A failed connect: gives up where `sync` says so (a refused setup, or a destination
    /// never reached), else waits out a capped, jittered backoff or a stop.
    async fn connect_failed(
        &self,
        st: &mut RunState,
        e: ConnError,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), HandlerError> {
        st.link.disconnect();
        self.status.set_error(&e.message);
        if e.kind == ErrorKind::Setup && self.cfg.fail_on_setup_error {
            return Err(HandlerError::Setup(e.message));
        }
        if !st.ever_connected
            && self
                .cfg
                .give_up_unreached_after
                .is_some_and(|n| st.reconnect_attempt + 1 >= n)
        {
            return Err(HandlerError::Setup(format!(
                "cannot reach the destination after {} attempts: {}",
                st.reconnect_attempt + 1,
                e.message
            )));
        }
        let delay = backoff(
            self.cfg.reconnect_base,
            self.cfg.reconnect_cap,
            st.reconnect_attempt,
        );
        st.reconnect_attempt = st.reconnect_attempt.saturating_add(1);
        tracing::warn!(error = %e.message, retry_in = ?delay, "cannot connect");
        tokio::select! {
            biased;
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
        Ok(())
    }

    /// `sync`: whether nothing is left to do (parked and held actions aside), recording
    /// those in `summary`.
    fn drained(&self, summary: &mut Summary) -> Result<bool, StateError> {
        let counts = self.queue.counts()?;
        if counts.pending + counts.retrying + counts.in_flight != 0 {
            return Ok(false);
        }
        summary.parked = counts.failed;
        summary.held = counts.held;
        summary.deletions_held = counts.deletions_held;
        Ok(true)
    }

    /// Waits for a result, new work, a timer, or a stop, and takes in what came back.
    async fn wait(
        &self,
        st: &mut RunState,
        wake: &Notify,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), HandlerError> {
        // The queue's next ready time only matters when a worker is idle with nothing to hand
        // it: a busy handler is woken by the next result anyway. (Asking SQLite after every
        // result scanned the whole queue each time: 64% of a 10,000-file sync.)
        let idle = st.link.is_up() && st.work.wants_work();
        let mut timer = self.next_wake(st.acks.timer(), idle)?;
        if let Some(at) = st.dirs.retry_at() {
            timer = timer.min(at.saturating_duration_since(Instant::now()));
        }
        let timer = timer.max(Duration::from_millis(1));
        // `biased`: polled in this order, so that a simulated run replays exactly (an
        // unbiased select draws its order from a random source nobody can seed).
        tokio::select! {
            biased;
            Some(flushed) = st.acks.next_flush(), if st.acks.is_flushing() => {
                st.acks.flush_ended(flushed, &mut st.link)?;
            }
            Some(joined) = st.work.executing.join_next(), if !st.work.executing.is_empty() => {
                match joined {
                    Ok(batch) => {
                        st.work.finished(&batch);
                        for executed in batch {
                            let outcome = self.judge().outcome(executed, &mut st.link, &mut st.summary)?;
                            st.acks.push(outcome);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "worker task failed"),
                }
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(timer) => {}
            _ = stop.changed() => {}
        }
        Ok(())
    }

    /// Stopping: the flush under way completes and its batch is recorded first; results that
    /// came back are acknowledged; whatever was claimed but not started goes back as a retry,
    /// ready now.
    async fn finish(&self, mut st: RunState) -> Result<Summary, HandlerError> {
        let mut rest = st.acks.finish(&mut st.link).await?;
        while let Some(Ok(batch)) = st.work.executing.try_join_next() {
            for executed in batch {
                rest.push(
                    self.judge()
                        .outcome(executed, &mut st.link, &mut st.summary)?,
                );
            }
        }
        // Tasks still running here are abandoned mid-action: a send may leave its temp.
        let abandoned = !st.work.executing.is_empty();
        st.work.executing.abort_all();
        if !rest.is_empty() {
            st.acks.acknowledge(rest, &mut st.link).await?;
        }
        st.work.unclaim()?;
        self.clean_end.store(!abandoned, Ordering::SeqCst);
        Ok(st.summary)
    }

    /// Where the fallback work of this mapping is filed (see `fallback`).
    fn repairs(&self) -> Repairs<'_> {
        Repairs {
            queue: &self.queue,
            root: &self.source_root,
            filter: &self.policy.filter,
            complete_sync: self.cfg.complete_sync,
        }
    }

    /// What becomes of executed actions (see `policy`).
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
}

/// What one `run` keeps between turns of its loop.
struct RunState {
    work: Workers,
    acks: Acks,
    /// Whether the destination is reachable: [`Link::disconnect`] is the one way to mark it
    /// lost, for the handler and for `status` at once.
    link: Link,
    dirs: EmptyDirs,
    /// Failed connects in a row, for the backoff.
    reconnect_attempt: u32,
    /// Reached the destination once in this run (`give_up_unreached_after` no longer counts).
    ever_connected: bool,
    /// When a stop was asked: executing actions get `stop_grace` to finish.
    stopping_since: Option<Instant>,
    /// The sweep for temporary files was tried (once per run).
    swept: bool,
    summary: Summary,
}

impl RunState {
    fn new(h: &Handler) -> Self {
        RunState {
            work: Workers::new(h.context(), h.cfg.workers),
            acks: Acks::new(
                Arc::clone(&h.conn),
                Arc::clone(&h.queue),
                Arc::clone(&h.status),
            ),
            link: Link::new(Arc::clone(&h.status)),
            dirs: EmptyDirs::new(
                Arc::clone(&h.conn),
                Arc::clone(&h.queue),
                h.source_root.clone(),
                h.source.clone(),
                Arc::clone(&h.status),
                h.cfg.retry,
            ),
            reconnect_attempt: 0,
            ever_connected: false,
            stopping_since: None,
            swept: false,
            summary: Summary::default(),
        }
    }

    /// Notes a stop request; true once it is time to leave the loop: nothing executes, or the
    /// grace period is over.
    fn should_end(&mut self, stop_requested: bool, grace: Duration) -> bool {
        if stop_requested && self.stopping_since.is_none() {
            self.stopping_since = Some(Instant::now());
        }
        self.stopping_since
            .is_some_and(|since| self.work.executing.is_empty() || since.elapsed() >= grace)
    }

    fn stopping(&self) -> bool {
        self.stopping_since.is_some()
    }

    /// Whether to start acknowledging the results so far (see [`Acks::due`]).
    fn ack_due(&self, cfg: &HandlerConfig) -> bool {
        let executing = !self.work.executing.is_empty();
        self.acks.due(cfg, executing, self.stopping())
    }

    /// Disconnected, not stopping, and nothing executing: (re)connect before handing out work.
    fn may_connect(&self) -> bool {
        !self.link.is_up() && !self.stopping() && self.work.executing.is_empty()
    }

    /// Connected with nothing claimed, executing or waiting for acknowledgement.
    fn quiet(&self) -> bool {
        self.link.is_up() && self.work.is_idle() && self.acks.is_empty()
    }
}
