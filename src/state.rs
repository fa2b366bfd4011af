//! Where each mapping keeps its state, and the lock that allows one daemon per mapping.
//!
//! Layout: `<state dir>/<name>/queue.sqlite` plus `<name>/lock`, where `<name>` is the
//! source folder's name and a hash of the (source, destination) pair, so two mappings of the
//! same folder to different destinations have separate queues and ledgers.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The state directory: `--state-dir`, `SKYNET_STATE_DIR`, or the user's state directory.
pub fn state_root(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let base = dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .context("no state directory could be found for this user; pass --state-dir")?;
    Ok(base.join("skynet"))
}

/// The per-mapping directory name: readable and stable.
pub fn mapping_name(source: &Path, destination: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_os_str().as_encoded_bytes());
    hasher.update([0u8]);
    hasher.update(destination.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stem: String = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{stem}-{hex}")
}

/// Every mapping directory under the state root (those holding a database).
pub fn mapping_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read state directory {}", root.display()))
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| skynet_core::queue::database_path(p).is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// An exclusive lock on a mapping, held while `run`, `sync` or `baseline` works on it.
pub struct MappingLock {
    _file: File,
}

impl MappingLock {
    pub fn acquire(dir: &Path, what: &str) -> Result<MappingLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(MappingLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another skynet is already running for {what} (state {}); stop it first",
                dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// True when a process holds the mapping's lock right now.
    pub fn is_held(dir: &Path) -> bool {
        let Ok(file) = OpenOptions::new().write(true).open(dir.join("lock")) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(_) => false,
        }
    }
}
