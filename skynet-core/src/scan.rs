//! The catch-up scan.
//!
//! The scan compares the source tree with the ledger and queues what differs: files that are
//! new or whose size or mtime changed are sent; with complete-sync, ledger entries whose file
//! is gone are deleted. It runs on start (changes made while skynet was stopped) and whenever
//! the watcher lost events. The comparison is with the ledger as the queued actions will leave
//! it (a queued move carries its source's entry to its target, a queued delete drops it), so a
//! pending move of an unchanged file is not turned into a re-upload, while a move target that
//! changed or vanished since (events lost in a crash) is still sent or deleted after the move.
//! Files with a queued send that has not read them yet are left to it.
//!
//! Safety: a directory that cannot be read is never taken as "its files are gone"; the scan
//! refuses to run at all when the source root itself is missing, so an unmounted disk does not
//! turn into "delete everything at the destination".

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::action::Action;
use crate::clock::{mtime_ns, now_ms};
use crate::filter::Filter;
use crate::gate::Admission;
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::state::{LedgerEntry, Queue, StateError};

/// A scan failure that must stop the scan (the root is gone, the database failed).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("source {0}: not a readable directory; refusing to scan (nothing queued)")]
    RootMissing(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a catch-up scan found and queued.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub files: u64,
    pub sends: u64,
    pub deletes: u64,
    pub unreadable: u64,
    /// Files no mapping of this source takes (this one's include globs and every
    /// sibling's miss them), and a few of their names: nothing sends them, and a user
    /// routing by type wants to know.
    pub unrouted: Skipped,
    /// Files a `dated` gate never lets through (no date in their name).
    pub undated: Skipped,
}

/// Meta keys of the last scan's [`ScanReport::unrouted`] and [`ScanReport::undated`].
pub const UNROUTED_KEY: &str = "scan_unrouted";
pub const UNDATED_KEY: &str = "scan_undated";

/// Files a scan left aside for one reason: how many, and the first few names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub count: u64,
    pub names: Vec<RelPath>,
}

impl Skipped {
    /// How many names are kept: enough to recognise the pattern.
    pub const NAMES: usize = 5;

    fn add(&mut self, rel: &RelPath) {
        self.count += 1;
        if self.names.len() < Self::NAMES {
            self.names.push(rel.clone());
        }
    }

    /// The form kept in the state database's meta table: the count, then a name per line.
    pub fn encode(&self) -> String {
        let mut out = self.count.to_string();
        for n in &self.names {
            out.push('\n');
            out.push_str(&n.display());
        }
        out
    }

    /// Reads [`Skipped::encode`]'s form back (names as text, for display).
    pub fn decode(text: &str) -> (u64, Vec<String>) {
        let mut lines = text.lines();
        let count = lines.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        (count, lines.map(str::to_string).collect())
    }
}

/// Options of one scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Queue deletes for ledger entries whose file is gone: complete-sync (removed remotely)
    /// and send-once (the handler only drops the ledger row).
    pub queue_deletes: bool,
    /// When a file may be sent (`min_age`, dated names).
    pub gate: crate::gate::Gate,
    /// Files modified less than this long ago are queued to wait out the remainder.
    pub settle: Duration,
    /// Show a progress line on stderr (only when it is a terminal).
    pub progress: bool,
    /// The other mappings of this source, to tell a file another route takes from one no
    /// route takes, and record both counts. `None` (the watcher's rescans): neither.
    pub siblings: Option<crate::siblings::SiblingFinder>,
}

/// Compares `root` with the ledger and queues the differences.
pub fn catch_up(
    root: &Path,
    queue: &Queue,
    filter: &Filter,
    opts: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    let report = scan(root, queue, filter, opts, true)?;
    // Folders removed while nobody watched: the directories kept at the destination because
    // the source had them are looked at again (complete-sync; see `empty_dirs`).
    queue.mark_dirs_due()?;
    tracing::info!(
        files = report.files,
        sends = report.sends,
        deletes = report.deletes,
        "catch-up scan done"
    );
    Ok(report)
}

