//! The watcher: turns filesystem events (notify) into queued actions.
//!
//! notify's callback runs on its own thread and only forwards events into a crossbeam channel;
//! this module's thread drains the channel in batches (a few milliseconds, or many events),
//! has the `mapper` map them to actions by the table "events to actions" of the behaviour contract
//! (`docs/contract.md`), and files each batch in one
//! transaction. The mapper holds the rules (rename pairing, stale paths, removals), tested as a
//! table of cases; this module holds what needs a live watcher or time: the thread, batching,
//! the quiet detection and the scans. When native watching cannot start (for example the
//! inotify watch limit is reached), the watcher falls back to polling and says so. Lost events
//! (queue overflow) trigger a catch-up scan.

pub(crate) mod mapper;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

use crate::clock::Instant;
use crate::filter::Filter;
use crate::merge::Entry;
use crate::scan::{self, ScanOptions};
use crate::state::{meta, Queue};

pub use self::mapper::RENAME_PAIRING;
use self::mapper::{EventMapper, MapOptions};

/// How long the source must be quiet before the reconciling scan after a directory rename.
const RECONCILE_QUIET: Duration = Duration::from_secs(1);
/// How long events are gathered into one batch.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const BATCH_MAX: usize = 20_000;

/// What the watcher needs to know.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Queue deletes for files removed or moved out (see `ScanOptions::queue_deletes`).
    pub queue_deletes: bool,
    /// For the catch-up scans the watcher runs itself.
    pub gate: crate::gate::Gate,
    pub settle: Duration,
    /// Poll instead of native events (also the automatic fallback).
    pub poll: bool,
    pub poll_interval: Duration,
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: String,
    source: notify::Error,
}

/// A running watcher; dropping it (or [`Watcher::stop`]) ends its thread.
pub struct Watcher {
    /// Shared with the watcher thread, which asks it to watch again after lost events.
    _backend: Arc<std::sync::Mutex<Box<dyn notify::Watcher + Send>>>,
    stop: crossbeam_channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
    polling: bool,
}

impl Watcher {
    /// Starts watching `root` (canonical, absolute); actions go to `queue` and `wake` is
    /// notified after each batch.
    pub fn start(
        root: PathBuf,
        queue: Arc<Queue>,
        filter: Arc<Filter>,
        opts: WatchOptions,
        wake: Arc<Notify>,
    ) -> Result<Watcher, WatchError> {
        let (tx, rx) = crossbeam_channel::unbounded::<notify::Result<Event>>();
        let (backend, polling) = start_backend(&root, tx, &opts)?;
        let backend = Arc::new(std::sync::Mutex::new(backend));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let mut watch = WatchLoop::new(root.clone(), filter, opts);
        watch.polling = polling;
        let shared = Arc::clone(&backend);
        watch.set_rewatch(Box::new(move || {
            let mut backend = shared.lock().unwrap_or_else(|e| e.into_inner());
            backend.watch(&root, RecursiveMode::Recursive)
        }));
        let thread = std::thread::Builder::new()
            .name("skynet-watcher".into())
            .spawn(move || watch.run(rx, stop_rx, &queue, &wake))
            .map_err(|e| WatchError {
                path: "watcher thread".into(),
                source: notify::Error::io(e),
            })?;
        Ok(Watcher {
            _backend: backend,
            stop: stop_tx,
            thread: Some(thread),
            polling,
        })
    }

