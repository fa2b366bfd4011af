//! Invariant 1 (convergence): random sequences of local changes, applied while the real
//! `skynet run` mirrors the folder, end with the destination equal to the source (with
//! complete-sync) or a superset of it (without), once the queue has drained. The changes
//! include renames onto existing names, swaps and 3-cycles through a temporary name (files
//! and directories), and files replaced by directories and back (`rm f; mkdir f; write f/x`,
//! `rm -rf d; write d`, both within one burst), at every depth of the tree.

mod common;
use common::*;

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: u8,
        name: u8,
        len: u16,
    },
    Write {
        pick: u8,
        len: u16,
    },
    Append {
        pick: u8,
        len: u8,
    },
    Truncate {
        pick: u8,
    },
    RenameFile {
        pick: u8,
        dir: u8,
        name: u8,
    },
    RenameDir {
        pick: u8,
        name: u8,
    },
    Delete {
        pick: u8,
    },
    DeleteDir {
        pick: u8,
    },
    Pause {
        ms: u8,
    },
    /// Renames a file onto another existing file (replacing it).
    RenameOnto {
        pick: u8,
        onto: u8,
    },
    /// Swaps two files (or two directories) through a temporary name: `mv a t; mv b a; mv t b`.
    Swap {
        pick: u8,
        other: u8,
        dirs: bool,
    },
    /// Rotates three files through a temporary name: `mv a t; mv b a; mv c b; mv t c`.
    Rotate {
        pick: u8,
    },
    /// Replaces a file by a directory holding `files` files (maybe none): `rm f; mkdir f;
    /// write f/x…`.
    FileToDir {
        pick: u8,
        files: u8,
        len: u16,
    },
    /// Replaces a directory by a file: `rm -rf d; write d`.
    DirToFile {
        pick: u8,
        len: u16,
    },
    /// Both in one burst, no pause between: a file becomes a directory holding files, then a
    /// file again (`rm f; mkdir f; write f/x…; rm -rf f; write f`); with `dir_first`, a
    /// directory becomes a file, then a directory holding files again.
    ReplaceAndBack {
        pick: u8,
        files: u8,
        len: u16,
        dir_first: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8, 0..6u8, 0..3000u16).prop_map(|(dir, name, len)| Op::Create { dir, name, len }),
        2 => (any::<u8>(), 0..3000u16).prop_map(|(pick, len)| Op::Write { pick, len }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(pick, len)| Op::Append { pick, len }),
        1 => any::<u8>().prop_map(|pick| Op::Truncate { pick }),
        3 => (any::<u8>(), 0..4u8, 0..6u8).prop_map(|(pick, dir, name)| Op::RenameFile { pick, dir, name }),
        2 => (any::<u8>(), 0..6u8).prop_map(|(pick, name)| Op::RenameDir { pick, name }),
        2 => any::<u8>().prop_map(|pick| Op::Delete { pick }),
        1 => any::<u8>().prop_map(|pick| Op::DeleteDir { pick }),
        1 => (0..120u8).prop_map(|ms| Op::Pause { ms }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(pick, onto)| Op::RenameOnto { pick, onto }),
        3 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(pick, other, dirs)| Op::Swap { pick, other, dirs }),
        2 => any::<u8>().prop_map(|pick| Op::Rotate { pick }),
        2 => (any::<u8>(), 0..4u8, 0..3000u16).prop_map(|(pick, files, len)| Op::FileToDir { pick, files, len }),
        2 => (any::<u8>(), 0..3000u16).prop_map(|(pick, len)| Op::DirToFile { pick, len }),
        2 => (any::<u8>(), 1..4u8, 0..3000u16, any::<bool>()).prop_map(|(pick, files, len, dir_first)| Op::ReplaceAndBack { pick, files, len, dir_first }),
    ]
}

/// Directory names: the root and three nested levels.
fn dir_path(root: &Path, dir: u8) -> PathBuf {
    match dir {
        0 => root.to_path_buf(),
        1 => root.join("a"),
        2 => root.join("a/b"),
        _ => root.join("c d"),
    }
}