/// [`catch_up`] without its log lines (they are written once, by the first scan), for the
/// scans that polling repeats every few seconds (see `watcher`).
pub fn compare(
    root: &Path,
    queue: &Queue,
    filter: &Filter,
    opts: &ScanOptions,
) -> Result<ScanReport, ScanError> {
    scan(root, queue, filter, opts, false)
}

/// The scan itself; `loud`: warn about the parts of the source that cannot be read.
fn scan(
    root: &Path,
    queue: &Queue,
    filter: &Filter,
    opts: &ScanOptions,
    loud: bool,
) -> Result<ScanReport, ScanError> {
    if !root.is_dir() {
        return Err(ScanError::RootMissing(root.display().to_string()));
    }
    let (ledger, queued) = projected_ledger(queue)?;
    let mut report = ScanReport::default();
    let mut seen: HashSet<RelPath> = HashSet::with_capacity(ledger.len());
    let mut unreadable: Vec<RelPath> = Vec::new();
    let mut batch: Vec<Entry> = Vec::new();
    let now = now_ms();
    let settle_ms = opts.settle.as_millis() as u64;
    let bar = progress_bar(opts.progress);
    // Only a mapping with include globs leaves files to other routes.
    let siblings: Vec<crate::siblings::Sibling> = match &opts.siblings {
        Some(finder) if filter.has_includes() => {
            finder.find().into_iter().filter_map(Result::ok).collect()
        }
        _ => Vec::new(),
    };

    for entry in walk(root, root, filter) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.unreadable += 1;
                if let Some(p) = e.path().and_then(|p| RelPath::from_abs(root, p).ok()) {
                    unreadable.push(p);
                }
                if loud {
                    tracing::warn!(error = %e, "cannot read part of the source; skipping it");
                } else {
                    tracing::debug!(error = %e, "cannot read part of the source; skipping it");
                }
                continue;
            }
        };
        // walkdir does not follow links (its default): a link is skipped, counted and named
        // once, and the directory it may point to is never walked.
        if entry.path_is_symlink() {
            if let Ok(rel) = RelPath::from_abs(root, entry.path()) {
                queue.note_skipped_link(&rel);
            }
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(rel) = RelPath::from_abs(root, entry.path()) else {
            continue;
        };
        report.files += 1;
        if let Some(bar) = &bar {
            if report.files % 1000 == 0 {
                bar.set_position(report.files);
            }
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        seen.insert(rel.clone());
        if queued.contains(&rel) {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let mtime = mtime_ns(modified);
        let unchanged = ledger
            .get(rel.as_bytes())
            .is_some_and(|(_, l)| l.size == Some(meta.len()) && l.mtime_ns == mtime);
        if !filter.admits_file(&rel) {
            if filter.has_includes()
                && !filter.excluded(&rel)
                && !siblings.iter().any(|s| s.selects(&rel))
            {
                report.unrouted.add(&rel);
            }
            continue;
        }
        if unchanged {
            continue;
        }
        // Files a gate never lets through are not queued; held ones are, and the handler
        // holds them (state `held`, shown in `status`, not waited for by `sync`).
        if matches!(opts.gate.check(&rel, modified, now), Admission::Skip(_)) {
            report.undated.add(&rel);
            continue;
        }
        let modified_ms = (mtime.max(0) / 1_000_000) as u64;
        let ready_at = if modified_ms + settle_ms > now {
            modified_ms + settle_ms
        } else {
            0
        };
        batch.push(Entry::new(Action::Send(rel), ready_at));
        report.sends += 1;
        if batch.len() >= 10_000 {
            queue.push(&batch)?;
            batch.clear();
        }
    }
    if opts.queue_deletes {
        // A send in flight may still deliver a file that is gone now (renamed or removed,
        // its events lost): its deletion goes after it (found by the simulation's soak, seed
        // 69785: a directory renamed during an overflow left `a/b/f0` behind).
        for path in queue.sends_in_flight()? {
            let skip = seen.contains(&path)
                || filter.excluded(&path)
                || unreadable.iter().any(|u| path.is_within(u));
            if !skip {
                batch.push(Entry::new(Action::Delete(path), 0));
                report.deletes += 1;
            }
        }
        for path in ledger.values().map(|(p, _)| p) {
            let skip = seen.contains(path)
                || queued.contains(path)
                || filter.excluded(path)
                || unreadable.iter().any(|u| path.is_within(u));
            if !skip {
                batch.push(Entry::new(Action::Delete(path.clone()), 0));
                report.deletes += 1;
                // A file that is a folder now: the delete of the file drops the sends queued
                // under its path, so they are queued again, after it.
                if std::fs::symlink_metadata(path.under(root)).is_ok_and(|m| m.is_dir()) {
                    let files = local_files_within(root, path, filter);
                    batch.extend(files.into_iter().map(|p| Entry::new(Action::Send(p), 0)));
                }
            }
        }
    }
    queue.push(&batch)?;
    // As of this catch-up, for `status` and metrics: only a scan that knew the other routes
    // (the engine's; the watcher's rescans do not look) can tell what no route takes.
    if opts.siblings.is_some() {
        queue.set_meta(UNROUTED_KEY, &report.unrouted.encode())?;
        queue.set_meta(UNDATED_KEY, &report.undated.encode())?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(report)
}

/// The ledger as the queued actions will leave it once they have run, by path bytes (so that
/// what lies under a directory is one range), and the paths of queued sends. A queued move
/// carries the entries at or under its source to its target: the destination will then hold
/// there what it holds at the source now, whatever the local file became since. A queued
/// delete drops the entries at or under its path.
fn projected_ledger(queue: &Queue) -> Result<(Projected, HashSet<RelPath>), StateError> {
    let mut ledger: Projected = queue
        .ledger()?
        .into_iter()
        .map(|(p, e)| (p.as_bytes().to_vec(), (p, e)))
        .collect();
    // Sends whose result no later queued move or delete carries off or removes, by path bytes
    // (a directory's contents are one range: the queue after a crash may hold many thousands
    // of sends and deletes, and a scan per delete over every send would be quadratic).
    let mut lasting: std::collections::BTreeMap<Vec<u8>, ()> = Default::default();
    for action in queue.queued_actions()? {
        match action {
            Action::Send(p) => {
                lasting.insert(p.as_bytes().to_vec(), ());
            }
            Action::Delete(p) => {
                take_within(&mut lasting, &p);
                take_within(&mut ledger, &p);
            }
            Action::Move { from, to } => {
                take_within(&mut lasting, &from);
                let moved = take_within(&mut ledger, &from);
                take_within(&mut ledger, &to);
                for (p, e) in moved {
                    if let Some(q) = p.rebase(&from, &to) {
                        ledger.insert(q.as_bytes().to_vec(), (q, e));
                    }
                }
            }
        }
    }
    // Only sends that have not read their file yet stand for its current content: an edit
    // made while a send was in flight, whose event was lost, was otherwise never sent (found
    // by the simulation, seed 1600). And only those whose result stays where it is: a queued
    // directory move after a send carries the sent file off, and a file made again at that
    // path since (its events lost in a crash) was never sent (seed 42185).
    let mut waiting = queue.waiting_sends()?;
    waiting.retain(|p| lasting.contains_key(p.as_bytes()));
    Ok((ledger, waiting))
}

type Projected = std::collections::BTreeMap<Vec<u8>, (RelPath, LedgerEntry)>;

/// Removes and returns the entries at `path` or below it.
fn take_within<V>(map: &mut std::collections::BTreeMap<Vec<u8>, V>, path: &RelPath) -> Vec<V> {
    let exact = path.as_bytes().to_vec();
    let mut lo = exact.clone();
    lo.push(b'/');
    let mut hi = exact.clone();
    hi.push(b'/' + 1);
    let mut keys: Vec<Vec<u8>> = map.range(lo..hi).map(|(k, _)| k.clone()).collect();
    keys.push(exact);
    keys.into_iter().filter_map(|k| map.remove(&k)).collect()
}

fn progress_bar(wanted: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} scanning: {pos} files ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Walks `dir` (inside the source `root`) without descending into excluded directories.
fn walk<'a>(
    root: &'a Path,
    dir: &Path,
    filter: &'a Filter,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + 'a {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_entry(move |e| {
            RelPath::from_abs(root, e.path())
                .map(|r| !filter.excluded(&r))
                .unwrap_or(false)
        })
}

/// The files at or below `rel` in the source, not excluded: for a directory moved in from
/// outside, a directory created with files already in it, or a move's fallback.
pub fn local_files_within(root: &Path, rel: &RelPath, filter: &Filter) -> Vec<RelPath> {
    let abs: PathBuf = rel.under(root);
    if filter.excluded(rel) {
        return Vec::new();
    }
    match std::fs::symlink_metadata(&abs) {
        Ok(m) if m.is_file() => return vec![rel.clone()],
        Ok(m) if m.is_dir() => {}
        _ => return Vec::new(),
    }
    walk(root, &abs, filter)
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| RelPath::from_abs(root, e.path()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::rel as p;

    /// A scan that queues deletes, settles nothing and shows no progress.
    fn complete_sync() -> ScanOptions {
        ScanOptions {
            queue_deletes: true,
            gate: Default::default(),
            settle: Duration::ZERO,
            progress: false,
            siblings: None,
        }
    }

    #[test]
    fn scan_queues_new_changed_and_deleted() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/new"), b"x").unwrap();
        std::fs::write(src.path().join("same"), b"y").unwrap();
        let q = Queue::open_in_memory().unwrap();
        let meta = std::fs::metadata(src.path().join("same")).unwrap();
        q.record_delivered(&[
            (p("same"), 1, mtime_ns(meta.modified().unwrap()), None),
            (p("gone"), 1, 1, None),
        ])
        .unwrap();
        let opts = complete_sync();
        let report = catch_up(src.path(), &q, &Filter::default(), &opts).unwrap();
        assert_eq!((report.files, report.sends, report.deletes), (2, 1, 1));
        let rows: Vec<String> = q
            .rows()
            .unwrap()
            .into_iter()
            .map(|r| format!("{:?} {}", r.kind, r.path))
            .collect();
        assert_eq!(rows, vec!["Send d/new", "Delete gone"]);
        assert!(catch_up(&src.path().join("missing"), &q, &Filter::default(), &opts).is_err());
    }

    /// Links are not followed: neither a link to a file outside nor a symlinked directory
    /// pointing outside queues anything; each is counted once, however often it is scanned.
    #[test]
    fn scan_does_not_follow_links() {
        let top = tempfile::tempdir().unwrap();
        let (src, outside) = (top.path().join("src"), top.path().join("outside"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::fs::write(src.join("d/own"), b"o").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), src.join("key")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("d/linked")).unwrap();
        let q = Queue::open_in_memory().unwrap();
        let opts = complete_sync();
        for _ in 0..2 {
            catch_up(&src, &q, &Filter::default(), &opts).unwrap();
        }
        let rows: Vec<String> = q
            .rows()
            .unwrap()
            .into_iter()
            .map(|r| r.path.to_string())
            .collect();
        assert_eq!(rows, vec!["d/own"]);
        assert_eq!(
            q.meta(crate::links::SKIPPED_LINKS).unwrap().as_deref(),
            Some("2")
        );
        assert_eq!(
            local_files_within(&src, &p("d"), &Filter::default()),
            vec![p("d/own")]
        );
    }

    /// A file replaced by a folder while skynet was stopped: the file's delete must not drop
    /// the sends of the files in the folder (found by the widened convergence generator:
    /// `missing d/inner`).
    #[test]
    fn a_file_that_became_a_folder_is_deleted_then_its_files_sent() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d")).unwrap();
        std::fs::write(src.path().join("d/inner"), b"x").unwrap();
        let q = Queue::open_in_memory().unwrap();
        q.record_delivered(&[(p("d"), 1, 1, None)]).unwrap();
        let opts = complete_sync();
        catch_up(src.path(), &q, &Filter::default(), &opts).unwrap();
        let rows: Vec<String> = q
            .rows()
            .unwrap()
            .into_iter()
            .map(|r| format!("{:?} {}", r.kind, r.path))
            .collect();
        assert_eq!(rows, vec!["Delete d", "Send d/inner"]);
    }

    /// Events lost in a crash after moves were queued: the scan must not trust a queued move
    /// to bring its target up to date. The move carries what the destination holds at its
    /// source; a target changed since must still be sent after it, and one that is gone
    /// deleted after it (found by the S3 kill loop: `c3/r311` stale, `d39/r474` left over).
    #[test]
    fn scan_checks_the_targets_of_queued_moves() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        for (f, body) in [
            ("b", &b"appended after the move"[..]),
            ("e/x", b"x"),
            ("h", b"hh"),
            ("l", b"ll"),
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), body).unwrap();
        }
        let stat = |f: &str| {
            let m = std::fs::metadata(root.join(f)).unwrap();
            (m.len(), mtime_ns(m.modified().unwrap()))
        };
        let q = Queue::open_in_memory().unwrap();
        let (x, h, l) = (stat("e/x"), stat("h"), stat("l"));
        q.record_delivered(&[
            (p("a"), 3, 1, None),
            (p("d/x"), x.0, x.1, None),
            (p("d/y"), 1, 1, None),
            (p("f"), h.0, h.1, None),
            (p("k"), l.0, l.1, None),
        ])
        .unwrap();
        let mv = |a: &str, b: &str| {
            Entry::new(
                Action::Move {
                    from: p(a),
                    to: p(b),
                },
                0,
            )
        };
        // a -> b was in flight when the process died; the others were pending.
        q.push(&[mv("a", "b")]).unwrap();
        assert_eq!(q.claim(10, now_ms()).unwrap().len(), 1);
        q.recover().unwrap();
        q.push(&[mv("d", "e"), mv("f", "g"), mv("k", "l")]).unwrap();
        let opts = complete_sync();
        catch_up(root, &q, &Filter::default(), &opts).unwrap();
        let rows: Vec<String> = q
            .rows()
            .unwrap()
            .into_iter()
            .map(|r| match r.from {
                Some(f) => format!("{:?} {f} {}", r.kind, r.path),
                None => format!("{:?} {}", r.kind, r.path),
            })
            .collect();
        for want in [
            "Move a b",
            "Send b",
            "Move d e",
            "Delete e/y",
            "Send h",
            "Delete g",
        ] {
            assert!(rows.iter().any(|r| r == want), "no {want:?} in {rows:?}");
        }
        // Unchanged files carried by a move are not re-sent; the move's source is not
        // deleted apart from the move (it removes it).
        for unwanted in ["Send e/x", "Send l", "Delete a", "Delete d/x", "Delete k"] {
            assert!(
                !rows.iter().any(|r| r == unwanted),
                "{unwanted:?} in {rows:?}"
            );
        }
        // The send of b runs after the interrupted move, so it wins.
        let pos = |w: &str| rows.iter().position(|r| r == w).unwrap();
        assert!(pos("Move a b") < pos("Send b"), "{rows:?}");
    }
}
