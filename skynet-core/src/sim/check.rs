//! The behaviour contract's invariants, checked on a simulated mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use crate::clock::mtime_ns;
use crate::connection::{is_temp_name, Connection};
use crate::relpath::RelPath;
use crate::state::Queue;

/// Which invariant a history broke, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A short name (`convergence`, `temporary files`, `ledger`, `bounded queue`, …): the
    /// minimiser keeps a smaller history only when it breaks the same one.
    pub invariant: &'static str,
    pub detail: String,
}

impl Failure {
    pub(super) fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Failure {
            invariant,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// The regular files under `root`, with their content.
pub(super) fn local_files(root: &Path) -> BTreeMap<RelPath, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = RelPath::from_abs(root, e.path()).ok()?;
            Some((rel, std::fs::read(e.path()).ok()?))
        })
        .collect()
}

/// With versions on: every content a send put in place (`placed`) is still at the
/// destination, live or kept as a version. Whatever the history deleted, overwrote or
/// renamed over, nothing the destination held is gone.
pub(super) async fn nothing_lost(
    dest: &dyn Connection,
    placed: &[(RelPath, Vec<u8>)],
) -> Result<(), Failure> {
    let held: HashSet<Vec<u8>> = remote_files(dest).await?.into_values().collect();
    let lost: Vec<String> = placed
        .iter()
        .filter(|(_, bytes)| !held.contains(bytes))
        .map(|(path, bytes)| format!("{} bytes first sent to {path}", bytes.len()))
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(Failure::new("versions keep everything", lost.join("; ")))
    }
}

/// What the destination holds, through its own `list` and `read`.
pub(super) async fn remote_files(
    conn: &dyn Connection,
) -> Result<BTreeMap<RelPath, Vec<u8>>, Failure> {
    let broken = |e: crate::ConnError| Failure::new("destination readable", e.to_string());
    let mut out = BTreeMap::new();
    for entry in conn.list().await.map_err(broken)? {
        let bytes = conn.read(&entry.path).await.map_err(broken)?;
        out.insert(entry.path, bytes);
    }
    Ok(out)
}

/// At most one pending action per path, and the whole queue bounded by the paths the source
/// has held (invariant 3): one pending and one committed row per path at most.
pub(super) fn bounded_queue(queue: &Queue, paths_seen: usize) -> Result<(), Failure> {
    let rows = queue
        .rows()
        .map_err(|e| Failure::new("state database", e.to_string()))?;
    let mut pending: HashMap<&str, usize> = HashMap::new();
    for r in rows.iter().filter(|r| r.state == "pending") {
        *pending.entry(r.path.as_str()).or_default() += 1;
    }
    if let Some((path, n)) = pending.iter().find(|(_, n)| **n > 1) {
        return Err(Failure::new(
            "bounded queue",
            format!("{n} pending actions for {path}"),
        ));
    }
    if rows.len() > 2 * paths_seen.max(1) {
        return Err(Failure::new(
            "bounded queue",
            format!(
                "{} rows for {paths_seen} distinct paths: {:?}",
                rows.len(),
                rows.iter()
                    .map(|r| format!("{} {} {}", r.kind.as_str(), r.path, r.state))
                    .collect::<Vec<_>>()
            ),
        ));
    }
    Ok(())
}

/// After the drain: the queue is empty, the destination equals the source (or holds a
/// superset of it), holds no temporary file, and the ledger describes it. With complete-sync
/// and `dest_dirs` (the destination's directories, where the backend can list them), no
/// directory is left at the destination where the source has none: a deleted or renamed
/// folder's old name must not stay behind, even empty.
pub(super) async fn drained(
    root: &Path,
    queue: &Queue,
    dest: &dyn Connection,
    complete_sync: bool,
    dest_dirs: Option<BTreeSet<RelPath>>,
) -> Result<(), Failure> {
    let db = |e: crate::state::StateError| Failure::new("state database", e.to_string());
    let rows = queue.rows().map_err(db)?;
    if !rows.is_empty() {
        return Err(Failure::new(
            "drained",
            format!(
                "rows left: {:?}",
                rows.iter()
                    .map(|r| format!(
                        "{} {}{} {} ({})",
                        r.kind.as_str(),
                        r.from
                            .as_deref()
                            .map(|f| format!("{f} -> "))
                            .unwrap_or_default(),
                        r.path,
                        r.state,
                        r.last_error.as_deref().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
            ),
        ));
    }
    let local = local_files(root);
    let all = remote_files(dest).await?;
    let (temps, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = all.into_iter().partition(|(p, _)| {
        p.ancestors()
            .chain([p.clone()])
            .any(|a| is_temp_name(a.file_name()))
    });
    if !temps.is_empty() {
        return Err(Failure::new(
            "temporary files",
            format!(
                "{:?}",
                temps.keys().map(|p| p.display()).collect::<Vec<_>>()
            ),
        ));
    }
    let mut wrong = Vec::new();
    for (path, bytes) in &local {
        match remote.get(path) {
            None => wrong.push(format!("missing {path}")),
            Some(b) if b != bytes => wrong.push(format!(
                "{path}: {} bytes at the destination, {} locally (different content)",
                b.len(),
                bytes.len()
            )),
            Some(_) => {}
        }
    }
    if complete_sync {
        for path in remote.keys().filter(|p| !local.contains_key(*p)) {
            wrong.push(format!("extra {path}"));
        }
    }
    if !wrong.is_empty() {
        return Err(Failure::new("convergence", wrong.join("; ")));
    }
    if let Some(dirs) = dest_dirs.filter(|_| complete_sync) {
        let extra: Vec<String> = dirs
            .iter()
            .filter(|d| !std::fs::symlink_metadata(d.under(root)).is_ok_and(|m| m.is_dir()))
            .map(|d| d.display())
            .collect();
        if !extra.is_empty() {
            return Err(Failure::new(
                "directories",
                format!("left at the destination, not in the source: {extra:?}"),
            ));
        }
    }
    let ledger = queue.ledger().map_err(db)?;
    let mut wrong = Vec::new();
    for (path, entry) in &ledger {
        match remote.get(path) {
            Some(b) if entry.size.is_none_or(|size| size == b.len() as u64) => {}
            Some(b) => wrong.push(format!(
                "{path}: ledger says {:?} bytes, destination holds {}",
                entry.size,
                b.len()
            )),
            None if entry.size.is_none() => {}
            None => wrong.push(format!("{path}: in the ledger, not at the destination")),
        }
    }
    for path in remote.keys().filter(|p| !ledger.contains_key(*p)) {
        wrong.push(format!("{path}: at the destination, not in the ledger"));
    }
    for path in local.keys() {
        let meta = std::fs::symlink_metadata(path.under(root));
        let here = meta
            .ok()
            .and_then(|m| Some((m.len(), mtime_ns(m.modified().ok()?))));
        // A stale row claims nothing (the next catch-up scan sends the file again): the
        // engine marks rows stale when it cannot know, which costs an upload, never a file.
        let Some(recorded) = ledger
            .get(path)
            .map(|e| e.size.map(|size| (size, e.mtime_ns)))
        else {
            if here.is_some() {
                wrong.push(format!(
                    "{path}: the local file {here:?} is not in the ledger"
                ));
            }
            continue;
        };
        if recorded.is_some() && here != recorded {
            wrong.push(format!(
                "{path}: ledger has {recorded:?}, the local file {here:?}"
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(Failure::new("ledger", wrong.join("; ")));
    }
    Ok(())
}
