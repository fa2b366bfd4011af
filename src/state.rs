//! Where each mapping keeps its state, and the lock that allows one daemon per mapping.
//!
//! Layout: `<state dir>/<name>/queue.sqlite` plus `<name>/lock`, where `<name>` is the
//! source folder's name and a hash of the (source, destination) pair, so two mappings of the
//! same folder to different destinations have separate queues and ledgers.
//!
//! The state is private: it names every file, the destinations and the errors met. Directories
//! are created 0700 and files 0600; state an older version left looser is tightened on open,
//! with a warning ([`make_private`]).

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// Makes the mapping directory `dir` private before its database is opened: the directory
/// 0700, every file in it 0600, and the database created 0600 when missing (SQLite gives its
/// journal files the database's mode). Looser modes, left by older versions, are tightened
/// with one warning.
pub fn make_private(dir: &Path) -> Result<()> {
    let db = skynet_core::state::database_path(dir);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&db)
        .with_context(|| format!("cannot create {}", db.display()))?;
    let mut tightened = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read state directory {}", dir.display()))?;
    let files = entries.filter_map(|e| e.ok().map(|e| e.path()));
    for path in std::iter::once(dir.to_path_buf()).chain(files) {
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let want = if meta.is_dir() {
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want)).with_context(
                || format!("cannot make {} private (chmod {want:o})", path.display()),
            )?;
            tightened.push(path);
        }
    }
    if !tightened.is_empty() {
        tracing::warn!(
            state = %dir.display(),
            files = tightened.len(),
            "the state was readable by other users; tightened to owner-only"
        );
    }
    Ok(())
}

/// Refuses a mapping name that could not name a directory of its own, or could be taken for
/// a generated one.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "mapping name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        );
    }
    // `photos-0123456789ab` is how unnamed mappings' state is named (`mapping_name`).
    let generated = name.rsplit_once('-').is_some_and(|(stem, hex)| {
        !stem.is_empty() && hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if generated {
        bail!("mapping name {name:?} looks like the state of an unnamed mapping; choose another");
    }
    Ok(())
}

/// What a mapping taking over earlier state must share with it: a state directory holds
/// one route's queue and ledger, and taking another route's (same source and destination,
/// other includes) would send everything again, or mix two queues.
pub struct Successor<'a> {
    pub source: &'a Path,
    pub includes: &'a [String],
    pub dated: Option<&'a str>,
    /// The other mappings of the same config file: their state is never taken.
    pub siblings: &'a [String],
}

impl Successor<'_> {
    /// True when the state in `dir` may become this mapping's: recorded for the same source,
    /// with the same includes and `dated` pattern, named (if at all) by no sibling, and not
    /// in use. `destination`: the recorded destination must be this one too (a rename; state
    /// found under this destination's own key already names it).
    pub fn may_take(&self, dir: &Path, destination: Option<&str>) -> Result<bool> {
        use skynet_core::siblings::{META_DATED, META_INCLUDE};
        use skynet_core::state::meta;
        let db = skynet_core::state::database_path(dir);
        if !db.is_file() || MappingLock::is_held(dir) {
            return Ok(false);
        }
        let Ok(queue) = skynet_core::state::Queue::open(&db) else {
            return Ok(false);
        };
        let recorded = |key| queue.meta(key).map(Option::unwrap_or_default);
        let old_name = recorded(meta::NAME)?;
        Ok(recorded(meta::SOURCE)? == self.source.to_string_lossy()
            && destination.is_none_or(|d| recorded(meta::DESTINATION).is_ok_and(|r| r == d))
            && recorded(META_INCLUDE)? == self.includes.join("\n")
            && recorded(META_DATED)? == self.dated.unwrap_or_default()
            && !self.siblings.contains(&old_name))
    }

    /// The state directory of a named mapping that was renamed: the directories under `root`
    /// recorded under another name for the same destination that [`Self::may_take`] allows.
    /// Renamed and refiltered at once, a mapping starts afresh (its old state stays).
    pub fn renamed_from(&self, root: &Path, destination: &str) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for dir in mapping_dirs(root)? {
            let named = skynet_core::state::Queue::open(&skynet_core::state::database_path(&dir))
                .ok()
                .and_then(|q| q.meta(skynet_core::state::meta::NAME).ok().flatten())
                .is_some_and(|n| !n.is_empty());
            if named && self.may_take(&dir, Some(destination))? {
                found.push(dir);
            }
        }
        Ok(found)
    }
}

/// Another process holds a mapping's lock. `main` exits 3 for it rather than 2 (bad usage),
/// so a cron job can tell "the last run is still going" from a broken command line.
#[derive(Debug)]
pub struct Busy(String);

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Busy {}

/// Moves the state an earlier version kept under another name (`old`) to `new`, when only
/// the old one exists: the destination's identity was normalised, and its queued work must
/// not be forgotten.
pub fn adopt_legacy(old: &Path, new: &Path) -> Result<()> {
    if new.exists() || !skynet_core::state::database_path(old).is_file() {
        return Ok(());
    }
    if MappingLock::is_held(old) {
        return Err(Busy(format!(
            "another skynet is running with the state {} (an older version?); stop it first",
            old.display()
        ))
        .into());
    }
    std::fs::rename(old, new).with_context(|| {
        format!(
            "cannot move state {} to {}; move it by hand",
            old.display(),
            new.display()
        )
    })?;
    tracing::info!(from = %old.display(), to = %new.display(), "the mapping's state moved to its new name");
    Ok(())
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
        .filter(|p| skynet_core::state::database_path(p).is_file())
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
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(MappingLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Busy(format!(
                "another skynet is already running for {what} (state {}); stop it first",
                dir.display()
            ))
            .into()),
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
