//! A deterministic simulation of the whole engine (feature `sim`), in the spirit of
//! FoundationDB's and TigerBeetle's simulators.
//!
//! A seed gives a history (`history`): changes to a real source folder (writes, renames onto
//! new and existing names, swaps and longer cycles, a file replaced by a directory and back,
//! deletions, moves in and out), the kernel events they raise as notify reports them
//! (`kernel`, with its quirks), and the engine's misfortunes: killed or restarted at any
//! step, a destination call refused, its reply lost, the link dropped, the engine killed in
//! the middle of a call, the watcher's queue overflowing. The real watcher mapping, queue,
//! ledger, scan and handler run it against an in-memory destination (`memory`) on one thread
//! in virtual time, so a seed replays exactly. After the history the engine drains, and the
//! behaviour contract is checked (`check`): convergence, no temporary files, the ledger
//! describing the destination, the queue bounded.
//!
//! A failure is minimised (steps dropped while the same invariant still breaks) and reported
//! with its seed; `SKYNET_SIM_SEED=N` replays that seed alone. `SKYNET_SIM_CASES=N` sets how
//! many seeds to run, `SKYNET_SIM_FIRST=N` where to start (default 1).

mod check;
mod driver;
mod faults;
mod history;
mod kernel;
mod memory;
mod world;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use check::Failure;
pub use faults::Faulty;
pub use history::{generate, Fault, Setup, Step, DIRS};
pub use memory::MemoryDestination;

use crate::connection::Connection;
use crate::relpath::RelPath;

/// Wall-clock time at the start of every simulated history (2026-01-01): fixed, so that a
/// history replays exactly.
const EPOCH_MS: u64 = 1_767_225_600_000;

/// Runs `steps` against the in-memory destination in virtual time; deterministic for a
/// given `seed` (which seeds the engine's retry jitter).
pub fn run_virtual(seed: u64, setup: &Setup, steps: &[Step]) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Failure::new("setup", e.to_string()))?;
    runtime.block_on(async {
        let _clock = crate::clock::simulate(EPOCH_MS, seed);
        let dest = Arc::new(MemoryDestination::new(
            Duration::from_millis(setup.latency_ms),
            setup.send_batch,
        ));
        let memory = Arc::clone(&dest);
        let dirs: DirLister = Box::new(move || memory.dirs());
        let memory = Arc::clone(&dest);
        let placed: PlacedLister = Box::new(move || memory.placed());
        driver::run(setup, steps, dest, Some(dirs), Some(placed)).await
    })
}

/// Runs `steps` in real time against `dest` (a real server's destination, empty): the same
/// histories, with the machine's timing. Call it inside a tokio runtime.
pub async fn run_real(
    setup: &Setup,
    steps: &[Step],
    dest: Arc<dyn Connection>,
) -> Result<(), Failure> {
    driver::run(setup, steps, dest, None, None).await
}

/// Lists every content a send put in place at the destination, with the first path it went to.
pub type PlacedLister = Box<dyn Fn() -> Vec<(RelPath, Vec<u8>)> + Send + Sync>;

/// Lists the directories a destination holds, as paths relative to its root (the
/// [`Connection`] trait lists files only).
pub type DirLister = Box<dyn Fn() -> BTreeSet<RelPath> + Send + Sync>;

/// [`run_real`], also checking, with complete-sync, that no directory is left at the
/// destination where the source has none; `dirs` lists them (for a server whose files live on
/// this machine: the SFTP server's folder, s3s-fs's data directory).
pub async fn run_real_listing_dirs(
    setup: &Setup,
    steps: &[Step],
    dest: Arc<dyn Connection>,
    dirs: DirLister,
) -> Result<(), Failure> {
    driver::run(setup, steps, dest, Some(dirs), None).await
}

/// The history of `seed`, run in virtual time; a panic in the engine is a failure too.
pub fn run_seed(seed: u64) -> Result<(), Failure> {
    let (setup, steps) = generate(seed);
    run_caught(seed, &setup, &steps)
}

fn run_caught(seed: u64, setup: &Setup, steps: &[Step]) -> Result<(), Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_virtual(seed, setup, steps)
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(Failure::new("panic", why))
    })
}

