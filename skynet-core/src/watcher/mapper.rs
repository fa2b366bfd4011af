//! The event mapper: turns notify's events into actions, by the table "events to
//! actions" of the behaviour contract (`docs/contract.md`). It owns what mapping needs to remember between events: rename halves waiting for
//! each other, renames that may have left stale paths in later events, and what it noticed
//! for the watcher (lost events, a renamed directory, symlinks met).
//!
//! Why a module of its own: these are the rules worth testing as data (events in, actions out,
//! see `tests`), apart from the watcher's thread, its batching, the queue and the scans, which
//! live in [`super`] and need a live watcher or time to test. It imports nothing from
//! `super`: the watcher drives the mapper, never the reverse.
//!
//! Renames: inotify reports a rename inside the tree as "from" and "to" halves sharing a
//! cookie (notify's tracker). A "from" without its "to" within [`RENAME_PAIRING`] was a move
//! out of the tree (a delete); a "to" without a "from" was a move in (send everything under
//! it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Event, EventKind};

use crate::action::Action;
use crate::clock::{now_ms, Instant};
use crate::filter::Filter;
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::scan;

/// How long a rename's "from" half waits for its "to" half.
pub const RENAME_PAIRING: Duration = Duration::from_millis(300);
/// How long after a rename events may still carry the renamed directory's old path (notify
/// fixes its paths at the end of the read batch that held the rename; a short window keeps
/// the guess from touching later, unrelated events).
const STALE_WINDOW: Duration = Duration::from_millis(100);

/// What the mapper needs to know of the mapping's options.
#[derive(Debug, Clone)]
pub(crate) struct MapOptions {
    /// Map removals and moves out to deletes (complete-sync); otherwise they map to nothing.
    pub queue_deletes: bool,
    /// How long a sent file must stay unchanged: its send is ready that much later.
    pub settle: Duration,
}

/// Maps events to actions; owns the rename pairing state.
pub(crate) struct EventMapper {
    root: PathBuf,
    filter: Arc<Filter>,
    opts: MapOptions,
    /// Rename "from" halves waiting for their "to", by tracker.
    moved_from: HashMap<usize, (RelPath, Instant)>,
    /// Trackers whose move was already filed (the later duplicate report is ignored).
    paired: HashMap<usize, Instant>,
    /// Renames filed in the last moments, newest last: notify keeps naming events inside a
    /// renamed directory by its old path until it has finished the batch in which it saw the
    /// rename (it re-adds the watches only then), so such events are mapped to the new path.
    recent_moves: Vec<(RelPath, RelPath, Instant)>,
    /// A directory was renamed: notify may have misnamed events around it, so the watcher
    /// reconciles with a scan later (see [`EventMapper::take_dir_renamed`]).
    dir_renamed: bool,
    /// Events were lost (a watch error, notify's rescan flag): see
    /// [`EventMapper::take_lost_events`].
    lost_events: bool,
    /// Symlinks met while mapping, noticed once the batch is mapped (see
    /// [`EventMapper::take_links`]).
    links: Vec<RelPath>,
    /// Runs after each look at the source (see [`EventMapper::look`]): a test makes the
    /// user's next change land exactly there, between two looks of one decision.
    #[cfg(test)]
    after_look: Option<AfterLook>,
}

/// See `EventMapper::after_look`.
#[cfg(test)]
type AfterLook = Box<dyn Fn(&RelPath) + Send>;

impl EventMapper {
    /// A mapper for the source at `root` (canonical, absolute); excluded paths map to nothing.
    pub(crate) fn new(root: PathBuf, filter: Arc<Filter>, opts: MapOptions) -> Self {
        EventMapper {
            root,
            filter,
            opts,
            moved_from: HashMap::new(),
            paired: HashMap::new(),
            recent_moves: Vec::new(),
            dir_renamed: false,
            lost_events: false,
            links: Vec::new(),
            #[cfg(test)]
            after_look: None,
        }
    }