    /// True when running on the polling fallback.
    pub fn is_polling(&self) -> bool {
        self.polling
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Backend = (Box<dyn notify::Watcher + Send>, bool);

fn start_backend(
    root: &Path,
    tx: crossbeam_channel::Sender<notify::Result<Event>>,
    opts: &WatchOptions,
) -> Result<Backend, WatchError> {
    let err = |source| WatchError {
        path: root.display().to_string(),
        source,
    };
    // Never through a symlinked directory: a link inside the source may point anywhere, and
    // what lies there is not the source (invariant 10 of `docs/contract.md`).
    let config = notify::Config::default()
        .with_follow_symlinks(false)
        .with_poll_interval(opts.poll_interval);
    if !opts.poll {
        let native_tx = tx.clone();
        let native = notify::RecommendedWatcher::new(
            move |res| {
                let _ = native_tx.send(res);
            },
            config,
        );
        match native.and_then(|mut w| w.watch(root, RecursiveMode::Recursive).map(|_| w)) {
            Ok(w) => return Ok((Box::new(w), false)),
            Err(e) => tracing::warn!(
                path = %root.display(),
                error = %e,
                "native file watching failed (inotify watch limit?); falling back to polling every {:?}",
                opts.poll_interval
            ),
        }
    }
    let mut poller = notify::PollWatcher::new(
        move |res| {
            let _ = tx.send(res);
        },
        config,
    )
    .map_err(err)?;
    poller.watch(root, RecursiveMode::Recursive).map_err(err)?;
    Ok((Box::new(poller), true))
}

/// Whether an event reports a change. notify 8 also reports files being opened and closed
/// after reading: anyone reading the source (a backup tool, an indexer, a person looking at
/// photos) would otherwise keep the source from ever looking quiet, and the reconciling scan
/// after a directory rename would never run.
fn changes_something(ev: &notify::Result<Event>) -> bool {
    match ev {
        Ok(ev) => match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        Err(_) => true,
    }
}

impl WatchOptions {
    /// The part the mapper sees: it maps events and runs no scans, so it needs neither the
    /// gate nor how to poll.
    fn map_options(&self) -> MapOptions {
        MapOptions {
            queue_deletes: self.queue_deletes,
            settle: self.settle,
        }
    }
}

/// Watches the source again, adding watches for directories the backend does not know.
pub(crate) type Rewatch = Box<dyn FnMut() -> notify::Result<()> + Send>;

/// The watcher thread's state: the mapper, and when the scans it runs itself are due.
pub(crate) struct WatchLoop {
    mapper: EventMapper,
    root: PathBuf,
    filter: Arc<Filter>,
    opts: WatchOptions,
    /// A directory was renamed: notify may have misnamed events around it, so once the
    /// source is quiet and the queue drained, a catch-up scan reconciles (see `file`).
    reconcile_due: bool,
    last_event: Instant,
    /// Events were lost (or could not be queued): a catch-up scan is due.
    rescan: bool,
    /// Watching by polling: see [`WatchLoop::poll_compare`].
    polling: bool,
    last_compare: Instant,
    /// Called before the catch-up scan after lost events (see [`WatchLoop::set_rewatch`]).
    rewatch: Option<Rewatch>,
    /// What `status` was last told about a due scan ([`meta::SCAN_DUE`]); `None` before the
    /// first word, so that a value a killed run left behind is replaced.
    scan_due_shown: Option<bool>,
}

impl WatchLoop {
    /// The state of a watcher thread for the source at `root` (canonical, absolute), before
    /// any event; `start` runs it, the simulation drives it by hand.
    pub(crate) fn new(root: PathBuf, filter: Arc<Filter>, opts: WatchOptions) -> Self {
        WatchLoop {
            mapper: EventMapper::new(root.clone(), Arc::clone(&filter), opts.map_options()),
            root,
            filter,
            opts,
            reconcile_due: false,
            last_event: Instant::now(),
            rescan: false,
            polling: false,
            last_compare: Instant::now(),
            scan_due_shown: None,
            rewatch: None,
        }
    }

    /// How to watch the source again after lost events. Why: notify adds the watch of a new
    /// directory when it reads the directory's creation; when the kernel's queue overflowed,
    /// that event is among those lost, and nothing in the directory would ever be reported
    /// (found by the simulation, seed 66: a file created in `a/` after an overflow was never
    /// sent). Watching the root again adds the missing watches; the scan that follows finds
    /// what was made before they existed.
    pub(crate) fn set_rewatch(&mut self, rewatch: Rewatch) {
        self.rewatch = Some(rewatch);
    }

    fn run(
        &mut self,
        rx: Receiver<notify::Result<Event>>,
        stop: Receiver<()>,
        queue: &Queue,
        wake: &Notify,
    ) {
        loop {
            if stop.try_recv().is_ok() {
                return;
            }
            let mut out: Vec<Entry> = Vec::new();
            let first = rx.recv_timeout(Duration::from_millis(100));
            match first {
                Ok(ev) => {
                    if changes_something(&ev) {
                        self.last_event = Instant::now();
                    }
                    self.mapper.map(ev, &mut out);
                    let deadline = Instant::now() + BATCH_WINDOW;
                    let mut n = 1;
                    while n < BATCH_MAX {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(ev) => {
                                self.mapper.map(ev, &mut out);
                                n += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.file(out, queue, wake);
        }
    }

    /// Everything after a batch of events was mapped into `out`: renames whose "to" half
    /// never came become deletions, the batch is filed in one transaction, and the scans
    /// that are due run (reconciling after a directory rename, polling, lost events).
    fn file(&mut self, mut out: Vec<Entry>, queue: &Queue, wake: &Notify) {
        self.mapper.expire_renames(&mut out);
        self.reconcile_due |= self.mapper.take_dir_renamed();
        self.rescan |= self.mapper.take_lost_events();
        for link in self.mapper.take_links() {
            queue.note_skipped_link(&link);
        }
        if !out.is_empty() {
            tracing::trace!(batch = ?out.iter().map(|e| e.action.to_string()).collect::<Vec<_>>(), "queueing");
            match queue.push(&out) {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    // Events lost to a database error are recovered by a scan later.
                    tracing::error!(error = %e, "cannot queue events; will rescan");
                    self.rescan = true;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        if self.reconcile_due && self.last_event.elapsed() >= RECONCILE_QUIET {
            let idle = queue
                .counts()
                .map(|c| c.pending + c.in_flight + c.retrying == 0)
                .unwrap_or(false);
            if idle {
                self.reconcile_due = false;
                tracing::info!("reconciling after a directory rename");
                self.catch_up(queue, wake);
            }
        }
        if self.polling && self.last_compare.elapsed() >= self.opts.poll_interval {
            self.last_compare = Instant::now();
            self.poll_compare(queue, wake);
        }
        if self.rescan {
            self.rescan = false;
            tracing::warn!("the watcher lost events; running a catch-up scan");
            if let Some(rewatch) = self.rewatch.as_mut() {
                if let Err(e) = rewatch() {
                    tracing::warn!(error = %e, "cannot watch the source again after lost events; new folders may go unnoticed until the next catch-up scan");
                }
            }
            self.catch_up(queue, wake);
        }
        self.show_scan_due(queue);
    }

    /// Maps and files one batch of events, as `run` does with what it reads within one
    /// batch window. The simulation (`sim`) feeds its modelled kernel events through here.
    #[cfg(feature = "sim")]
    pub(crate) fn file_events(
        &mut self,
        events: Vec<notify::Result<Event>>,
        queue: &Queue,
        wake: &Notify,
    ) {
        let mut out = Vec::new();
        for ev in events {
            if changes_something(&ev) {
                self.last_event = Instant::now();
            }
            self.mapper.map(ev, &mut out);
        }
        self.file(out, queue, wake);
    }

    /// Nothing half-known: no rename waiting for its other half, no scan due.
    #[cfg(feature = "sim")]
    pub(crate) fn settled(&self) -> bool {
        self.mapper.settled() && !self.reconcile_due && !self.rescan
    }

    /// While polling, compares the source with the ledger once per poll interval when the
    /// queue is idle. Why: notify's poller compares mtimes in whole seconds (and not sizes),
    /// so an edit made within the second it last looked is never reported; the scan compares
    /// size and nanosecond mtime. It walks the tree as the poller does, so polling costs about
    /// twice as much, and only while nothing else is queued.
    fn poll_compare(&mut self, queue: &Queue, wake: &Notify) {
        let idle = queue
            .counts()
            .map(|c| c.pending + c.in_flight + c.retrying == 0)
            .unwrap_or(false);
        if !idle {
            return;
        }
        let opts = ScanOptions {
            queue_deletes: self.opts.queue_deletes,
            gate: self.opts.gate.clone(),
            settle: self.opts.settle,
            progress: false,
            siblings: None,
        };
        match scan::compare(&self.root, queue, &self.filter, &opts) {
            Ok(r) if r.sends + r.deletes > 0 => {
                tracing::debug!(
                    sends = r.sends,
                    deletes = r.deletes,
                    "polling: changes found by comparing with the ledger"
                );
                wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "polling: comparing with the ledger failed; next poll tries again")
            }
        }
    }

    /// Runs a catch-up scan of the whole source; on failure, tries again later.
    /// Tells `status` whether a catch-up scan is due: until it ran, the destination may still
    /// change though the queue is empty (a script waiting for "drained" waits for it too).
    fn show_scan_due(&mut self, queue: &Queue) {
        let due = self.reconcile_due || self.rescan;
        if self.scan_due_shown != Some(due) {
            match queue.set_meta(meta::SCAN_DUE, if due { "1" } else { "0" }) {
                Ok(()) => self.scan_due_shown = Some(due),
                Err(e) => tracing::warn!(error = %e, "cannot record whether a scan is due"),
            }
        }
    }

    fn catch_up(&mut self, queue: &Queue, wake: &Notify) {
        let opts = ScanOptions {
            queue_deletes: self.opts.queue_deletes,
            gate: self.opts.gate.clone(),
            settle: self.opts.settle,
            progress: false,
            siblings: None,
        };
        match scan::catch_up(&self.root, queue, &self.filter, &opts) {
            Ok(_) => wake.notify_one(),
            Err(e) => {
                tracing::error!(error = %e, "catch-up scan failed; will retry");
                self.rescan = true;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    /// Reading the source is no change: it must not keep the source from looking quiet
    /// (found by tests/convergence.rs after the notify 8 upgrade: the harness reading the
    /// tree every 50 ms starved the reconciling scan, and a file created under a directory's
    /// old name just after its rename was never sent).
    #[test]
    fn reads_are_not_changes() {
        let kinds = [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (EventKind::Access(AccessKind::Read), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true),
            (EventKind::Remove(notify::event::RemoveKind::File), true),
        ];
        for (kind, change) in kinds {
            assert_eq!(changes_something(&Ok(Event::new(kind))), change, "{kind:?}");
        }
    }
}