/// A failing history, minimised.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub setup: Setup,
    /// The generated history's length.
    pub generated: usize,
    pub steps: Vec<Step>,
    pub failure: Failure,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation failed: seed {}", self.seed)?;
        writeln!(
            f,
            "  replay: SKYNET_SIM_SEED={} cargo test -p skynet-core --test simulation",
            self.seed
        )?;
        writeln!(f, "  {}", self.failure)?;
        writeln!(f, "  setup: {:?}", self.setup)?;
        writeln!(
            f,
            "  minimised history ({} of {} steps):",
            self.steps.len(),
            self.generated
        )?;
        for s in &self.steps {
            writeln!(f, "    {s:?}")?;
        }
        Ok(())
    }
}

/// Replays at most this many candidate histories while minimising.
const SHRINK_BUDGET: usize = 2_000;

/// Drops steps (halves, then quarters, … then single steps) and simplifies the setup while
/// the history still breaks the same invariant.
pub fn minimise(seed: u64, setup: &Setup, steps: &[Step], failure: &Failure) -> Report {
    let mut best = (setup.clone(), steps.to_vec(), failure.clone());
    let mut budget = SHRINK_BUDGET;
    let still_fails = |setup: &Setup, steps: &[Step], budget: &mut usize| -> Option<Failure> {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        match run_caught(seed, setup, steps) {
            Err(f) if f.invariant == failure.invariant => Some(f),
            _ => None,
        }
    };
    let mut chunk = best.1.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut shrunk = false;
        while i < best.1.len() {
            let mut candidate = best.1.clone();
            let end = (i + chunk).min(candidate.len());
            candidate.drain(i..end);
            if let Some(f) = still_fails(&best.0, &candidate, &mut budget) {
                best = (best.0.clone(), candidate, f);
                shrunk = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !shrunk {
            break;
        }
        if !shrunk {
            chunk = chunk.div_ceil(2);
        }
        if budget == 0 {
            break;
        }
    }
    // Simpler engines, when the failure survives them.
    let simpler: [fn(&mut Setup); 4] = [
        |s| s.workers = 1,
        |s| s.send_batch = 1,
        |s| s.latency_ms = 0,
        |s| s.settle_ms = 0,
    ];
    for simplify in simpler {
        let mut setup = best.0.clone();
        simplify(&mut setup);
        if setup != best.0 {
            if let Some(f) = still_fails(&setup, &best.1, &mut budget) {
                best = (setup, best.1.clone(), f);
            }
        }
    }
    Report {
        seed,
        setup: best.0,
        generated: steps.len(),
        steps: best.1,
        failure: best.2,
    }
}

/// Which seeds to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub first: u64,
    pub cases: u64,
    pub threads: usize,
}

impl Settings {
    /// From `SKYNET_SIM_SEED` (one seed), or `SKYNET_SIM_FIRST` and `SKYNET_SIM_CASES`
    /// (default `default_cases`), on every core.
    pub fn from_env(default_cases: u64) -> Settings {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        match var("SKYNET_SIM_SEED") {
            Some(seed) => Settings {
                first: seed,
                cases: 1,
                threads: 1,
            },
            None => Settings {
                first: var("SKYNET_SIM_FIRST").unwrap_or(1),
                cases: var("SKYNET_SIM_CASES").unwrap_or(default_cases),
                threads,
            },
        }
    }
}

/// What a run of many seeds found.
#[derive(Debug)]
pub struct Outcome {
    pub ran: u64,
    pub steps: u64,
    pub elapsed: Duration,
    /// The first failing seed found (the lowest among those seen), minimised.
    pub failure: Option<Report>,
}

/// Runs the seeds of `settings` on its threads; stops at the first failure and minimises it.
pub fn explore(settings: &Settings) -> Outcome {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let ran = AtomicU64::new(0);
    let steps = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<(u64, Failure)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..settings.threads.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= settings.cases {
                        return;
                    }
                    let seed = settings.first.wrapping_add(i);
                    let (setup, history) = generate(seed);
                    let result = run_caught(seed, &setup, &history);
                    ran.fetch_add(1, Ordering::Relaxed);
                    steps.fetch_add(history.len() as u64, Ordering::Relaxed);
                    if let Err(f) = result {
                        stop.store(true, Ordering::Relaxed);
                        let mut slot = failed.lock().unwrap_or_else(|e| e.into_inner());
                        if slot.as_ref().is_none_or(|(s, _)| seed < *s) {
                            *slot = Some((seed, f));
                        }
                    }
                }
            });
        }
    });
    let failure = failed
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .map(|(seed, f)| {
            let (setup, history) = generate(seed);
            minimise(seed, &setup, &history, &f)
        });
    Outcome {
        ran: ran.into_inner(),
        steps: steps.into_inner(),
        elapsed: started.elapsed(),
        failure,
    }
}
