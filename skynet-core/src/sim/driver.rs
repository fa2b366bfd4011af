//! Runs one history against the real engine parts: the watcher's event mapping fed by the
//! [`Kernel`] model, the SQLite queue and ledger, the catch-up scan, and the handler draining
//! through a [`Faulty`] destination. Started, stopped and killed as `skynet run` would be.
//!
//! Everything runs on one thread. In virtual time (tokio's paused clock, see
//! [`crate::clock`]) a history replays exactly; in real time (real servers) it is the same
//! history with the machine's timing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::check::{self, Failure};
use super::faults::Faulty;
use super::history::{Setup, Step};
use super::kernel::Kernel;
use super::world::World;
use super::{DirLister, PlacedLister};
use crate::connection::Connection;
use crate::engine;
use crate::filter::Filter;
use crate::gate::Gate;
use crate::handler::{Handler, HandlerConfig, HandlerError, Summary};
use crate::scan::{self, ScanOptions};
use crate::send_policy::SendPolicy;
use crate::state::Queue;
use crate::versions::{Versioned, VersionsDir};
use crate::watcher::{WatchLoop, WatchOptions};

/// How long the watcher waits between looks when nothing happens (as its real loop does).
const TICK: Duration = Duration::from_millis(100);
/// The drain gives up after this much (simulated) time.
const DRAIN_LIMIT: Duration = Duration::from_secs(3 * 3600);

type Running = JoinHandle<(Handler, Result<Summary, HandlerError>)>;

/// One start of the engine, until it is stopped or killed.
struct Started {
    /// Shared with the watcher loop, which watches again after lost events.
    kernel: Arc<Mutex<Kernel>>,
    watcher: WatchLoop,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    handler: Running,
}

struct Sim<'a> {
    setup: &'a Setup,
    root: PathBuf,
    queue: Arc<Queue>,
    filter: Arc<Filter>,
    faulty: Arc<Faulty>,
    world: World,
    engine: Option<Started>,
}

thread_local! {
    /// An empty state database with its schema: copied for each history, since running the
    /// migrations took a quarter of the simulation's time.
    static TEMPLATE: Option<Queue> = Queue::open_in_memory().ok();
}

fn fresh_queue() -> Result<Queue, Failure> {
    TEMPLATE.with(|t| match t {
        Some(template) => template.snapshot().map_err(state),
        None => Queue::open_in_memory().map_err(state),
    })
}

fn lock(kernel: &Mutex<Kernel>) -> std::sync::MutexGuard<'_, Kernel> {
    kernel.lock().unwrap_or_else(|e| e.into_inner())
}

fn state(e: impl std::fmt::Display) -> Failure {
    Failure::new("engine error", e.to_string())
}

/// Runs `steps` on a fresh source folder, mirrored to `dest` (which must start empty), then
/// drains and checks the invariants. `dirs`: lists the destination's directories, where it
/// can be (then with complete-sync none may be left that the source lacks).
pub(super) async fn run(
    setup: &Setup,
    steps: &[Step],
    dest: Arc<dyn Connection>,
    dirs: Option<DirLister>,
    placed: Option<PlacedLister>,
) -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("skynet-sim")
        .tempdir()
        .map_err(|e| Failure::new("setup", e.to_string()))?;
    let make = |name: &str| -> Result<PathBuf, Failure> {
        let p = dir.path().join(name);
        std::fs::create_dir(&p).map_err(|e| Failure::new("setup", e.to_string()))?;
        p.canonicalize()
            .map_err(|e| Failure::new("setup", e.to_string()))
    };
    let root = make("src")?;
    let outside = make("outside")?;
    let queue = Arc::new(fresh_queue()?);
    queue.set_remove_empty_dirs(setup.complete_sync);
    let excludes: Vec<String> = if setup.versions {
        vec![VersionsDir::default().exclude_glob()]
    } else {
        Vec::new()
    };
    let filter = Arc::new(Filter::new(&excludes).map_err(state)?);
    let mut sim = Sim {
        setup,
        root: root.clone(),
        queue,
        filter,
        faulty: Arc::new(Faulty::new(Arc::clone(&dest))),
        world: World::new(root, outside),
        engine: None,
    };
    sim.start()?;
    for step in steps {
        sim.step(step).await?;
        check::bounded_queue(&sim.queue, sim.world.paths_seen())?;
    }
    sim.drain().await?;
    sim.stop().await?;
    let dirs = dirs.map(|list| {
        list()
            .into_iter()
            .filter(|d| !(setup.versions && VersionsDir::default().holds(d.as_bytes())))
            .collect()
    });
    if setup.versions {
        let versioned = Versioned::new(
            Arc::clone(&dest),
            Arc::clone(&sim.queue),
            VersionsDir::default(),
        );
        check::drained(
            sim.world.root(),
            &sim.queue,
            &versioned,
            setup.complete_sync,
            dirs,
        )
        .await?;
        if let Some(placed) = placed {
            check::nothing_lost(dest.as_ref(), &placed()).await?;
        }
        return Ok(());
    }
    check::drained(
        sim.world.root(),
        &sim.queue,
        dest.as_ref(),
        setup.complete_sync,
        dirs,
    )
    .await
}

