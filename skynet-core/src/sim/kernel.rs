//! The kernel's inotify and notify's reading of it, as the watcher sees them on Linux.
//!
//! Modelled after notify 8's inotify backend, because its quirks are where events go wrong:
//! - Events name a watch descriptor (one per watched directory) and an entry name; notify turns
//!   the descriptor into a path when it *reads* the event, through its own table.
//! - notify reads everything queued in one go, and only at the end of that read adds watches
//!   for directories created or moved in, and removes those of directories moved or deleted.
//!   So: files made in a new directory before its watch exists are never reported; events
//!   inside a renamed directory read in the same go as the rename carry its *old* path; and
//!   events still queued for a renamed directory when its old watch is removed are lost.
//! - A rename is `MOVED_FROM` and `MOVED_TO` sharing a cookie; notify reports them as `From`,
//!   `To` and, when it saw both halves, `Both`. Half a rename is a move out of or into the tree.
//! - The kernel drops an event identical to the last one still queued, and overflows by
//!   dropping everything and flagging a rescan.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, Flag, ModifyKind, RemoveKind, RenameMode,
};
use notify::{Event, EventKind};

/// What an inotify event says happened to an entry of a watched directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mask {
    Create { dir: bool },
    Delete { dir: bool },
    Modify,
    CloseWrite,
    MovedFrom { dir: bool },
    MovedTo { dir: bool },
    Overflow,
}

/// One queued inotify event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    wd: u32,
    name: OsString,
    mask: Mask,
    cookie: u32,
}

/// One inotify instance watching the source recursively, with notify's path table.
pub(super) struct Kernel {
    /// Kernel side: the watch of each watched directory, by inode.
    wds: HashMap<u64, u32>,
    next_wd: u32,
    next_cookie: u32,
    /// Events not read yet.
    queued: Vec<Raw>,
    /// notify side: the path of each watch, and the watch of each path.
    paths: HashMap<u32, PathBuf>,
    watches: HashMap<PathBuf, u32>,
    /// notify's last "from" half (cookie, path), to pair with a "to".
    rename_from: Option<(u32, PathBuf)>,
}

