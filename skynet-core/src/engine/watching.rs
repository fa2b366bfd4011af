//! One stretch of `run` with the source present: the watcher, the handler, the hand-off
//! and per-entry stages, version pruning, the heartbeat and a check of the source root,
//! until told to stop or the source goes away (then `run` pauses the mapping).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::heartbeat::{heartbeat, StateWatch};
use super::prune::{prune_expired, PRUNE_EVERY};
use super::{EngineError, Mapping};
use crate::connection::Connection;
use crate::handler::Summary;
use crate::scan;
use crate::source_root::{SourceProblem, SourceRoot};
use crate::state::meta;
use crate::watcher::{WatchOptions, Watcher};

impl Mapping {
    /// One stretch of `run` with the source present.
    pub(super) async fn run_watching(
        &self,
        conn: Arc<dyn Connection>,
        stop: watch::Receiver<bool>,
        source: Arc<SourceRoot>,
    ) -> Result<Watched, EngineError> {
        let recovered = self.queue.recover()?;
        self.mark_started(&recovered)?;
        let wake = Arc::new(Notify::new());
        let watch_opts = WatchOptions {
            queue_deletes: self.queue_deletes(),
            gate: self.opts.gate.clone(),
            settle: self.opts.settle,
            poll: self.opts.poll,
            poll_interval: self.opts.poll_interval,
        };
        let watcher = Watcher::start(
            self.source.clone(),
            Arc::clone(&self.queue),
            Arc::clone(&self.filter),
            watch_opts,
            Arc::clone(&wake),
        )?;
        if watcher.is_polling() {
            tracing::warn!(source = %self.source.display(), "watching by polling");
        }
        let handler = self
            .handler(
                Arc::clone(&conn),
                self.opts.handler.clone(),
                self.opts.gate.clone(),
            )
            .with_source_check(Arc::clone(&source));
        handler.set_recovered(recovered);
        let status = handler.status();
        // The handler stops on the caller's stop, or when the heartbeat finds the state
        // database gone or unwritable (`lost` then says why).
        let (halt_tx, halt) = watch::channel(false);
        let halt_tx = Arc::new(halt_tx);
        let forward = {
            let (halt_tx, mut stop) = (Arc::clone(&halt_tx), stop.clone());
            tokio::spawn(async move {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        return;
                    }
                }
                let _ = halt_tx.send(true);
            })
        };
        let lost: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let handoff = self.handoff(Arc::clone(&conn)).map(|h| {
            let stop = halt.clone();
            tokio::spawn(async move { h.run(stop, false).await })
        });
        let entries = self.entry_stage(self.opts.settle, &source).map(|stage| {
            let stop = halt.clone();
            tokio::spawn(async move { stage.run(stop, false).await })
        });
        let pruning = match (&self.versions, self.opts.keep_versions) {
            (Some(versions), Some(keep)) => {
                let (versions, mut stop) = (Arc::clone(versions), halt.clone());
                Some(tokio::spawn(async move {
                    loop {
                        prune_expired(&versions, keep, &stop).await;
                        tokio::select! {
                            _ = tokio::time::sleep(PRUNE_EVERY) => {}
                            _ = stop.changed() => {}
                        }
                        if *stop.borrow() {
                            break;
                        }
                    }
                }))
            }
            _ => None,
        };
        let heartbeat = tokio::spawn(heartbeat(
            Arc::clone(&self.queue),
            Arc::clone(&status),
            halt.clone(),
            StateWatch {
                path: self.db_path.clone(),
                id: self.db_id,
                lost: Arc::clone(&lost),
                halt: Arc::clone(&halt_tx),
            },
        ));
        let source_lost: Arc<std::sync::Mutex<Option<SourceProblem>>> = Arc::default();
        let source_watch = tokio::spawn(watch_source(
            Arc::clone(&source),
            Arc::clone(&source_lost),
            Arc::clone(&halt_tx),
            halt.clone(),
        ));
        let stop = halt;
        let scan = {
            let wake = Arc::clone(&wake);
            let settle = self.opts.settle;
            let (root, queue, filter) = (
                self.source.clone(),
                Arc::clone(&self.queue),
                Arc::clone(&self.filter),
            );
            let opts = self.scan_options(settle, self.opts.gate.clone());
            tokio::task::spawn_blocking(move || {
                let result = scan::catch_up(&root, &queue, &filter, &opts);
                wake.notify_one();
                result
            })
        };
        let result = handler.run(Arc::clone(&wake), stop).await;
        watcher.stop();
        heartbeat.abort();
        if let Some(task) = pruning {
            task.abort();
        }
        forward.abort();
        source_watch.abort();
        if let Some(task) = handoff {
            match task.await {
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(EngineError::Source(format!("hand-off task failed: {e}"))),
                Ok(Ok(_)) => {}
            }
        }
        if let Some(task) = entries {
            match task.await {
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(EngineError::Source(format!("entry task failed: {e}"))),
                Ok(Ok(_)) => {}
            }
        }
        let lost = lost.lock().map(|l| l.clone()).unwrap_or(None);
        if let Some(why) = lost {
            return Err(EngineError::StateLost(why));
        }
        let _ = self.queue.set_meta(meta::CONNECTED, "0");
        let _ = self.queue.set_meta(meta::HEARTBEAT, "0");
        let lost_source = source_lost.lock().map(|l| l.clone()).unwrap_or(None);
        match scan.await {
            // The scan refuses a vanished root; that is the pause, not a failure.
            Ok(Err(_)) if lost_source.is_some() => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(EngineError::Source(format!("scan task failed: {e}"))),
            Ok(Ok(_)) => {}
        }
        let summary = result?;
        self.mark_ended(&handler, conn.as_ref())?;
        Ok(match lost_source {
            Some(problem) => Watched::SourceLost(problem),
            None => Watched::Stopped(summary),
        })
    }
}

/// How `run_watching` ended.
pub(super) enum Watched {
    Stopped(Summary),
    SourceLost(SourceProblem),
}

/// How often a paused mapping looks for its source, and a running one checks it is there.
pub(super) const SOURCE_POLL: Duration = Duration::from_millis(500);

/// Checks the source root twice a second while a mapping runs; when it goes missing or moves
/// to another filesystem, records why and stops the stretch (the handler also checks before
/// each deletion, so none runs in between).
async fn watch_source(
    source: Arc<SourceRoot>,
    lost: Arc<std::sync::Mutex<Option<SourceProblem>>>,
    halt: Arc<watch::Sender<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(problem) = source.check() {
            if let Ok(mut l) = lost.lock() {
                l.get_or_insert(problem);
            }
            let _ = halt.send(true);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(SOURCE_POLL) => {}
            _ = stop.changed() => return,
        }
    }
}
