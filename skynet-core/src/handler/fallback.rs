//! Re-queuing of fallback work: when what the destination holds at a path no longer matches
//! what stands locally (a move whose remote source is missing, a send that found a directory,
//! a send whose file vanished after a crash may have left a copy), the handler files repairs
//! into the queue instead of failing: sends of the local files there, after a deletion of the
//! remote path where complete-sync asks for one. Repairs are ordinary queued actions, so they
//! merge, retry and survive a crash like any other.

use std::path::Path;

use crate::action::Action;
use crate::filter::Filter;
use crate::merge::Entry;
use crate::relpath::RelPath;
use crate::scan;
use crate::state::{LedgerUpdate, Queue, StateError};

/// What filing a repair needs: the queue, the source root the repairs read, the filter that
/// decides which local files are sent, and whether deletions are propagated.
pub(super) struct Repairs<'a> {
    pub(super) queue: &'a Queue,
    pub(super) root: &'a Path,
    pub(super) filter: &'a Filter,
    pub(super) complete_sync: bool,
}

impl Repairs<'_> {
    /// The ledger update of a send whose local file is gone or no longer a file: whatever the
    /// destination holds at `path` is not known to be current.
    pub(super) fn gone_ledger(&self, path: &RelPath) -> Result<LedgerUpdate, StateError> {
        Ok(if self.delete_if_gone(path)? {
            LedgerUpdate::Vanished(path.clone())
        } else {
            LedgerUpdate::Stale(path.clone())
        })
    }

    /// With complete-sync, queues the remote deletion of `path` when nothing is there
    /// locally: a send or move done remotely but not acknowledged before a crash leaves a
    /// copy the ledger does not know, which no catch-up scan would ever remove. Returns
    /// whether it queued the deletion.
    fn delete_if_gone(&self, path: &RelPath) -> Result<bool, StateError> {
        let local = path.under(self.root);
        if self.complete_sync && std::fs::symlink_metadata(local).is_err() {
            self.queue
                .push_repair(&[Entry::new(Action::Delete(path.clone()), 0)])?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A move whose remote source is gone: most often it already happened (a crash before
    /// its acknowledgement), so the destination's `to` may hold the moved content, including
    /// files changed or removed locally since, which no ledger entry names. With
    /// complete-sync, `to` is removed remotely first and the local files there are sent
    /// again (the price of the crash is a re-upload of that folder, never a stale file);
    /// without it, the local files are sent over whatever is there.
    ///
    /// The repair is filed last, behind the moves queued after this one (row `seq`), which
    /// carry whatever the destination holds at `to` elsewhere before the repair runs: the same
    /// repair is done where they carry it too. Done only at `to`, it came too late (found by
    /// the simulation's soak, seed 304802: a directory swap `mv a/b t; mv a/m2 a/b; mv t a/m2`
    /// then `mv a D0`; the move of the never-sent `a/m2` onto `a/b` found no source, its
    /// repair deleted `a/b` after `mv a D0` had carried the old `a/b/f3` to `D0/b/f3`, which
    /// stayed).
    pub(super) fn resend_moved(&self, seq: i64, to: &RelPath) -> Result<(), StateError> {
        self.resend_within(to, self.complete_sync)?;
        let carried = self.queue.carried_by_later_moves(seq, to)?;
        if carried != *to {
            self.resend_within(&carried, self.complete_sync)?;
        }
        Ok(())
    }

    /// [`resend_within`] in this mapping.
    pub(super) fn resend_within(
        &self,
        path: &RelPath,
        delete_first: bool,
    ) -> Result<(), StateError> {
        resend_within(self.queue, self.root, self.filter, path, delete_first)
    }
}

/// Queues sends of the local files at `path` (a file, or every file of a directory), after
/// the removal of whatever the destination holds there when `delete_first`. The one repair
/// for a remote path that no longer matches what stands locally (a move found missing, a send
/// that found a directory, a move between nested paths); the delete goes first in the order,
/// and the sends it would drop are filed after it.
pub(super) fn resend_within(
    queue: &Queue,
    root: &Path,
    filter: &Filter,
    path: &RelPath,
    delete_first: bool,
) -> Result<(), StateError> {
    let mut entries = Vec::new();
    if delete_first {
        entries.push(Entry::new(Action::Delete(path.clone()), 0));
    }
    entries.extend(
        scan::local_files_within(root, path, filter)
            .into_iter()
            .map(|p| Entry::new(Action::Send(p), 0)),
    );
    if !entries.is_empty() {
        queue.push_repair(&entries)?;
    }
    Ok(())
}
