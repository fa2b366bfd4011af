//! An in-memory destination that keeps the [`Connection`] contract the way the local folder
//! does (it passes the conformance suite): a send writes a temporary name beside its target
//! and renames it into place, replacing whatever stands there; a rename replaces its target;
//! a delete removes a file or a whole directory. Directories exist while files are in them.
//!
//! Each call takes simulated time (or at least yields), and a send yields between reading the
//! source, writing the temporary and renaming it: so the simulation can change the source,
//! run other workers or kill the engine in between.

use std::collections::{BTreeMap, HashSet};
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

pub struct MemoryDestination {
    files: Mutex<Files>,
    latency: Duration,
    batch: usize,
    temps: AtomicU64,
}

impl MemoryDestination {
    /// An empty destination whose calls take `latency` each, asking for `batch` sends per
    /// `send_batch` call.
    pub fn new(latency: Duration, batch: usize) -> Self {
        MemoryDestination {
            files: Mutex::default(),
            latency,
            batch: batch.max(1),
            temps: AtomicU64::new(0),
        }
    }

    /// What the destination holds now, temporaries included.
    pub fn snapshot(&self) -> Files {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn pause(&self) {
        if self.latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.latency).await;
        }
    }
}

/// Paths of `files` at `path` or below it.
fn within(files: &Files, path: &RelPath) -> Vec<RelPath> {
    files
        .range(path.clone()..)
        .map(|(p, _)| p)
        .take_while(|p| p.as_bytes().starts_with(path.as_bytes()))
        .filter(|p| p.is_within(path))
        .cloned()
        .collect()
}

/// Clears the way for a file or directory at `path`: files standing where its parents go
/// and whatever is at `path` itself.
fn clear_way(files: &mut Files, path: &RelPath) {
    for a in path.ancestors() {
        files.remove(&a);
    }
    for p in within(files, path) {
        files.remove(&p);
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
            let mut files = self.lock();
            clear_way(&mut files, &temp);
            files.insert(temp.clone(), bytes);
        }
        self.pause().await;
        let mut files = self.lock();
        if let Err(e) = file.check_unchanged() {
            files.remove(&temp);
            return Err(e);
        }
        let Some(bytes) = files.remove(&temp) else {
            return Err(ConnError::transient(format!(
                "{to}: the temporary file disappeared"
            )));
        };
        let n = bytes.len() as u64;
        clear_way(&mut files, to);
        files.insert(to.clone(), bytes);
        Ok(n)
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.pause().await;
        let mut files = self.lock();
        for p in within(&files, path) {
            files.remove(&p);
        }
        Ok(())
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.pause().await;
        if to.is_within(from) {
            return Err(ConnError::permanent(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let mut files = self.lock();
        let moving = within(&files, from);
        if moving.is_empty() {
            return Err(ConnError::remote_missing(format!("{from}: not found")));
        }
        let moved: Vec<(RelPath, Vec<u8>)> = moving
            .into_iter()
            .filter_map(|p| {
                let bytes = files.remove(&p)?;
                Some((p.rebase(from, to)?, bytes))
            })
            .collect();
        clear_way(&mut files, to);
        files.extend(moved);
        Ok(())
    }

    async fn cleanup(&self, near: &[RelPath]) -> Result<(), ConnError> {
        let mut files = self.lock();
        let dirs: HashSet<Option<RelPath>> = near.iter().map(|p| p.parent()).collect();
        files.retain(|p, _| !(is_temp_name(p.file_name()) && dirs.contains(&p.parent())));
        Ok(())
    }

    async fn sweep_temps(&self, _queued: &HashSet<RelPath>) -> Result<u64, ConnError> {
        let mut files = self.lock();
        let before = files.len();
        files.retain(|p, _| !is_temp_name(p.file_name()));
        Ok((before - files.len()) as u64)
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<u64>, ConnError> {
        Ok(self.lock().get(path).map(|b| b.len() as u64))
    }

    async fn read(&self, path: &RelPath) -> Result<Vec<u8>, ConnError> {
        self.lock()
            .get(path)
            .cloned()
            .ok_or_else(|| ConnError::remote_missing(format!("{path}: not found")))
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        Ok(self
            .lock()
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
        crate::conformance::run(&dest, &crate::conformance::Options::default()).await;
    }
}
