//! One mapping, wired together: source folder, state database, watcher, scan, handler.
//!
//! `sync` = recover + catch-up scan + drain until empty. `run` = recover + start the watcher
//! (first, so nothing changed during the scan is missed) + catch-up scan + drain until told to
//! stop, writing a heartbeat to the database so `skynet status` in another process can show
//! whether the daemon is connected.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::clock::now_ms;
use crate::connection::Connection;
use crate::entries::{EntryCommand, EntryOptions, EntryRecorder, EntryStage};
use crate::filter::{Filter, FilterError};
use crate::gate::Gate;
use crate::guard::MaxDelete;
use crate::handler::{Handler, HandlerConfig, HandlerError, HandlerStatus, Summary};
use crate::handoff::{Handoff, HandoffOptions};
use crate::relpath::RelPath;
use crate::scan::{self, ScanError, ScanOptions};
use crate::send_policy::SendPolicy;
use crate::siblings::{self, SiblingFinder};
use crate::source_root::{SourceProblem, SourceRoot};
use crate::state::meta;
use crate::state::{Queue, StateError};
use crate::versions::{Versioned, VersionsDir};
use crate::watcher::WatchError;

mod heartbeat;
mod prune;
mod watching;

use heartbeat::file_id;
use watching::{Watched, SOURCE_POLL};

