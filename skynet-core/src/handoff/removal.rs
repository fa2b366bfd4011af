//! The removal step of a hand-off (`remove_source`): the last checks, right before the
//! local file goes, for a whole batch at once (one walk of /proc, one look at the siblings).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Step;
use crate::action::Action;
use crate::beneath;
use crate::clock::mtime_ns;
use crate::connection::FileIdentity;
use crate::merge::Entry;
use crate::open_writers::OpenWriters;
use crate::relpath::RelPath;
use crate::siblings::{Sibling, SiblingFinder};
use crate::state::{HandoffRow, Queue, StateError};

/// The removal step, run on a blocking thread (it walks /proc and opens databases).
pub(super) struct Remover {
    pub(super) root: PathBuf,
    pub(super) queue: Arc<Queue>,
}

impl Remover {
    pub(super) fn remove_all(
        &self,
        rows: Vec<HandoffRow>,
        siblings: Option<&SiblingFinder>,
        remove: bool,
    ) -> Vec<(HandoffRow, Step)> {
        let wanted: HashSet<(u64, u64)> = rows
            .iter()
            .filter_map(|r| {
                let meta = std::fs::symlink_metadata(r.path.under(&self.root)).ok()?;
                let id = FileIdentity::of(&meta);
                Some((id.dev, id.ino))
            })
            .collect();
        let writers = OpenWriters::scan(&wanted);
        let siblings: Vec<Result<Sibling, StateError>> =
            siblings.map(SiblingFinder::find).unwrap_or_default();
        rows.into_iter()
            .map(|row| {
                let step = self.remove(&row, &writers, &siblings, remove);
                (row, step)
            })
            .collect()
    }

    fn remove(
        &self,
        row: &HandoffRow,
        writers: &OpenWriters,
        siblings: &[Result<Sibling, StateError>],
        remove: bool,
    ) -> Step {
        let local = row.path.under(&self.root);
        // Opened without following links and without blocking, then judged by fstat: what is
        // checked is what is removed (short of a rename in the few calls between).
        let id = match still_delivered(row, &local) {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::info!(path = %row.path, "changed or gone since its delivery; not removed");
                if std::fs::symlink_metadata(&local).is_ok_and(|m| m.is_file()) {
                    if let Err(e) = self
                        .queue
                        .push(&[Entry::new(Action::Send(row.path.clone()), 0)])
                    {
                        tracing::warn!(path = %row.path, error = %e, "cannot queue the send again");
                    }
                }
                return Step::Done;
            }
            Err(e) => return Step::Failed(format!("cannot check {}: {e}", local.display())),
        };
        if let Some(w) = writers.of(id.dev, id.ino) {
            return Step::Wait(format!("open for writing by {w}; kept until it is closed"));
        }
        let mut takers = Vec::new();
        for s in siblings {
            match s {
                Ok(s) if !s.selects(&row.path) => {}
                Ok(s) => takers.push(s),
                Err(e) => {
                    return Step::Wait(format!(
                        "cannot tell whether another mapping of this source holds it: {e}"
                    ))
                }
            }
        }
        for s in &takers {
            let holds = if remove {
                s.queue.mark_handed_off(row)
            } else {
                s.queue.holds_handed_off(row)
            };
            match holds {
                Ok(true) => {}
                Ok(false) => {
                    return Step::Wait(format!("waiting for mapping {} to deliver it too", s.name))
                }
                Err(e) => {
                    return Step::Wait(format!(
                        "cannot tell whether mapping {} holds it: {e}",
                        s.name
                    ))
                }
            }
        }
        if !remove {
            return Step::Remove;
        }
        if let Err(e) = std::fs::remove_file(&local) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Step::Failed(format!("cannot remove {}: {e}", local.display()));
            }
        }
        tracing::info!(path = %row.path, "delivered and verified; local copy removed");
        remove_emptied_folders(&self.root, &row.path);
        Step::Done
    }
}

/// After the hand-off removed the file `rel`: removes the folders that removal emptied, from
/// its parent up, never the source root (rclone's `--delete-empty-src-dirs`).
///
/// Each folder goes with one `rmdir`, which refuses a folder holding anything: a file written
/// meanwhile, a folder that was already empty before (it stays, and so does every folder
/// above it), so only folders this removal emptied go. The climb stops at the first folder
/// that stays or is not there (removed by someone else: what is above it was not emptied by
/// this removal). Resolved beneath the source root's handle without following links, so a
/// folder swapped for a link never leads outside the source. Best effort: a folder left
/// behind (no permission, a crash right before) costs nothing but its place.
///
/// The watcher then sees the folder go: without complete-sync (which `--remove-source`
/// refuses) that queues no deletion; another mapping of the source that has complete-sync
/// turns the folder's deletion into the deletion of its files that were not handed off,
/// which it no longer has (see `queue::handoff::spare_handed_off`).
fn remove_emptied_folders(root: &Path, rel: &RelPath) {
    use rustix::fs::{AtFlags, Mode, OFlags};
    use std::os::fd::AsFd;
    let Ok(root_fd) = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let mut folder = rel.parent();
    while let Some(dir) = folder {
        let parent = dir.parent();
        let held = match &parent {
            None => None,
            Some(p) => match beneath::open_dir(root_fd.as_fd(), p) {
                Ok(fd) => Some(fd),
                Err(_) => return,
            },
        };
        let at = held.as_ref().map_or(root_fd.as_fd(), |fd| fd.as_fd());
        if rustix::fs::unlinkat(at, dir.file_name(), AtFlags::REMOVEDIR).is_err() {
            return;
        }
        tracing::info!(path = %dir, "folder emptied by the hand-off removed");
        folder = parent;
    }
}

/// Opens `local` with `O_NOFOLLOW | O_NONBLOCK` (a link or a FIFO swapped in is neither
/// followed nor waited on) and compares its fstat with the delivered version: regular file,
/// same size and mtime, and where recorded the same device, inode and ctime. `Ok(None)`:
/// gone or changed.
fn still_delivered(row: &HandoffRow, local: &Path) -> std::io::Result<Option<FileIdentity>> {
    use rustix::fs::{Mode, OFlags};
    let fd = match rustix::fs::open(
        local,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::LOOP => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = std::fs::File::from(fd).metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let id = FileIdentity::of(&meta);
    let mtime = meta.modified().map(mtime_ns).unwrap_or(0);
    let same = meta.len() == row.size
        && mtime == row.mtime_ns
        && row.identity.is_none_or(|delivered| delivered == id);
    Ok(same.then_some(id))
}