fn ino(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

impl Kernel {
    /// Starts watching `root` and every directory under it (what `Watcher::start` does).
    pub(super) fn watch(root: &Path) -> Kernel {
        let mut k = Kernel {
            wds: HashMap::new(),
            next_wd: 1,
            next_cookie: 1,
            queued: Vec::new(),
            paths: HashMap::new(),
            watches: HashMap::new(),
            rename_from: None,
        };
        k.add_watch(root);
        k
    }

    /// notify's `watch(root, Recursive)` again: watches for every directory there now.
    pub(super) fn rewatch(&mut self, root: &Path) {
        self.add_watch(root);
    }

    /// True when no event waits to be read.
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    fn push(&mut self, dir_ino: Option<u64>, name: OsString, mask: Mask, cookie: u32) {
        let Some(&wd) = dir_ino.and_then(|i| self.wds.get(&i)) else {
            return; // not watched (yet): the kernel reports nothing
        };
        let raw = Raw {
            wd,
            name,
            mask,
            cookie,
        };
        // inotify coalesces an event identical to the last one queued.
        if self.queued.last() != Some(&raw) {
            self.queued.push(raw);
        }
    }

    fn entry(path: &Path) -> (Option<u64>, OsString) {
        let parent = path.parent().and_then(ino);
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        (parent, name)
    }

    /// `path` (a file or directory) was created.
    pub(super) fn created(&mut self, path: &Path, dir: bool) {
        let (parent, name) = Self::entry(path);
        self.push(parent, name, Mask::Create { dir }, 0);
    }

    /// The file at `path` was written (and closed).
    pub(super) fn written(&mut self, path: &Path) {
        let (parent, name) = Self::entry(path);
        self.push(parent, name.clone(), Mask::Modify, 0);
        self.push(parent, name, Mask::CloseWrite, 0);
    }

    /// The inode of `path`, to name a directory to [`Kernel::removed`] or
    /// [`Kernel::renamed`] once it is gone.
    pub(super) fn inode(path: &Path) -> Option<u64> {
        ino(path)
    }

    /// `path` (a file, or an empty directory whose inode was `dir_ino`) was removed.
    pub(super) fn removed(&mut self, path: &Path, dir_ino: Option<u64>) {
        let (parent, name) = Self::entry(path);
        if let Some(i) = dir_ino {
            // The watch dies with the directory's inode.
            self.wds.remove(&i);
        }
        self.push(
            parent,
            name,
            Mask::Delete {
                dir: dir_ino.is_some(),
            },
            0,
        );
    }

    /// `from` was renamed to `to` (either may lie outside the source, where nothing is
    /// watched), replacing the empty directory whose inode was `replaced_dir`, if any.
    pub(super) fn renamed(&mut self, from: &Path, to: &Path, dir: bool, replaced_dir: Option<u64>) {
        if let Some(i) = replaced_dir {
            self.wds.remove(&i);
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let (from_parent, from_name) = Self::entry(from);
        let (to_parent, to_name) = Self::entry(to);
        self.push(from_parent, from_name, Mask::MovedFrom { dir }, cookie);
        self.push(to_parent, to_name, Mask::MovedTo { dir }, cookie);
    }

    /// The queue overflows: what was queued is lost.
    pub(super) fn overflow(&mut self) {
        self.queued.clear();
        self.queued.push(Raw {
            wd: 0,
            name: OsString::new(),
            mask: Mask::Overflow,
            cookie: 0,
        });
    }

    /// notify reads everything queued: the events it reports, then its watch updates.
    pub(super) fn read(&mut self) -> Vec<notify::Result<Event>> {
        let mut out = Vec::new();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for raw in std::mem::take(&mut self.queued) {
            if raw.mask == Mask::Overflow {
                out.push(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
                continue;
            }
            let Some(dir) = self.paths.get(&raw.wd) else {
                continue; // a descriptor notify removed: the event is dropped
            };
            let path = dir.join(&raw.name);
            let tracker = raw.cookie as usize;
            let event = |kind| Event::new(kind).add_path(path.clone());
            match raw.mask {
                Mask::Create { dir } => {
                    out.push(Ok(event(EventKind::Create(if dir {
                        CreateKind::Folder
                    } else {
                        CreateKind::File
                    }))));
                    if dir {
                        add.push(path.clone());
                    }
                }
                Mask::Delete { dir } => {
                    out.push(Ok(event(EventKind::Remove(if dir {
                        RemoveKind::Folder
                    } else {
                        RemoveKind::File
                    }))));
                    if self.watches.contains_key(&path) {
                        remove.push(path.clone());
                    }
                }
                Mask::Modify => out.push(Ok(event(EventKind::Modify(ModifyKind::Data(
                    DataChange::Any,
                ))))),
                Mask::CloseWrite => out.push(Ok(event(EventKind::Access(AccessKind::Close(
                    AccessMode::Write,
                ))))),
                Mask::MovedFrom { .. } => {
                    if self.watches.contains_key(&path) {
                        remove.push(path.clone());
                    }
                    self.rename_from = Some((raw.cookie, path.clone()));
                    out.push(Ok(event(EventKind::Modify(ModifyKind::Name(
                        RenameMode::From,
                    )))
                    .set_tracker(tracker)));
                }
                Mask::MovedTo { dir } => {
                    out.push(Ok(event(EventKind::Modify(ModifyKind::Name(
                        RenameMode::To,
                    )))
                    .set_tracker(tracker)));
                    if self.rename_from.as_ref().map(|(c, _)| *c) == Some(raw.cookie) {
                        if let Some((_, from)) = self.rename_from.take() {
                            out.push(Ok(Event::new(EventKind::Modify(ModifyKind::Name(
                                RenameMode::Both,
                            )))
                            .set_tracker(tracker)
                            .add_path(from)
                            .add_path(path.clone())));
                        }
                    }
                    if dir {
                        add.push(path.clone());
                    }
                }
                Mask::Overflow => {}
            }
        }
        for path in remove {
            self.remove_watch(&path);
        }
        for path in add {
            self.add_watch(&path);
        }
        out
    }

    /// notify's `remove_watch(path, recursive)`: the watch of `path` and of every watched
    /// path below it.
    fn remove_watch(&mut self, path: &Path) {
        let gone: Vec<(PathBuf, u32)> = self
            .watches
            .iter()
            .filter(|(p, _)| p.starts_with(path))
            .map(|(p, wd)| (p.clone(), *wd))
            .collect();
        for (p, wd) in gone {
            self.watches.remove(&p);
            self.paths.remove(&wd);
            self.wds.retain(|_, w| *w != wd);
        }
    }

    /// notify's `add_watch(path, recursive)`: every directory under `path` as it is now. A
    /// directory already watched keeps its descriptor, which now names this path.
    fn add_watch(&mut self, path: &Path) {
        for entry in walkdir::WalkDir::new(path)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir())
        {
            let Some(i) = ino(entry.path()) else { continue };
            let wd = match self.wds.get(&i) {
                Some(&wd) => wd,
                None => {
                    let wd = self.next_wd;
                    self.next_wd += 1;
                    self.wds.insert(i, wd);
                    wd
                }
            };
            let p = entry.into_path();
            if let Some(old) = self.paths.insert(wd, p.clone()) {
                if old != p {
                    self.watches.remove(&old);
                }
            }
            self.watches.insert(p, wd);
        }
    }
}
