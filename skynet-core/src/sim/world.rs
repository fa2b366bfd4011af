//! The source folder of a simulated history: a real directory, changed by the history's
//! steps through real system calls, each also reported to the [`Kernel`] model.
//!
//! Every write gives the file content no earlier write had and an mtime later than any
//! before, as a filesystem with fine timestamps would: the engine's catch-up scan compares
//! size and mtime, and two writes of one size within one clock tick are a limit it shares
//! with rsync, not what the simulation is after.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::history::{Step, DIRS};
use super::kernel::Kernel;

/// `rename(a, b)` (absolute paths), reported to the kernel when it happened.
fn renamed(a: &Path, b: &Path, k: &mut Kernel) -> bool {
    let dir = std::fs::symlink_metadata(a).is_ok_and(|m| m.is_dir());
    let replaced = std::fs::symlink_metadata(b)
        .ok()
        .filter(|m| m.is_dir())
        .and_then(|_| Kernel::inode(b));
    if std::fs::rename(a, b).is_err() {
        return false;
    }
    k.renamed(a, b, dir, replaced);
    true
}

/// The source tree and the folder beside it that moves in and out go through.
pub(super) struct World {
    root: PathBuf,
    outside: PathBuf,
    /// Writes so far: makes each write's content and mtime unique.
    writes: u64,
    /// Names of things moved out or made outside.
    outside_seq: u64,
    /// Every relative path that ever existed in the source (bounds the queue).
    seen: BTreeSet<PathBuf>,
}

/// `n` bytes that no other write (`seq`) produces, for `n` > 0.
fn content(n: usize, seq: u64) -> Vec<u8> {
    let mut out = (seq as u32).to_le_bytes().to_vec();
    out.extend((0..n).map(|i| ((i as u64 * 31 + seq * 7) % 251) as u8));
    out.truncate(n);
    out
}