impl Sim<'_> {
    fn settle(&self) -> Duration {
        Duration::from_millis(self.setup.settle_ms)
    }

    /// Starts the engine as `run` does: recover what was in flight, watch, scan, drain.
    fn start(&mut self) -> Result<(), Failure> {
        let source = engine::establish_source(&self.root, &self.queue)
            .map_err(state)?
            .map_err(state)?;
        let recovered = self.queue.recover().map_err(state)?;
        engine::mark_started(&self.queue, &recovered).map_err(state)?;
        let kernel = Arc::new(Mutex::new(Kernel::watch(&self.root)));
        let mut watcher = WatchLoop::new(
            self.root.clone(),
            Arc::clone(&self.filter),
            WatchOptions {
                queue_deletes: self.setup.complete_sync,
                gate: Gate::default(),
                settle: self.settle(),
                poll: false,
                poll_interval: Duration::from_secs(1),
            },
        );
        {
            let (kernel, root) = (Arc::clone(&kernel), self.root.clone());
            watcher.set_rewatch(Box::new(move || {
                lock(&kernel).rewatch(&root);
                Ok(())
            }));
        }
        let cfg = HandlerConfig {
            workers: self.setup.workers,
            complete_sync: self.setup.complete_sync,
            ..HandlerConfig::default()
        };
        let policy = SendPolicy {
            filter: Arc::clone(&self.filter),
            ..SendPolicy::default()
        };
        let conn: Arc<dyn Connection> = if self.setup.versions {
            Arc::new(Versioned::new(
                self.faulty.clone(),
                Arc::clone(&self.queue),
                VersionsDir::default(),
            ))
        } else {
            self.faulty.clone()
        };
        let handler = Handler::new(
            Arc::clone(&self.queue),
            conn,
            self.root.clone(),
            cfg,
            Arc::new(policy),
        )
        .with_source_check(source);
        handler.set_recovered(recovered);
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let handler = {
            let wake = Arc::clone(&wake);
            tokio::spawn(async move {
                let result = handler.run(wake, stopped).await;
                (handler, result)
            })
        };
        scan::catch_up(
            &self.root,
            &self.queue,
            &self.filter,
            &ScanOptions {
                queue_deletes: self.setup.complete_sync,
                gate: Gate::default(),
                settle: self.settle(),
                progress: false,
                siblings: None,
            },
        )
        .map_err(state)?;
        wake.notify_one();
        self.engine = Some(Started {
            kernel,
            watcher,
            wake,
            stop,
            handler,
        });
        Ok(())
    }

    /// SIGKILL: nothing of this engine runs any more; committed state stays.
    async fn kill(&mut self) {
        if let Some(e) = self.engine.take() {
            self.faulty.kill();
            e.handler.abort();
            let _ = e.handler.await;
        }
    }

    /// SIGINT: the handler stops and records a clean end.
    async fn stop(&mut self) -> Result<(), Failure> {
        let Some(e) = self.engine.take() else {
            return Ok(());
        };
        let _ = e.stop.send(true);
        let mut running = e.handler;
        // A call that stands for the engine's death hangs forever, and the handler waits for
        // a flush under way to finish before it stops: the kill it stands for lands first.
        let joined = loop {
            tokio::select! {
                biased;
                joined = &mut running => break joined,
                _ = tokio::time::sleep(TICK) => {
                    if self.faulty.take_kill_request() {
                        self.faulty.kill();
                        running.abort();
                        let _ = running.await;
                        return Ok(());
                    }
                }
            }
        };
        let (handler, result) = joined.map_err(state)?;
        result.map_err(state)?;
        engine::mark_ended(&self.queue, &handler, self.faulty.as_ref()).map_err(state)
    }

    async fn restart_if_killed(&mut self) -> Result<(), Failure> {
        if self.faulty.take_kill_request() {
            self.kill().await;
            self.start()?;
        }
        Ok(())
    }

    /// The watcher reads what the kernel queued and files it.
    fn deliver(&mut self) {
        if let Some(e) = self.engine.as_mut() {
            let events = lock(&e.kernel).read();
            e.watcher.file_events(events, &self.queue, &e.wake);
        }
    }

    /// Time passes in watcher ticks; the engine works meanwhile.
    async fn wait(&mut self, total: Duration) -> Result<(), Failure> {
        let mut left = total;
        while !left.is_zero() {
            let d = left.min(TICK);
            tokio::time::sleep(d).await;
            left -= d;
            self.deliver();
            self.restart_if_killed().await?;
        }
        Ok(())
    }

    async fn step(&mut self, step: &Step) -> Result<(), Failure> {
        match step {
            Step::Deliver => self.deliver(),
            Step::Wait { ms } => {
                self.deliver();
                self.wait(Duration::from_millis(*ms as u64)).await?;
            }
            Step::Overflow => {
                if let Some(e) = self.engine.as_mut() {
                    lock(&e.kernel).overflow();
                }
            }
            Step::Kill => {
                self.kill().await;
                self.start()?;
            }
            Step::Restart => {
                self.stop().await?;
                self.start()?;
            }
            Step::Fail { skip, fault } => self.faulty.arm(*skip, *fault),
            change => {
                if let Some(e) = self.engine.as_mut() {
                    self.world.apply(change, &mut lock(&e.kernel));
                }
            }
        }
        self.restart_if_killed().await
    }

    /// Whether everything known has been done.
    fn idle(&self) -> Result<bool, Failure> {
        let Some(e) = self.engine.as_ref() else {
            return Ok(false);
        };
        let c = self.queue.counts().map_err(state)?;
        let dirs_due = self.queue.dirs_due().map_err(state)?;
        Ok(lock(&e.kernel).is_empty()
            && e.watcher.settled()
            && c.pending + c.in_flight + c.retrying + c.held == 0
            && dirs_due.is_empty())
    }

    /// Faults end; the engine works until nothing is left to do.
    async fn drain(&mut self) -> Result<(), Failure> {
        self.faulty.heal();
        let started = tokio::time::Instant::now();
        let mut quiet = 0;
        while quiet < 3 {
            self.deliver();
            self.wait(TICK).await?;
            quiet = if self.idle()? { quiet + 1 } else { 0 };
            if started.elapsed() > DRAIN_LIMIT {
                let rows = self.queue.rows().map_err(state)?;
                return Err(Failure::new(
                    "drained",
                    format!(
                        "still busy after {DRAIN_LIMIT:?}: {:?}",
                        rows.iter()
                            .map(|r| format!("{} {} {}", r.kind.as_str(), r.path, r.state))
                            .collect::<Vec<_>>()
                    ),
                ));
            }
        }
        Ok(())
    }
}
