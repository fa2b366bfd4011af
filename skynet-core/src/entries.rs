//! A command run once per top-level entry of the source (`--exec-per top-level`): a whole
//! folder as one unit, e.g. `rsync -a {path} host:/dst/` once a downloaded album is complete,
//! instead of once per file.
//!
//! How it fits the engine without weakening it: the file-level machinery (watcher, queue,
//! merge rules, gates, mass-deletion guard, ledger, catch-up scan) runs unchanged against an
//! [`EntryRecorder`], a destination that delivers a file by recording, in the state database,
//! that the top-level entry holding it changed. That record is committed before the file's
//! action is acknowledged, so a crash never loses it. The [`EntryStage`] then works the
//! recorded entries:
//!
//! 1. nothing under the entry may still be queued, running, retrying, held by a gate or by the
//!    guard ([`Queue::entry_busy`]): the command never carries a change skynet has not let
//!    through (a guarded mass deletion, a file `--min-age` still holds);
//! 2. the entry must be settled *as a unit*: no file or folder under it modified (mtime or
//!    ctime, so a `cp -a` of old files counts as new) within the settle time;
//! 3. the command runs with `{path}` the entry (absolute) and `{remote}` its name; after it
//!    succeeds, the entry is looked at again: if anything under it changed meanwhile the
//!    command runs again later, otherwise the record goes (only at the generation it saw: a
//!    change recorded while the command ran keeps it due);
//! 4. an entry that no longer exists runs the delete command, with complete-sync only, and
//!    only while the source root is the one recorded (an unmounted disk never reads as every
//!    entry gone).
//!
//! A failure retries with backoff and parks after the mapping's `max_attempts`, visible in
//! `status`; a parked entry is tried again after a long backoff, at once when a file under it
//! changes, and by each `sync`. The command receives the whole entry, so excludes only decide
//! which changes start it, not what it copies.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::connection::{Connection, RemoteEntry, SourceFile, Verification};
use crate::error::ConnError;
use crate::relpath::RelPath;
use crate::retry::{next_look, RetryPolicy};
use crate::source_root::SourceRoot;
use crate::state::{EntryRow, Queue, StateError};

/// How long an entry that waits (files under it still queued or held) waits before the
/// next look. Waiting is not failing: it never parks.
/// A change under it makes it due at once anyway.
const WAIT_RETRY: Duration = Duration::from_secs(5);

/// What runs an entry's command (the command destination, [`crate::exec::ExecConnection`]).
#[async_trait]
pub trait EntryCommand: Send + Sync {
    /// Names the command in messages (never its arguments: they may carry secrets).
    fn command_name(&self) -> String;
    /// Checks what can be checked before any entry (the programs can be run).
    async fn check(&self) -> Result<(), ConnError>;
    /// Delivers the entry as it stands in the source.
    async fn send_entry(&self, entry: &RelPath) -> Result<(), ConnError>;
    /// Removes the entry the source no longer has (complete-sync).
    async fn delete_entry(&self, entry: &RelPath) -> Result<(), ConnError>;
}

/// The file-level destination of a per-entry mapping: each action records that the entries
/// it touches changed (see the module documentation). It cannot read anything back, so a
/// hand-off is never approved through it.
pub struct EntryRecorder {
    queue: Arc<Queue>,
    command: Arc<dyn EntryCommand>,
}

impl EntryRecorder {
    pub fn new(queue: Arc<Queue>, command: Arc<dyn EntryCommand>) -> Self {
        EntryRecorder { queue, command }
    }

    fn changed(&self, path: &RelPath) -> Result<(), ConnError> {
        self.queue
            .entry_changed(&path.top_level())
            .map_err(|e| ConnError::transient(format!("recording a change of {path}: {e}")))
    }

    fn cannot_read_back(&self, what: &str) -> ConnError {
        ConnError::cannot_read_back(&self.describe(), what)
    }
}

#[async_trait]
impl Connection for EntryRecorder {
    fn describe(&self) -> String {
        self.command.command_name()
    }

    async fn connect(&self) -> Result<(), ConnError> {
        self.command.check().await
    }

    async fn send(&self, file: &SourceFile, to: &RelPath) -> Result<u64, ConnError> {
        self.changed(to)?;
        Ok(file.size)
    }

