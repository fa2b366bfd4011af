//! An in-memory destination that keeps the [`Connection`] contract the way the local folder
//! does (it passes the conformance suite): a send writes a temporary name beside its target
//! and renames it into place, replacing whatever stands there; a rename replaces its target;
//! a delete removes a file or a whole directory. Directories are kept as a filesystem keeps
//! them: made by a send or a rename for the target's parents, left behind (empty) when their
//! last file is deleted or renamed away, removed by a delete of the directory itself or by
//! [`Connection::remove_empty_dir`] while empty. So the simulation sees the empty directories
//! a filesystem destination would be left with.
//!
//! Each call takes simulated time (or at least yields), and a send yields between reading the
//! source, writing the temporary and renaming it: so the simulation can change the source,
//! run other workers or kill the engine in between.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::connection::{is_temp_name, Connection, RemoteEntry, SourceFile, TEMP_PREFIX};
use crate::error::ConnError;
use crate::relpath::RelPath;

/// The files of the destination, by path.
type Files = BTreeMap<RelPath, Vec<u8>>;

/// What the destination holds: files, and directories (every parent of a file is one).
#[derive(Default)]
struct Tree {
    files: Files,
    dirs: BTreeSet<RelPath>,
}

pub struct MemoryDestination {
    tree: Mutex<Tree>,
    /// Every content a send put in place, with the first path it went to: with versions on,
    /// each must still be somewhere at the end (see `check::nothing_lost`).
    placed: Mutex<BTreeMap<Vec<u8>, RelPath>>,
    latency: Duration,
    batch: usize,
    temps: AtomicU64,
}

impl MemoryDestination {
    /// An empty destination whose calls take `latency` each, asking for `batch` sends per
    /// `send_batch` call.
    pub fn new(latency: Duration, batch: usize) -> Self {
        MemoryDestination {
            tree: Mutex::default(),
            placed: Mutex::default(),
            latency,
            batch: batch.max(1),
            temps: AtomicU64::new(0),
        }
    }

    /// What the destination holds now, temporaries included.
    pub fn snapshot(&self) -> Files {
        self.lock().files.clone()
    }

    /// Every content a send put in place, with the first path it went to.
    pub fn placed(&self) -> Vec<(RelPath, Vec<u8>)> {
        let placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        placed.iter().map(|(b, p)| (p.clone(), b.clone())).collect()
    }