impl World {
    pub(super) fn new(root: PathBuf, outside: PathBuf) -> World {
        World {
            root,
            outside,
            writes: 0,
            outside_seq: 0,
            seen: BTreeSet::new(),
        }
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// How many distinct paths the source has held.
    pub(super) fn paths_seen(&self) -> usize {
        self.seen.len()
    }

    fn walk(&self, files: bool) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walkdir::WalkDir::new(&self.root)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                if files {
                    e.file_type().is_file()
                } else {
                    e.file_type().is_dir()
                }
            })
            .filter_map(|e| e.path().strip_prefix(&self.root).ok().map(PathBuf::from))
            .collect();
        v.sort();
        v
    }

    fn pick(&self, files: bool, i: u8) -> Option<PathBuf> {
        let all = self.walk(files);
        (!all.is_empty()).then(|| all[i as usize % all.len()].clone())
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn note(&mut self, rel: &Path) {
        for a in rel.ancestors() {
            if !a.as_os_str().is_empty() {
                self.seen.insert(a.to_path_buf());
            }
        }
    }

    /// The mtime of the next write: later than every earlier one.
    fn next_mtime(&mut self) -> SystemTime {
        self.writes += 1;
        let now = crate::clock::now_ms();
        UNIX_EPOCH + Duration::from_millis(now) + Duration::from_nanos(self.writes % 1_000_000)
    }

    /// Makes the directories leading to `rel` (not `rel` itself). False when a file stands
    /// in the way.
    fn make_parents(&mut self, rel: &Path, k: &mut Kernel) -> bool {
        let Some(parent) = rel.parent() else {
            return true;
        };
        let mut built = PathBuf::new();
        for c in parent.components() {
            built.push(c);
            let abs = self.abs(&built);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return false,
                Err(_) => {
                    if std::fs::create_dir(&abs).is_err() {
                        return false;
                    }
                    k.created(&abs, true);
                    self.note(&built);
                }
            }
        }
        true
    }

    /// Writes `len` fresh bytes to `rel` (creating it), or appends them.
    fn write(&mut self, rel: &Path, len: usize, append: bool, k: &mut Kernel) -> bool {
        if !self.make_parents(rel, k) {
            return false;
        }
        let abs = self.abs(rel);
        let existed = match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_file() => true,
            Ok(_) => return false,
            Err(_) => false,
        };
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&abs);
        let Ok(mut f) = opened else { return false };
        if !existed {
            k.created(&abs, false);
            self.note(rel);
        }
        let mtime = self.next_mtime();
        let bytes = content(len, self.writes);
        if f.write_all(&bytes).is_err() || f.set_modified(mtime).is_err() {
            return false;
        }
        k.written(&abs);
        true
    }

    fn rename(&mut self, from: &Path, to: &Path, k: &mut Kernel) -> bool {
        let (a, b) = (self.abs(from), self.abs(to));
        if !renamed(&a, &b, k) {
            return false;
        }
        self.note(to);
        let under: Vec<PathBuf> = walkdir::WalkDir::new(&b)
            .min_depth(1)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.path().strip_prefix(&self.root).ok().map(PathBuf::from))
            .collect();
        for p in under {
            self.note(&p);
        }
        true
    }

    /// Whether `rename(from, to)` will succeed: `to` free, a file replacing a file, or a
    /// directory replacing an empty directory; never into itself.
    fn can_rename(&self, from: &Path, to: &Path) -> bool {
        if from == to || to.starts_with(from) {
            return false;
        }
        let (a, b) = (self.abs(from), self.abs(to));
        let Ok(src) = std::fs::symlink_metadata(&a) else {
            return false;
        };
        let parent_ok = b
            .parent()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        if !parent_ok {
            return false;
        }
        match std::fs::symlink_metadata(&b) {
            Err(_) => true,
            Ok(dst) if src.is_dir() => {
                dst.is_dir() && std::fs::read_dir(&b).is_ok_and(|mut d| d.next().is_none())
            }
            Ok(dst) => dst.is_file(),
        }
    }

    fn remove_file(&mut self, rel: &Path, k: &mut Kernel) -> bool {
        let abs = self.abs(rel);
        let done = std::fs::remove_file(&abs).is_ok();
        if done {
            k.removed(&abs, None);
        }
        done
    }

    /// `rm -r`: children first, each reported.
    fn remove_tree(&mut self, rel: &Path, k: &mut Kernel) -> bool {
        let abs = self.abs(rel);
        let entries: Vec<(PathBuf, bool)> = walkdir::WalkDir::new(&abs)
            .contents_first(true)
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| (e.path().to_path_buf(), e.file_type().is_dir()))
            .collect();
        for (p, dir) in entries {
            let dir_ino = if dir { Kernel::inode(&p) } else { None };
            let done = if dir {
                std::fs::remove_dir(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if done.is_err() {
                return false;
            }
            k.removed(&p, dir_ino.or(dir.then_some(0)));
        }
        true
    }

    fn fresh_outside(&mut self) -> PathBuf {
        self.outside_seq += 1;
        self.outside.join(format!("o{}", self.outside_seq))
    }

    /// Moves `rel` out of the source.
    fn move_out(&mut self, rel: &Path, k: &mut Kernel) -> bool {
        let (a, b) = (self.abs(rel), self.fresh_outside());
        renamed(&a, &b, k)
    }

    /// Makes a file or small tree outside and moves it in at `rel`.
    fn move_in(&mut self, rel: &Path, tree: bool, k: &mut Kernel) -> bool {
        if std::fs::symlink_metadata(self.abs(rel)).is_ok() || !self.make_parents(rel, k) {
            return false;
        }
        let made = self.fresh_outside();
        let files: Vec<PathBuf> = if tree {
            vec![made.join("x"), made.join("sub/y")]
        } else {
            vec![made.clone()]
        };
        for f in &files {
            let mtime = self.next_mtime();
            let bytes = content(50, self.writes);
            let ok = f
                .parent()
                .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
                && std::fs::write(f, &bytes).is_ok()
                && std::fs::File::options()
                    .write(true)
                    .open(f)
                    .and_then(|h| h.set_modified(mtime))
                    .is_ok();
            if !ok {
                return false;
            }
        }
        if !renamed(&made, &self.abs(rel), k) {
            return false;
        }
        self.note(rel);
        for f in &files {
            if let Ok(r) = f.strip_prefix(&made) {
                if !r.as_os_str().is_empty() {
                    self.note(&rel.join(r));
                }
            }
        }
        true
    }

    /// Performs a step that changes the source; other steps do nothing here.
    pub(super) fn apply(&mut self, step: &Step, k: &mut Kernel) {
        match *step {
            Step::Create { dir, name, len } => {
                let rel = Path::new(DIRS[dir as usize % DIRS.len()]).join(format!("f{name}"));
                self.write(&rel, len as usize, false, k);
            }
            Step::Write { pick, len } => {
                if let Some(f) = self.pick(true, pick) {
                    self.write(&f, len as usize, false, k);
                }
            }
            Step::Append { pick, len } => {
                if let Some(f) = self.pick(true, pick) {
                    self.write(&f, len as usize, true, k);
                }
            }
            Step::Truncate { pick } => {
                if let Some(f) = self.pick(true, pick) {
                    self.write(&f, 0, false, k);
                }
            }
            Step::Burst { pick, times } => {
                if let Some(f) = self.pick(true, pick) {
                    for i in 0..times {
                        self.write(&f, 10 + i as usize, false, k);
                    }
                }
            }
            Step::RenameFile { pick, dir, name } => {
                if let Some(f) = self.pick(true, pick) {
                    let to = Path::new(DIRS[dir as usize % DIRS.len()]).join(format!("r{name}"));
                    if self.make_parents(&to, k) && self.can_rename(&f, &to) {
                        self.rename(&f, &to, k);
                    }
                }
            }
            Step::RenameOnto { pick, onto } => {
                if let (Some(f), Some(g)) = (self.pick(true, pick), self.pick(true, onto)) {
                    if self.can_rename(&f, &g) {
                        self.rename(&f, &g, k);
                    }
                }
            }
            Step::RenameDir { pick, name } => {
                if let Some(d) = self.pick(false, pick) {
                    let to = PathBuf::from(format!("D{name}"));
                    if self.can_rename(&d, &to) {
                        self.rename(&d, &to, k);
                    }
                }
            }
            Step::Rotate { pick, len, dirs } => self.rotate(pick, len, dirs, k),
            Step::FileToDir { pick } => {
                if let Some(f) = self.pick(true, pick) {
                    if self.remove_file(&f, k) {
                        let abs = self.abs(&f);
                        self.note(&f);
                        if std::fs::create_dir(&abs).is_ok() {
                            k.created(&abs, true);
                            self.write(&f.join("x"), 20, false, k);
                        }
                    }
                }
            }
            Step::DirToFile { pick } => {
                if let Some(d) = self.pick(false, pick) {
                    if self.remove_tree(&d, k) {
                        self.write(&d, 30, false, k);
                    }
                }
            }
            Step::Delete { pick } => {
                if let Some(f) = self.pick(true, pick) {
                    self.remove_file(&f, k);
                }
            }
            Step::DeleteTree { pick } => {
                if let Some(d) = self.pick(false, pick) {
                    self.remove_tree(&d, k);
                }
            }
            Step::MoveOut { pick, dir } => {
                if let Some(p) = self.pick(!dir, pick) {
                    self.move_out(&p, k);
                }
            }
            Step::MoveIn { dir, name, tree } => {
                let rel = Path::new(DIRS[dir as usize % DIRS.len()]).join(format!("m{name}"));
                self.move_in(&rel, tree, k);
            }
            _ => {}
        }
    }

    /// `mv p0 t; mv p1 p0; …; mv t p(n-1)` over `n` consecutive files or directories
    /// (none inside another), through a temporary name beside `p0`.
    fn rotate(&mut self, pick: u8, len: u8, dirs: bool, k: &mut Kernel) {
        let all = self.walk(!dirs);
        let n = len as usize;
        if all.len() < n || n < 2 {
            return;
        }
        let start = pick as usize % all.len();
        let ring: Vec<PathBuf> = (0..n)
            .map(|i| all[(start + i) % all.len()].clone())
            .collect();
        let nested = ring
            .iter()
            .any(|a| ring.iter().any(|b| a != b && b.starts_with(a)));
        if nested {
            return;
        }
        let tmp = ring[0].with_file_name("swap-tmp");
        if std::fs::symlink_metadata(self.abs(&tmp)).is_ok() || !self.rename(&ring[0], &tmp, k) {
            return;
        }
        for w in ring.windows(2) {
            if self.can_rename(&w[1], &w[0]) {
                self.rename(&w[1], &w[0], k);
            }
        }
        let last = &ring[n - 1];
        if self.can_rename(&tmp, last) {
            self.rename(&tmp, last, k);
        }
    }
}