    async fn delete(&self, path: &RelPath) -> Result<(), ConnError> {
        self.changed(path)
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<(), ConnError> {
        self.changed(from)?;
        self.changed(to)
    }

    async fn stat(&self, _path: &RelPath) -> Result<Option<u64>, ConnError> {
        Err(self.cannot_read_back("stat"))
    }

    async fn read(&self, _path: &RelPath) -> Result<Vec<u8>, ConnError> {
        Err(self.cannot_read_back("read"))
    }

    async fn list(&self) -> Result<Vec<RemoteEntry>, ConnError> {
        Err(self.cannot_read_back("list"))
    }

    async fn verify(&self, _file: &SourceFile, _path: &RelPath) -> Result<Verification, ConnError> {
        Err(self.cannot_read_back("verify"))
    }
}

/// How the stage retries and settles.
#[derive(Debug, Clone)]
pub struct EntryOptions {
    /// How long nothing under an entry must have changed before its command runs.
    pub settle: Duration,
    /// Run the delete command for entries the source no longer has.
    pub complete_sync: bool,
    /// When a failed command is tried again, and when its entry is parked.
    pub retry: RetryPolicy,
}

/// What a stage's work came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryReport {
    /// Commands that succeeded.
    pub done: u64,
    /// Entries parked as failed.
    pub parked: u64,
    /// Entries left waiting (still changing, or files under them held): a later run does them.
    pub waiting: u64,
}

/// What an entry looks like on disk: the newest change under it, and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Print {
    /// The latest ctime of anything under it (ns since the epoch): the kernel moves it on
    /// every write, rename in, chmod and `utimes` (so a `cp -a` of old files counts as new,
    /// and a future mtime set by `touch -d` cannot hold the entry back).
    newest_ns: i128,
    entries: u64,
    bytes: u64,
}

/// What the source has at an entry.
enum Local {
    /// A folder or a regular file, as it stands.
    Present(Print),
    /// Nothing, or something skynet never delivers (a link, a FIFO, a device): the entry is
    /// not in the source.
    Gone,
    /// It cannot be looked at (permission, I/O error): neither sent nor judged gone.
    Unreadable(String),
}

/// Looks at `path` and everything under it, never following a link (not even at the top).
fn look(path: &Path) -> Local {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() || m.is_file() => {}
        Ok(_) => return Local::Gone,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Local::Gone,
        Err(e) => return Local::Unreadable(format!("{}: {e}", path.display())),
    }
    let mut print = Print {
        newest_ns: 0,
        entries: 0,
        bytes: 0,
    };
    let walk = walkdir::WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false);
    for item in walk {
        let meta = match item.and_then(|i| i.metadata()) {
            Ok(m) => m,
            Err(e) => return Local::Unreadable(e.to_string()),
        };
        let changed = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
        print.newest_ns = print.newest_ns.max(changed);
        print.entries += 1;
        if meta.is_file() {
            print.bytes += meta.len();
        }
    }
    Local::Present(print)
}

