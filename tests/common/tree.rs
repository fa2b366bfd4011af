//! Reading what a tree holds and waiting for it: every file with its bytes, how two trees
//! differ, polling until a condition or a convergence holds. Comparing whole trees byte for
//! byte is how every end-to-end test decides that a destination mirrors its source.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::Scratch;

/// Every regular file under `root` with its content, keyed by raw relative path.
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(root).expect("under root");
            if let Ok(content) = std::fs::read(entry.path()) {
                out.insert(rel.as_os_str().as_bytes().to_vec(), content);
            }
        }
    }
    out
}

/// A short description of how two trees differ.
pub fn diff(want: &BTreeMap<Vec<u8>, Vec<u8>>, got: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut lines = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => lines.push(format!("missing {}", String::from_utf8_lossy(k))),
            Some(g) if g != v => lines.push(format!("differs {}", String::from_utf8_lossy(k))),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            lines.push(format!("extra {}", String::from_utf8_lossy(k)));
        }
    }
    lines.truncate(20);
    lines.join("; ")
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until dst holds exactly src's files (or a superset when `exact` is false).
///
/// Compares again every 10 ms, or after four times as long as the last comparison took when
/// that is longer (at most 50 ms, as [`wait_until`]): small trees are seen equal within
/// milliseconds of their last change, without a large tree's comparisons eating the CPU the
/// program under test needs.
pub fn wait_converged(
    src: &Path,
    dst: &Path,
    exact: bool,
    timeout: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let compared = Instant::now();
        let want = tree(src);
        let got = tree(dst);
        let good = if exact {
            want == got
        } else {
            want.iter().all(|(k, v)| got.get(k) == Some(v))
        };
        if good {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(diff(&want, &got));
        }
        let pause =
            (compared.elapsed() * 4).clamp(Duration::from_millis(10), Duration::from_millis(50));
        std::thread::sleep(pause);
    }
}

/// True when no temporary upload file is left anywhere under `root`.
pub fn no_temp_files(root: &Path) -> bool {
    tree(root).keys().all(|k| !is_temp_path(k))
}

/// Every regular file under `root`, by full path, sorted.
pub fn file_paths(root: &Path) -> Vec<PathBuf> {
    paths(root, true)
}

/// Every folder under `root` (not `root` itself), by full path, sorted.
pub fn dir_paths(root: &Path) -> Vec<PathBuf> {
    paths(root, false)
}

fn paths(root: &Path, files: bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            if files {
                e.file_type().is_file()
            } else {
                e.file_type().is_dir()
            }
        })
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// True for the name of a temporary upload (`.skynet-tmp.` prefix), given a path.
pub fn is_temp_path(rel: &[u8]) -> bool {
    let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
    name.starts_with(b".skynet-tmp.")
}

/// Regular files under `root`, temporary uploads left out.
pub fn count_files(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !is_temp_path(e.file_name().as_bytes()))
        .count()
}

/// Asserts that a `skynet sync` succeeded and left the destination equal to the source.
pub fn assert_synced(s: &Scratch, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, got) = (tree(&s.src), tree(&s.dst));
    assert_eq!(want, got, "{}", diff(&want, &got));
}
