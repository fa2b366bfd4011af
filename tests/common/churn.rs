//! Disturbing a running `skynet`: a thread that keeps changing the source tree from a seed,
//! and a loop that starts a process and SIGKILLs it at random moments. Convergence after
//! either is what the crash and kill-loop tests assert.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{dir_paths, file_paths, Daemon, Rng};

/// A thread that keeps changing a source tree (create, rewrite, append, rename a file or a
/// folder, delete a file or a folder) for a bounded number of operations, from a seed.
pub struct Churn {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Churn {
    pub fn start(root: PathBuf, seed: u64, max_ops: usize, pause: Duration) -> Churn {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut done = 0;
            // With `SKYNET_TEST_KEEP`, every change is written beside the source, to trace a
            // failure back to the change that caused it.
            let mut journal = std::env::var_os("SKYNET_TEST_KEEP").and_then(|_| {
                let path = root.parent()?.join("churn.txt");
                std::fs::File::create(path).ok()
            });
            while done < max_ops && !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let what = churn_once(&root, &mut rng, done);
                if let Some(j) = journal.as_mut() {
                    use std::io::Write;
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    let _ = writeln!(j, "{at:.6} {done} {what}");
                }
                done += 1;
                std::thread::sleep(pause);
            }
            done
        });
        Churn {
            stop,
            handle: Some(handle),
        }
    }

    /// True once the writer has done all its operations.
    pub fn is_finished(&self) -> bool {
        match &self.handle {
            Some(h) => h.is_finished(),
            None => true,
        }
    }

    /// Stops the writer and returns how many operations it made.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("writer thread"))
            .unwrap_or(0)
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn pick(paths: &[PathBuf], rng: &mut Rng) -> Option<PathBuf> {
    if paths.is_empty() {
        None
    } else {
        Some(paths[rng.below(paths.len() as u64) as usize].clone())
    }
}

/// One random change under `root`. Errors are ignored: the tree is only changed by this
/// thread, but a pick may go stale (a folder removed with its files).
fn churn_once(root: &Path, rng: &mut Rng, step: usize) -> String {
    let body = |rng: &mut Rng| -> Vec<u8> {
        let len = rng.below(6000) as usize;
        let seed = rng.next_u64();
        (0..len)
            .map(|i| (seed.wrapping_add(i as u64 * 31) % 251) as u8)
            .collect()
    };
    let dir_name = |rng: &mut Rng| format!("c{}", rng.below(6));
    match rng.below(100) {
        0..=29 => {
            let dir = match rng.below(3) {
                0 => root.to_path_buf(),
                1 => root.join(dir_name(rng)),
                _ => root.join(dir_name(rng)).join(dir_name(rng)),
            };
            let _ = std::fs::create_dir_all(&dir);
            let f = dir.join(format!("n{step}-{}", rng.below(1000)));
            let r = std::fs::write(&f, body(rng));
            format!("create {} {r:?}", f.display())
        }
        30..=49 => {
            if let Some(f) = pick(&file_paths(root), rng) {
                let r = std::fs::write(&f, body(rng));
                return format!("write {} {r:?}", f.display());
            }
            "write nothing".to_string()
        }
        50..=59 => {
            if let Some(f) = pick(&file_paths(root), rng) {
                use std::io::Write;
                if let Ok(mut h) = std::fs::OpenOptions::new().append(true).open(&f) {
                    let r = h.write_all(&body(rng));
                    return format!("append {} {r:?}", f.display());
                }
            }
            "append nothing".to_string()
        }
        60..=74 => {
            if let Some(f) = pick(&file_paths(root), rng) {
                let dirs = dir_paths(root);
                let to_dir = pick(&dirs, rng).unwrap_or_else(|| root.to_path_buf());
                let to = to_dir.join(format!("r{step}"));
                let r = std::fs::rename(&f, &to);
                return format!("rename {} {} {r:?}", f.display(), to.display());
            }
            "rename nothing".to_string()
        }
        75..=82 => {
            if let Some(d) = pick(&dir_paths(root), rng) {
                let to = root.join(format!("dir{step}"));
                let r = std::fs::rename(&d, &to);
                return format!("rename-dir {} {} {r:?}", d.display(), to.display());
            }
            "rename-dir nothing".to_string()
        }
        83..=96 => {
            if let Some(f) = pick(&file_paths(root), rng) {
                let r = std::fs::remove_file(&f);
                return format!("remove {} {r:?}", f.display());
            }
            "remove nothing".to_string()
        }
        _ => {
            if let Some(d) = pick(&dir_paths(root), rng) {
                let r = std::fs::remove_dir_all(&d);
                return format!("remove-dir {} {r:?}", d.display());
            }
            "remove-dir nothing".to_string()
        }
    }
}

/// Starts a process with `start` and SIGKILLs it after a random 30-700 ms, `kills` times.
/// Each process must still be running when it is killed (a `run` never exits by itself).
pub fn kill_repeatedly(kills: usize, rng: &mut Rng, mut start: impl FnMut() -> Daemon) {
    for round in 0..kills {
        let mut daemon = start();
        std::thread::sleep(Duration::from_millis(rng.between(30, 700)));
        assert!(
            daemon.is_running(),
            "round {round}: skynet exited before it was killed: {}",
            daemon.log_text()
        );
        daemon.kill9();
    }
}