    /// Whether a directory was renamed since the last call. Why the watcher asks: notify may
    /// have misnamed events around the rename, so a reconciling scan is due once the source is
    /// quiet.
    pub(crate) fn take_dir_renamed(&mut self) -> bool {
        std::mem::take(&mut self.dir_renamed)
    }

    /// Whether events were lost since the last call: only a catch-up scan can tell what they
    /// said.
    pub(crate) fn take_lost_events(&mut self) -> bool {
        std::mem::take(&mut self.lost_events)
    }

    /// The symlinks met since the last call: neither sent nor followed, but recorded so that
    /// `status` can say why they are missing at the destination.
    pub(crate) fn take_links(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.links)
    }

    /// Nothing half-known: no rename waiting for its other half, nothing noticed that the
    /// watcher has not taken yet.
    #[cfg(feature = "sim")]
    pub(crate) fn settled(&self) -> bool {
        self.moved_from.is_empty() && !self.dir_renamed && !self.lost_events
    }

    fn rel(&self, path: &Path) -> Option<RelPath> {
        RelPath::from_abs(&self.root, path).ok()
    }

    fn send_ready(&self) -> u64 {
        now_ms() + self.opts.settle.as_millis() as u64
    }

    fn send(&self, rel: RelPath, out: &mut Vec<Entry>) {
        if !self.filter.excluded(&rel) {
            out.push(Entry::new(Action::Send(rel), self.send_ready()));
        }
    }

    /// Sends the file, or every file under the directory, at `rel`. A symlink is neither
    /// sent nor followed: it is noticed (see `links`).
    fn send_within(&mut self, rel: &RelPath, out: &mut Vec<Entry>) {
        let ready = self.send_ready();
        if self.is_link(rel) {
            if !self.filter.excluded(rel) {
                self.links.push(rel.clone());
            }
            return;
        }
        if !self.exists(rel) {
            // Gone already, most likely carried away by a rename of a parent that is later in
            // the event stream: a plain send is rewritten by that move's merge, and a send of
            // what turns out to be a directory sends the files in it.
            self.send(rel.clone(), out);
            return;
        }
        for p in scan::local_files_within(&self.root, rel, &self.filter) {
            out.push(Entry::new(Action::Send(p), ready));
        }
    }

    fn delete(&self, rel: RelPath, out: &mut Vec<Entry>) {
        if self.opts.queue_deletes && !self.filter.excluded(&rel) {
            // Held back a moment so that a burst of deletions reaches the mass-deletion guard
            // as a whole (see `guard::LIVE_DELETE_DELAY_MS`).
            let ready = now_ms() + crate::guard::LIVE_DELETE_DELAY_MS;
            out.push(Entry::new(Action::Delete(rel), ready));
        }
    }

    /// What stands at `rel` now (a final symlink not followed), `None` when nothing does.
    /// Every look at the source goes through here. The user keeps changing the source while
    /// events are mapped, so each look may see a different state: a decision that needs two
    /// facts about one path must take both from one look.
    fn look(&self, rel: &RelPath) -> Option<std::fs::Metadata> {
        let found = std::fs::symlink_metadata(rel.under(&self.root)).ok();
        #[cfg(test)]
        if let Some(hook) = &self.after_look {
            hook(rel);
        }
        found
    }

    fn exists(&self, rel: &RelPath) -> bool {
        self.look(rel).is_some()
    }

    fn is_link(&self, rel: &RelPath) -> bool {
        self.look(rel).is_some_and(|m| m.file_type().is_symlink())
    }

    fn is_file(&self, rel: &RelPath) -> bool {
        self.look(rel).is_some_and(|m| m.is_file())
    }

    /// Whether the removal of `rel` (a file or a folder, as `kind` says) is filed as its
    /// deletion. Not when it is already there again (re-created): its create event sends it.
    /// Except a file that is a directory now (`rm f; mkdir f`): the create event sends only
    /// the files in it, which leaves the old file at the destination when the directory is
    /// empty (and beside its files on S3, where `f` and `f/x` are distinct keys). Its delete
    /// is filed before those sends, which then wait for it (rows on related paths run in
    /// order). Found by tests/convergence.rs and by the simulation (seed 390).
    ///
    /// Decided on one look: the `mkdir` may land between two (the watcher maps the remove as
    /// soon as it arrives, often between the `rm` and the `mkdir`), and asking "a directory
    /// now?" then "there at all?" saw it gone, then there again, and deleted nothing.
    fn removal_is_deletion(&self, kind: RemoveKind, rel: &RelPath) -> bool {
        match self.look(rel) {
            None => true,
            Some(now) => kind == RemoveKind::File && now.is_dir(),
        }
    }

    /// Maps an event path that may be stale (see `recent_moves`) to the path it names now.
    /// `present`: the event says the path exists (create, write, rename target); otherwise it
    /// says the path is gone (remove, rename source).
    ///
    /// Only paths strictly below a renamed directory can be stale (notify names them through
    /// the directory's watch); the renamed path itself is reported by its parent's watch,
    /// correctly. So a name used again right after its rename (`mv a t; mv b a; mv t b`, twice)
    /// is never mapped to where the first rename took it.
    fn resolve(&self, rel: RelPath, present: bool) -> RelPath {
        let Some(now) = self
            .recent_moves
            .iter()
            .rev()
            .filter(|(_, _, at)| at.elapsed() < STALE_WINDOW)
            .filter(|(from, _, _)| rel.is_strictly_within(from))
            .find_map(|(from, to, _)| rel.rebase(from, to).filter(|q| *q != rel))
        else {
            return rel;
        };
        let parent_exists = |p: &RelPath| p.parent().map(|d| self.exists(&d)).unwrap_or(true);
        // Present: the new name when the file is there, or when the old name cannot be right
        // because its directory is gone (both gone: the renamed directory was removed or
        // replaced since, and its removal is reported under the new name too; taking the old
        // one filed a rename onto a path nothing would ever delete, found by the simulation,
        // seed 6655).
        let use_now = if present {
            !self.exists(&rel) && (self.exists(&now) || !parent_exists(&rel))
        } else {
            self.exists(&rel) || !parent_exists(&rel)
        };
        if use_now {
            now
        } else {
            rel
        }
    }

    fn moved(&mut self, from: RelPath, to: RelPath, out: &mut Vec<Entry>) {
        let now = Instant::now();
        self.recent_moves
            .retain(|(_, _, at)| now.duration_since(*at) < STALE_WINDOW);
        if self.recent_moves.len() >= 64 {
            self.recent_moves.remove(0);
        }
        self.recent_moves.push((from.clone(), to.clone(), now));
        if to.under(&self.root).is_dir() {
            self.dir_renamed = true;
        }
        // A "from" half still waiting for its "to" lies at the new place now: when it expires
        // as a move out of the tree, its delete must name the path the destination will have
        // after this move runs.
        for (path, _) in self.moved_from.values_mut() {
            if let Some(rebased) = path.rebase(&from, &to) {
                *path = rebased;
            }
        }
        match (self.filter.excluded(&from), self.filter.excluded(&to)) {
            (false, false) => out.push(Entry::new(Action::Move { from, to }, 0)),
            (true, false) => self.send_within(&to, out),
            (false, true) => self.delete(from, out),
            (true, true) => {}
        }
    }

    pub(crate) fn map(&mut self, ev: notify::Result<Event>, out: &mut Vec<Entry>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "watch error; will rescan");
                self.lost_events = true;
                return;
            }
        };
        if ev.need_rescan() {
            self.lost_events = true;
            return;
        }
        let tracker = ev.attrs.tracker();
        let gone = matches!(
            ev.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
        );
        let first = ev
            .paths
            .first()
            .and_then(|p| self.rel(p))
            .map(|r| self.resolve(r, !gone));
        match ev.kind {
            EventKind::Create(_) => {
                if let Some(rel) = first {
                    // A new directory may already hold files created before its watch existed.
                    self.send_within(&rel, out);
                }
            }
            EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Other)
            | EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                if let Some(rel) = first {
                    self.send(rel, out);
                }
            }
            // The poll watcher reports an edit as a newer mtime (inotify never reports this
            // kind): a file whose content may have changed. Directories' mtimes change too
            // when entries come and go; their own events cover those.
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::WriteTime)) => {
                if let Some(rel) = first.filter(|r| self.is_file(r)) {
                    self.send(rel, out);
                }
            }
            EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Access(_) => {}
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => match (first, tracker) {
                (Some(rel), Some(t)) => {
                    self.moved_from.insert(t, (rel, Instant::now()));
                }
                (Some(rel), None) => self.delete(rel, out),
                _ => {}
            },
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                let Some(to) = first else { return };
                match tracker {
                    Some(t) if self.paired.contains_key(&t) => {}
                    Some(t) if self.moved_from.contains_key(&t) => {
                        if let Some((from, _)) = self.moved_from.remove(&t) {
                            self.paired.insert(t, Instant::now());
                            self.moved(from, to, out);
                        }
                    }
                    // Moved in from outside the source.
                    _ => self.send_within(&to, out),
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let Some(t) = tracker {
                    if self.paired.contains_key(&t) {
                        return;
                    }
                    self.moved_from.remove(&t);
                    self.paired.insert(t, Instant::now());
                }
                let from = ev
                    .paths
                    .first()
                    .and_then(|p| self.rel(p))
                    .map(|r| self.resolve(r, false));
                let to = ev
                    .paths
                    .get(1)
                    .and_then(|p| self.rel(p))
                    .map(|r| self.resolve(r, true));
                match (from, to) {
                    (Some(from), Some(to)) => self.moved(from, to, out),
                    (None, Some(to)) => self.send_within(&to, out),
                    (Some(from), None) => self.delete(from, out),
                    (None, None) => {}
                }
            }
            EventKind::Remove(kind) => {
                if let Some(rel) = first.filter(|r| self.removal_is_deletion(kind, r)) {
                    self.delete(rel, out);
                }
            }
            // An unpaired rename report (e.g. polling) or an event of no known kind says only
            // that something changed at its paths: look at what is there now.
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any | EventKind::Other => {
                for p in &ev.paths {
                    let Some(rel) = self.rel(p) else { continue };
                    if p.exists() {
                        self.send_within(&rel, out);
                    } else {
                        self.delete(rel, out);
                    }
                }
            }
        }
    }

    /// "From" halves that never met their "to" were moves out of the tree.
    pub(crate) fn expire_renames(&mut self, out: &mut Vec<Entry>) {
        let now = Instant::now();
        // Oldest first (a map's order would make the simulation's replays differ).
        let mut expired: Vec<(Instant, usize)> = self
            .moved_from
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= RENAME_PAIRING)
            .map(|(t, (_, at))| (*at, *t))
            .collect();
        expired.sort();
        for (_, t) in expired {
            if let Some((rel, _)) = self.moved_from.remove(&t) {
                let again = self.exists(&rel);
                self.delete(rel.clone(), out);
                // Something new stands there already (`mv a elsewhere; mkdir a`): its own
                // events sent it, but what was moved out may have been a directory whose
                // files the new thing does not replace (found by the simulation, seed 6854:
                // `a/b/f1` stayed). The delete goes first, then the new files are sent again
                // (the delete would drop their pending sends).
                if again && self.opts.queue_deletes {
                    self.send_within(&rel, out);
                }
            }
        }
        self.paired
            .retain(|_, at| now.duration_since(*at) < Duration::from_secs(10));
    }
}

/// The mapping rules as a table of cases (events in, actions out), and the interleavings a
/// table cannot express.
#[cfg(test)]
mod tests;