fn content(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

/// Applies one operation; operations that do not apply (nothing to pick) do nothing.
fn apply(root: &Path, op: &Op, step: usize) {
    let pick = |v: Vec<PathBuf>, i: u8| {
        if v.is_empty() {
            None
        } else {
            Some(v[i as usize % v.len()].clone())
        }
    };
    match *op {
        Op::Create { dir, name, len } => {
            let d = dir_path(root, dir);
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(d.join(format!("f{name}")), content(len as usize, step));
        }
        Op::Write { pick: i, len } => {
            if let Some(f) = pick(file_paths(root), i) {
                let _ = std::fs::write(f, content(len as usize, step));
            }
        }
        Op::Append { pick: i, len } => {
            if let Some(f) = pick(file_paths(root), i) {
                use std::io::Write;
                if let Ok(mut h) = std::fs::OpenOptions::new().append(true).open(f) {
                    let _ = h.write_all(&content(len as usize, step));
                }
            }
        }
        Op::Truncate { pick: i } => {
            if let Some(f) = pick(file_paths(root), i) {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(f);
            }
        }
        Op::RenameFile { pick: i, dir, name } => {
            if let Some(f) = pick(file_paths(root), i) {
                let d = dir_path(root, dir);
                let _ = std::fs::create_dir_all(&d);
                let target = d.join(format!("r{name}"));
                if !target.is_dir() {
                    let _ = std::fs::rename(f, target);
                }
            }
        }
        Op::RenameDir { pick: i, name } => {
            if let Some(d) = pick(dir_paths(root), i) {
                let target = root.join(format!("D{name}"));
                if !target.exists() && !target.starts_with(&d) {
                    let _ = std::fs::rename(d, target);
                }
            }
        }
        Op::Delete { pick: i } => {
            if let Some(f) = pick(file_paths(root), i) {
                let _ = std::fs::remove_file(f);
            }
        }
        Op::DeleteDir { pick: i } => {
            if let Some(d) = pick(dir_paths(root), i) {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        Op::Pause { ms } => std::thread::sleep(Duration::from_millis(ms as u64)),
        Op::RenameOnto { pick: i, onto } => {
            let all = file_paths(root);
            if let (Some(f), Some(g)) = (pick(all.clone(), i), pick(all, onto)) {
                let _ = std::fs::rename(f, g);
            }
        }
        Op::Swap {
            pick: i,
            other,
            dirs: d,
        } => {
            let all = if d { dir_paths(root) } else { file_paths(root) };
            if let (Some(a), Some(b)) = (pick(all.clone(), i), pick(all, other)) {
                // Two directories, neither inside the other (a file pair always qualifies).
                if !a.starts_with(&b) && !b.starts_with(&a) {
                    rotate(&[a, b]);
                }
            }
        }
        Op::Rotate { pick: i } => {
            let all = file_paths(root);
            if all.len() >= 3 {
                let n = all.len();
                let k = i as usize;
                rotate(&[
                    all[k % n].clone(),
                    all[(k + 1) % n].clone(),
                    all[(k + 2) % n].clone(),
                ]);
            }
        }
        Op::FileToDir {
            pick: i,
            files: n,
            len,
        } => {
            if let Some(f) = pick(file_paths(root), i) {
                file_to_dir(&f, n, len, step);
            }
        }
        Op::DirToFile { pick: i, len } => {
            if let Some(d) = pick(dir_paths(root), i) {
                dir_to_file(&d, len, step);
            }
        }
        Op::ReplaceAndBack {
            pick: i,
            files: n,
            len,
            dir_first: false,
        } => {
            if let Some(f) = pick(file_paths(root), i) {
                if file_to_dir(&f, n, len, step) {
                    dir_to_file(&f, len / 2, step + 1);
                }
            }
        }
        Op::ReplaceAndBack {
            pick: i,
            files: n,
            len,
            dir_first: true,
        } => {
            if let Some(d) = pick(dir_paths(root), i) {
                if dir_to_file(&d, len, step) {
                    file_to_dir(&d, n, len / 2, step + 1);
                }
            }
        }
    }
}

/// `rm f; mkdir f; write f/x0 … f/x{n-1}`; true when `f` became a directory.
fn file_to_dir(f: &Path, n: u8, len: u16, step: usize) -> bool {
    if std::fs::remove_file(f).is_err() || std::fs::create_dir(f).is_err() {
        return false;
    }
    for k in 0..n {
        let _ = std::fs::write(
            f.join(format!("x{k}")),
            content(len as usize, step + k as usize),
        );
    }
    true
}

/// `rm -rf d; write d`; true when `d` became a file.
fn dir_to_file(d: &Path, len: u16, step: usize) -> bool {
    std::fs::remove_dir_all(d).is_ok() && std::fs::write(d, content(len as usize, step)).is_ok()
}

/// Rotates the contents of `paths` through a temporary name beside the first:
/// `mv p0 t; mv p1 p0; …; mv t pN` (a swap for two paths).
fn rotate(paths: &[PathBuf]) {
    let Some(parent) = paths[0].parent() else {
        return;
    };
    let tmp = parent.join("swap-tmp");
    if tmp.exists() || std::fs::rename(&paths[0], &tmp).is_err() {
        return;
    }
    for w in paths.windows(2) {
        let _ = std::fs::rename(&w[1], &w[0]);
    }
    let _ = std::fs::rename(&tmp, &paths[paths.len() - 1]);
}

fn check(ops: &[Op], complete_sync: bool) -> Result<(), TestCaseError> {
    let s = Scratch::new();
    // Some files exist before skynet starts: the catch-up scan sends them.
    write(&s.src, "pre/existing", b"before start");
    write(&s.src, "a/b/deep", b"deep before start");
    let mut args = vec!["--settle", "50ms", "--retry-delay", "100ms"];
    if complete_sync {
        // These histories are a user's own, on a tree of a few files where deleting most of
        // them is ordinary: the mass-deletion guard would rightly hold that (tests/data_safety.rs
        // covers it); here it is off, so convergence is what is judged.
        args.extend(["--complete-sync", "--max-delete", "100%"]);
    }
    let mut daemon = s.run(&args);
    // skynet watches the source before its catch-up scan starts: once the scan's files have
    // arrived, every change below happens while it watches (no fixed sleep to guess that).
    let started = Instant::now();
    while !(s.dst.join("pre/existing").is_file() && s.dst.join("a/b/deep").is_file()) {
        prop_assert!(
            started.elapsed() < Duration::from_secs(20),
            "the catch-up scan's files never arrived:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for (step, op) in ops.iter().enumerate() {
        apply(&s.src, op, step);
    }
    let mut converged = wait_converged(&s.src, &s.dst, complete_sync, Duration::from_secs(20));
    if converged.is_ok() {
        // Equal once is not yet converged: an action still queued could undo it (invariant 1
        // speaks of the queue drained). So: wait for an empty queue, then compare again.
        converged = if wait_until(Duration::from_secs(20), || queue_empty(&s)) {
            wait_converged(&s.src, &s.dst, complete_sync, Duration::ZERO)
        } else {
            Err(format!("the queue never drained: {}", status_text(&s)))
        };
    }
    let code = daemon.signal("INT");
    prop_assert!(
        converged.is_ok(),
        "not converged ({}): {:?}\nops: {:?}\nlog:\n{}",
        if complete_sync {
            "complete-sync"
        } else {
            "superset"
        },
        converged,
        ops,
        daemon.log_text()
    );
    prop_assert_eq!(code, Some(0), "clean exit on SIGINT");
    prop_assert!(
        no_temp_files(&s.dst),
        "temporary files left in the destination"
    );
    Ok(())
}

/// `skynet status --json` as text (for a failure message).
fn status_text(s: &Scratch) -> String {
    match s.cmd(&["status", "--json"]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => e.to_string(),
    }
}

/// Whether the mapping's queue is empty: nothing pending, in flight, held or failed.
fn queue_empty(s: &Scratch) -> bool {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&status_text(s)) else {
        return false;
    };
    let m = &status["mappings"][0];
    // A catch-up scan still due (after a directory rename) is work not yet done, as a queued
    // action is: it may change the destination (found when a reconcile ran after the compare).
    ["pending", "in_flight", "held", "failed"]
        .iter()
        .all(|k| m[k].as_u64() == Some(0))
        && m["scan_due"] == serde_json::Value::Bool(false)
}

/// Histories per test: 32 in CI, `SKYNET_CONVERGENCE_CASES` for a soak.
fn cases() -> u32 {
    std::env::var("SKYNET_CONVERGENCE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    // `SKYNET_CONVERGENCE_CASES=N` runs N histories per test instead of 32 (a longer soak).
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn converges_with_complete_sync(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops, true)?;
    }

    #[test]
    fn converges_to_a_superset_without_complete_sync(ops in proptest::collection::vec(op(), 1..40)) {
        check(&ops, false)?;
    }
}

/// Histories the widened generator found, kept as fixed cases (both depend on timing, so a
/// pass is not proof, but each failed reliably before its fix).
#[test]
fn histories_found_by_the_generator() {
    // Two rotations, the second reusing names the first renamed: the watcher mapped them to
    // where the first rotation took them.
    let reused = [
        Op::Create {
            dir: 0,
            name: 1,
            len: 2961,
        },
        Op::RenameFile {
            pick: 32,
            dir: 2,
            name: 4,
        },
        Op::Rotate { pick: 125 },
        Op::Create {
            dir: 1,
            name: 5,
            len: 2872,
        },
        Op::Rotate { pick: 238 },
    ];
    check(&reused, true).expect("rotations reusing names");
    // A write whose send ran after a rotation the watcher had not reported yet: the
    // rotation's renames carried the bytes the send had read.
    let raced = [
        Op::Create {
            dir: 0,
            name: 0,
            len: 32,
        },
        Op::Write {
            pick: 230,
            len: 660,
        },
        Op::Pause { ms: 41 },
        Op::Rotate { pick: 247 },
    ];
    check(&raced, false).expect("a send racing a rotation");
    // Files replaced by empty directories (`rm a/b/deep; mkdir a/b/deep`, then the same for
    // pre/existing): the watcher took a file's remove for a re-creation when the path
    // existed again by the time it mapped the event, and never deleted the file ('extra
    // a/b/deep'; first found as a directory whose new files were deleted at once). That
    // depends on the watcher lagging behind the rm/mkdir (one run in three on the old code),
    // so the history runs four times. Later, 'extra pre/existing' (about one run in a hundred
    // on a loaded 2-core machine): the mkdir landed between the watcher's two looks at the
    // removed path (gone, then there again); that interleaving is replayed exactly by
    // watcher::mapper::tests::a_file_replaced_by_a_directory_while_its_remove_is_mapped_is_deleted.
    let emptied = [
        Op::FileToDir {
            pick: 0,
            files: 0,
            len: 0,
        },
        Op::FileToDir {
            pick: 0,
            files: 0,
            len: 0,
        },
    ];
    for _ in 0..4 {
        check(&emptied, true).expect("files replaced by empty directories");
    }
}