    /// The directories the destination holds now, empty or not.
    pub fn dirs(&self) -> BTreeSet<RelPath> {
        self.lock().dirs.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn pause(&self) {
        if self.latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// Keys of `map` at `path` or below it.
fn within<V>(map: &BTreeMap<RelPath, V>, path: &RelPath) -> Vec<RelPath> {
    map.range(path.clone()..)
        .map(|(p, _)| p)
        .take_while(|p| p.as_bytes().starts_with(path.as_bytes()))
        .filter(|p| p.is_within(path))
        .cloned()
        .collect()
}

/// Directories of `dirs` at `path` or below it.
fn dirs_within(dirs: &BTreeSet<RelPath>, path: &RelPath) -> Vec<RelPath> {
    dirs.range(path.clone()..)
        .take_while(|p| p.as_bytes().starts_with(path.as_bytes()))
        .filter(|p| p.is_within(path))
        .cloned()
        .collect()
}

impl Tree {
    /// Removes everything at `path` and below it.
    fn remove_within(&mut self, path: &RelPath) {
        for p in within(&self.files, path) {
            self.files.remove(&p);
        }
        for d in dirs_within(&self.dirs, path) {
            self.dirs.remove(&d);
        }
    }

    /// Clears the way for a file or directory at `path`, as the local folder does: files
    /// standing where its parents go become directories, and whatever is at `path` goes.
    fn clear_way(&mut self, path: &RelPath) {
        for a in path.ancestors() {
            self.files.remove(&a);
            self.dirs.insert(a);
        }
        self.remove_within(path);
    }

    /// Whether anything (a file or a directory) lies strictly below `dir`.
    fn holds_anything(&self, dir: &RelPath) -> bool {
        let below = |p: &RelPath| p.is_strictly_within(dir);
        within(&self.files, dir).iter().any(below) || dirs_within(&self.dirs, dir).iter().any(below)
    }
}

#[async_trait]
impl Connection for MemoryDestination {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn connect(&self) -> Result<(), ConnError> {
        Ok(())
    }

    fn send_batch_size(&self) -> usize {
        self.batch
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        let mut bytes = Vec::new();
        file.open()?
            .read_to_end(&mut bytes)
            .map_err(|e| ConnError::from_io(file.path.display(), &e))?;
        self.pause().await;
        let name = format!(
            "{TEMP_PREFIX}{:016x}",
            self.temps.fetch_add(1, Ordering::Relaxed)
        );
        let temp = match to.parent() {
            Some(p) => RelPath::from_bytes(&[p.as_bytes(), b"/", name.as_bytes()].concat()),
            None => RelPath::from_bytes(name.as_bytes()),
        }
        .map_err(|e| ConnError::permanent(format!("{to}: {e}")))?;
        {
            let mut tree = self.lock();
            tree.clear_way(&temp);
            tree.files.insert(temp.clone(), bytes);
        }
        self.pause().await;
        let mut tree = self.lock();
        if let Err(e) = file.check_unchanged() {
            tree.files.remove(&temp);
            return Err(e);
        }
        let Some(bytes) = tree.files.remove(&temp) else {
            return Err(ConnError::transient(format!(
                "{to}: the temporary file disappeared"
            )));
        };
        let n = bytes.len() as u64;
        tree.clear_way(to);
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bytes.clone())
            .or_insert_with(|| to.clone());
        tree.files.insert(to.clone(), bytes);
        Ok(n)
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.pause().await;
        self.lock().remove_within(path);
        Ok(())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.pause().await;
        if to.is_within(from) {
            return Err(ConnError::permanent(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let mut tree = self.lock();
        if !tree.files.contains_key(from) && !tree.dirs.contains(from) {
            return Err(ConnError::remote_missing(format!("{from}: not found")));
        }
        let files: Vec<(RelPath, Vec<u8>)> = within(&tree.files, from)
            .into_iter()
            .filter_map(|p| {
                let bytes = tree.files.remove(&p)?;
                Some((p.rebase(from, to)?, bytes))
            })
            .collect();
        let dirs: Vec<RelPath> = dirs_within(&tree.dirs, from)
            .into_iter()
            .filter_map(|d| {
                tree.dirs.remove(&d);
                d.rebase(from, to)
            })
            .collect();
        tree.clear_way(to);
        tree.files.extend(files);
        tree.dirs.extend(dirs);
        Ok(())
    }

    async fn remove_empty_dir(&self, dir: &RelPath) -> Result<bool, ConnError> {
        self.pause().await;
        let mut tree = self.lock();
        if tree.files.contains_key(dir) {
            return Ok(false);
        }
        if !tree.dirs.contains(dir) {
            return Ok(true);
        }
        if tree.holds_anything(dir) {
            return Ok(false);
        }
        tree.dirs.remove(dir);
        Ok(true)
    }

    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let files = &mut self.lock().files;
        let dirs: HashSet<Option<RelPath>> = near.iter().map(|p| p.parent()).collect();
        files.retain(|p, _| !(is_temp_name(p.file_name()) && dirs.contains(&p.parent())));
        Ok(())
    }

    /// Every temporary, including the files of a directory moved aside under a temp name
    /// (the contract's "directory moved aside"), not only files named as temps.
    async fn sweep_temps(&self, _queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let files = &mut self.lock().files;
        let before = files.len();
        files.retain(|p, _| !p.as_bytes().split(|b| *b == b'/').any(is_temp_name));
        Ok((before - files.len()) as u64)
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        Ok(self.lock().files.get(path).map(|b| b.len() as u64))
    }

    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        self.lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| ConnError::remote_missing(format!("{path}: not found")))
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        Ok(self
            .lock()
            .files
            .iter()
            .map(|(p, b)| RemoteEntry {
                path: p.clone(),
                size: b.len() as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_connection_contract() {
        let dest = MemoryDestination::new(Duration::ZERO, 1);
        let opts = crate::conformance::Options {
            removes_empty_dirs: true,
            writes_temps: true,
            ..Default::default()
        };
        crate::conformance::run(&dest, &opts).await;
    }

    /// A directory moved aside under a temp name goes with the sweep, as on a filesystem.
    #[tokio::test]
    async fn sweep_removes_a_directory_moved_aside() {
        let dest = MemoryDestination::new(Duration::ZERO, 1);
        let scratch = tempfile::tempdir().unwrap();
        let one = crate::conformance::local_file(scratch.path(), "one", b"1");
        let rel = crate::conformance::rel;
        let aside = format!("d/{TEMP_PREFIX}0123456789abcdef/inner/f");
        dest.send(&one, &rel(&aside)).await.unwrap();
        dest.send(&one, &rel("d/keep")).await.unwrap();
        assert_eq!(dest.sweep_temps(&HashSet::new()).await.unwrap(), 1);
        let left: Vec<RelPath> = dest
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(left, [rel("d/keep")]);
    }
}