/// Everything that can end a mapping, each naming what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("source {0}")]
    Source(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Handler(#[from] HandlerError),
    /// The state database was deleted, replaced or became unwritable under a running daemon.
    #[error("{0}")]
    StateLost(String),
    /// The source root is missing or on another filesystem (`sync` exits 2; `run` pauses).
    #[error(transparent)]
    SourceUnavailable(#[from] SourceProblem),
}

/// Attempts `sync` makes to reach a destination it has not reached yet before giving up.
pub const SYNC_CONNECT_ATTEMPTS: u32 = 3;

/// The options of one mapping that the engine itself uses.
#[derive(Debug, Clone)]
pub struct MappingOptions {
    pub complete_sync: bool,
    /// How long a file must be unchanged before it is sent.
    pub settle: Duration,
    /// What `sync` holds as still changing: files modified less than this long ago. Zero
    /// unless the user set a settle time: a sync's scan is a snapshot, often run by a script
    /// right after it wrote its files, which would otherwise wait for the next run.
    pub sync_settle: Duration,
    pub excludes: Vec<String>,
    /// Poll the source instead of native events.
    pub poll: bool,
    pub poll_interval: Duration,
    pub handler: HandlerConfig,
    /// Progress display for the catch-up scan when stderr is a terminal.
    pub progress: bool,
    /// Send only files matching one of these globs (routing); empty: every file.
    pub include: Vec<String>,
    /// Excludes and includes match names whatever their case (`*.mkv` matches `a.MKV`).
    pub ignore_case: bool,
    /// Never send a delivered file again unless its content changes (see `send_policy`).
    pub send_once: bool,
    /// When files may be sent (`min_age`, dated names).
    pub gate: Gate,
    /// What happens after delivery (`remove_source`, `on_delivered`).
    pub handoff: HandoffOptions,
    /// The mass-deletion guard's limit (complete-sync; see [`crate::guard`]).
    pub max_delete: MaxDelete,
    /// Keep what the destination deletes or overwrites this long (see [`crate::versions`]);
    /// `None`: versions off.
    pub keep_versions: Option<Duration>,
    /// Where the versions go at the destination.
    pub versions_dir: VersionsDir,
}

impl Default for MappingOptions {
    fn default() -> Self {
        MappingOptions {
            complete_sync: false,
            settle: Duration::from_secs(1),
            sync_settle: Duration::ZERO,
            excludes: Vec::new(),
            poll: false,
            poll_interval: Duration::from_secs(2),
            handler: HandlerConfig::default(),
            progress: false,
            include: Vec::new(),
            ignore_case: false,
            send_once: false,
            gate: Gate::default(),
            handoff: HandoffOptions::default(),
            max_delete: MaxDelete::default(),
            keep_versions: None,
            versions_dir: VersionsDir::default(),
        }
    }
}

/// One source folder with its state database.
pub struct Mapping {
    source: PathBuf,
    queue: Arc<Queue>,
    /// The database file and its (device, inode) when opened, to notice it being replaced.
    db_path: PathBuf,
    db_id: Option<(u64, u64)>,
    /// The mapping's state directory; its parent holds the other mappings' (siblings).
    state_dir: PathBuf,
    filter: Arc<Filter>,
    opts: MappingOptions,
    /// The handler's live figures, kept across runs for metrics.
    status: Arc<HandlerStatus>,
    /// The command run per top-level entry (`--exec-per top-level`), see [`Mapping::per_entry`].
    entries: Option<Arc<dyn EntryCommand>>,
    /// The destination that keeps versions, for pruning (see [`Mapping::keeping_versions`]).
    versions: Option<Arc<Versioned<Arc<dyn Connection>>>>,
}

impl Mapping {
    /// Checks the source and opens (or creates) the state database in `state_dir`.
    pub fn open(
        source: &Path,
        state_dir: &Path,
        opts: MappingOptions,
    ) -> Result<Mapping, EngineError> {
        let source = canonical_source(source).or_else(|e| {
            // `run` may start while the source's disk is away: it waits for it (see `run`).
            std::path::absolute(source)
                .ok()
                .filter(|p| !p.exists())
                .ok_or(e)
        })?;
        std::fs::create_dir_all(state_dir).map_err(|source| StateError::Dir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let db_path = crate::state::database_path(state_dir);
        let queue = Arc::new(Queue::open(&db_path)?);
        let db_id = file_id(&db_path);
        let mut excludes = opts.excludes.clone();
        // A source file by that name would be mirrored into the versions folder.
        // Anchored at the root: a `.skynet-versions` folder deeper down is the user's.
        if opts.keep_versions.is_some() {
            excludes.push(opts.versions_dir.exclude_glob());
        }
        // Never mirror our own state when it lives inside the source.
        if let Ok(state) = state_dir.canonicalize() {
            if let Ok(rel) = state.strip_prefix(&source) {
                if !rel.as_os_str().is_empty() {
                    excludes.push(rel.display().to_string());
                }
            }
        }
        let filter =
            Arc::new(Filter::with_case(&excludes, opts.ignore_case)?.with_includes(&opts.include)?);
        // Other mappings of this source read them before removing a file (hand-off).
        let dated = opts.gate.dated.as_ref().map(|d| d.pattern());
        let globs = siblings::FilterGlobs {
            excludes: &excludes,
            includes: &opts.include,
            ignore_case: opts.ignore_case,
        };
        siblings::record_filters(&queue, &globs, dated)?;
        queue.set_handoff(opts.handoff.enabled().then_some(opts.handoff.delay));
        // Only deletions that reach the destination need the guard.
        queue.set_delete_guard(opts.complete_sync.then_some(opts.max_delete));
        // Only a mirror that propagates deletions removes the directories the source lost.
        queue.set_remove_empty_dirs(opts.complete_sync);
        Ok(Mapping {
            source,
            queue,
            db_path,
            db_id,
            state_dir: state_dir.to_path_buf(),
            filter,
            opts,
            status: Arc::default(),
            entries: None,
            versions: None,
        })
    }

    /// With `keep_versions` set, wraps `conn` so that what it would delete or overwrite is
    /// kept (see [`crate::versions`]); returns the destination to hand `sync` and `run`.
    pub fn keeping_versions(&mut self, conn: Arc<dyn Connection>) -> Arc<dyn Connection> {
        if self.opts.keep_versions.is_none() {
            return conn;
        }
        let versioned = Arc::new(Versioned::new(
            conn,
            Arc::clone(&self.queue),
            self.opts.versions_dir.clone(),
        ));
        self.versions = Some(Arc::clone(&versioned));
        versioned
    }

    /// Makes this a mapping whose `command` runs once per top-level entry of the source (see
    /// [`crate::entries`]). Returns the destination to hand `sync` and `run`: it records which
    /// entries changed, and the engine runs the command on them.
    pub fn per_entry(&mut self, command: Arc<dyn EntryCommand>) -> Arc<dyn Connection> {
        self.entries = Some(Arc::clone(&command));
        Arc::new(EntryRecorder::new(Arc::clone(&self.queue), command))
    }

    /// The stage that runs the per-entry command, when this is such a mapping.
    fn entry_stage(&self, settle: Duration, source: &Arc<SourceRoot>) -> Option<EntryStage> {
        let command = self.entries.as_ref()?;
        let h = &self.opts.handler;
        Some(EntryStage {
            queue: Arc::clone(&self.queue),
            command: Arc::clone(command),
            root: self.source.clone(),
            source: Some(Arc::clone(source)),
            opts: EntryOptions {
                settle,
                complete_sync: self.opts.complete_sync,
                retry: h.retry,
            },
        })
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Live figures of this mapping's handler (connection, counters, latency), for metrics.
    pub fn status(&self) -> Arc<HandlerStatus> {
        Arc::clone(&self.status)
    }

    /// Deletes are queued for complete-sync (to remove remotely) and for send-once (to
    /// drop the ledger row).
    fn queue_deletes(&self) -> bool {
        self.opts.complete_sync || self.opts.send_once
    }

    fn scan_options(&self, settle: Duration, gate: Gate) -> ScanOptions {
        ScanOptions {
            queue_deletes: self.queue_deletes(),
            gate,
            settle,
            progress: self.opts.progress,
            siblings: Some(self.siblings()),
        }
    }

    async fn scan(&self, settle: Duration, gate: Gate) -> Result<scan::ScanReport, EngineError> {
        let (root, queue, filter) = (
            self.source.clone(),
            Arc::clone(&self.queue),
            Arc::clone(&self.filter),
        );
        let opts = self.scan_options(settle, gate);
        let report =
            tokio::task::spawn_blocking(move || scan::catch_up(&root, &queue, &filter, &opts))
                .await
                .map_err(|e| EngineError::Source(format!("scan task failed: {e}")))??;
        Ok(report)
    }

    /// The gates of a `sync` (and its dry run): the mapping's, plus the settle time.
    fn sync_gate(&self) -> Gate {
        Gate {
            still_changing: self.opts.sync_settle,
            ..self.opts.gate.clone()
        }
    }

    fn handler(&self, conn: Arc<dyn Connection>, mut cfg: HandlerConfig, gate: Gate) -> Handler {
        cfg.complete_sync = self.opts.complete_sync;
        let policy = SendPolicy {
            filter: Arc::clone(&self.filter),
            gate,
            send_once: self.opts.send_once,
            // Without complete-sync, the only deletes queued outside send-once come from
            // merged moves (a renamed file's old name), which must reach the destination.
            remote_deletes: self.opts.complete_sync || !self.opts.send_once,
        };
        Handler::new(
            Arc::clone(&self.queue),
            conn,
            self.source.clone(),
            cfg,
            Arc::new(policy),
        )
        .with_status(Arc::clone(&self.status))
    }

    /// The hand-off worker, when deliveries need one.
    fn handoff(&self, conn: Arc<dyn Connection>) -> Option<Handoff> {
        self.opts.handoff.enabled().then(|| Handoff {
            queue: Arc::clone(&self.queue),
            conn,
            root: self.source.clone(),
            opts: self.opts.handoff.clone(),
            siblings: self.opts.handoff.remove_source.then(|| self.siblings()),
        })
    }

    /// Where the other mappings of this source keep their state: beside this one's.
    fn siblings(&self) -> SiblingFinder {
        SiblingFinder {
            state_root: self
                .state_dir
                .parent()
                .unwrap_or(&self.state_dir)
                .to_path_buf(),
            own_dir: self.state_dir.clone(),
            source: self.source.clone(),
        }
    }

    /// Records that a run starts, and whether the previous one died (a row was in flight, or
    /// it never recorded a clean end): then a sweep for temporary files is due.
    ///
    /// Trade-off: a sweep walks the whole destination tree (one listing per remote
    /// directory), which on a large tree costs about as much as a full listing. It is paid
    /// only after a crash, never on an ordinary start; in exchange, no temporary file left by a
    /// crash survives, wherever renames have carried it since.
    fn mark_started(&self, recovered: &[RelPath]) -> Result<(), StateError> {
        mark_started(&self.queue, recovered)
    }

    /// Records a clean end, unless the handler abandoned sends or the connection knows of
    /// temporaries it could not remove: then the next start sweeps.
    fn mark_ended(&self, handler: &Handler, conn: &dyn Connection) -> Result<(), StateError> {
        mark_ended(&self.queue, handler, conn)
    }

    /// The source root, checked against the identity recorded on first use.
    /// Also judges the deletions the guard holds again, under this start's limit.
    fn establish_source(&self) -> Result<Result<Arc<SourceRoot>, SourceProblem>, EngineError> {
        establish_source(&self.source, &self.queue)
    }

    /// Catch-up scan, then drain the queue, then return. A missing or unmounted source ends
    /// it with [`EngineError::SourceUnavailable`] before anything is deleted.
    pub async fn sync(&self, conn: Arc<dyn Connection>) -> Result<Summary, EngineError> {
        let source = self.establish_source()??;
        let recovered = self.queue.recover()?;
        self.mark_started(&recovered)?;
        // No watcher follows a sync's scan, so the settle time is a gate here: a file still
        // being written is held (named in `status`) and a later run sends it whole.
        self.scan(Duration::ZERO, self.sync_gate()).await?;
        let mut cfg = self.opts.handler.clone();
        cfg.exit_when_drained = true;
        cfg.fail_on_setup_error = true;
        cfg.give_up_unreached_after = Some(SYNC_CONNECT_ATTEMPTS);
        let handler = self
            .handler(Arc::clone(&conn), cfg, self.sync_gate())
            .with_source_check(Arc::clone(&source));
        handler.set_recovered(recovered);
        let (_tx, rx) = watch::channel(false);
        let mut summary = handler.run(Arc::new(Notify::new()), rx.clone()).await?;
        self.mark_ended(&handler, conn.as_ref())?;
        // Gone while draining: its deletions were held, not run; say so, as at the start.
        source.check()?;
        summary.versions_pruned = self.prune_versions(&rx).await;
        if let Some(stage) = self.entry_stage(self.opts.sync_settle, &source) {
            // Each sync tries the parked ones once more, as it does parked actions.
            self.queue.entries_revive()?;
            let report = stage.run(rx.clone(), true).await?;
            summary.entries_parked = report.parked;
            summary.entries_waiting = report.waiting;
            summary.done += report.done;
        }
        if let Some(handoff) = self.handoff(conn) {
            summary.handoff_parked = handoff.run(rx, true).await?;
        }
        Ok(summary)
    }

    /// What `sync --dry-run` would queue: the catch-up scan of a throw-away copy of the
    /// state database, with the guard's verdict. Nothing is connected, sent or recorded;
    /// what the destination holds is taken from the ledger.
    pub fn dry_run(&self) -> Result<Vec<crate::state::QueueRow>, EngineError> {
        let copy = self.queue.snapshot()?;
        SourceRoot::establish(&self.source, &copy)??;
        copy.recover()?;
        scan::catch_up(
            &self.source,
            &copy,
            &self.filter,
            &self.scan_options(Duration::ZERO, self.sync_gate()),
        )?;
        Ok(copy.rows()?)
    }

    /// Watches and mirrors until `stop` turns true. While the source is missing or on
    /// another filesystem (an unmounted disk), the mapping pauses: nothing is deleted, the
    /// pause is logged once and shown by `status`; when the source is back, the deletions
    /// filed meanwhile for files that are there are dropped, and it starts again with a
    /// catch-up scan.
    pub async fn run(
        &self,
        conn: Arc<dyn Connection>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Summary, EngineError> {
        let mut paused = false;
        loop {
            let source = match self.establish_source()? {
                Ok(source) => source,
                Err(problem) => {
                    if !paused {
                        tracing::warn!("{problem}; pausing this mapping");
                        self.queue.set_meta(meta::PAUSED, &problem.to_string())?;
                        paused = true;
                    }
                    self.queue
                        .set_meta(meta::HEARTBEAT, &now_ms().to_string())?;
                    self.queue
                        .set_meta(meta::PID, &std::process::id().to_string())?;
                    tokio::select! {
                        _ = tokio::time::sleep(SOURCE_POLL) => continue,
                        _ = stop.changed() => return Ok(Summary::default()),
                    }
                }
            };
            if paused {
                // Back: give a remount (or a copy) a moment, and resume only if it stays.
                tokio::select! {
                    _ = tokio::time::sleep(SOURCE_POLL) => {}
                    _ = stop.changed() => return Ok(Summary::default()),
                }
                if source.check().is_err() {
                    continue;
                }
                let root = source.path().to_path_buf();
                let dropped = self.queue.drop_deletes_of_present(false, |p| {
                    std::fs::symlink_metadata(p.under(&root)).is_ok()
                })?;
                tracing::info!(source = %root.display(), dropped_deletions = dropped, "the source is back; resuming with a catch-up scan");
            }
            self.queue.set_meta(meta::PAUSED, "")?;
            match self
                .run_watching(Arc::clone(&conn), stop.clone(), source)
                .await?
            {
                Watched::Stopped(summary) => return Ok(summary),
                Watched::SourceLost(problem) => {
                    tracing::warn!("{problem}; pausing this mapping");
                    self.queue.set_meta(meta::PAUSED, &problem.to_string())?;
                    paused = true;
                }
            }
        }
    }
}

/// See [`Mapping::establish_source`].
pub(crate) fn establish_source(
    root: &Path,
    queue: &Queue,
) -> Result<Result<Arc<SourceRoot>, SourceProblem>, EngineError> {
    let source = SourceRoot::establish(root, queue)?.map(Arc::new);
    if source.is_ok() {
        // A held deletion whose file is back (the user restored the folder) is obsolete.
        queue
            .drop_deletes_of_present(true, |p| std::fs::symlink_metadata(p.under(root)).is_ok())?;
        queue.rejudge_held_deletions()?;
    }
    Ok(source)
}

/// See [`Mapping::mark_started`] (shared with the simulation, which starts the engine's
/// parts itself).
pub(crate) fn mark_started(queue: &Queue, recovered: &[RelPath]) -> Result<(), StateError> {
    let died = !recovered.is_empty() || queue.meta(meta::RUNNING)?.as_deref() == Some("1");
    if died {
        tracing::info!("the previous run did not end cleanly; temporary files will be swept");
        queue.set_meta(meta::SWEEP_TEMPS, "1")?;
    }
    // Links are counted per run (see `links`): this run notices them afresh.
    queue.reset_skipped_links()?;
    queue.set_meta(meta::RUNNING, "1")
}

/// See [`Mapping::mark_ended`].
pub(crate) fn mark_ended(
    queue: &Queue,
    handler: &Handler,
    conn: &dyn Connection,
) -> Result<(), StateError> {
    if handler.ended_cleanly() && !conn.stranded_temps() {
        queue.set_meta(meta::RUNNING, "0")?;
    }
    Ok(())
}

fn canonical_source(source: &Path) -> Result<PathBuf, EngineError> {
    let canon = source
        .canonicalize()
        .map_err(|e| EngineError::Source(format!("{}: {e}", source.display())))?;
    if !canon.is_dir() {
        return Err(EngineError::Source(format!(
            "{}: not a directory",
            source.display()
        )));
    }
    Ok(canon)
}