/// [`look`], off the async workers (a large folder takes a while to walk).
async fn look_async(path: PathBuf) -> Local {
    tokio::task::spawn_blocking(move || look(&path))
        .await
        .unwrap_or_else(|e| Local::Unreadable(format!("looking at the entry failed: {e}")))
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// What one look at an entry came to.
enum Step {
    Done,
    /// Not yet, not a failure: look again at this time (ms).
    Wait {
        until: u64,
        why: String,
    },
    Failed(String),
    /// The source root is away: nothing may be judged gone.
    SourceAway,
    /// Told to stop while the command ran: it was killed, the entry stays due as it was.
    Stopped,
}

/// Works a per-entry mapping's recorded entries (see the module documentation).
pub struct EntryStage {
    pub queue: Arc<Queue>,
    pub command: Arc<dyn EntryCommand>,
    pub root: PathBuf,
    /// Checked before an entry is judged gone; `None` only in tests.
    pub source: Option<Arc<SourceRoot>>,
    pub opts: EntryOptions,
}

impl EntryStage {
    /// Works due entries until `stop` turns true; with `until_drained` (`sync`), returns once
    /// every entry is done, parked, or waiting for something a later run will see.
    pub async fn run(
        &self,
        mut stop: watch::Receiver<bool>,
        until_drained: bool,
    ) -> Result<EntryReport, StateError> {
        let mut report = EntryReport::default();
        // Entries that waited in this run (`until_drained` does not wait for them).
        let mut waited: HashSet<RelPath> = HashSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let due = self.queue.entries_due(now_ms())?;
            let mut away = false;
            for row in &due {
                if *stop.borrow() {
                    break;
                }
                match self.one(row, &mut stop).await {
                    Step::Done => {
                        self.queue.entry_done(row)?;
                        waited.remove(&row.entry);
                        report.done += 1;
                    }
                    Step::Wait { until, why } => {
                        if row.last_error.as_deref() != Some(why.as_str()) {
                            tracing::info!(entry = %row.entry, reason = %why, "entry waits");
                        }
                        waited.insert(row.entry.clone());
                        self.queue.entry_retry(row, &why, until, false, false)?;
                    }
                    Step::Failed(why) => self.failed(row, &why)?,
                    Step::SourceAway => {
                        away = true;
                        break;
                    }
                    Step::Stopped => break,
                }
            }
            let rows = self.queue.entry_rows()?;
            if until_drained && (away || rows.iter().all(|r| r.parked || waited.contains(&r.entry)))
            {
                break;
            }
            if !due.is_empty() && !away {
                continue;
            }
            if away {
                // The engine pauses the mapping meanwhile; look again after a while.
                tokio::select! {
                    _ = tokio::time::sleep(WAIT_RETRY) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let wait = next_look(self.queue.entries_next_due()?);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        let rows = self.queue.entry_rows()?;
        report.parked = rows.iter().filter(|r| r.parked).count() as u64;
        report.waiting = rows.len() as u64 - report.parked;
        Ok(report)
    }

    async fn one(&self, row: &EntryRow, stop: &mut watch::Receiver<bool>) -> Step {
        let entry = &row.entry;
        match self.queue.entry_busy(entry) {
            Ok(false) => {}
            Ok(true) => {
                return Step::Wait {
                    until: now_ms() + WAIT_RETRY.as_millis() as u64,
                    why: "files under it are still queued or held".into(),
                }
            }
            Err(e) => return Step::Failed(e.to_string()),
        }
        let before = match look_async(entry.under(&self.root)).await {
            Local::Present(print) => print,
            Local::Gone => return self.gone(entry, stop).await,
            Local::Unreadable(why) => return Step::Failed(format!("cannot look at it: {why}")),
        };
        let settled_at = before.newest_ns + self.opts.settle.as_nanos() as i128;
        if settled_at > now_ns() {
            let until = (settled_at / 1_000_000).max(0) as u64 + 1;
            return Step::Wait {
                until,
                why: "still changing".into(),
            };
        }
        tracing::debug!(entry = %entry, files = before.entries, bytes = before.bytes, "running the command for the entry");
        // A stop does not wait for a long copy: dropping the command kills its process group.
        let sent = tokio::select! {
            sent = self.command.send_entry(entry) => sent,
            _ = stop.wait_for(|s| *s) => return Step::Stopped,
        };
        if let Err(e) = sent {
            return Step::Failed(e.message);
        }
        // A change while it ran was recorded by the watcher (a new generation, which keeps
        // the entry due) or is found by the next catch-up scan; what the command itself
        // writes into the entry does not start it again.
        tracing::info!(entry = %entry, files = before.entries, bytes = before.bytes, "delivered the entry");
        Step::Done
    }

    /// The entry is not in the source: with complete-sync, its delete command runs, but only
    /// while the source root is the one recorded.
    async fn gone(&self, entry: &RelPath, stop: &mut watch::Receiver<bool>) -> Step {
        // A missing or unmounted source root is not every entry gone: nothing is cleared.
        if let Some(source) = &self.source {
            if let Err(problem) = source.check() {
                tracing::warn!(entry = %entry, "{problem}; not judging the entry gone");
                return Step::SourceAway;
            }
        }
        if !self.opts.complete_sync {
            return Step::Done;
        }
        // Its files' deletions must have gone through first (the mass-deletion guard may
        // hold them, someone may have dropped them): the ledger still naming a file under it
        // means they did not.
        match self.queue.ledger_holds_under(entry) {
            Ok(false) => {}
            Ok(true) => {
                return Step::Wait {
                    until: now_ms() + WAIT_RETRY.as_millis() as u64,
                    why: "gone from the source, but the deletions of its files have not gone through (see `skynet queue list`)".into(),
                }
            }
            Err(e) => return Step::Failed(e.to_string()),
        }
        let deleted = tokio::select! {
            deleted = self.command.delete_entry(entry) => deleted,
            _ = stop.wait_for(|s| *s) => return Step::Stopped,
        };
        match deleted {
            Ok(()) => {
                tracing::info!(entry = %entry, "deleted the entry");
                Step::Done
            }
            Err(e) => Step::Failed(e.message),
        }
    }

    /// Schedules the next try of `row` with backoff, parking it after `max_attempts`.
    fn failed(&self, row: &EntryRow, why: &str) -> Result<(), StateError> {
        let r = &self.opts.retry;
        let park = row.parked || r.parks(row.attempts);
        let delay = if park {
            r.park_delay(row.attempts.saturating_sub(r.max_attempts))
        } else {
            r.retry_delay(row.attempts)
        };
        if park {
            tracing::error!(entry = %row.entry, error = %why, retry_in = ?delay, "entry parked as failed");
        } else {
            tracing::warn!(entry = %row.entry, error = %why, retry_in = ?delay, "entry's command failed; will retry");
        }
        let ready_at = now_ms() + delay.as_millis() as u64;
        self.queue.entry_retry(row, why, ready_at, true, park)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file rewritten in place with its old size and an old mtime still moves the print
    /// forward (ctime); a link at the top is not an entry; a missing one is gone.
    #[test]
    fn the_print_sees_rewrites_with_old_mtimes_and_never_follows_a_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let entry = dir.path().join("album");
        std::fs::create_dir_all(entry.join("cd1")).expect("mkdir");
        let song = entry.join("cd1/01.flac");
        std::fs::write(&song, b"one").expect("write");
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(&song, old).expect("set mtime");
        let Local::Present(first) = look(&entry) else {
            panic!("present")
        };
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&song, b"eno").expect("rewrite");
        filetime::set_file_mtime(&song, old).expect("set mtime");
        let Local::Present(second) = look(&entry) else {
            panic!("present")
        };
        assert_eq!(first.bytes, second.bytes);
        assert!(second.newest_ns > first.newest_ns, "a rewrite went unseen");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&entry, &link).expect("symlink");
        assert!(matches!(look(&link), Local::Gone));
        assert!(matches!(look(&dir.path().join("missing")), Local::Gone));
    }

    /// Counts the commands it was asked to run; never fails.
    struct Counting(std::sync::atomic::AtomicU32);

    #[async_trait]
    impl EntryCommand for Counting {
        fn command_name(&self) -> String {
            "counting".into()
        }
        async fn check(&self) -> Result<(), ConnError> {
            Ok(())
        }
        async fn send_entry(&self, _entry: &RelPath) -> Result<(), ConnError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        async fn delete_entry(&self, _entry: &RelPath) -> Result<(), ConnError> {
            self.0.fetch_add(100, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    /// A source root moved away (an unmounted disk) is not every entry gone: nothing is
    /// cleared or deleted, with or without complete-sync, and the entry runs once it is back
    /// (found by review: without complete-sync the entry was cleared as "gone").
    #[tokio::test]
    async fn a_missing_source_clears_no_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("album")).expect("mkdir");
        std::fs::write(root.join("album/a"), b"a").expect("write");
        for complete_sync in [false, true] {
            let queue = Arc::new(Queue::open_in_memory().expect("queue"));
            let source = SourceRoot::establish(&root, &queue)
                .expect("state")
                .expect("source");
            queue
                .entry_changed(&RelPath::from_bytes(b"album").expect("valid"))
                .expect("record");
            let command = Arc::new(Counting(Default::default()));
            let stage = EntryStage {
                queue: Arc::clone(&queue),
                command: Arc::clone(&command) as Arc<dyn EntryCommand>,
                root: root.clone(),
                source: Some(Arc::new(source)),
                opts: EntryOptions {
                    settle: Duration::ZERO,
                    complete_sync,
                    retry: RetryPolicy {
                        max_attempts: 3,
                        base: Duration::from_millis(1),
                        cap: Duration::from_millis(1),
                        park_base: Duration::from_millis(1),
                        park_cap: Duration::from_millis(1),
                    },
                },
            };
            let away = dir.path().join("away");
            std::fs::rename(&root, &away).expect("move the source away");
            let (_tx, rx) = watch::channel(false);
            let report = stage.run(rx.clone(), true).await.expect("run");
            assert_eq!(queue.entry_rows().expect("rows").len(), 1, "{report:?}");
            assert_eq!(command.0.load(std::sync::atomic::Ordering::SeqCst), 0);
            std::fs::rename(&away, &root).expect("move it back");
            stage.run(rx, true).await.expect("run");
            assert!(queue.entry_rows().expect("rows").is_empty());
            assert_eq!(command.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }
}
