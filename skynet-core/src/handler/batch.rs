//! Which claimed actions one worker task takes: a single action, or a batch of sends of files
//! in one directory for a destination that sends several at once
//! ([`crate::connection::Connection::send_batch_size`]).

use std::collections::VecDeque;

use crate::action::Action;
use crate::state::Claimed;

/// What one worker task executes.
pub(super) enum Batch {
    One(Claimed),
    /// Sends of files in one parent directory (its bytes; empty for the root).
    Sends(Vec<u8>, Vec<Claimed>),
}

/// The parent directory of a send's target (empty for the root); `None` for other actions.
pub(super) fn send_dir(action: &Action) -> Option<Vec<u8>> {
    match action {
        Action::Send(p) => Some(
            p.parent()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

/// The next task's work. With `batch_max` 1, or when the oldest claimed action is not a send,
/// one action. Otherwise up to `batch_max` sends (a fair share of `ready` for `free` workers)
/// of files in one directory, preferring a directory no executing batch is working in:
/// creating and renaming files takes the directory's lock, so concurrent batches in the same
/// directory wait on each other. Claimed actions never touch related paths, so any order
/// among them is fine.
pub(super) fn next_batch(
    ready: &mut VecDeque<Claimed>,
    batch_max: usize,
    free: usize,
    busy_dirs: &[Vec<u8>],
) -> Option<Batch> {
    let front = ready.front()?;
    if batch_max <= 1 || !matches!(front.action, Action::Send(_)) {
        return ready.pop_front().map(Batch::One);
    }
    let dir = ready
        .iter()
        .filter_map(|c| send_dir(&c.action))
        .find(|d| !busy_dirs.contains(d))
        .or_else(|| send_dir(&front.action))?;
    let share = ready.len().div_ceil(free.max(1)).clamp(1, batch_max);
    let mut batch = Vec::with_capacity(share);
    let mut rest = VecDeque::with_capacity(ready.len());
    for c in ready.drain(..) {
        if batch.len() < share && send_dir(&c.action).as_deref() == Some(dir.as_slice()) {
            batch.push(c);
        } else {
            rest.push_back(c);
        }
    }
    *ready = rest;
    Some(Batch::Sends(dir, batch))
}
